"""Targets: the parts of a request a WAF condition can inspect, extracted lazily and once.

A target yields values as (kind, name, value) tuples: `kind` is `arg`, `header`, `cookie` or
`""`, and `name` is what exclusions match (an argument, header or cookie name). `Inspection`
holds one request's raw material and computes each target the first time a rule needs it; the
engine caches transformed views on top of it, so nothing is parsed or decoded twice.

| target | values |
|---|---|
| `path` | normalized path (what the origin receives) |
| `raw_path` / `uri` / `query` | the path / the whole request target / the query, as sent |
| `args`, `args_names` | query and body argument values / names (form, multipart, JSON, XML) |
| `query_args`, `query_names`, `body_args`, `body_names` | the same, split by origin |
| `arg:<name>` | values of one argument (query, form, multipart, JSON key at any depth, XML) |
| `headers`, `header_names`, `header:<name>` | header values (all but Cookie) / names / one |
| `cookies`, `cookie_names`, `cookie:<name>` | cookie values / names / one cookie |
| `user_agent`, `method`, `content_type`, `client_ip` | one value each |
| `body` | the inspected body prefix as text |
| `json_keys`, `json_values`, `form_names`, `form_values`, `multipart_names`, |  |
| `multipart_values`, `filenames`, `files`, `xml_names`, `xml_values`, `graphql` | by format |
| `flags` | protocol and parser findings (see FLAGS) |
| `body_size`, `args_count`, `header_count`, `cookie_count`, `uri_length` | numbers |
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from itertools import chain

from openflare.waf.bodies import (
    FILENAME,
    FORM,
    JSON,
    MULTIPART,
    XML,
    BodyData,
    media_type,
    parse_body,
    parse_urlencoded,
)

Value = tuple[str, str, str]
# method, raw target, path, query, client IP, body size, truncated, parser limits, headers
RequestKey = tuple[
    str, str, str, str, str, int, bool, tuple[int, int, int], tuple[tuple[str, str], ...]
]
ARG, HEADER, COOKIE = "arg", "header", "cookie"

BODY_TARGETS = frozenset(
    {
        "body",
        "body_args",
        "body_names",
        "json_keys",
        "json_values",
        "form_names",
        "form_values",
        "multipart_names",
        "multipart_values",
        "filenames",
        "files",
        "xml_names",
        "xml_values",
        "graphql",
    }
)
MIXED_TARGETS = frozenset({"args", "args_names", "flags", "args_count"})  # body when present
REQUEST_TARGETS = frozenset(
    {
        "path",
        "raw_path",
        "uri",
        "query",
        "query_args",
        "query_names",
        "headers",
        "header_names",
        "cookies",
        "cookie_names",
        "user_agent",
        "method",
        "content_type",
        "client_ip",
    }
)
NUMERIC_TARGETS = frozenset(
    {"body_size", "args_count", "header_count", "cookie_count", "uri_length"}
)
NAMED_PREFIXES = ("header:", "arg:", "cookie:")
TARGETS = BODY_TARGETS | MIXED_TARGETS | REQUEST_TARGETS | NUMERIC_TARGETS
# What `flags` can contain: findings of the parsers and of the request line and headers.
FLAGS = (
    "body_truncated",
    "get_with_body",
    "cl_and_te",
    "multiple_content_length",
    "multiple_host",
    "te_not_chunked",
    "invalid_url_encoding",
    "missing_user_agent",
    "missing_accept",
    "missing_content_type",
    "json_invalid",
    "json_too_deep",
    "xml_dtd",
    "xml_entity",
    "xml_external_entity",
    "xml_invalid",
    "xml_too_deep",
    "multipart_invalid",
    "multipart_preamble",
    "multipart_too_many_parts",
)


def check_target(name: str) -> str:
    """The canonical spelling of a target name, or ValueError."""
    for prefix in NAMED_PREFIXES:
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            if not rest:
                raise ValueError(f"{name!r} needs a name after {prefix!r}")
            return prefix + (rest.lower() if prefix != "arg:" else rest)
    if name not in TARGETS:
        raise ValueError(
            f"unknown target {name!r}; known: {', '.join(sorted(TARGETS))}, "
            f"{', '.join(p + '<name>' for p in NAMED_PREFIXES)}"
        )
    return name


def is_numeric_target(name: str) -> bool:
    return name in NUMERIC_TARGETS


def needs_body(name: str) -> bool:
    return name in BODY_TARGETS or name in MIXED_TARGETS or name.startswith("arg:")


def parse_cookies(header: str) -> list[tuple[str, str]]:
    cookies = []
    for item in header.split(";"):
        name, sep, value = item.strip().partition("=")
        if name or sep:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            cookies.append((name.strip(), value))
    return cookies


def _text(value: str) -> str:
    """Valid Unicode: aiohttp keeps undecodable request bytes as lone surrogates, which RE2
    cannot take; they become U+FFFD (the bytes were not text anyway)."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _has_invalid_escape(text: str) -> bool:
    if "%" not in text:
        return False
    for part in text.split("%")[1:]:
        invalid = len(part) < 2 or part[0] not in HEXCHARS or part[1] not in HEXCHARS
        if invalid and part[:1] not in ("u", "U"):
            return True
    return False


HEXCHARS = frozenset("0123456789abcdefABCDEF")


class Inspection:
    """One request as the WAF sees it. Cheap to create; targets are computed on first use."""

    __slots__ = (
        "method",
        "raw_target",
        "path",
        "query",
        "client_ip",
        "body",
        "body_size",
        "truncated",
        "key",
        "_sent_headers",
        "_headers",
        "_lower_headers",
        "_content_type",
        "_limits",
        "_cache",
        "_body_data",
        "_query_pairs",
        "_cookies",
        "_ip",
        "_by_name",
    )

    def __init__(
        self,
        *,
        method: str,
        raw_target: str,
        path: str,
        query: str,
        headers: Sequence[tuple[str, str]],
        client_ip: str,
        body: bytes | None = None,
        body_size: int | None = None,
        truncated: bool = False,
        limits: tuple[int, int, int] = (64, 10_000, 1_000),
    ) -> None:
        self.method = method
        self.raw_target = _text(raw_target)
        self.path = _text(path)
        self.query = _text(query)
        self.client_ip = client_ip
        self.body = body
        self.body_size = body_size if body_size is not None else len(body or b"")
        self.truncated = truncated
        sent = headers if isinstance(headers, tuple) else tuple(headers)
        self._sent_headers = sent
        # Every input of the evaluation, for the engine's whole-request memo; requests with a
        # body are not remembered (None)
        self.key: RequestKey | None = (
            None
            if body
            else (
                method,
                raw_target,
                path,
                query,
                client_ip,
                self.body_size,
                truncated,
                limits,
                sent,
            )
        )
        self._headers: Sequence[tuple[str, str]] | None = None
        self._lower_headers: list[tuple[str, str]] | None = None
        self._content_type = ""
        self._limits = limits
        self._cache: dict[str, list[Value]] = {}
        self._body_data: BodyData | None = None
        self._query_pairs: list[tuple[str, str]] | None = None
        self._cookies: list[tuple[str, str]] | None = None
        self._ip: ipaddress.IPv4Address | ipaddress.IPv6Address | bool | None = False
        self._by_name: dict[str, list[str]] | None = None

    # ---- raw material, parsed once

    def _read_headers(self) -> list[tuple[str, str]]:
        headers: Sequence[tuple[str, str]] = self._sent_headers
        if not all(map(str.isascii, chain.from_iterable(headers))):  # (no frame per header)
            headers = [(_text(name), _text(value)) for name, value in headers]
        self._headers = headers
        lower = self._lower_headers = [(name.lower(), value) for name, value in headers]
        for name, value in lower:
            if name == "content-type":
                self._content_type = value
                break
        return lower

    @property
    def headers(self) -> Sequence[tuple[str, str]]:
        """The headers as sent (names in their case), as valid Unicode."""
        if self._headers is None:
            self._read_headers()
        assert self._headers is not None
        return self._headers

    @property
    def lower_headers(self) -> list[tuple[str, str]]:
        """(lower-cased name, value) for every header, in order."""
        lower = self._lower_headers
        return lower if lower is not None else self._read_headers()

    @property
    def content_type(self) -> str:
        if self._lower_headers is None:
            self._read_headers()
        return self._content_type

    @property
    def body_data(self) -> BodyData:
        if self._body_data is None:
            depth, values, parts = self._limits
            self._body_data = (
                parse_body(
                    self.content_type,
                    self.body,
                    truncated=self.truncated,
                    max_depth=depth,
                    max_values=values,
                    max_parts=parts,
                )
                if self.body
                else BodyData()
            )
        return self._body_data

    @property
    def query_pairs(self) -> list[tuple[str, str]]:
        if self._query_pairs is None:
            self._query_pairs = parse_urlencoded(self.query, self._limits[1])
        return self._query_pairs

    @property
    def cookie_pairs(self) -> list[tuple[str, str]]:
        if self._cookies is None:
            cookies: list[tuple[str, str]] = []
            for name, value in self.lower_headers:
                if name == "cookie":
                    cookies.extend(parse_cookies(value))
            self._cookies = cookies
        return self._cookies

    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        if self._ip is False:
            try:
                self._ip = ipaddress.ip_address(self.client_ip)
            except ValueError:
                self._ip = None
        return self._ip if not isinstance(self._ip, bool) else None

    def header(self, wanted: str) -> list[str]:
        by_name = self._by_name
        if by_name is None:  # one pass over the headers, however many names are asked for
            by_name = self._by_name = {}
            for name, value in self.lower_headers:
                found = by_name.get(name)
                if found is None:
                    by_name[name] = [value]
                else:
                    found.append(value)
        return by_name.get(wanted) or []

    # ---- targets

    def values(self, target: str) -> list[Value]:
        cached = self._cache.get(target)
        if cached is None:
            if not self.body and target in BODY_TARGETS:
                cached = []
            elif not self.body and target == "args":
                cached = self.values("query_args")
            elif not self.body and target == "args_names":
                cached = self.values("query_names")
            else:
                cached = self._extract(target)
            self._cache[target] = cached
        return cached

    def strings(self, target: str) -> list[str]:
        """The value strings of `target` — exactly `[v[2] for v in self.values(target)]` —
        without building the (kind, name, value) tuples for the targets a plain request has:
        what a view's memo key (its raw text) is made of. Callers must not change the list."""
        cached = self._cache.get(target)
        if cached is not None:
            return [value for _, _, value in cached]
        fast = (_STRINGS if self.body else _STRINGS_WITHOUT_BODY).get(target)
        if fast is not None:
            return fast(self)
        if target.startswith("header:"):
            return self.header(target[7:])
        return [value for _, _, value in self.values(target)]

    def number(self, target: str) -> int:
        if target == "body_size":
            return self.body_size
        if target == "args_count":
            return len(self.query_pairs) + len(self.body_data.values)
        if target == "header_count":
            return len(self.headers)
        if target == "cookie_count":
            return len(self.cookie_pairs)
        if target == "uri_length":
            return len(self.raw_target)
        raise KeyError(target)

    def _extract(self, target: str) -> list[Value]:
        simple = _SIMPLE.get(target)
        if simple is not None:
            return simple(self)
        prefix, _, name = target.partition(":")
        if prefix == "header":
            return [(HEADER, name, value) for value in self.header(name)]
        if prefix == "cookie":
            return [(COOKIE, n, v) for n, v in self.cookie_pairs if n.lower() == name]
        if prefix == "arg":
            found = [(ARG, n, v) for n, v in self.query_pairs if n == name]
            found.extend((ARG, n, v) for _, n, v in self.body_data.values if n == name)
            return found
        if target in NUMERIC_TARGETS:
            return [("", target, str(self.number(target)))]
        raise KeyError(target)

    def flags(self) -> list[Value]:
        found: set[str] = set()
        if self.body:
            found |= self.body_data.flags
        if self.truncated:
            found.add("body_truncated")
        lengths = transfer = hosts = 0
        has_ua = has_accept = has_type = False
        te_value = ""
        for lower, value in self.lower_headers:
            if lower == "content-length":
                lengths += 1
            elif lower == "transfer-encoding":
                transfer += 1
                te_value = value
            elif lower == "host":
                hosts += 1
            elif lower == "user-agent":
                has_ua = bool(value.strip())
            elif lower == "accept":
                has_accept = True
            elif lower == "content-type":
                has_type = True
        has_body = self.body_size > 0 or transfer > 0
        if self.method in ("GET", "HEAD") and has_body:
            found.add("get_with_body")
        if lengths and transfer:
            found.add("cl_and_te")
        if lengths > 1:
            found.add("multiple_content_length")
        if hosts > 1:
            found.add("multiple_host")
        if transfer and te_value.strip().lower() != "chunked":
            found.add("te_not_chunked")
        if not has_ua:
            found.add("missing_user_agent")
        if not has_accept:
            found.add("missing_accept")
        if has_body and not has_type and self.method in ("POST", "PUT", "PATCH"):
            found.add("missing_content_type")
        if _has_invalid_escape(self.query) or _has_invalid_escape(self.raw_target.split("?")[0]):
            found.add("invalid_url_encoding")
        return [("", flag, flag) for flag in sorted(found)]


def _query_args(r: Inspection) -> list[Value]:
    return [(ARG, n, v) for n, v in r.query_pairs]


def _query_names(r: Inspection) -> list[Value]:
    return [(ARG, n, n) for n, _ in r.query_pairs]


def _body_args(r: Inspection) -> list[Value]:
    return [(ARG, n, v) for _, n, v in r.body_data.values]


def _body_names(r: Inspection) -> list[Value]:
    return [(ARG, n, n) for _, n in r.body_data.names]


def _by_source(source: str, names: bool) -> Callable[[Inspection], list[Value]]:
    if names:
        return lambda r: [(ARG, n, n) for s, n in r.body_data.names if s == source]
    return lambda r: [(ARG, n, v) for s, n, v in r.body_data.values if s == source]


def _headers(r: Inspection) -> list[Value]:
    return [(HEADER, n, v) for n, v in r.lower_headers if n != "cookie"]


def _content_type(r: Inspection) -> list[Value]:
    return [("", "content-type", media_type(r.content_type))] if r.content_type else []


# Inspection.strings: the values' strings straight from the request, for targets that do not
# depend on the body (and, without a body, for `args` / `args_names`: the query's alone)
_STRINGS: dict[str, Callable[[Inspection], list[str]]] = {
    "path": lambda r: [r.path],
    "raw_path": lambda r: [r.raw_target.partition("?")[0]],
    "uri": lambda r: [r.raw_target],
    "query": lambda r: [r.query] if r.query else [],
    "method": lambda r: [r.method],
    "client_ip": lambda r: [r.client_ip],
    "user_agent": lambda r: r.header("user-agent"),
    "query_args": lambda r: [v for _, v in r.query_pairs],
    "query_names": lambda r: [n for n, _ in r.query_pairs],
    "headers": lambda r: [v for n, v in r.lower_headers if n != "cookie"],
    "header_names": lambda r: [n for n, _ in r.headers],
    "cookies": lambda r: [v for _, v in r.cookie_pairs],
    "cookie_names": lambda r: [n for n, _ in r.cookie_pairs],
}


def _no_values(r: Inspection) -> list[str]:
    return []


# Without a body: the same, plus no values at all for the body's targets (one lookup answers)
_STRINGS_WITHOUT_BODY: dict[str, Callable[[Inspection], list[str]]] = {
    **dict.fromkeys(BODY_TARGETS, _no_values),
    **_STRINGS,
    "args": _STRINGS["query_args"],
    "args_names": _STRINGS["query_names"],
}

_SIMPLE: dict[str, Callable[[Inspection], list[Value]]] = {
    "path": lambda r: [("", "path", r.path)],
    "raw_path": lambda r: [("", "path", r.raw_target.partition("?")[0])],
    "uri": lambda r: [("", "uri", r.raw_target)],
    "query": lambda r: [("", "query", r.query)] if r.query else [],
    "method": lambda r: [("", "method", r.method)],
    "client_ip": lambda r: [("", "client_ip", r.client_ip)],
    "content_type": _content_type,
    "user_agent": lambda r: [(HEADER, "user-agent", v) for v in r.header("user-agent")],
    "query_args": _query_args,
    "query_names": _query_names,
    "body_args": _body_args,
    "body_names": _body_names,
    "args": lambda r: _query_args(r) + _body_args(r),
    "args_names": lambda r: _query_names(r) + _body_names(r),
    "headers": _headers,
    "header_names": lambda r: [(HEADER, n.lower(), n) for n, _ in r.headers],  # as sent
    "cookies": lambda r: [(COOKIE, n, v) for n, v in r.cookie_pairs],
    "cookie_names": lambda r: [(COOKIE, n, n) for n, _ in r.cookie_pairs],
    "body": lambda r: [("", "body", r.body_data.text)] if r.body else [],
    "json_keys": _by_source(JSON, names=True),
    "json_values": _by_source(JSON, names=False),
    "form_names": _by_source(FORM, names=True),
    "form_values": _by_source(FORM, names=False),
    "multipart_names": _by_source(MULTIPART, names=True),
    "multipart_values": _by_source(MULTIPART, names=False),
    "filenames": _by_source(FILENAME, names=False),
    "files": lambda r: [(ARG, n, v) for n, v in r.body_data.files],
    "xml_names": _by_source(XML, names=True),
    "xml_values": _by_source(XML, names=False),
    "graphql": lambda r: [(ARG, "query", q) for q in r.body_data.graphql],
    "flags": Inspection.flags,
}
