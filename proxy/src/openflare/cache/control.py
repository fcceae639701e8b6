"""Cache-Control parsing (RFC 9111 §5.2) as a pure function.

Directive names are case-insensitive; arguments are tokens or quoted strings. Anything malformed
is read the way the RFC asks a cache to read it: the most restrictive way. A duplicated or
invalid freshness directive (`max-age=abc`, `max-age=-1`, two different `max-age`s) makes the
response stale rather than fresh; a qualified `no-cache="Set-Cookie"` or `private="X"` is
treated like the unqualified directive. The parser never raises on arbitrary input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

DELTA_SECONDS_MAX = 2_147_483_648  # RFC 9111 §1.2.2: overflow is read as 2^31
INVALID = -1  # a delta-seconds argument that is present but not a valid number


def parse_delta_seconds(value: str | None) -> int:
    """A delta-seconds argument: non-negative integer, clamped at 2^31; INVALID otherwise."""
    if value is None or not value.isdigit() or not value.isascii():
        return INVALID
    number = int(value) if len(value) < 12 else DELTA_SECONDS_MAX
    return min(number, DELTA_SECONDS_MAX)


def _split_directives(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    in_quotes = escaped = False
    for ch in text:
        if in_quotes:
            current.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
            current.append(ch)
        elif ch == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        escaped = False
        for ch in inner:
            if escaped:
                out.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            else:
                out.append(ch)
        return "".join(out)
    return value


@dataclass(frozen=True, slots=True)
class CacheControl:
    """Parsed directives: name → argument (None for a bare directive)."""

    directives: dict[str, str | None] = field(default_factory=dict)
    duplicated: frozenset[str] = frozenset()

    def __contains__(self, name: str) -> bool:
        return name in self.directives

    def seconds(self, name: str) -> int | None:
        """The directive's delta-seconds, None when absent, 0 when invalid or duplicated with
        different values (so the response counts as stale: RFC 9111 §4.2.1)."""
        if name not in self.directives:
            return None
        if name in self.duplicated:
            return 0
        number = parse_delta_seconds(self.directives[name])
        return 0 if number == INVALID else number

    def seconds_or_default(self, name: str, default: int) -> int:
        value = self.seconds(name)
        return default if value is None else value

    @property
    def empty(self) -> bool:
        return not self.directives


EMPTY = CacheControl()


def parse_cache_control(values: Iterable[str]) -> CacheControl:
    """Parse every field line of a Cache-Control (or CDN-Cache-Control) header."""
    directives: dict[str, str | None] = {}
    duplicated: set[str] = set()
    for line in values:
        for raw in _split_directives(line):
            name, sep, argument = raw.partition("=")
            name = name.strip().lower()
            if not name or not name.isascii() or " " in name or '"' in name:
                continue
            value: str | None = _unquote(argument.strip()) if sep else None
            if name in directives and directives[name] != value:
                duplicated.add(name)
                continue
            directives[name] = value
    if not directives:
        return EMPTY
    return CacheControl(directives, frozenset(duplicated))
