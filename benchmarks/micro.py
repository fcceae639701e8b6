"""Cost per stage: µs per request of each pipeline stage, in one process, without the network.

The stages are the proxy's own: the config is loaded with `load_bundle`, the chain built with
`build_runtime` (so a stage added to `PIPELINE` later is measured too), and each stage is
called through its public `__call__(exchange, next)` on a real aiohttp request object with a
`next` that answers at once. A row is the time of that call minus the time of calling `next`
alone. Every stage runs on an exchange already prepared by the stages before it (request id,
normalized path, route). The only thing replaced is the final socket write
(`Exchange.send`): it would need a live connection.

Rows: request id; access log split into metrics (access_log: false) and the JSON line; limits;
normalization (plain and escaped path); WAF on a plain GET, a 2 KB query and a 4 KB JSON body
(the same request repeated), and the engine alone on a varied mix of new requests;
the rate-limit decision; the cache lookup and answer for a stored 1 KB entry (primed from an
in-process origin); the whole chain for a cache HIT; and, for scale, the Python ceiling's whole
handler (one `web.Response`). Stages missing from the chain are listed with a note.

    python -m benchmarks.micro [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request

from benchmarks.common import Pinning, free_port, openflare_config, proxy_env, write_yaml
from benchmarks.servers import BENCH_RATE_LIMIT, WAF_RULES
from benchmarks.waf_traffic import fresh_mix
from openflare.config.loader import ConfigBundle, load_bundle
from openflare.deps import Deps
from openflare.observability.logging import LogWriter
from openflare.pipeline.base import Exchange
from openflare.runtime import PIPELINE, Runtime, build_runtime
from openflare.waf.compile import Ruleset
from openflare.waf.engine import evaluate

Call = Callable[[], Awaitable[Any]]
# CPU time of this thread (the event loop's): a busy shared machine preempts us, but does not
# bill us for the time we wait, so the figures hold on a noisy machine
CLOCK = time.thread_time
BODY_1K = bytes(range(256)) * 4
HOST = "127.0.0.1:8080"
# what a browser sends (no Cookie: a cookie makes a request bypass the shared cache)
BROWSER_HEADERS = {
    "Host": HOST,
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-US,en;q=0.5",
    "Accept-Encoding": "gzip, deflate, br",
    "Referer": "https://www.example.com/products/list?page=2",
    "Connection": "keep-alive",
    "Upgrade-Insecure-Requests": "1",
}


def verdict(exchange: Exchange, stage: str = "waf") -> str:
    """What the stage decided (a row for a WAF block measures the block path)."""
    if stage == "waf":
        return f"WAF: {exchange.waf or 'pass'}"
    if stage == "ratelimit":
        return f"limiter: {exchange.ratelimit or '?'}"
    return ""


class MeasuredExchange(Exchange):
    """The proxy's Exchange, except that a finished response is not written to a socket."""

    async def send(self, response: web.StreamResponse) -> None:
        body = getattr(response, "body", None)
        self.bytes_sent = len(body) if isinstance(body, bytes | bytearray) else 0


class _Transport:
    """Enough of a transport for the request object: a peer address and open."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def is_closing(self) -> bool:
        return False


class _Protocol(BaseProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.transport = None


def query_2k() -> str:
    parts = ["q=wireless+noise+cancelling+headphones", "category=electronics", "sort=price_asc"]
    i = 0
    while sum(len(p) + 1 for p in parts) < 2000:
        parts.append(f"filter_{i}=brand%3Dacme%2Ccolor%3Dblack%2Csize%3Dmedium&page_{i}={i}")
        i += 1
    return "&".join(parts)[:2048]


def json_4k() -> bytes:
    items: list[dict[str, Any]] = []
    i = 0
    while len(json.dumps({"items": items})) < 4000:
        items.append(
            {
                "sku": f"SKU-{i:06d}",
                "name": f"Wireless headphones model {i}",
                "quantity": i % 5 + 1,
                "price": 129.99,
                "tags": ["audio", "bluetooth"],
            }
        )
        i += 1
    body = json.dumps({"customer": "c-12345", "items": items}).encode()
    return body[:4096] if len(body) <= 4096 else json.dumps({"items": items[:-1]}).encode()


def make_request(
    loop: asyncio.AbstractEventLoop,
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes = b"",
) -> web.BaseRequest:
    payload: Any
    if body:
        payload = StreamReader(_Protocol(loop), 2**16, loop=loop)
        payload.feed_data(body)
        payload.feed_eof()
        headers = {**headers, "Content-Length": str(len(body))}
        request = make_mocked_request(
            method, target, headers=headers, transport=_Transport(), payload=payload, loop=loop
        )
    else:
        request = make_mocked_request(
            method, target, headers=headers, transport=_Transport(), loop=loop
        )
    return request


class Micro:
    def __init__(self, quick: bool) -> None:
        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.quick = quick
        self.rows: list[dict[str, Any]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="openflare-micro-"))
        self.devnull = open(os.devnull, "wb")  # noqa: SIM115 (closed in close())
        self.response = web.Response(body=BODY_1K)
        self.deps: list[Deps] = []

    # --- timing ------------------------------------------------------------------------------

    def per_call_us(self, call: Call) -> float:
        loop = self.loop
        target = 0.04 if self.quick else 0.2
        repeat = 3 if self.quick else 5

        async def batch(n: int) -> None:
            for _ in range(n):
                await call()

        started = CLOCK()
        loop.run_until_complete(batch(200))
        each = max((CLOCK() - started) / 200, 1e-7)
        number = max(200, int(target / each))
        timer = timeit.Timer(lambda: loop.run_until_complete(batch(number)), timer=CLOCK)
        return min(timer.repeat(repeat=repeat, number=1)) / number * 1e6

    def per_sync_call_us(self, call: Callable[[], Any]) -> float:
        timer = timeit.Timer(call, timer=CLOCK)
        number, _ = timer.autorange()
        number = max(1, number * (1 if self.quick else 4))
        return min(timer.repeat(repeat=3 if self.quick else 5, number=number)) / number * 1e6

    def add(self, stage: str, case: str, us: float | None, note: str = "") -> None:
        self.rows.append({"stage": stage, "case": case, "us": us, "note": note})
        shown = "   –  " if us is None else f"{us:8.2f}"
        print(f"  {stage:12s} {case:44s} {shown} µs  {note}", flush=True)

    # --- setup -------------------------------------------------------------------------------

    def bundle(self, origin_port: int, *, full: bool, access_log: bool) -> ConfigBundle:
        config = openflare_config(
            port=free_port(),
            admin_port=free_port(),
            origin_port=origin_port,
            waf=WAF_RULES if full else None,
            rate_limit=BENCH_RATE_LIMIT if full else None,
            overrides={"logging": {"access_log": access_log}},
        )
        name = f"micro-{'full' if full else 'plain'}-{'log' if access_log else 'nolog'}.yaml"
        path = write_yaml(self.tmp / name, config)
        try:
            return load_bundle(path, env=proxy_env())
        except Exception as exc:
            if not full:
                raise
            print(f"  note: the WAF / rate-limit config does not load ({exc}); measured without")
            return self.bundle(origin_port, full=False, access_log=access_log)

    def runtime(self, bundle: ConfigBundle) -> Runtime:
        deps = Deps(log=LogWriter(stream=self.devnull, level="info"))
        self.deps.append(deps)

        async def build() -> Runtime:
            return build_runtime(bundle, deps)

        return self.loop.run_until_complete(build())

    async def start_origin(self) -> web.AppRunner:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(
                body=BODY_1K,
                content_type="application/octet-stream",
                headers={
                    "Cache-Control": "public, max-age=3600",
                    "Last-Modified": "Sat, 01 Nov 2025 10:00:00 GMT",
                    "ETag": '"6543a1b0-400"',
                    "Accept-Ranges": "bytes",
                },
            )

        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self.origin_port = free_port()
        await web.TCPSite(runner, "127.0.0.1", self.origin_port).start()
        return runner

    def exchange(self, runtime: Runtime, request: web.BaseRequest) -> MeasuredExchange:
        return MeasuredExchange(request, time.monotonic(), runtime.debug_headers)

    async def _stub(self, exchange: Exchange) -> web.StreamResponse:
        return self.response

    def prepare(self, runtime: Runtime, exchange: Exchange, upto: str) -> None:
        """Run the stages before `upto` once, as the chain would (id, path, route...)."""

        async def run() -> None:
            for name, stage in runtime.stage_objects.items():
                if name == upto:
                    return
                await stage(exchange, self._stub)

        self.loop.run_until_complete(run())

    def stage_us(self, runtime: Runtime, name: str, exchange: Exchange) -> float:
        stage = runtime.stage_objects[name]
        stub = self._stub
        baseline = self.per_call_us(lambda: stub(exchange))
        return max(0.0, self.per_call_us(lambda: stage(exchange, stub)) - baseline)

    # --- the measurements --------------------------------------------------------------------

    def run(self) -> None:
        loop = self.loop
        origin = loop.run_until_complete(self.start_origin())
        try:
            self._measure()
        finally:
            for deps in self.deps:
                loop.run_until_complete(deps.close())
                deps.log.close()
            loop.run_until_complete(origin.cleanup())

    def _measure(self) -> None:
        loop = self.loop
        full = self.runtime(self.bundle(self.origin_port, full=True, access_log=True))
        quiet = self.runtime(self.bundle(self.origin_port, full=True, access_log=False))
        print(f"  chain: {' → '.join(full.stages)}")
        get = make_request(loop, "GET", "/static/app/1k.bin", BROWSER_HEADERS)
        stages = full.stage_objects

        self.add(
            "exchange",
            "Exchange() per request (app.py)",
            self.per_sync_call_us(lambda: Exchange(get, time.monotonic(), False)),
        )
        for name, _ in PIPELINE:
            if name not in stages:
                self.add(name, "—", None, "not in the chain with this config: skipped")
                continue
            if name == "cache":
                continue  # below, on a stored entry
            exchange = self.exchange(full, get)
            self.prepare(full, exchange, name)
            if name == "access_log":
                quiet_exchange = self.exchange(quiet, get)
                self.prepare(quiet, quiet_exchange, name)
                metrics = self.stage_us(quiet, name, quiet_exchange)
                both = self.stage_us(full, name, exchange)
                self.add(name, "metrics only (access_log: false)", metrics)
                self.add(name, "metrics + JSON access-log line", both)
                self.add(name, "JSON access-log line alone (difference)", max(0.0, both - metrics))
                continue
            us = self.stage_us(full, name, exchange)
            self.add(name, "plain GET, 8 browser headers", us, verdict(exchange, name))
            if name == "normalize":
                odd = make_request(
                    loop, "GET", "/static/./a/../app/%7Euser/%41%42/1k.bin", BROWSER_HEADERS
                )
                exchange = self.exchange(full, odd)
                self.prepare(full, exchange, name)
                self.add(name, "escapes and dot segments", self.stage_us(full, name, exchange))
            if name == "waf":
                search = make_request(loop, "GET", f"/search?{query_2k()}", BROWSER_HEADERS)
                exchange = self.exchange(full, search)
                self.prepare(full, exchange, name)
                us = self.stage_us(full, name, exchange)
                self.add(name, "GET with a 2 KB query", us, verdict(exchange))
                body = json_4k()
                headers = {**BROWSER_HEADERS, "Content-Type": "application/json"}
                post = make_request(loop, "POST", "/api/orders", headers, body)
                exchange = self.exchange(full, post)
                self.prepare(full, exchange, name)
                self.add(
                    name,
                    f"POST with a {len(body) / 1024:.0f} KB JSON body",
                    self.stage_us(full, name, exchange),
                    "body read once, parsed and inspected per call; " + verdict(exchange),
                )
                self.add(
                    name,
                    "engine: varied mix, every request new",
                    self._waf_mix_us(stages[name]._ruleset),
                    "benchmarks/waf_traffic.py; no memo can answer (waf_microbench --baseline)",
                )
        if "cache" in stages:
            self._cache(full, get)
        self._ceiling(get)

    def _waf_mix_us(self, ruleset: Ruleset) -> float:
        """The WAF engine over requests never seen before (built outside the clock): a new
        mix per repeat, min of the repeats, as the other rows."""
        runs = []
        for _ in range(2 if self.quick else 5):
            mix = fresh_mix(200)
            started = CLOCK()
            for make in mix:
                evaluate(ruleset, make())
            runs.append((CLOCK() - started) / len(mix) * 1e6)
        return min(runs)

    def _cache(self, runtime: Runtime, get: web.BaseRequest) -> None:
        loop = self.loop
        exchange = self.exchange(runtime, get)
        self.prepare(runtime, exchange, "cache")
        cache = runtime.stage_objects["cache"]
        loop.run_until_complete(cache(exchange, self._stub))  # MISS → fetch → STORE
        loop.run_until_complete(cache(exchange, self._stub))
        if exchange.cache_status != "HIT":
            self.add("cache", "HIT on a stored 1 KB entry", None, f"got {exchange.cache_status}")
            return
        self.add(
            "cache",
            "HIT on a stored 1 KB entry (lookup + answer)",
            self.stage_us(runtime, "cache", exchange),
        )
        handler = runtime.handler
        debug = runtime.debug_headers

        async def whole() -> web.StreamResponse:
            return await handler(MeasuredExchange(get, time.monotonic(), debug))

        probe = MeasuredExchange(get, time.monotonic(), debug)
        loop.run_until_complete(handler(probe))
        note = "" if probe.cache_status == "HIT" else f"not a HIT: {probe.cache_status}"
        self.add(
            "pipeline", "whole chain, cache HIT, no socket write", self.per_call_us(whole), note
        )

    def _ceiling(self, get: web.BaseRequest) -> None:
        headers = {"Cache-Control": "public, max-age=3600"}

        async def ceiling() -> web.Response:
            return web.Response(
                body=BODY_1K, content_type="application/octet-stream", headers=headers
            )

        self.add(
            "ceiling", "benchmarks/ceiling.py handler (one web.Response)", self.per_call_us(ceiling)
        )

    def close(self) -> None:
        self.loop.close()
        self.devnull.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="cost per pipeline stage")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    parser.add_argument("--json", type=Path, help="write the rows here as JSON")
    args = parser.parse_args()
    pinning = Pinning.plan()
    if pinning.server is not None:
        os.sched_setaffinity(0, {pinning.server})
    print(
        "cost per stage, µs of event-loop CPU per request (min of repeats; "
        f"Python {platform.python_version()})"
    )
    micro = Micro(args.quick)
    try:
        micro.run()
    finally:
        micro.close()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        data = {"python": platform.python_version(), "rows": micro.rows}
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
