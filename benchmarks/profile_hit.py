"""Where the time goes on the cache HIT path: a sampling profile of the proxy under load.

Starts the static origin and one OpenFlare process (by default with the WAF pack and rate
limiting on: the `of-full` scenario), stores the 1 KB file, then runs wrk against it and samples
the proxy with py-spy for `--seconds` (cProfile when py-spy is missing or not allowed to attach).
Writes the top functions by own time and by inclusive time to
benchmarks/results/profile-{full,plain}-{hit,pass}.md (raw samples under results/raw/).

    python -m benchmarks.profile_hit [--plain] [--redis] [--seconds 10] [--path /1k.bin]

`--redis` puts the cache (and, with the WAF and rate limiting on, the rate-limit buckets) in a
redis-server the script starts on the load generator's core: what a replica pays for sharing
(profile-*-redis-*.md).
"""

from __future__ import annotations

import argparse
import collections
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RAW, RESULTS, Pinning, log, probe, require_tool
from benchmarks.loadgen import REPORT_SCRIPT
from benchmarks.servers import (
    OpenFlareLaunch,
    RedisServer,
    redis_overrides,
    redis_rate_limit,
    start_origin,
    start_redis,
)

TOP = 25
# frames every sample of the event loop passes through: no information in their inclusive time
WRAPPERS = (
    "_run_module_as_main (",
    "_run_code (",
    "<module> (openflare/__main__.py)",
    "main (openflare/cli.py)",
    "run (uvloop/__init__.py)",
    "Runner.run (",
)
FRAME_RE = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def short(frame: str) -> str:
    """`handle (openflare/app.py:62)` → `handle (openflare/app.py)`, paths shortened."""
    match = FRAME_RE.match(frame.strip())
    if match is None:
        return frame.strip()
    file = match["file"]
    for marker in ("site-packages/", "/src/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{match['func']} ({file})"


def summarize_raw(
    text: str,
) -> tuple[int, int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(event-loop samples, other threads' samples, top own, top inclusive) — the tops over the
    event-loop thread, the one that serves requests."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = other = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";") if "(" in f and not f.startswith("thread ")]
        frames = [f for f in frames if not f.startswith("process ")]
        if not frames:
            continue
        if not any(f.startswith(("Runner.run (", "run (uvloop")) for f in frames):
            other += count  # the log writer thread, ...
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            if not frame.startswith(WRAPPERS):
                inclusive[frame] += count
    return total, other, own.most_common(TOP), inclusive.most_common(TOP)


def write_report(
    name: str,
    title: str,
    total: int,
    other: int,
    own: list[tuple[str, int]],
    inclusive: list[tuple[str, int]],
) -> Path:
    lines = [
        f"# {title}",
        "",
        f"{total} samples of the event-loop thread while busy (percentages below are of these);"
        f" {other} samples of other threads (the log writer). The own time of `Runner.run` is"
        " uvloop's C code: socket reads and writes, epoll, callback dispatch.",
        "",
    ]
    for heading, rows in (("Own time (the function itself)", own), ("Inclusive time", inclusive)):
        lines += [f"## {heading}", "", "| % | function |", "|---:|---|"]
        lines += [f"| {100 * n / max(total, 1):.1f} | `{name}` |" for name, n in rows]
        lines.append("")
    path = RESULTS / f"profile-{name}.md"
    path.write_text("\n".join(lines))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plain", action="store_true", help="no WAF / rate limiting")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--path", default="/1k.bin")
    parser.add_argument("--cprofile", action="store_true", help="use cProfile, not py-spy")
    parser.add_argument("--redis", action="store_true", help="cache and limits in Redis")
    args = parser.parse_args()
    pinning = Pinning.plan()
    pinning.pin_self()
    RAW.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="openflare-profile-"))
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    use_pyspy = not args.cprofile and os.access(pyspy, os.X_OK)
    origin = start_origin(workdir, pinning)
    full = not args.plain
    launch = OpenFlareLaunch("profiled", workdir, pinning, origin.port, full, full, None)
    redis: RedisServer | None = None
    cprofile_out = workdir / "cprofile.out"
    try:
        if args.redis:
            redis = start_redis(workdir, pinning)
            launch.overrides = redis_overrides(launch.name, redis.url)
            launch.rate_limit_file = redis_rate_limit(workdir, launch.name, redis.url)
        launch.launch()
        if not use_pyspy:  # restart the same config under cProfile
            assert launch.process is not None
            launch.wait_ready().process.stop()
            argv = launch.process.argv
            at = argv.index("-m")
            argv[at:at] = ["-m", "cProfile", "-o", str(cprofile_out)]
            launch.process.start()
        instance = launch.wait_ready()
        for _ in range(3):
            answer = probe(instance.port, args.path)
        log(f"probe: {answer.status}, Cache-Status: {answer.headers.get('cache-status')}")
        wrk = subprocess.Popen(
            pinning.wrap(
                [
                    require_tool("wrk"),
                    "-t1",
                    "-c64",
                    f"-d{args.seconds + 3}s",
                    "-s",
                    str(REPORT_SCRIPT),
                    f"http://127.0.0.1:{instance.port}{args.path}",
                ],
                "loadgen",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(1.0)
        title = (
            f"Profile of OpenFlare ({'plain' if args.plain else 'WAF + rate limit'}"
            f"{', cache and limits in Redis' if args.redis else ''}, "
            f"GET {args.path}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
        )
        if use_pyspy:
            raw = RAW / "profile-pyspy.txt"
            result = subprocess.run(
                [
                    pyspy,
                    "record",
                    "--pid",
                    str(instance.process.pid),
                    "--duration",
                    str(args.seconds),
                    "--rate",
                    "250",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                ],
                capture_output=True,
                text=True,
                timeout=args.seconds + 60,
                check=False,
            )
            wrk_out, _ = wrk.communicate(timeout=args.seconds + 30)
            if result.returncode != 0 or not raw.exists():
                log(f"py-spy failed: {result.stderr.strip()[-500:]}; try --cprofile")
                return 1
            total, other, own, inclusive = summarize_raw(raw.read_text())
        else:
            wrk_out, _ = wrk.communicate(timeout=args.seconds + 30)
            instance.process.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            instance.process.proc.wait(timeout=30)  # type: ignore[union-attr]
            stats = pstats.Stats(str(cprofile_out))
            raw_stats = stats.stats  # type: ignore[attr-defined]
            total_time = sum(v[2] for v in raw_stats.values()) or 1.0
            scale = 1e6 / total_time
            own = sorted(
                ((f"{k[2]} ({k[0]}:{k[1]})", int(v[2] * scale)) for k, v in raw_stats.items()),
                key=lambda item: -item[1],
            )[:TOP]
            inclusive = sorted(
                ((f"{k[2]} ({k[0]}:{k[1]})", int(v[3] * scale)) for k, v in raw_stats.items()),
                key=lambda item: -item[1],
            )[:TOP]
            total, other = int(1e6), 0
            title += " — cProfile (deterministic; inflates small calls)"
        rps = next((ln for ln in wrk_out.splitlines() if "Requests/sec" in ln), "?")
        name = ("plain" if args.plain else "full") + ("-redis" if args.redis else "")
        name += "-pass" if "nostore" in args.path else "-hit"
        path = write_report(name, f"{title} — wrk: {rps.strip()}", total, other, own, inclusive)
        print(path.read_text())
        return 0
    finally:
        if launch.process is not None:
            launch.process.stop()
        if redis is not None:
            redis.stop()
        origin.process.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
