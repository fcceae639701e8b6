"""Memory: the proxy's RSS growth for N cached entries against the bytes of their bodies.

A fresh OpenFlare process (memory store, access log on) is warmed up through the pass-through
path (nothing stored), its RSS read from /proc, then N distinct URLs (`/1k.bin?n=…`) are fetched
through it once each, so the cache holds exactly N entries; the RSS is read again. The issue's
target: growth ≤ 1.3 × the body bytes. A sample of the URLs is fetched again and must not reach
the origin (they really are stored).

    python -m benchmarks.memory [--entries 10000] [--sizes 1k,64k]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import SIZES, Pinning, log, origin_requests_between, stub_requests
from benchmarks.servers import start_openflare, start_origin

CONCURRENCY = 32
SAMPLE = 200
TARGET_RATIO = 1.3


async def _fetch_all(port: int, paths: Sequence[str], expected: int) -> int:
    """GET every path once (CONCURRENCY at a time); returns how many had the wrong answer."""
    bad = 0
    queue: asyncio.Queue[str] = asyncio.Queue()
    for path in paths:
        queue.put_nowait(path)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal bad
            while not queue.empty():
                path = queue.get_nowait()
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    body = await response.read()
                    if response.status != 200 or len(body) != expected:
                        bad += 1

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(CONCURRENCY))), 600)
    return bad


async def _stats(admin_port: int) -> dict[str, Any]:
    from openflare.config.loader import DEV_ADMIN_TOKEN

    headers = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{admin_port}/admin/cache/stats", headers=headers) as r,
    ):
        data: dict[str, Any] = await r.json()
        return data


def measure(
    workdir: Path, pinning: Pinning, origin_port: int, entries: int, size: str
) -> dict[str, Any]:
    nbytes = SIZES[size]
    max_bytes = entries * (nbytes + 8192) * 2 + (64 << 20)
    instance = start_openflare(
        workdir,
        pinning,
        f"mem-{size}",
        origin_port,
        overrides={"cache": {"max_entries": entries, "max_bytes": max_bytes}},
    )
    process = instance.process
    try:
        warm = [f"/nostore/{size}.bin?w={i}" for i in range(min(2000, entries // 5))]
        bad = asyncio.run(_fetch_all(instance.port, warm, nbytes))
        time.sleep(0.5)
        before = process.rss()
        started = time.monotonic()
        paths = [f"/{size}.bin?n={i}" for i in range(entries)]
        bad += asyncio.run(_fetch_all(instance.port, paths, nbytes))
        fill_s = time.monotonic() - started
        time.sleep(0.5)  # the log thread drains
        after = process.rss()
        stats = asyncio.run(_stats(instance.admin_port))
        origin_before = stub_requests(origin_port)
        bad += asyncio.run(_fetch_all(instance.port, paths[:: max(1, entries // SAMPLE)], nbytes))
        refetched = origin_requests_between(origin_before, stub_requests(origin_port))
    finally:
        process.stop()
    body_bytes = entries * nbytes
    growth = after - before
    failures: list[str] = []
    if bad:
        failures.append(f"{bad} wrong answers")
    if stats.get("entries") != entries:
        failures.append(f"cache holds {stats.get('entries')} entries, not {entries}")
    if refetched:
        failures.append(f"{refetched} stored URLs reached the origin again")
    result = {
        "size": size,
        "entries": entries,
        "body_bytes": body_bytes,
        "rss_before": before,
        "rss_after": after,
        "rss_growth": growth,
        "ratio": growth / body_bytes,
        "overhead_per_entry": (growth - body_bytes) / entries,
        "accounted_bytes": stats.get("size_bytes"),
        "cache_entries": stats.get("entries"),
        "target": TARGET_RATIO,
        "met": growth / body_bytes <= TARGET_RATIO,
        "fill_seconds": fill_s,
        "failures": failures,
    }
    log(
        f"memory {size}: {entries} entries, bodies {body_bytes / 1e6:.1f} MB, RSS "
        f"{before / 1e6:.1f} → {after / 1e6:.1f} MB, growth/bodies {result['ratio']:.2f}× "
        f"({result['overhead_per_entry']:.0f} B/entry overhead)"
        + (f" FAILED: {'; '.join(failures)}" if failures else "")
    )
    return result


def memory_check(
    workdir: Path, pinning: Pinning, origin_port: int, entries: int, sizes: Sequence[str]
) -> list[dict[str, Any]]:
    return [measure(workdir, pinning, origin_port, entries, size) for size in sizes]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--sizes", default="1k,64k")
    args = parser.parse_args()
    pinning = Pinning.plan()
    pinning.pin_self()
    workdir = Path(tempfile.mkdtemp(prefix="openflare-mem-"))
    origin = start_origin(workdir, pinning)
    try:
        results = memory_check(workdir, pinning, origin.port, args.entries, args.sizes.split(","))
    finally:
        origin.process.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    json.dump(results, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
