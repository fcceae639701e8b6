"""wrk, bounded in time: keep-alive HTTP/1.1, one thread on the load generator's core."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import BENCH_DIR, Pinning, require_tool

REPORT_SCRIPT = BENCH_DIR / "wrk" / "report.lua"


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    bytes: int
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    output: str

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def run_wrk(
    pinning: Pinning,
    url: str,
    *,
    seconds: float,
    connections: int,
    threads: int = 1,
    timeout_s: float = 5.0,
    report: bool = True,
    script: str = "",
) -> WrkResult:
    argv = [
        require_tool("wrk"),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
    ]
    if report:  # a scenario's own script loads report.lua itself
        argv += ["-s", str(BENCH_DIR / "wrk" / script if script else REPORT_SCRIPT)]
    argv.append(url)
    result = subprocess.run(
        pinning.wrap(argv, "loadgen"),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed ({result.returncode}): {output}")
    if not report:
        return WrkResult(0, seconds, 0, {}, 0, 0, 0, 0, output)
    return parse(output)


def parse(output: str) -> WrkResult:
    line = next((ln for ln in output.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{output}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1e6,
        bytes=int(data["bytes"]),
        errors={k: int(data[k]) for k in ("connect", "read", "write", "status", "timeout")},
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        output=output,
    )


def save_output(path: Path, result: WrkResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.output)
