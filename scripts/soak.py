"""Soak test (`make soak`, never part of `make test`): does a long run leak?

Phase 1, mixed traffic (SOAK_SECONDS, default 600): the test origin and a proxy (the E2E test
config, a rate-limit rule that answers 429 most of the time, a memory cache capped at
SOAK_CACHE_MB) on loopback; SOAK_WORKERS (default 8) clients loop over a weighted mix — cache
hits, misses on ever-new URLs of mixed sizes (so the cache evicts all the time), pass-through
API calls, requests the WAF blocks, requests the rate limit refuses — while a side task purges
(URL, prefix, everything) every 2 s and reloads the config every 10 s (admin API and SIGHUP,
with a content change so each reload builds a new runtime). The proxy's RSS and open file
descriptors are read from /proc after the warm-up (the first 10 %, at least 20 s) and at the
end, each time with the load paused and the client connections closed, so both readings see
the same idle state. Pass: RSS growth after warm-up < 10 %, no descriptor growth, no errors.

Phase 2, cache memory (SOAK_CACHE_FILL_MULTIPLE × cache.max_bytes, default 4×): a fresh proxy
whose memory store is capped at SOAK_CACHE_MB is filled with bodies of mixed sizes (1 KiB to
2 MiB) well past its cap; the store's accounted bytes (`/admin/cache/stats`) are sampled
throughout and must stay ≤ max_bytes, and the RSS growth must stay within 1.5 × max_bytes.

Prints a Markdown summary and writes it, with the raw figures as JSON, under SOAK_OUT
(default $TMPDIR/openflare-soak/: latest.md, latest.json). docs/05-threat-model.md quotes the
last full run.

    python scripts/soak.py            SOAK_SECONDS=60 python scripts/soak.py   (a short run)
    SOAK_PHASES=2 SOAK_CACHE_MB=32 python scripts/soak.py    (the cache memory phase alone)
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "e2e"))

from harness import CONFIGS_DIR, OriginProcess, ProxyProcess  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
WORKERS = int(os.environ.get("SOAK_WORKERS", "8"))
CACHE_MB = int(os.environ.get("SOAK_CACHE_MB", "64"))
FILL_MULTIPLE = float(os.environ.get("SOAK_CACHE_FILL_MULTIPLE", "4"))
PHASES = frozenset(os.environ.get("SOAK_PHASES", "1,2").replace(" ", "").split(","))
OUT = Path(os.environ.get("SOAK_OUT", str(Path(tempfile.gettempdir()) / "openflare-soak")))
RSS_GROWTH_LIMIT = 0.10
CACHE_RSS_FACTOR = 1.5
SIZES = [1024, 4096, 16_384, 65_536, 262_144, 1_048_576, 2_097_152]
SQLI = "1' UNION SELECT password FROM users--"
EXPECTED = {
    "hit": {200},
    "miss": {200},
    "api": {200},
    "waf": {403},
    "limited": {200, 429},
}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Tally:
    requests: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    purges: int = 0
    reloads: Counter[str] = field(default_factory=Counter)

    def error(self, text: str) -> None:
        """A connection error or an answer the request kind should never get."""
        self.error_count += 1
        if len(self.errors) < 50:
            self.errors.append(text)


class Phase1:
    def __init__(self, proxy: ProxyProcess, tally: Tally) -> None:
        self.proxy = proxy
        self.tally = tally
        self.running = asyncio.Event()  # set while the load runs; cleared to pause
        self.stop = False
        self.idle_workers = 0

    def pick(self, rng: random.Random) -> tuple[str, str]:
        roll = rng.random()
        if roll < 0.40:
            return "hit", rng.choice(["/static/app.js", "/static/style.css", "/cache/public-long"])
        if roll < 0.65:
            size = rng.choice(SIZES[:5])
            return "miss", f"/cache/custom?cc=public,%20max-age%3D30&size={size}&u={rng.random()}"
        if roll < 0.80:
            return "api", "/api/time"
        if roll < 0.90:
            return "waf", f"/search?q={SQLI}&n={rng.randrange(1000)}"
        return "limited", f"/path-test/soak-limited/{rng.randrange(4)}"

    async def worker(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop:
            self.idle_workers += 1
            await self.running.wait()
            self.idle_workers -= 1
            if self.stop:
                return
            headers = {"Host": "127.0.0.1"}
            async with aiohttp.ClientSession(headers=headers) as session:
                while self.running.is_set() and not self.stop:
                    kind, path = self.pick(rng)
                    try:
                        async with session.get(self.proxy.url + path) as response:
                            await response.read()
                            status = response.status
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        self.tally.by_status["connection error"] += 1
                        self.tally.error(f"{kind} {path[:60]}: {exc!r}")
                        continue
                    self.tally.requests += 1
                    self.tally.by_kind[kind] += 1
                    self.tally.by_status[str(status)] += 1
                    if status not in EXPECTED[kind]:
                        self.tally.error(f"{kind} {path[:60]}: HTTP {status}")

    async def admin_loop(self) -> None:
        headers = {"Authorization": f"Bearer {self.proxy.token}"}
        config = self.proxy.config_path
        original = config.read_text()
        tick = 0
        async with aiohttp.ClientSession(base_url=self.proxy.admin_url, headers=headers) as admin:
            while not self.stop:
                await asyncio.sleep(2)
                if not self.running.is_set():
                    continue
                tick += 1
                body: dict[str, Any]
                kind = tick % 3
                if kind == 0:
                    endpoint, body = (
                        "/admin/cache/purge-prefix",
                        {"prefix": "http://127.0.0.1/cache/"},
                    )
                elif kind == 1:
                    endpoint, body = "/admin/cache/purge", {"url": "http://127.0.0.1/static/app.js"}
                else:
                    endpoint, body = "/admin/cache/purge-all", {}
                async with admin.post(endpoint, json=body) as response:
                    if response.status != 200:
                        self.tally.error(f"purge {endpoint}: HTTP {response.status}")
                    self.tally.purges += 1
                if tick % 5 == 0:  # every 10 s: a config change, then a reload
                    config.write_text(original + f"\n# soak reload {tick}\n")
                    if tick % 10 == 0:
                        self.proxy.signal(signal.SIGHUP)
                        self.tally.reloads["sighup"] += 1
                    else:
                        async with admin.post("/admin/config/reload") as response:
                            result = (await response.json())["result"]
                            self.tally.reloads[result] += 1
                            if result != "ok":
                                self.tally.error(f"reload: {result}")

    async def quiesced(self) -> tuple[int, int]:
        """(RSS KiB, open fds) with the load paused and every client connection closed."""
        self.running.clear()
        while self.idle_workers < WORKERS:  # noqa: ASYNC110 (a count, not an event)
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # the proxy notices the closed connections
        reading = rss_kib(self.proxy.pid), open_fds(self.proxy.pid)
        self.running.set()
        return reading


async def phase1(workdir: Path, origin: OriginProcess) -> dict[str, Any]:
    rate_limits = yaml.safe_load((CONFIGS_DIR / "rate-limit.test.yaml").read_text())
    rate_limits["rules"].append(
        {
            "id": "soak-limited",
            "key": "ip",
            "path_prefix": "/path-test/soak-limited/",
            "rate": 20,
            "burst": 20,
        }
    )
    rl_path = workdir / "rate-limit.soak.yaml"
    rl_path.write_text(yaml.safe_dump(rate_limits, sort_keys=False))
    proxy = ProxyProcess(
        workdir,
        origin_url=origin.url,
        token=secrets.token_hex(16),
        overrides={
            "cache": {"max_bytes": CACHE_MB * 1024 * 1024, "max_entries": 20_000},
            "rule_files": {"rate_limit": str(rl_path)},
            "logging": {"access_log": False},  # a 10-minute access log is not the point
        },
        name="soak-proxy",
    )
    proxy.start_and_wait()
    tally = Tally()
    run = Phase1(proxy, tally)
    try:
        workers = [asyncio.create_task(run.worker(i)) for i in range(WORKERS)]
        admin = asyncio.create_task(run.admin_loop())
        started = time.monotonic()
        first = rss_kib(proxy.pid), open_fds(proxy.pid)
        run.running.set()
        warmup = max(20.0, SECONDS * 0.1)
        await asyncio.sleep(warmup)
        warm = await run.quiesced()
        samples = [(round(time.monotonic() - started), warm[0], warm[1])]
        requests_at_warm = tally.requests
        while time.monotonic() - started < SECONDS:
            await asyncio.sleep(min(30.0, max(0.0, SECONDS - (time.monotonic() - started))))
            samples.append(
                (round(time.monotonic() - started), rss_kib(proxy.pid), open_fds(proxy.pid))
            )
        end = await run.quiesced()
        run.stop = True
        run.running.set()
        await asyncio.gather(*workers, admin, return_exceptions=True)
        elapsed = time.monotonic() - started
        alive = proxy.alive()
    finally:
        proxy.stop()
    growth = (end[0] - warm[0]) / warm[0]
    return {
        "seconds": round(elapsed),
        "workers": WORKERS,
        "requests": tally.requests,
        "requests_after_warmup": tally.requests - requests_at_warm,
        "rps": round(tally.requests / elapsed),
        "by_kind": dict(tally.by_kind),
        "by_status": dict(tally.by_status),
        "errors": tally.error_count,
        "error_samples": tally.errors[:10],
        "purges": tally.purges,
        "reloads": dict(tally.reloads),
        "rss_kib": {"start": first[0], "after_warmup": warm[0], "end": end[0]},
        "fds": {"start": first[1], "after_warmup": warm[1], "end": end[1]},
        "rss_growth_after_warmup": round(growth, 4),
        "samples": samples,
        "alive": alive,
        "pass": alive and growth < RSS_GROWTH_LIMIT and end[1] <= warm[1] and not tally.errors,
    }


async def phase2(workdir: Path, origin: OriginProcess) -> dict[str, Any]:
    max_bytes = CACHE_MB * 1024 * 1024
    proxy = ProxyProcess(
        workdir,
        origin_url=origin.url,
        token=secrets.token_hex(16),
        overrides={
            "cache": {
                "max_bytes": max_bytes,
                "max_entries": 1_000_000,
                "max_object_bytes": 4 * 1024 * 1024,
            },
            "rule_files": {"rate_limit": None},
            "logging": {"access_log": False},
        },
        name="soak-cache-proxy",
    )
    proxy.start_and_wait()
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {proxy.token}"}
    accounted_max = 0
    stats: dict[str, Any] = {}
    filled = 0
    try:
        async with (
            aiohttp.ClientSession(headers={"Host": "127.0.0.1"}) as public,
            aiohttp.ClientSession(headers=headers) as admin,
        ):
            for _ in range(3):  # warm-up through the pass-through path, nothing stored
                async with public.get(proxy.url + "/api/time") as r:
                    await r.read()
            start = rss_kib(proxy.pid)
            queue: asyncio.Queue[int] = asyncio.Queue()
            target = int(max_bytes * FILL_MULTIPLE)
            total = 0
            index = 0
            while total < target:
                size = rng.choice(SIZES)
                queue.put_nowait(size)
                total += size
                index += 1

            async def fill(worker: int) -> None:
                nonlocal filled
                while not queue.empty():
                    size = queue.get_nowait()
                    query = f"cc=public,%20max-age%3D600&size={size}&u={worker}-{queue.qsize()}"
                    url = f"{proxy.url}/cache/custom?{query}"
                    async with public.get(url) as response:
                        body = await response.read()
                        assert response.status == 200 and len(body) == size
                    filled += size

            async def sample() -> None:
                nonlocal accounted_max, stats
                while not queue.empty():
                    async with admin.get(proxy.admin_url + "/admin/cache/stats") as response:
                        stats = await response.json()
                    accounted_max = max(accounted_max, int(stats["size_bytes"]))
                    await asyncio.sleep(0.2)

            started = time.monotonic()
            await asyncio.gather(*(fill(i) for i in range(8)), sample())
            async with admin.get(proxy.admin_url + "/admin/cache/stats") as response:
                stats = await response.json()
            accounted_max = max(accounted_max, int(stats["size_bytes"]))
            await asyncio.sleep(1)
            end = rss_kib(proxy.pid)
            elapsed = time.monotonic() - started
    finally:
        proxy.stop()
    growth_bytes = (end - start) * 1024
    return {
        "max_bytes": max_bytes,
        "filled_bytes": filled,
        "seconds": round(elapsed, 1),
        "entries_end": stats.get("entries"),
        "evictions": stats.get("evictions"),
        "accounted_bytes_max": accounted_max,
        "accounted_bytes_end": stats.get("size_bytes"),
        "rss_kib": {"start": start, "end": end},
        "rss_growth_bytes": growth_bytes,
        "rss_growth_over_max_bytes": round(growth_bytes / max_bytes, 3),
        "pass": accounted_max <= max_bytes and growth_bytes <= CACHE_RSS_FACTOR * max_bytes,
    }


def summary(one: dict[str, Any] | None, two: dict[str, Any] | None) -> str:
    head = [
        f"Soak run {time.strftime('%Y-%m-%d')} ({platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}):",
    ]
    return "\n".join(
        head + summary_one(one) + summary_two(two)  # each empty when its phase did not run
    )


def summary_one(one: dict[str, Any] | None) -> list[str]:
    if one is None:
        return []
    rss, fds = one["rss_kib"], one["fds"]
    return [
        "",
        "| Phase 1: mixed traffic | |",
        "|---|---|",
        f"| duration, clients | {one['seconds']} s, {one['workers']} keep-alive clients |",
        f"| requests served | {one['requests']} ({one['rps']}/s): "
        + ", ".join(f"{k} {v}" for k, v in sorted(one["by_kind"].items()))
        + " |",
        "| statuses | "
        + ", ".join(f"{k}: {v}" for k, v in sorted(one["by_status"].items()))
        + " |",
        f"| purges, reloads | {one['purges']}, "
        + ", ".join(f"{k} {v}" for k, v in sorted(one["reloads"].items()))
        + " |",
        f"| errors | {one['errors']} |",
        f"| RSS start / after warm-up / end | {rss['start'] // 1024} / "
        f"{rss['after_warmup'] // 1024} / {rss['end'] // 1024} MiB "
        f"({one['rss_growth_after_warmup']:+.1%} after warm-up; limit +10 %) |",
        f"| open fds start / after warm-up / end | {fds['start']} / {fds['after_warmup']} / "
        f"{fds['end']} |",
        f"| result | {'pass' if one['pass'] else 'FAIL'} |",
    ]


def summary_two(two: dict[str, Any] | None) -> list[str]:
    if two is None:
        return []
    return [
        "",
        "| Phase 2: cache memory | |",
        "|---|---|",
        f"| cache.max_bytes | {two['max_bytes'] // 1048576} MiB |",
        f"| bodies stored (1 KiB–2 MiB) | {two['filled_bytes'] // 1048576} MiB in "
        f"{two['seconds']} s; {two['evictions']} evictions, "
        f"{two['entries_end']} entries left |",
        f"| accounted bytes, highest seen | {two['accounted_bytes_max']} (≤ {two['max_bytes']}) |",
        f"| RSS growth | {two['rss_growth_bytes'] // 1048576} MiB = "
        f"{two['rss_growth_over_max_bytes']} × max_bytes (limit 1.5 ×) |",
        f"| result | {'pass' if two['pass'] else 'FAIL'} |",
    ]


async def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before anything runs)
    workdir = Path(tempfile.mkdtemp(prefix="openflare-soak-"))
    origin = OriginProcess(workdir)
    origin.start_and_wait()
    one = two = None
    try:
        if "1" in PHASES:
            print(
                f"soak: phase 1, {SECONDS:.0f} s of mixed traffic ({WORKERS} clients)", flush=True
            )
            one = await phase1(workdir, origin)
        if "2" in PHASES:
            print(f"soak: phase 2, cache memory ({CACHE_MB} MiB)", flush=True)
            two = await phase2(workdir, origin)
    finally:
        origin.stop()
    text = summary(one, two)
    print(text)
    (OUT / "latest.md").write_text(text + "\n")
    (OUT / "latest.json").write_text(json.dumps({"phase1": one, "phase2": two}, indent=2))
    return 0 if all(phase["pass"] for phase in (one, two) if phase is not None) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
