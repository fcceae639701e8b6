"""A real `redis-server` for the E2E tests of the Redis rate-limit backend.

`redis_server` (function-scoped fixture) starts one on a free loopback port with persistence
off (`--save "" --appendonly no`) in the test's temporary directory and yields a `RedisServer`:
its `url`, `stop()` / `start()` for outage tests (same port, empty data after a restart),
`pause()` / `resume()` (SIGSTOP / SIGCONT: a server that accepts nothing and answers nothing,
for timeout tests) and a `client()` to look at keys. Nothing is skipped: without a
`redis-server` binary the test fails and says what to install (scripts/apt-deps.sh does).

Use it with `pytest_plugins = ("redis_support",)` in a test module.
"""

from __future__ import annotations

import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from harness import ManagedProcess, StartError, clean_env, free_port

START_TIMEOUT_S = 10.0


def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed: the Redis rate-limit tests need a real server. "
            "Install the Debian package `redis-server` (scripts/apt-deps.sh does) or put "
            "redis-server on PATH.",
            pytrace=False,
        )
    return binary


def ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            name=f"redis-{self.port}",
            argv=[
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--protected-mode",
                "yes",
                "--daemonize",
                "no",
            ],
            workdir=workdir,
            env=clean_env(),
        )
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ping(self.port):
            if not self.process.alive():
                raise StartError(
                    "redis-server exited before answering PING\n" + self.process.output()
                )
            if time.monotonic() > deadline:
                self.process.stop()
                raise StartError("redis-server did not answer PING\n" + self.process.output())
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop the server (its data is gone: persistence is off)."""
        if self.paused:
            self.resume()
        self.process.stop(grace=5.0)
        deadline = time.monotonic() + 5.0
        while ping(self.port, timeout=0.1) and time.monotonic() < deadline:
            time.sleep(0.02)

    def pause(self) -> None:
        """Freeze the process: connections hang instead of being refused."""
        self.process.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.process.signal(signal.SIGCONT)
        self.paused = False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5.0)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    try:
        server.start()
    except StartError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()
