"""Rate-limit overhead per decision: the local backend, the whole stage, and Redis.

    python benchmarks/ratelimit_microbench.py [--redis-url redis://127.0.0.1:6379/0] [--json]

Without --redis-url a throw-away `redis-server` is started on a free loopback port (persistence
off) and stopped afterwards. Figures are µs per decision (median of several runs):

* `local decide, N rule(s)` — MemoryBackend.decide_now: the bucket math plus the table;
* `local, table at max_keys` — the same while every call inserts a new key into a full table
  (eviction path, a flood of distinct clients);
* `stage, local backend` — the whole RateLimitStage.__call__ for a request matching 2 rules
  (rule matching, key building, metrics, latency histogram), without the rest of the pipeline;
* `redis sequential` — one decision at a time: a Redis round trip (latency, wall clock) and the
  proxy's own CPU per decision (redis-py, the event loop);
* `redis 64 concurrent` — 64 decisions in flight: the per-decision cost under load.

Local figures are CPU time of this process (`time.process_time`), so a busy machine does not
inflate them with other processes' time slices.

The first line is a yardstick of the machine's speed (see `reference_ms`).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from openflare.observability.logging import LogWriter
from openflare.observability.metrics import Metrics
from openflare.pipeline.base import Exchange
from openflare.pipeline.ratelimit import RateLimitStage, compile_rules
from openflare.ratelimit.bucket import Limit
from openflare.ratelimit.memory import MemoryBackend
from openflare.ratelimit.redis import RedisBackend
from openflare.ratelimit.rules import RateLimitRules, RedisBackendConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the `benchmarks` package importable
from benchmarks.servers import RedisServer, start_redis  # noqa: E402

RUNS = 5


def best_of(runs: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(runs))


# CPU time of this process, not wall time: on a shared, busy machine the wall clock also
# counts the time other processes held the CPU. Redis figures are wall time (a round trip).
clock = time.process_time


def per_call_us(n: int, fn: Callable[[int], None]) -> float:
    started = clock()
    fn(n)
    return (clock() - started) / n * 1e6


def bench_local() -> dict[str, float]:
    out: dict[str, float] = {}
    one = (Limit.of(50, 10**9),)  # never denies; keys stay in the table (existing-key path)
    two = (Limit.of(10, 10**9), Limit.of(50, 10**9))
    backend = MemoryBackend(100_000)
    clients = [f"10.0.{i >> 8}.{i & 255}" for i in range(1000)]

    def run1(n: int) -> None:
        decide = backend.decide_now
        for i in range(n):
            decide([("global", clients[i % 1000])], one)

    def run2(n: int) -> None:
        decide = backend.decide_now
        for i in range(n):
            c = clients[i % 1000]
            decide([("api", c), ("global", c)], two)

    out["local decide, 1 rule"] = best_of(RUNS, lambda: per_call_us(200_000, run1))
    out["local decide, 2 rules"] = best_of(RUNS, lambda: per_call_us(200_000, run2))

    full = MemoryBackend(10_000)
    counter = iter(range(10**9))

    def flood(n: int) -> None:
        decide = full.decide_now
        for _ in range(n):
            decide([("global", str(next(counter)))], one)

    flood(20_000)  # fill the table first
    out["local, table at max_keys (new key each call)"] = best_of(
        RUNS, lambda: per_call_us(200_000, flood)
    )
    return out


async def bench_stage() -> float:
    rules = RateLimitRules.model_validate(
        {
            "rules": [
                {"id": "global", "path_prefix": "/", "rate": 50, "burst": 10**9},
                {"id": "api", "path_prefix": "/api/", "rate": 10, "burst": 10**9},
                {"id": "auth", "path_prefix": "/auth/", "rate": 1, "burst": 1},
            ],
            "exemptions": {"paths": ["/healthz"]},
        }
    )
    metrics = Metrics()
    compiled = compile_rules(
        rules,
        lambda rid: {
            d: metrics.ratelimit_decisions.labels(rid, d)
            for d in ("allow", "deny", "would_block", "error")
        },
    )
    stage = RateLimitStage(
        compiled, ("/healthz",), (), MemoryBackend(100_000), metrics.stage_latency("ratelimit")
    )
    response = web.Response()

    async def terminal(exchange: Exchange) -> web.StreamResponse:
        return response

    request = make_mocked_request("GET", "/api/items")
    exchanges = []
    for i in range(1000):
        exchange = Exchange(request, 0.0, False)
        exchange.path = "/api/items"
        exchange.client_ip = f"10.1.{i >> 8}.{i & 255}"
        exchanges.append(exchange)

    async def run(n: int) -> float:
        started = clock()
        for i in range(n):
            await stage(exchanges[i % 1000], terminal)
        return (clock() - started) / n * 1e6

    async def baseline(n: int) -> float:  # awaiting the terminal alone
        started = clock()
        for i in range(n):
            await terminal(exchanges[i % 1000])
        return (clock() - started) / n * 1e6

    results = [await run(100_000) - await baseline(100_000) for _ in range(RUNS)]
    return statistics.median(results)


async def bench_redis(url: str) -> dict[str, float]:
    log_stream = io.BytesIO()
    log = LogWriter(log_stream)
    backend = RedisBackend(
        RedisBackendConfig(
            url=url,
            key_prefix="bench:",
            timeout_ms=2000,
            connect_timeout_ms=2000,
            max_connections=64,
        ),
        log,
        Metrics(),
    )
    limits = (Limit.of(10, 10**9), Limit.of(50, 10**9))
    clients = [f"10.2.{i >> 8}.{i & 255}" for i in range(1000)]

    async def one(i: int) -> None:
        c = clients[i % 1000]
        decision = await backend.decide([("api", c), ("global", c)], limits)
        if decision is None:
            log.flush()
            raise SystemExit(f"redis backend failed: {log_stream.getvalue().decode()}")

    for i in range(200):  # warm up: script cached, connections open
        await one(i)

    async def sequential(n: int) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), clock()
        for i in range(n):
            await one(i)
        return (time.perf_counter() - wall) / n * 1e6, (clock() - cpu) / n * 1e6

    async def concurrent(n: int, width: int = 64) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), clock()
        for base in range(0, n, width):
            await asyncio.gather(*(one(base + k) for k in range(width)))
        return (time.perf_counter() - wall) / n * 1e6, (clock() - cpu) / n * 1e6

    seq = [await sequential(5000) for _ in range(3)]
    par = [await concurrent(12_800) for _ in range(3)]
    out = {
        "redis sequential, wall (round trip)": statistics.median(w for w, _ in seq),
        "redis sequential, proxy CPU": statistics.median(c for _, c in seq),
        "redis 64 concurrent, wall per decision": statistics.median(w for w, _ in par),
        "redis 64 concurrent, proxy CPU per decision": statistics.median(c for _, c in par),
    }
    await backend.close()
    return out


def run_async(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    try:
        import uvloop

        return uvloop.run(coro_fn())
    except ImportError:
        return asyncio.run(coro_fn())


def reference_ms() -> float:
    """A machine-speed yardstick: ms for 1M iterations of an empty Python loop (about 10-25 ms
    on an idle modern core); compare figures from different machines through it."""

    def loop() -> float:
        started = clock()
        for _ in range(1_000_000):
            pass
        return (clock() - started) * 1000

    return best_of(RUNS, loop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()

    results = {"reference: 1M empty loop iterations (ms)": reference_ms()}
    results.update(bench_local())
    results["stage, local backend (2 matching rules)"] = run_async(bench_stage)

    server: RedisServer | None = None
    workdir = Path(tempfile.mkdtemp(prefix="rl-bench-"))
    url = args.redis_url
    try:
        if url is None:
            server = start_redis(workdir)
            url = server.url
        results.update(run_async(lambda: bench_redis(url)))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    if args.json:
        print(json.dumps({k: round(v, 2) for k, v in results.items()}, indent=2))
        return
    width = max(map(len, results))
    print(f"{'decision':<{width}}  µs")
    for name, value in results.items():
        print(f"{name:<{width}}  {value:8.2f}")


if __name__ == "__main__":
    main()
