"""Stage 5 — normalization of the request target.

The normalized path is what the WAF inspects, what the cache keys on and what is forwarded, so
the origin and the WAF always see the same thing. Only what RFC 3986 says is equivalent is
changed: percent-encoded unreserved characters are decoded, other escapes get upper-case hex,
dot segments are removed (also when written as `%2e`), and duplicate slashes are merged when
configured. `%2F` is never decoded into a path separator. NUL, control characters, invalid
escapes and (when configured) encoded slashes or backslashes are refused with 400.

The query string is forwarded exactly as the client sent it; the cache keys on a canonical
form of it (cache/key.py).

Before the target, what the parser let through but RFC 9112 says a server must refuse (see
`framing_problem`): a protocol version other than HTTP/1.x, `Transfer-Encoding` on HTTP/1.0 or
naming any coding but `chunked`, and a `Host` that is repeated or not `host[:port]` — each
answered with the connection closed, since the request's framing or authority cannot be
trusted.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from http import HTTPStatus
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import MultiMapping

from openflare.pipeline.base import Exchange, Handler, answered, plain_error

if TYPE_CHECKING:
    from openflare.config.loader import ConfigBundle
    from openflare.config.models import NormalizationConfig
    from openflare.deps import Deps
    from openflare.observability.metrics import Metrics

UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
HEX = frozenset(b"0123456789abcdefABCDEF")
# RFC 9110 §7.2 / RFC 3986 §3.2.2: IP-literal or reg-name (no userinfo, path, space...), port
HOST_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::[0-9]{0,5})?")

# Targets already accepted, with their normalized path and query, and Host values already
# found valid: repeated ones (the common case) skip the checks. Bounded in entries and key
# length; cleared when full.
MEMO_ENTRIES = 4096
MEMO_MAX_TARGET = 512
MEMO_MAX_HOST = 255  # a DNS name's limit
_valid_hosts: set[str] = set()


def framing_problem(version: tuple[int, int], headers: MultiMapping[str]) -> tuple[int, str] | None:
    """(status, reason) for a request RFC 9112 says must not be processed, else None."""
    if version[0] != 1:
        # HTTP/0.9 (no version at all) is refused; 2.0 and later are not spoken on this port
        return (505 if version[0] >= 2 else 400), "http_version"
    codings = headers.getall("Transfer-Encoding", ())
    if codings:
        if version < (1, 1):
            return 400, "transfer_encoding_http10"  # §6.1: framing faulty, close after
        names = [name.strip().lower() for value in codings for name in value.split(",")]
        if names != ["chunked"]:
            return 501, "transfer_coding"  # §6.1: a coding the proxy would not decode
    hosts = headers.getall("Host", ())
    if len(hosts) > 1:
        return 400, "duplicate_host"  # §3.2
    if hosts and hosts[0] and hosts[0] not in _valid_hosts:
        host = hosts[0]
        if not HOST_RE.fullmatch(host):
            return 400, "invalid_host"
        if len(host) <= MEMO_MAX_HOST:
            if len(_valid_hosts) >= MEMO_ENTRIES:
                _valid_hosts.clear()
            _valid_hosts.add(host)
    return None


class PathRejected(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _has_control(text: str) -> bool:
    """Control characters, DEL or spaces (isprintable is one C-level pass)."""
    return not text.isprintable() or " " in text


def _decode_escapes(path: str, reject_encoded_slash: bool) -> str:
    out: list[str] = []
    i, n = 0, len(path)
    while i < n:
        ch = path[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        pair = path[i + 1 : i + 3]
        if len(pair) != 2 or not all(ord(c) in HEX for c in pair):
            raise PathRejected("invalid_percent_encoding")
        byte = int(pair, 16)
        if byte == 0:
            raise PathRejected("encoded_nul")
        if byte in (0x2F, 0x5C) and reject_encoded_slash:
            raise PathRejected("encoded_slash")
        if byte in UNRESERVED:
            out.append(chr(byte))
        else:
            out.append("%" + pair.upper())
        i += 3
    return "".join(out)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path; the result always starts with '/'."""
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments[1:], start=1):
        last = index == len(segments) - 1
        if segment == "..":
            if len(output) > 0:
                output.pop()
            if last:
                output.append("")
        elif segment == ".":
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)


def merge_slashes(path: str) -> str:
    while "//" in path:
        path = path.replace("//", "/")
    return path


def normalize_path(raw: str, options: NormalizationConfig) -> str:
    """The normalized form of an origin-form path, or PathRejected with a reason word."""
    if not raw.startswith("/"):
        raise PathRejected("not_origin_form")
    if _has_control(raw):
        raise PathRejected("control_character")
    if not raw.isascii():
        # raw UTF-8 in a target (RFC 3986 wants it percent-encoded): llhttp refuses it, the
        # Python parser used for rare methods does not; refused either way, never forwarded
        raise PathRejected("non_ascii")
    if "\\" in raw and options.reject_backslash:
        raise PathRejected("backslash")
    path = _decode_escapes(raw, options.reject_encoded_slash) if "%" in raw else raw
    if ";" in path and _dot_segment_with_parameter(path):
        raise PathRejected("dot_segment_parameter")
    if options.merge_slashes and "//" in path:
        path = merge_slashes(path)
    if "/." in path:
        path = remove_dot_segments(path)
    return path


def _dot_segment_with_parameter(path: str) -> bool:
    """`/..;/admin` and `/.;x/`: not dot segments by RFC 3986, so they survive normalization,
    but servlet containers strip the `;parameter` and then treat them as `..` — the origin would
    serve another path than the one the WAF and the cache saw."""
    return any(
        segment.partition(";")[0] in (".", "..") for segment in path.split("/") if ";" in segment
    )


class NormalizeStage:
    __slots__ = ("_options", "_metrics", "_accepted")

    def __init__(self, options: NormalizationConfig, metrics: Metrics) -> None:
        self._options = options
        self._metrics = metrics
        self._accepted: dict[str, tuple[str, str]] = {}

    def __call__(self, exchange: Exchange, next: Handler) -> Awaitable[web.StreamResponse]:
        request = exchange.request
        problem = framing_problem(request.version, request.headers)
        if problem is not None:
            response = self._refuse(exchange, problem[1], problem[0])
            response.force_close()
            return answered(response)
        if not exchange.host and request.version >= (1, 1):
            return answered(self._refuse(exchange, "missing_host"))
        target = request.raw_path
        known = self._accepted.get(target)
        if known is not None:
            exchange.path, exchange.query = known
            return next(exchange)  # nothing to do on the way out (see pipeline/base.py)
        path, _, query = target.partition("?")
        if "#" in target:
            return answered(self._refuse(exchange, "fragment_in_target"))
        try:
            exchange.path = normalize_path(path, self._options)
        except PathRejected as exc:
            refused = self._refuse(exchange, exc.reason)
            if exc.reason == "not_origin_form":
                refused.force_close()  # a forward-proxy client (CONNECT tunnels): no reuse
            return answered(refused)
        if _has_control(query):
            return answered(self._refuse(exchange, "control_character"))
        if not query.isascii():
            return answered(self._refuse(exchange, "non_ascii"))
        exchange.query = query
        if len(target) <= MEMO_MAX_TARGET:
            accepted = self._accepted
            if len(accepted) >= MEMO_ENTRIES:
                accepted.clear()
            accepted[target] = (exchange.path, query)
        return next(exchange)

    def _refuse(self, exchange: Exchange, reason: str, status: int = 400) -> web.StreamResponse:
        self._metrics.reject("normalize", reason)
        exchange.error = reason
        if exchange.trace is not None:  # a traced request (pipeline/explain.py): say why
            exchange.trace.note_refusal("normalize", status, reason)
        phrase = HTTPStatus(status).phrase
        return plain_error(exchange, status, f"{phrase} ({reason.replace('_', ' ')})")


def build(bundle: ConfigBundle, deps: Deps) -> NormalizeStage:
    return NormalizeStage(bundle.proxy.normalization, deps.metrics)
