"""The WAF always sees exactly the path the origin receives.

The whole public listener (app.py, the composed runtime chain) and an origin run in-process on
loopback, on an event loop of their own in a thread; hypothesis sends raw request targets built
from path-confusion pieces over a socket. Whenever a request is forwarded, the path the WAF
inspected (patched `evaluate`) is byte for byte the path the origin got; whenever it is not,
the origin got nothing; and no forwarded path has a `..` segment.
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading
from collections.abc import Iterator
from typing import Any
from unittest import mock

import bundle_factories
import pytest
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from openflare.app import create_public_server
from openflare.config.models import ProxyConfig
from openflare.deps import Deps
from openflare.observability.logging import LogWriter
from openflare.pipeline import waf as waf_stage
from openflare.runtime import RuntimeHolder, build_runtime
from openflare.waf.rules import WafRules

RULES = {
    "rules": [
        {
            "id": "watch",
            "match": {"any": [{"target": "path", "prefix": "/never-matches-anything"}]},
            "action": {"type": "log"},
        }
    ]
}


class Edge:
    def __init__(self) -> None:
        self.waf_paths: list[str] = []
        self.origin_paths: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "in-process edge did not start"

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()

        async def origin(request: web.BaseRequest) -> web.Response:
            self.origin_paths.append(request.raw_path.partition("?")[0])
            return web.Response(text="origin")

        origin_server = await self._loop.create_server(web.Server(origin), "127.0.0.1", 0)
        origin_port = origin_server.sockets[0].getsockname()[1]
        proxy = ProxyConfig.model_validate(
            {
                "upstreams": [{"name": "o", "base_url": f"http://127.0.0.1:{origin_port}"}],
                "routing": {"default_upstream": "o"},
                "cache": {"enabled": False},
                "normalization": {"reject_encoded_slash": False},  # more paths get through
            }
        )
        bundle = bundle_factories.config_bundle(proxy, waf=WafRules.model_validate(RULES))
        deps = Deps(log=LogWriter(io.BytesIO()))
        holder = RuntimeHolder(build_runtime(bundle, deps))
        assert "waf" in holder.runtime.stages
        server = await self._loop.create_server(
            create_public_server(holder, deps.metrics), "127.0.0.1", 0
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        origin_server.close()
        await deps.close()
        deps.log.close()

    def send(self, target: bytes) -> int:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return int(data.split(b" ", 2)[1])


@pytest.fixture(scope="module")
def edge() -> Iterator[Edge]:
    real = waf_stage.evaluate
    instance = Edge()

    def recording(ruleset: Any, inspection: Any, **kwargs: Any) -> Any:
        instance.waf_paths.append(inspection.path)
        return real(ruleset, inspection, **kwargs)

    with mock.patch.object(waf_stage, "evaluate", recording):
        instance.start()
        yield instance
        instance.stop()


PIECES = st.sampled_from(
    [
        "/",
        "//",
        ".",
        "..",
        "%2e",
        "%2E",
        "%2e%2e",
        "%2F",
        "%5C",
        ";",
        "%3B",
        "%00",
        "%",
        "%41",
        "%7e",
        "%c3%a9",
        "a",
        "admin",
        "é",
        "~",
        "%25",
        "%252e",
        "+",
        "*",
        "!",
        "'",
        "(",
        ")",
        "$",
        ",",
        "=",
        "@",
        ":",
        "[",
        "]",
        "\\",
        "?",
        "?a=..",
        "#",
        "\x7f",
    ]
)
TARGETS = st.lists(PIECES, max_size=12).map(lambda parts: ("/" + "".join(parts)).encode())


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(target=TARGETS)
@example(target=b"/a/%2e%2e/%2e%2e/admin")
@example(target=b"/static/..%2fadmin")
@example(target=b"/..;/admin")
def test_waf_and_origin_see_the_same_path(edge: Edge, target: bytes) -> None:
    edge.waf_paths.clear()
    edge.origin_paths.clear()
    status = edge.send(target)
    if edge.origin_paths:
        assert status == 200
        assert edge.waf_paths == edge.origin_paths, target
        (path,) = edge.origin_paths
        assert ".." not in path.split("/")
    else:
        assert status in (400, 404, 414), (target, status)
