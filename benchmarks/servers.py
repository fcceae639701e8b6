"""The processes of one benchmark run: the static origin, the nginx peer, the Python ceiling and
the OpenFlare instances, all on 127.0.0.1 with free ports, pinned as `Pinning` says."""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import (
    BENCH_DIR,
    CONFIGS,
    SIZES,
    Managed,
    Pinning,
    check_config,
    free_port,
    log,
    nginx_user_line,
    openflare_config,
    probe,
    proxy_env,
    render,
    require_tool,
    started_stages,
    write_yaml,
)
from redis_support import RedisServer

WAF_RULES = CONFIGS / "rules.waf.yaml"
BENCH_RATE_LIMIT = BENCH_DIR / "configs" / "rate-limit.bench.yaml"
# What a production Redis for the shared cache is told (docs/03-cache.md): bounded, and
# evicting the least recently used entries when full.
REDIS_SETTINGS = {"maxmemory": "256mb", "maxmemory-policy": "allkeys-lru"}


def write_documents(root: Path) -> dict[str, bytes]:
    """The origin's files: fixed pseudo-random bytes (incompressible, same every run)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(12)
    files: dict[str, bytes] = {}
    for name, size in SIZES.items():
        data = rng.randbytes(size)
        (root / f"{name}.bin").write_bytes(data)
        files[name] = data
    return files


@dataclass
class Origin:
    process: Managed
    port: int
    files: dict[str, bytes]


@dataclass
class Peer:
    process: Managed
    cache_port: int
    pass_port: int
    access_log: Path


@dataclass
class Ceiling:
    process: Managed
    port: int


@dataclass
class OpenFlare:
    name: str
    process: Managed
    port: int
    admin_port: int
    config_path: Path
    stages: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def start_origin(workdir: Path, pinning: Pinning, wait: bool = True) -> Origin:
    nginx = require_tool("nginx")
    root = workdir / "www"
    files = write_documents(root)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / "origin-tmp" / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "origin.conf"
    conf.write_text(
        render(
            BENCH_DIR / "nginx" / "origin.conf",
            {"user": nginx_user_line(), "dir": workdir, "port": port, "root": root},
        )
    )
    argv = [nginx, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "origin.error.log")]
    process = Managed("origin", pinning.wrap(argv, "loadgen"), workdir, tree=True)
    process.start()
    if wait:
        process.wait_port(port)
    return Origin(process, port, files)


def start_peer(workdir: Path, pinning: Pinning, origin_port: int, wait: bool = True) -> Peer:
    nginx = require_tool("nginx")
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / "peer-tmp" / sub).mkdir(parents=True, exist_ok=True)
    cache_port, pass_port = free_port(), free_port()
    conf = workdir / "peer.conf"
    conf.write_text(
        render(
            BENCH_DIR / "nginx" / "peer.conf",
            {
                "user": nginx_user_line(),
                "dir": workdir,
                "origin_port": origin_port,
                "cache_port": cache_port,
                "pass_port": pass_port,
            },
        )
    )
    argv = [nginx, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "peer.error.log")]
    process = Managed("peer", pinning.wrap(argv, "server"), workdir, tree=True)
    process.start()
    if wait:
        process.wait_port(cache_port)
        process.wait_port(pass_port)
    return Peer(process, cache_port, pass_port, workdir / "peer.access.log")


def start_ceiling(
    workdir: Path,
    pinning: Pinning,
    wait: bool = True,
    *,
    name: str = "ceiling",
    origin_port: int | None = None,
    client: str = "lean",
) -> Ceiling:
    """The aiohttp ceiling; with `origin_port`, the minimal aiohttp proxy to that origin with
    `client` (benchmarks/ceiling.py)."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.ceiling", "--port", str(port)]
    if origin_port is None:
        argv += ["--root", str(workdir / "www")]
    else:
        argv += ["--upstream", f"http://127.0.0.1:{origin_port}", "--client", client]
    env = proxy_env()
    env["PYTHONPATH"] = str(BENCH_DIR.parent)
    process = Managed(name, pinning.wrap(argv, "server"), workdir, env)
    process.start()
    if wait:
        process.wait_port(port)
    return Ceiling(process, port)


def start_redis(workdir: Path, pinning: Pinning | None = None) -> RedisServer:
    """A real redis-server (the E2E suite's, e2e/redis_support.py) on a free loopback port,
    persistence off, bounded like a production cache; on the load generator's core, so the
    proxy under test keeps its core to itself."""
    require_tool("redis-server")
    server = RedisServer(workdir / "redis")
    if pinning is not None:
        server.process.argv = pinning.wrap(server.process.argv, "loadgen")
    server.start()
    with server.client() as client:
        for name, value in REDIS_SETTINGS.items():
            client.config_set(name, value)
    return server


def redis_overrides(name: str, url: str) -> dict[str, Any]:
    """Config overrides for the Redis cache store (keys of their own per proxy: two proxies of
    one run must not answer from each other's entries)."""
    return {"cache": {"store": "redis", "redis_url": url, "redis_key_prefix": f"{name}:cache:"}}


def redis_rate_limit(workdir: Path, name: str, url: str) -> Path:
    """The benchmark's rate-limit rules with the Redis backend (one bucket for every replica)."""
    rules = yaml.safe_load(BENCH_RATE_LIMIT.read_text())
    rules["backend"] = {"type": "redis", "redis": {"url": url, "key_prefix": f"{name}:rl:"}}
    return write_yaml(workdir / f"{name}.rate-limit.yaml", rules)


@dataclass
class OpenFlareLaunch:
    """A proxy process started but maybe not ready yet (several start in parallel)."""

    name: str
    workdir: Path
    pinning: Pinning
    origin_port: int
    waf: bool
    rate_limit: bool
    overrides: dict[str, Any] | None
    rate_limit_file: Path = BENCH_RATE_LIMIT
    port: int = 0
    admin_port: int = 0
    config_path: Path = Path()
    process: Managed | None = None
    notes: list[str] = field(default_factory=list)

    def write_config(self, waf: bool, rate_limit: bool) -> None:
        data = openflare_config(
            port=self.port,
            admin_port=self.admin_port,
            origin_port=self.origin_port,
            waf=WAF_RULES if waf else None,
            rate_limit=self.rate_limit_file if rate_limit else None,
            overrides=self.overrides,
        )
        write_yaml(self.config_path, data)

    def launch(self) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.config_path = self.workdir / f"{self.name}.yaml"
        self.write_config(self.waf, self.rate_limit)
        self._spawn()

    def _spawn(self) -> None:
        argv = [sys.executable, "-m", "openflare", "run", "--config", str(self.config_path)]
        self.process = Managed(
            self.name, self.pinning.wrap(argv, "server"), self.workdir, env=proxy_env()
        )
        self.process.start()

    def _fall_back(self) -> None:
        """The config with WAF / rate-limit rules does not load (those stages are being
        written): find what does, say so in the report, and start again."""
        ok, output = check_config(self.config_path)
        if ok:
            raise RuntimeError(f"{self.name}: exited at start\n{self._tail()}")
        tries = [(self.waf, False), (False, self.rate_limit), (False, False)]
        for waf, rate_limit in tries:
            if (waf, rate_limit) == (self.waf, self.rate_limit):
                continue
            self.write_config(waf, rate_limit)
            if check_config(self.config_path)[0]:
                dropped = [
                    k
                    for k, a, b in (
                        ("waf", self.waf, waf),
                        ("rate_limit", self.rate_limit, rate_limit),
                    )
                    if a and not b
                ]
                self.notes.append(
                    f"run without {' and '.join(dropped)} rules: the config did not load "
                    f"with them ({output.splitlines()[-1] if output else 'no output'})"
                )
                self._spawn()
                return
        raise RuntimeError(f"{self.name}: config does not load:\n{output}")

    def _tail(self) -> str:
        return self.process.output(3000) if self.process is not None else ""

    def wait_ready(self) -> OpenFlare:
        from benchmarks.common import START_TIMEOUT_S

        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        fell_back = False
        while time.monotonic() < deadline:
            if not self.process.alive():
                assert self.process.proc is not None
                if self.process.proc.returncode == 2 and not fell_back:  # config error
                    fell_back = True
                    self._fall_back()
                    continue
                raise RuntimeError(f"{self.name} exited at start\n{self._tail()}")
            try:
                if probe(self.admin_port, "/readyz").status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"{self.name}: /readyz never answered 200\n{self._tail()}")
        time.sleep(0.2)  # the log thread flushes the `started` line
        stages = started_stages(self.process.stdout_path)
        for stage, asked in (("waf", self.waf), ("ratelimit", self.rate_limit)):
            if asked and stages and stage not in stages:
                self.notes.append(f"stage `{stage}` is not in the running chain")
        log(f"{self.name}: port {self.port}, stages {' → '.join(stages) or '?'}")
        return OpenFlare(
            self.name,
            self.process,
            self.port,
            self.admin_port,
            self.config_path,
            stages,
            self.notes,
        )


def start_openflare(
    workdir: Path,
    pinning: Pinning,
    name: str,
    origin_port: int,
    *,
    waf: bool = False,
    rate_limit: bool = False,
    overrides: dict[str, Any] | None = None,
) -> OpenFlare:
    """One proxy process, ready. WAF / rate limiting are used when asked for and the tree has
    them; a config that does not load with them falls back, with a note in the report."""
    launch = OpenFlareLaunch(name, workdir, pinning, origin_port, waf, rate_limit, overrides)
    launch.launch()
    return launch.wait_ready()
