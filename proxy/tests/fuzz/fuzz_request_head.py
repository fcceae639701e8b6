"""Fuzz target: the request-head parsing path, from raw bytes to the request the proxy would send.

Each input goes through what a connection's bytes go through: app.py's MethodFallbackParser
(llhttp, switching to aiohttp's Python parser for rare methods), then the checks the pipeline
makes before forwarding (normalize.framing_problem, Host, normalize_path, the query, header
encoding), then the upstream header rewrite (upstream/headers.py). Invariants:

- nothing raises except the parser's own refusal (HttpProcessingError) — any other exception
  is a crash the listener would turn into a 500 or worse;
- every request that passes is re-framed into a head that is well formed by RFC 9112's strict
  grammar: a token method, a visible-ASCII origin-form target without `..` segments, token
  header names, values without CR, LF or NUL, one Host, at most one all-digit Content-Length
  and never one beside chunked framing.

Run: `make fuzz` (FUZZ_SECONDS, default 60). With atheris installed it is coverage-guided
(libFuzzer); otherwise hypothesis generates inputs for the same time. `check` also runs on the
seed inputs in the unit suite (tests/fuzz/test_fuzz_smoke.py).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any
from unittest import mock

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    atheris = None
# coverage instrumentation only for a fuzzing run (it costs ~30 s of imports); the unit smoke
# test imports this module plainly
USE_ATHERIS = (
    atheris is not None and __name__ == "__main__" and os.environ.get("FUZZ_ENGINE") != "hypothesis"
)
instrumented: Any = atheris.instrument_imports if USE_ATHERIS else nullcontext

with instrumented():
    from aiohttp import web
    from aiohttp.http_exceptions import HttpProcessingError
    from aiohttp.http_parser import HttpRequestParser, HttpRequestParserPy

    from openflare.app import PARSER_MAX_FIELD, PARSER_MAX_HEADERS, MethodFallbackParser
    from openflare.config.models import NormalizationConfig
    from openflare.pipeline.normalize import (
        PathRejected,
        _has_control,
        framing_problem,
        normalize_path,
    )
    from openflare.upstream.headers import upstream_request_headers

TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TARGET = re.compile(r"/[\x21-\x7e]*")
OPTIONS = NormalizationConfig()
MAX_LINE = 8192 + 1024

SEEDS: list[bytes] = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a/../b?x=1 HTTP/1.1\r\nHost: a:80\r\nCookie: c=1\r\n\r\n",
    b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n",
    b"PURGEX /%2e%2e/x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    b"GET /x HTTP/1.0\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n\r\n"
    b"GET /y HTTP/1.1\r\nHost: a\r\n\r\n",
    b"FOO /..;/admin HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
]


_LOOP = asyncio.new_event_loop()


def _parser() -> MethodFallbackParser:
    protocol = mock.Mock()  # the payload readers only pause and resume it
    kwargs: dict[str, Any] = {
        "max_line_size": MAX_LINE,
        "max_field_size": PARSER_MAX_FIELD,
        "max_headers": PARSER_MAX_HEADERS,
        "payload_exception": web.RequestPayloadError,
        "auto_decompress": False,
    }

    def slow() -> Any:
        return HttpRequestParserPy(protocol, _LOOP, 2**16, **kwargs)

    return MethodFallbackParser(HttpRequestParser(protocol, _LOOP, 2**16, **kwargs), slow)


def _forwarded_head(message: Any) -> str | None:
    """The head the proxy would send upstream for `message`, or None when a pipeline check
    refuses it first (the same checks, in the same order)."""
    if framing_problem(message.version, message.headers) is not None:
        return None
    if not message.headers.get("Host", "") and message.version >= (1, 1):
        return None
    target: str = message.path
    if "#" in target:
        return None
    raw_path, _, query = target.partition("?")
    try:
        path = normalize_path(raw_path, OPTIONS)
    except PathRejected:
        return None
    if _has_control(query) or not query.isascii():
        return None
    for _, value in message.raw_headers:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return None  # limits stage: header_not_utf8
    headers = upstream_request_headers(
        message.headers,
        request_id="fuzz",
        peer_ip="127.0.0.1",
        peer_trusted=False,
        scheme="http",
        pass_host=True,
    )
    if message.chunked:
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Transfer-Encoding", "chunked"))
    line = f"{message.method} {path}{'?' + query if query else ''} HTTP/1.1"
    return line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"


def _assert_well_formed(head: str) -> None:
    lines = head[:-4].split("\r\n")
    method, target, version = lines[0].split(" ")
    assert TOKEN.fullmatch(method), method
    assert TARGET.fullmatch(target), target
    assert ".." not in target.partition("?")[0].split("/"), target
    assert version == "HTTP/1.1"
    names: list[str] = []
    for line in lines[1:]:
        name, sep, value = line.partition(": ")
        assert sep and TOKEN.fullmatch(name), line
        assert not any(c in value for c in "\r\n\x00"), line
        names.append(name.lower())
    assert names.count("host") <= 1
    lengths = [
        line.partition(": ")[2] for line in lines[1:] if line.lower().startswith("content-length:")
    ]
    assert len(lengths) <= 1 and all(v.isdigit() for v in lengths), lengths
    assert not (lengths and "transfer-encoding" in names)


def check(data: bytes) -> None:
    for split in (len(data), len(data) // 2):
        parser = _parser()
        messages: list[Any] = []
        try:
            for piece in (data[:split], data[split:]):
                if piece:
                    messages.extend(parser.feed_data(piece)[0])
        except HttpProcessingError:
            pass  # the parser's refusal: a 400/414/431 on the wire, nothing forwarded
        for message, _payload in messages:
            head = _forwarded_head(message)
            if head is not None:
                _assert_well_formed(head)


def test_one_input(data: bytes) -> None:  # the atheris entry point
    check(data)


def _run_hypothesis(seconds: float) -> int:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    pieces = st.sampled_from(
        [
            b"\r\n",
            b"\n",
            b"\r",
            b" ",
            b"\t",
            b":",
            b"\x00",
            b"GET ",
            b"FOOX ",
            b"/",
            b"..",
            b"%2e",
            b"?",
            b"#",
            b"HTTP/1.1",
            b"HTTP/1.0",
            b"Host: a",
            b"Host:",
            b"Content-Length: ",
            b"Transfer-Encoding: chunked",
            b"0",
            b"5",
            b"-1",
            b",",
            b";",
            b"\xc3\xa9",
            b"\xff",
        ]
    )
    inputs = st.one_of(
        st.binary(max_size=300),
        st.lists(pieces, max_size=30).map(b"".join),
        st.sampled_from(SEEDS).flatmap(
            lambda seed: st.tuples(st.integers(0, len(seed)), pieces).map(
                lambda cut: seed[: cut[0]] + cut[1] + seed[cut[0] :]
            )
        ),
    )
    runs = 0
    deadline = time.monotonic() + seconds

    @settings(
        max_examples=2000,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs)
    def batch(data: bytes) -> None:
        nonlocal runs
        runs += 1
        check(data)

    while time.monotonic() < deadline:
        batch()
    return runs


def main(argv: list[str]) -> int:
    seconds = float(os.environ.get("FUZZ_SECONDS", "60"))
    if not USE_ATHERIS:
        runs = _run_hypothesis(seconds)
        print(f"fuzz_request_head: hypothesis, {runs} inputs in {seconds:.0f} s, no failure")
        return 0
    corpus = tempfile.mkdtemp(prefix="openflare-fuzz-")
    for index, seed in enumerate(SEEDS):
        with open(os.path.join(corpus, f"seed-{index}"), "wb") as out:
            out.write(seed)
    args = [argv[0], f"-max_total_time={int(seconds)}", "-rss_limit_mb=2048", *argv[1:], corpus]
    runner: Callable[[bytes], None] = test_one_input
    atheris.Setup(args, runner)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
