"""Cache keys: which requests share a stored response.

The primary key is scheme, host, normalized path and canonical query; per-rule key control
drops listed query parameters (`utm_*` style prefixes allowed) or keeps only listed ones, and
adds listed request headers or cookies — without changing what the origin receives. Variants
under one primary key are told apart by the normalized values of the headers the response
named in `Vary`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from multidict import MultiMapping

from openflare.cache.policy import vary_value


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        if pattern.endswith("*"):
            if name.startswith(pattern[:-1]):
                return True
        elif name == pattern:
            return True
    return False


def parse_cookies(values: Iterable[str]) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for value in values:
        for part in value.split(";"):
            name, sep, cookie_value = part.strip().partition("=")
            if sep and name:
                cookies.setdefault(name, cookie_value)
    return cookies


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    ignore_query: tuple[str, ...] = ()
    only_query: tuple[str, ...] | None = None
    headers: tuple[str, ...] = ()
    cookies: tuple[str, ...] = ()

    def query(self, query: str) -> str:
        if not query:
            return ""
        pairs = parse_qsl(query, keep_blank_values=True)
        if self.only_query is not None:
            pairs = [p for p in pairs if _matches(p[0], self.only_query)]
        if self.ignore_query:
            pairs = [p for p in pairs if not _matches(p[0], self.ignore_query)]
        pairs.sort()
        return urlencode(pairs)

    def primary(
        self, scheme: str, host: str, path: str, query: str, headers: MultiMapping[str]
    ) -> str:
        key = f"{scheme}://{host.lower()}{path}"
        canonical = self.query(query)
        if canonical:
            key += "?" + canonical
        extras: list[str] = []
        for name in self.headers:
            extras.append(f"h:{name}={','.join(headers.getall(name, []))}")
        if self.cookies:
            jar = parse_cookies(headers.getall("Cookie", []))
            for name in self.cookies:
                extras.append(f"c:{name}={jar.get(name, '')}")
        if extras:
            key += "#" + "&".join(extras)
        return key


DEFAULT_KEY_POLICY = KeyPolicy()


def base_of(primary: str) -> str:
    """The URL part of a primary key (what `purge {"url"}` addresses: all its variants)."""
    return primary.split("#", 1)[0]


def variant_key(primary: str, vary: tuple[str, ...], headers: MultiMapping[str]) -> str:
    if not vary:
        return primary
    values = "\n".join(f"{name}:{vary_value(name, headers)}" for name in vary)
    return primary + "|v:" + hashlib.sha256(values.encode()).hexdigest()[:24]
