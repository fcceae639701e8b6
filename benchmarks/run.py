"""`make bench`: nginx, the Python ceiling and OpenFlare under the same load, in one run.

Every round runs every scenario once, in the same order, so slow drifts of a shared machine hit
all servers alike; ratios are taken within a round and reported as their median. Every run is
checked: no wrk errors, the right bytes, HIT runs never reach the origin and pass-through runs
always do (the origin's own request counter). A run that fails a check is marked in the table
and left out of the ratios.

    python -m benchmarks.run            # BENCH_ROUNDS=3 BENCH_SECONDS=8 (about 6 minutes)
    python -m benchmarks.run --quick    # 1 round × 2 s, smoke run (< 60 s)

Environment: BENCH_ROUNDS, BENCH_SECONDS, BENCH_WARMUP (s), BENCH_CONNECTIONS (64),
BENCH_MEMORY_ENTRIES (10000; 0 skips the memory check), BENCH_MICRO (1; 0 skips the cost per
stage), BENCH_ONLY (comma-separated scenario keys), BENCH_KEEP=1 (keep the temp dir),
BENCH_UPDATE_DOCS (1 for full runs: copy the table into docs/12-performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.common import (
    BENCH_DIR,
    CLK_TCK,
    DOC,
    RAW,
    CoreTimes,
    Managed,
    Pinning,
    core_busy,
    core_times,
    env_float,
    env_int,
    log,
    machine_description,
    origin_requests_between,
    probe,
    process_ticks,
    require_tool,
    settle_origin,
    stub_requests,
)
from benchmarks.loadgen import run_wrk, save_output
from benchmarks.memory import memory_check
from benchmarks.servers import (
    Ceiling,
    OpenFlare,
    OpenFlareLaunch,
    RedisServer,
    redis_overrides,
    redis_rate_limit,
    start_ceiling,
    start_origin,
    start_peer,
    start_redis,
)

# wrk + origin using this much of their core: the figure may be bound by the load generator
LOADGEN_BOUND_PCT = 90.0
CLIENT_BOUND_NOTE = "load generator saturated (wrk + origin ≥ 90 % of their core): client-bound"


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    # peer-cache | peer-pass | ceiling | proxy-session | proxy-lean | of | of-full | of-redis |
    # of-full-redis
    server: str
    path: str
    size: str  # 1k | 64k
    origin: str  # none: must never reach the origin; all: every request must
    hit: str = ""  # nginx | openflare: prove a HIT before the run
    redis_per_request: int = 0  # Redis round trips each request needs (0: no Redis)
    script: str = ""  # a wrk Lua script of benchmarks/wrk/ that shapes each request


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "nginx-hit-1k", "nginx cache HIT, 1 KB", "peer-cache", "/1k.bin", "1k", "none", "nginx"
    ),
    Scenario(
        "nginx-pass-1k", "nginx pass-through, 1 KB", "peer-pass", "/nostore/1k.bin", "1k", "all"
    ),
    Scenario("ceiling-1k", "aiohttp ceiling, 1 KB", "ceiling", "/1k.bin", "1k", "none"),
    Scenario("of-hit-1k", "OpenFlare cache HIT, 1 KB", "of", "/1k.bin", "1k", "none", "openflare"),
    Scenario(
        "of-full-hit-1k",
        "OpenFlare HIT + WAF + rate limit, 1 KB",
        "of-full",
        "/1k.bin",
        "1k",
        "none",
        "openflare",
    ),
    # the same, but no two requests alike to the WAF: its memos only help real repeats
    Scenario(
        "of-full-new-1k",
        "OpenFlare HIT + WAF + rate limit, each request new to the WAF, 1 KB",
        "of-full",
        "/1k.bin",
        "1k",
        "none",
        "openflare",
        script="new_header_each.lua",
    ),
    # what a replica pays for sharing its cache and limits (docs/12 "Scaling past one core"): a
    # HIT without Vary reads the entry's Vary list and the entry in one MGET, a rate-limit
    # decision is one script call; right after their memory-store twins, so a round's drift hits
    # both alike
    Scenario(
        "of-redis-hit-1k",
        "OpenFlare cache HIT, Redis store, 1 KB",
        "of-redis",
        "/1k.bin",
        "1k",
        "none",
        "openflare",
        redis_per_request=1,
    ),
    Scenario(
        "of-redis-full-hit-1k",
        "OpenFlare HIT + WAF + RL, Redis cache + limits, 1 KB",
        "of-full-redis",
        "/1k.bin",
        "1k",
        "none",
        "openflare",
        redis_per_request=3,
    ),
    Scenario(
        "of-pass-1k",
        "OpenFlare pass-through (no-store), 1 KB",
        "of",
        "/nostore/1k.bin",
        "1k",
        "all",
    ),
    Scenario(
        "proxy-session-pass-1k",
        "minimal aiohttp proxy (ClientSession), 1 KB",
        "proxy-session",
        "/nostore/1k.bin",
        "1k",
        "all",
    ),
    Scenario(
        "proxy-lean-pass-1k",
        "minimal aiohttp proxy (lean client), 1 KB",
        "proxy-lean",
        "/nostore/1k.bin",
        "1k",
        "all",
    ),
    Scenario(
        "nginx-hit-64k", "nginx cache HIT, 64 KB", "peer-cache", "/64k.bin", "64k", "none", "nginx"
    ),
    Scenario("ceiling-64k", "aiohttp ceiling, 64 KB", "ceiling", "/64k.bin", "64k", "none"),
    Scenario(
        "of-hit-64k", "OpenFlare cache HIT, 64 KB", "of", "/64k.bin", "64k", "none", "openflare"
    ),
    Scenario(
        "nginx-pass-64k", "nginx pass-through, 64 KB", "peer-pass", "/nostore/64k.bin", "64k", "all"
    ),
    Scenario(
        "of-pass-64k",
        "OpenFlare pass-through (no-store), 64 KB",
        "of",
        "/nostore/64k.bin",
        "64k",
        "all",
    ),
)

# (label, numerator, denominator, target or None)
RATIOS: tuple[tuple[str, str, str, float | None], ...] = (
    ("OpenFlare HIT + WAF + RL / ceiling, 1 KB", "of-full-hit-1k", "ceiling-1k", 0.75),
    ("OpenFlare HIT / ceiling, 1 KB", "of-hit-1k", "ceiling-1k", None),
    (
        "OpenFlare HIT + WAF + RL, each request new to the WAF / ceiling, 1 KB",
        "of-full-new-1k",
        "ceiling-1k",
        None,
    ),
    ("OpenFlare pass-through / ceiling, 1 KB", "of-pass-1k", "ceiling-1k", 0.45),
    (
        "minimal proxy, lean client / ceiling, 1 KB (no pipeline)",
        "proxy-lean-pass-1k",
        "ceiling-1k",
        None,
    ),
    (
        "minimal proxy, ClientSession / ceiling, 1 KB (no pipeline)",
        "proxy-session-pass-1k",
        "ceiling-1k",
        None,
    ),
    (
        "OpenFlare pass-through / minimal proxy, lean client, 1 KB",
        "of-pass-1k",
        "proxy-lean-pass-1k",
        None,
    ),
    ("OpenFlare HIT / nginx HIT, 64 KB", "of-hit-64k", "nginx-hit-64k", 0.75),
    ("OpenFlare HIT / nginx HIT, 1 KB", "of-hit-1k", "nginx-hit-1k", None),
    ("OpenFlare HIT + WAF + RL / nginx HIT, 1 KB", "of-full-hit-1k", "nginx-hit-1k", None),
    ("OpenFlare pass-through / nginx pass-through, 1 KB", "of-pass-1k", "nginx-pass-1k", None),
    ("OpenFlare HIT / ceiling, 64 KB", "of-hit-64k", "ceiling-64k", None),
    ("OpenFlare pass-through / nginx pass-through, 64 KB", "of-pass-64k", "nginx-pass-64k", None),
    ("ceiling / nginx HIT, 1 KB", "ceiling-1k", "nginx-hit-1k", None),
    ("OpenFlare HIT, Redis store / memory store, 1 KB", "of-redis-hit-1k", "of-hit-1k", None),
    (
        "OpenFlare HIT + WAF + RL, Redis cache + limits / memory, 1 KB",
        "of-redis-full-hit-1k",
        "of-full-hit-1k",
        None,
    ),
)
# the Python references (benchmarks/ceiling.py): (name, a proxy to the origin, its client)
REFERENCE_SERVERS = (
    ("ceiling", False, ""),
    ("proxy-session", True, "session"),
    ("proxy-lean", True, "lean"),
)
# OpenFlare processes: (name, WAF and rate limiting on, cache and limits in Redis)
OPENFLARE_SERVERS = (
    ("of", False, False),
    ("of-full", True, False),
    ("of-redis", False, True),
    ("of-full-redis", True, True),
)


@dataclass
class Settings:
    rounds: int
    seconds: float
    warmup: float
    connections: int
    memory_entries: int
    micro: bool
    quick: bool
    update_docs: bool
    only: tuple[str, ...]
    keep: bool

    @classmethod
    def from_env(cls, quick: bool, no_docs: bool) -> Settings:
        only = tuple(s for s in os.environ.get("BENCH_ONLY", "").split(",") if s.strip())
        return cls(
            rounds=env_int("BENCH_ROUNDS", 1 if quick else 3),
            seconds=env_float("BENCH_SECONDS", 2 if quick else 8),
            warmup=env_float("BENCH_WARMUP", 0 if quick else 1),
            connections=env_int("BENCH_CONNECTIONS", 64),
            memory_entries=env_int("BENCH_MEMORY_ENTRIES", 500 if quick else 10_000),
            micro=bool(env_int("BENCH_MICRO", 0 if quick else 1)),
            quick=quick,
            update_docs=not no_docs and bool(env_int("BENCH_UPDATE_DOCS", 0 if quick else 1)),
            only=only,
            keep=bool(env_int("BENCH_KEEP", 0)),
        )


@dataclass
class RunResult:
    scenario: str
    round: int
    rps: float
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_pct: float
    server_cpu_us_per_req: float  # CPU time of the server per answered request
    loadgen_cpu_pct: float  # wrk + origin, % of one core
    server_core_pct: float
    other_load_pct: float  # % of a core used on our cores by processes not ours
    origin_requests: int
    errors: dict[str, int]
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    redis_per_request: float | None = None  # Redis commands per answered request
    redis_cpu_us_per_req: float | None = None  # redis-server's CPU time per answered request

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class Snapshot:
    """Counters read just before and just after a timed run."""

    wall: float
    cores: CoreTimes
    server_ticks: int
    origin_ticks: int
    own_cpu: float  # this harness, seconds
    wrk_cpu: float  # waited-for children of this harness (wrk), seconds
    origin_count: int
    redis_ticks: int  # 0 without Redis
    redis_commands: int

    @classmethod
    def take(
        cls, server: Managed, origin: Managed, origin_port: int, redis: RedisServer | None
    ) -> Snapshot:
        count = stub_requests(origin_port)
        commands = redis_ticks = 0
        if redis is not None:
            with redis.client() as client:
                commands = int(client.info("stats")["total_commands_processed"])
            redis_ticks = process_ticks(redis.process.pid)
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            wall=time.monotonic(),
            cores=core_times(),
            server_ticks=server.cpu_ticks(),
            origin_ticks=origin.cpu_ticks(),
            own_cpu=me.ru_utime + me.ru_stime,
            wrk_cpu=kids.ru_utime + kids.ru_stime,
            origin_count=count,
            redis_ticks=redis_ticks,
            redis_commands=commands,
        )


class Bench:
    def __init__(self, settings: Settings, workdir: Path, pinning: Pinning) -> None:
        self.settings = settings
        self.workdir = workdir
        self.pinning = pinning
        self.processes: list[Managed] = []
        self.openflare: dict[str, OpenFlare] = {}
        self.ports: dict[str, int] = {}
        self.cpu_of: dict[str, Managed] = {}
        self.logs_of: dict[str, list[Path]] = {}
        self.scenarios = [s for s in SCENARIOS if not settings.only or s.key in settings.only]
        self.redis: RedisServer | None = None

    # --- processes -------------------------------------------------------------------------

    def start(self) -> None:
        """Start every process at once (they import and compile in parallel), then wait."""
        workdir, pinning = self.workdir, self.pinning
        wanted = {s.server for s in self.scenarios}
        self.origin = start_origin(workdir, pinning, wait=False)
        self.processes.append(self.origin.process)
        peer = None
        if wanted & {"peer-cache", "peer-pass"}:
            peer = start_peer(workdir, pinning, self.origin.port, wait=False)
            self.processes.append(peer.process)
        references: dict[str, Ceiling] = {}  # the ceiling and the minimal proxies
        for name, proxies, client in REFERENCE_SERVERS:
            if name in wanted:
                references[name] = start_ceiling(
                    workdir,
                    pinning,
                    wait=False,
                    name=name,
                    origin_port=self.origin.port if proxies else None,
                    client=client,
                )
                self.processes.append(references[name].process)
        if any(s.redis_per_request for s in self.scenarios):
            self.redis = start_redis(workdir, pinning)
            log(f"redis-server on port {self.redis.port}")
        launches: list[OpenFlareLaunch] = []
        for name, full, shared in OPENFLARE_SERVERS:
            if name not in wanted:
                continue
            launch = OpenFlareLaunch(name, workdir, pinning, self.origin.port, full, full, None)
            if shared:
                assert self.redis is not None
                launch.overrides = redis_overrides(name, self.redis.url)
                launch.rate_limit_file = redis_rate_limit(workdir, name, self.redis.url)
            launch.launch()
            launches.append(launch)
        self.origin.process.wait_port(self.origin.port)
        log(f"origin nginx on port {self.origin.port}")
        if peer is not None:
            peer.process.wait_port(peer.cache_port)
            peer.process.wait_port(peer.pass_port)
            self.ports["peer-cache"], self.ports["peer-pass"] = peer.cache_port, peer.pass_port
            for key in ("peer-cache", "peer-pass"):
                self.cpu_of[key] = peer.process
                self.logs_of[key] = [peer.access_log]
            log(f"nginx peer: cache port {peer.cache_port}, pass port {peer.pass_port}")
        for name, reference in references.items():
            reference.process.wait_port(reference.port)
            self.ports[name] = reference.port
            self.cpu_of[name] = reference.process
            self.logs_of[name] = []
            log(f"{name} on port {reference.port}")
        for launch in launches:
            try:
                instance = launch.wait_ready()
            finally:
                if launch.process is not None:
                    self.processes.append(launch.process)
            self.openflare[instance.name] = instance
            self.ports[instance.name] = instance.port
            self.cpu_of[instance.name] = instance.process
            self.logs_of[instance.name] = [instance.process.stdout_path]

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        if self.redis is not None:
            self.redis.stop()

    # --- one run ---------------------------------------------------------------------------

    def _check_bytes(self, scenario: Scenario, failures: list[str]) -> None:
        port = self.ports[scenario.server]
        expected = self.origin.files[scenario.size]
        hit = False
        for _ in range(5):
            answer = probe(port, scenario.path)
            if answer.status != 200 or answer.body != expected:
                failures.append(
                    f"probe: status {answer.status}, {len(answer.body)} bytes "
                    f"(expected 200 and the origin's {len(expected)} bytes)"
                )
                return
            if scenario.hit == "nginx":
                hit = answer.headers.get("x-cache-status") == "HIT"
            elif scenario.hit == "openflare":
                # RFC 9211: `Cache-Status: OpenFlare; hit; ttl=3599`
                params = answer.headers.get("cache-status", "").split(";")
                hit = "hit" in (p.strip() for p in params[1:])
            else:
                return
            if hit:
                return
        failures.append("probe: never answered from the cache")

    def run_one(self, scenario: Scenario, round_no: int) -> RunResult:
        s = self.settings
        port = self.ports[scenario.server]
        url = f"http://127.0.0.1:{port}{scenario.path}"
        failures: list[str] = []
        notes: list[str] = []
        self._check_bytes(scenario, failures)
        if s.warmup >= 1:
            run_wrk(self.pinning, url, seconds=s.warmup, connections=s.connections, report=False)
        if not settle_origin(self.origin.port):
            notes.append("the origin was still getting requests from an earlier run")
        server = self.cpu_of[scenario.server]
        before = Snapshot.take(server, self.origin.process, self.origin.port, self.redis)
        result = run_wrk(
            self.pinning, url, seconds=s.seconds, connections=s.connections, script=scenario.script
        )
        after = Snapshot.take(server, self.origin.process, self.origin.port, self.redis)
        wall = after.wall - before.wall
        server_cpu = (after.server_ticks - before.server_ticks) / CLK_TCK
        origin = origin_requests_between(before.origin_count, after.origin_count)
        redis_cpu = (after.redis_ticks - before.redis_ticks) / CLK_TCK
        # CPU on our cores that none of our processes used: other work on a shared machine
        ours = (
            (after.server_ticks - before.server_ticks + after.origin_ticks - before.origin_ticks)
            / CLK_TCK
            + redis_cpu
            + after.own_cpu
            - before.own_cpu
            + after.wrk_cpu
            - before.wrk_cpu
        )
        cores = [c for c in (self.pinning.loadgen, self.pinning.server) if c is not None] or list(
            after.cores
        )
        busy = sum(after.cores[c][0] - before.cores[c][0] for c in cores) / CLK_TCK
        foreign = max(0.0, busy - ours) / wall * 100
        save_output(RAW / "wrk" / f"r{round_no}-{scenario.key}.txt", result)

        if not server.alive():
            failures.append("server exited during the run")
        if result.requests == 0:
            failures.append("no request completed")
        if result.error_count:
            errors = ", ".join(f"{k} {v}" for k, v in result.errors.items() if v)
            failures.append(f"wrk errors: {errors}")
        if scenario.origin == "none" and origin != 0:
            failures.append(f"reached the origin {origin} times (must be 0)")
        if scenario.origin == "all":
            if origin < 0.95 * result.requests:
                failures.append(
                    f"origin saw {origin} requests for {result.requests} answered (must be all)"
                )
            elif origin > 1.05 * result.requests + 2 * s.connections:
                notes.append(f"origin saw {origin} requests for {result.requests} answered")
        redis_per_request = redis_cpu_us = None
        if scenario.redis_per_request and result.requests:
            # the two INFO readings are commands too
            commands = after.redis_commands - before.redis_commands - 1
            redis_per_request = commands / result.requests
            redis_cpu_us = redis_cpu / result.requests * 1e6
            if redis_per_request < 0.95 * scenario.redis_per_request:
                failures.append(
                    f"Redis ran {commands} commands for {result.requests} requests (must be "
                    f"{scenario.redis_per_request} a request: a backend failing open?)"
                )
        if scenario.server in self.openflare:
            lines = self._access_lines(scenario.server)
            if lines < 0.9 * result.requests:
                notes.append(f"access log: {lines} lines for {result.requests} requests")
        for path in self.logs_of[scenario.server]:
            if path.exists():
                os.truncate(path, 0)  # opened with O_APPEND by the server: safe
        # everything on the load generator's core: wrk, the origin and Redis
        loadgen = (
            100.0
            * (
                (after.origin_ticks - before.origin_ticks) / CLK_TCK
                + after.wrk_cpu
                - before.wrk_cpu
                + redis_cpu
            )
            / wall
        )
        if loadgen >= LOADGEN_BOUND_PCT:
            notes.append(CLIENT_BOUND_NOTE)
        return RunResult(
            scenario=scenario.key,
            round=round_no,
            rps=result.rps,
            requests=result.requests,
            p50_ms=result.p50_ms,
            p90_ms=result.p90_ms,
            p99_ms=result.p99_ms,
            max_ms=result.max_ms,
            server_cpu_pct=100.0 * server_cpu / wall,
            server_cpu_us_per_req=server_cpu / result.requests * 1e6 if result.requests else 0.0,
            loadgen_cpu_pct=loadgen,
            server_core_pct=core_busy(before.cores, after.cores, self.pinning.server or 0),
            other_load_pct=foreign,
            origin_requests=origin,
            errors=result.errors,
            failures=failures,
            notes=notes,
            redis_per_request=redis_per_request,
            redis_cpu_us_per_req=redis_cpu_us,
        )

    def _access_lines(self, server: str) -> int:
        path = self.openflare[server].process.stdout_path
        time.sleep(0.1)  # the log thread writes every 50 ms
        with path.open("rb") as handle:
            return handle.read().count(b'"event":"access"')

    # --- the whole run -----------------------------------------------------------------------

    def run_rounds(self) -> list[RunResult]:
        results: list[RunResult] = []
        for round_no in range(1, self.settings.rounds + 1):
            for scenario in self.scenarios:
                outcome = self.run_one(scenario, round_no)
                results.append(outcome)
                flag = "ok" if outcome.ok else "FAILED: " + "; ".join(outcome.failures)
                log(
                    f"round {round_no}/{self.settings.rounds} {scenario.key:16s} "
                    f"{outcome.rps:9.0f} req/s  p50 {outcome.p50_ms:6.2f} ms  "
                    f"p99 {outcome.p99_ms:6.2f} ms  cpu {outcome.server_cpu_pct:5.1f}% "
                    f"({outcome.server_cpu_us_per_req:5.0f} µs/req)  "
                    f"other {outcome.other_load_pct:4.0f}%  "
                    f"origin {outcome.origin_requests:7d}  {flag}"
                )
        return results


def summarize(results: list[RunResult], scenarios: list[Scenario]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for scenario in scenarios:
        runs = [r for r in results if r.scenario == scenario.key]
        good = [r for r in runs if r.ok] or runs
        rows.append(
            {
                "key": scenario.key,
                "label": scenario.label,
                "server": scenario.server,
                "rps": statistics.median(r.rps for r in good),
                "rps_min": min(r.rps for r in good),
                "rps_max": max(r.rps for r in good),
                "rps_rounds": [r.rps for r in runs],
                "p50_ms": statistics.median(r.p50_ms for r in good),
                "p99_ms": statistics.median(r.p99_ms for r in good),
                "server_cpu_pct": statistics.median(r.server_cpu_pct for r in good),
                "cpu_us_per_req": statistics.median(r.server_cpu_us_per_req for r in good),
                "loadgen_cpu_pct": statistics.median(r.loadgen_cpu_pct for r in good),
                "other_load_pct": statistics.median(r.other_load_pct for r in good),
                "origin_per_run": statistics.median(r.origin_requests for r in runs),
                "origin_expect": scenario.origin,
                "failed_rounds": [r.round for r in runs if not r.ok],
                "failures": sorted({f for r in runs for f in r.failures}),
                "notes": [
                    f"{note} (round {', '.join(str(r.round) for r in runs if note in r.notes)})"
                    for note in dict.fromkeys(n for r in runs for n in r.notes)
                ],
                "rounds": len(runs),
                "redis_per_request": _median_of(r.redis_per_request for r in good),
                "redis_cpu_us_per_req": _median_of(r.redis_cpu_us_per_req for r in good),
            }
        )
    return rows


def _median_of(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratios(results: list[RunResult], rounds: int) -> list[dict[str, Any]]:
    """Per round: req/s of the numerator over req/s of the denominator, and the same from CPU
    time per request (denominator's µs/req over numerator's: what the ratio of req/s would be
    if both servers had a whole core to themselves). Reported as medians over the rounds."""
    by_key = {(r.scenario, r.round): r for r in results}
    out: list[dict[str, Any]] = []
    for label, top, bottom, target in RATIOS:
        per_round: list[float] = []
        cpu_per_round: list[float] = []
        skipped = 0
        for round_no in range(1, rounds + 1):
            a, b = by_key.get((top, round_no)), by_key.get((bottom, round_no))
            if a is None or b is None:
                continue
            if not (a.ok and b.ok) or b.rps <= 0:
                skipped += 1
                continue
            per_round.append(a.rps / b.rps)
            if a.server_cpu_us_per_req > 0:
                cpu_per_round.append(b.server_cpu_us_per_req / a.server_cpu_us_per_req)
        if not per_round and not skipped:
            continue
        median = statistics.median(per_round) if per_round else float("nan")
        out.append(
            {
                "label": label,
                "numerator": top,
                "denominator": bottom,
                "median": median,
                "per_round": per_round,
                "cpu_median": statistics.median(cpu_per_round) if cpu_per_round else float("nan"),
                "cpu_per_round": cpu_per_round,
                "skipped_rounds": skipped,
                "target": target,
                "met": (median >= target) if target is not None and per_round else None,
            }
        )
    return out


def run_micro(pinning: Pinning, quick: bool) -> dict[str, Any] | None:
    out = RAW / "micro.json"
    argv = [sys.executable, "-m", "benchmarks.micro", "--json", str(out)]
    if quick:
        argv.append("--quick")
    log("cost per stage (benchmarks/micro.py)")
    result = subprocess.run(
        pinning.wrap(argv, "server"), cwd=BENCH_DIR.parent, timeout=600, check=False
    )
    if result.returncode != 0 or not out.exists():
        log(f"micro-benchmark failed (exit {result.returncode})")
        return None
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description="OpenFlare benchmark harness")
    parser.add_argument("--quick", action="store_true", help="1 round × 2 s smoke run")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/12-performance.md")
    args = parser.parse_args()
    settings = Settings.from_env(args.quick, args.no_docs)
    require_tool("wrk")
    require_tool("nginx")
    pinning = Pinning.plan()
    pinning.pin_self()
    RAW.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    workdir = Path(tempfile.mkdtemp(prefix="openflare-bench-"))
    bench = Bench(settings, workdir, pinning)
    log(
        f"{settings.rounds} round(s) × {len(bench.scenarios)} scenarios × {settings.seconds:g} s, "
        f"{settings.connections} connections; "
        f"{pinning.note}; workdir {workdir}"
    )
    started = time.monotonic()
    memory: list[dict[str, Any]] = []
    try:
        bench.start()
        results = bench.run_rounds()
        for instance in bench.openflare.values():
            instance.process.stop()
        if settings.memory_entries > 0:
            sizes = ("1k",) if settings.quick else ("1k", "64k")
            memory = memory_check(
                workdir, pinning, bench.origin.port, settings.memory_entries, sizes
            )
    finally:
        bench.stop()
        if not settings.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    micro = run_micro(pinning, settings.quick) if settings.micro else None
    data: dict[str, Any] = {
        "stamp": stamp,
        "quick": settings.quick,
        "settings": asdict(settings),
        "machine": machine_description(),
        "pinning": pinning.note,
        "openflare": {
            name: {"stages": inst.stages, "notes": inst.notes}
            for name, inst in bench.openflare.items()
        },
        "runs": [asdict(r) for r in results],
        "summary": summarize(results, bench.scenarios),
        "ratios": ratios(results, settings.rounds),
        "memory": memory,
        "micro": micro,
        "elapsed_s": time.monotonic() - started,
    }
    suffix = "-quick" if settings.quick else ""
    (RAW / f"{stamp}{suffix}.json").write_text(json.dumps(data, indent=2))
    paths = report.write_all(data, stamp + suffix, latest=not settings.quick)
    if settings.update_docs:
        report.update_doc(data)
        paths.append(DOC)
    print()
    print(report.markdown(data, image=None))
    log(f"done in {data['elapsed_s']:.0f} s: " + ", ".join(str(p) for p in paths))
    failed = [r for r in results if not r.ok]
    if failed:
        log(f"{len(failed)} run(s) failed a sanity check (marked in the table)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
