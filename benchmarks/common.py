"""What every benchmark script shares: paths, CPU pinning, processes, /proc readings, probes.

Nothing here measures anything by itself; run.py, memory.py and profile_hit.py build on it.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import ManagedProcess, clean_env
from harness import free_port as free_port  # re-exported: the benchmark scripts import it here

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "benchmarks"
CONFIGS = REPO / "configs"
RESULTS = BENCH_DIR / "results"
RAW = RESULTS / "raw"
DOC = REPO / "docs" / "12-performance.md"

SIZES = {"1k": 1024, "64k": 64 * 1024}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
START_TIMEOUT_S = 30.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def require_tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        sys.exit(f"bench: `{name}` not found; `make bench` installs it (scripts/apt-deps.sh)")
    return path


# --------------------------------------------------------------------------------------------
# CPU pinning


@dataclass(frozen=True)
class Pinning:
    """The load generator and the origin share one core; the server under test gets another."""

    loadgen: int | None
    server: int | None
    note: str

    @classmethod
    def plan(cls) -> Pinning:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2 or shutil.which("taskset") is None:
            why = "one core" if len(cores) < 2 else "no taskset"
            return cls(None, None, f"not pinned ({why}): figures include contention")
        return cls(
            cores[0],
            cores[1],
            f"load generator + origin on CPU {cores[0]}, server under test on CPU {cores[1]}",
        )

    def wrap(self, argv: Sequence[str], role: str) -> list[str]:
        core = self.server if role == "server" else self.loadgen
        if core is None:
            return list(argv)
        return ["taskset", "-c", str(core), *argv]

    def pin_self(self) -> None:
        """The harness itself stays off the server's core."""
        if self.loadgen is not None:
            os.sched_setaffinity(0, {self.loadgen})


# --------------------------------------------------------------------------------------------
# /proc readings


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rfind(")") + 2 :].split()  # fields from 3 (state) on


def process_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    try:
        fields = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[11]) + int(fields[12])


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int(_stat_fields(int(entry.name))[1]) == pid:
                found.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return found


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


CoreTimes = dict[int, tuple[int, int]]


def core_times() -> CoreTimes:
    """Per CPU: (busy ticks, total ticks) from /proc/stat."""
    result: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *values = line.split()
        ticks = [int(v) for v in values[:8]]
        idle = ticks[3] + ticks[4]  # idle + iowait
        result[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return result


def core_busy(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], core: int
) -> float:
    if core not in before or core not in after:
        return float("nan")
    busy = after[core][0] - before[core][0]
    total = after[core][1] - before[core][1]
    return 100.0 * busy / total if total > 0 else float("nan")


# --------------------------------------------------------------------------------------------
# processes


class Managed(ManagedProcess):
    """The E2E harness's process (output in files, bounded stop) in a session of its own, with
    CPU and memory readings from /proc."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        workdir: Path,
        env: dict[str, str] | None = None,
        tree: bool = False,
    ) -> None:
        super().__init__(name, argv, workdir, env or proxy_env(), own_session=True)
        self.tree = tree  # count the CPU of its children too (nginx master + workers)

    def wait_port(self, port: int, timeout: float = START_TIMEOUT_S) -> None:
        super().wait_port(port, timeout)  # a busy machine starts several servers at once

    def pids(self) -> list[int]:
        return [self.pid, *children_of(self.pid)] if self.tree else [self.pid]

    def cpu_ticks(self) -> int:
        return sum(process_ticks(pid) for pid in self.pids())

    def rss(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids())


def proxy_env() -> dict[str, str]:
    """The environment without the variables that would make a proxy read other files (or
    another Redis) than the config we write for it."""
    return clean_env()


# --------------------------------------------------------------------------------------------
# HTTP probes (plain http.client: no dependency, exact bytes)


@dataclass(frozen=True)
class Probe:
    status: int
    headers: dict[str, str]
    body: bytes


def probe(port: int, path: str, headers: Mapping[str, str] | None = None) -> Probe:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        response = conn.getresponse()
        body = response.read()
        return Probe(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        conn.close()


def stub_requests(port: int) -> int:
    """The origin's request counter (nginx stub_status); it counts this query too."""
    body = probe(port, "/__stub_status").body.decode()
    # "Active connections: 1 \nserver accepts handled requests\n 5 5 7 \n..."
    return int(body.splitlines()[2].split()[2])


def settle_origin(port: int, quiet: float = 0.3, limit: float = 10.0) -> bool:
    """Wait until the origin gets no request for `quiet` seconds (a proxy may still be working
    off requests its clients gave up on in the previous run). False if it never settles."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        first = stub_requests(port)
        time.sleep(quiet)
        if origin_requests_between(first, stub_requests(port)) == 0:
            return True
    return False


def origin_requests_between(before: int, after: int) -> int:
    """Requests the origin answered between two `stub_requests` readings (the second reading
    counts itself)."""
    return after - before - 1


# --------------------------------------------------------------------------------------------
# nginx and OpenFlare configs


def render(template: Path, values: Mapping[str, object]) -> str:
    text = template.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", str(value))
    if "{{" in text:
        raise ValueError(f"{template}: unrendered placeholder")
    return text


def nginx_user_line() -> str:
    # as root, workers would drop to `nobody`, who cannot read our private temp dir
    return "user root root;" if os.geteuid() == 0 else ""


def openflare_config(
    *,
    port: int,
    admin_port: int,
    origin_port: int,
    waf: Path | None,
    rate_limit: Path | None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """configs/proxy.dev.yaml with our ports and origin, absolute rule-file paths, the WAF and
    rate-limit files given (or none), then `overrides` (one level deep per section)."""
    config: dict[str, Any] = yaml.safe_load((CONFIGS / "proxy.dev.yaml").read_text())
    config["server"]["listen_addr"] = f"127.0.0.1:{port}"
    config["server"]["admin_listen_addr"] = f"127.0.0.1:{admin_port}"
    config["upstreams"][0]["base_url"] = f"http://127.0.0.1:{origin_port}"
    config["cache"]["debug_headers"] = False  # the production default; Cache-Status tells HIT
    # dev conveniences that trace every local request are off by default in production: a
    # decision trace or Server-Timing on every benchmark request would measure the debugger
    config.pop("explain", None)
    routing = config.get("routing")
    if isinstance(routing, dict):
        for key in [k for k in routing if "server_timing" in k]:
            del routing[key]
        for route in routing.get("routes") or ():
            if isinstance(route, dict):
                route.pop("server_timing", None)
    rule_files: dict[str, str] = {}
    for key, value in (config.get("rule_files") or {}).items():
        if key in ("waf", "rate_limit"):
            continue
        path = Path(value)
        rule_files[key] = str(path if path.is_absolute() else (CONFIGS / path).resolve())
    if waf is not None:
        rule_files["waf"] = str(waf)
    if rate_limit is not None:
        rule_files["rate_limit"] = str(rate_limit)
    config["rule_files"] = rule_files
    for section, values in (overrides or {}).items():
        if isinstance(values, Mapping) and isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    return config


def write_yaml(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    return path


def check_config(path: Path) -> tuple[bool, str]:
    result = subprocess.run(
        [sys.executable, "-m", "openflare", "check-config", str(path)],
        capture_output=True,
        text=True,
        env=proxy_env(),
        timeout=120,
        check=False,
    )
    return result.returncode == 0, (result.stdout + result.stderr).strip()


def started_stages(stdout_path: Path) -> list[str]:
    """The stage chain from the proxy's `started` log line."""
    import json

    for line in stdout_path.read_text(errors="replace").splitlines():
        if '"event":"started"' in line:
            try:
                return list(json.loads(line).get("stages", []))
            except ValueError:
                return []
    return []


# --------------------------------------------------------------------------------------------
# the machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def tool_version(argv: Sequence[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not found"
    text = (result.stdout + result.stderr).strip().splitlines()
    return text[0] if text else "unknown"


USABLE_CPUS = len(os.sched_getaffinity(0))  # read at import, before the harness pins itself


def machine_description() -> dict[str, str]:
    import aiohttp

    try:
        import uvloop

        uvloop_version = str(getattr(uvloop, "__version__", "unknown"))
    except ImportError:
        uvloop_version = "not installed"
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpus_usable": str(USABLE_CPUS),
        "cpu": cpu_model(),
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "uvloop": uvloop_version,
        "nginx": tool_version([require_tool("nginx"), "-v"]).split("/")[-1],
        "wrk": tool_version([require_tool("wrk"), "--version"]).split(" [")[0],
        # "Redis server v=7.0.15 sha=…" (the Redis scenarios; "not found" when not installed)
        "redis": tool_version(["redis-server", "--version"]).split(" sha=")[0].split("v=")[-1],
    }
