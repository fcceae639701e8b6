"""Process management, raw HTTP and metrics helpers for the OpenFlare E2E suite.

Nothing here is a fixture: conftest.py wires these helpers into pytest. The local target runs
the test origin and the proxy as real subprocesses on free loopback ports, with the proxy's
config derived from configs/proxy.test.yaml; other targets only provide URLs.
"""

from __future__ import annotations

import copy
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = REPO_ROOT / "configs"
TEST_CONFIG = CONFIGS_DIR / "proxy.test.yaml"

START_TIMEOUT_S = 20.0
STOP_GRACE_S = 10.0
# Variables that would make the proxy read something other than the config we wrote for it.
PROXY_ENV_OVERRIDES = (
    "OPENFLARE_CONFIG",
    "OPENFLARE_WAF_RULES",
    "OPENFLARE_CACHE_RULES",
    "OPENFLARE_RATE_LIMIT_RULES",
    "OPENFLARE_ADMIN_TOKEN",
    "OPENFLARE_ADMIN_TOKEN_FILE",  # with OPENFLARE_ADMIN_TOKEN set too, a config error
    "ADMIN_TOKEN",
    "OPENFLARE_REDIS_URL",
    "OPENFLARE_REDIS_URL_FILE",  # likewise with OPENFLARE_REDIS_URL
)

UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class StartError(RuntimeError):
    """A subprocess died or never became ready; the message carries its captured output."""


# --------------------------------------------------------------------------------------------
# config


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def closed_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on (free right now; connecting to it is refused)."""
    return free_port(host)


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` applied: mappings merge recursively, anything else (lists
    included) replaces the base value."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_test_config() -> dict[str, Any]:
    data = yaml.safe_load(TEST_CONFIG.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{TEST_CONFIG} is not a mapping"
    return data


def proxy_config(
    *,
    listen_port: int,
    admin_port: int,
    origin_url: str,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """configs/proxy.test.yaml with our ports and origin, absolute rule-file paths, then
    `overrides` deep-merged on top."""
    config = load_test_config()
    config["server"]["listen_addr"] = f"127.0.0.1:{listen_port}"
    config["server"]["admin_listen_addr"] = f"127.0.0.1:{admin_port}"
    config["upstreams"][0]["base_url"] = origin_url
    rule_files = config.get("rule_files") or {}
    for key, value in list(rule_files.items()):
        if isinstance(value, str) and not Path(value).is_absolute():
            rule_files[key] = str((CONFIGS_DIR / value).resolve())
    return deep_merge(config, overrides or {})


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in PROXY_ENV_OVERRIDES
        and not k.startswith(("OPENFLARE_WATCH", "OPENFLARE_K8S_", "OTEL_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------------------------
# processes


@dataclass
class ManagedProcess:
    """A subprocess whose stdout/stderr go to files, with a bounded stop. The benchmark harness
    (benchmarks/common.py) builds on it too."""

    name: str
    argv: list[str]
    workdir: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    # a session (process group) of its own: a Ctrl-C on the harness does not reach it, and a
    # stop that has to kill takes its whole group (nginx's master and its workers)
    own_session: bool = False
    stdout_path: Path = field(init=False)
    stderr_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.workdir / f"{self.name}.stdout.log"
        self.stderr_path = self.workdir / f"{self.name}.stderr.log"

    def start(self) -> None:
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=self.own_session,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self, limit: int = 8000) -> str:
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
            parts.append(f"--- {path.name} ---\n{text[-limit:]}")
        return "\n".join(parts)

    def stdout_text(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, url: str, timeout: float = START_TIMEOUT_S) -> None:
        """Poll `url` until it answers 200; fail with the captured output if we die first."""
        deadline = time.monotonic() + timeout
        last = "no attempt"
        while time.monotonic() < deadline:
            if not self.alive():
                assert self.proc is not None
                raise StartError(
                    f"{self.name} exited with {self.proc.returncode} before {url} was ready\n"
                    + self.output()
                )
            try:
                response = httpx.get(url, timeout=1.0)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.05)
        self.stop()
        raise StartError(
            f"{self.name}: {url} not ready after {timeout}s ({last})\n" + self.output()
        )

    def wait_port(self, port: int, timeout: float = START_TIMEOUT_S) -> None:
        """Until 127.0.0.1:`port` accepts a connection; fail with the output if we die first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise StartError(f"{self.name} exited early\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise StartError(f"{self.name}: port {port} not open after {timeout}s\n{self.output()}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                if self.own_session:
                    os.killpg(self.proc.pid, signal.SIGKILL)  # nothing else is in its group
                else:
                    self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


class OriginProcess(ManagedProcess):
    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        name: str = "origin",
        keep_alive_timeout: int | None = None,
    ) -> None:
        self.port = port or free_port()
        extra = (
            [] if keep_alive_timeout is None else ["--keep-alive-timeout", str(keep_alive_timeout)]
        )
        super().__init__(
            name=name,
            argv=[
                sys.executable,
                "-m",
                "openflare_testsite",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *extra,
            ],
            workdir=workdir,
            env=clean_env(),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_and_wait(self) -> OriginProcess:
        self.start()
        self.wait_ready(self.url + "/healthz")
        return self


class ProxyProcess(ManagedProcess):
    def __init__(
        self,
        workdir: Path,
        *,
        origin_url: str,
        token: str,
        overrides: Mapping[str, Any] | None = None,
        name: str = "proxy",
    ) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.token = token
        self.config = proxy_config(
            listen_port=self.port,
            admin_port=self.admin_port,
            origin_url=origin_url,
            overrides=overrides,
        )
        # a folder of its own: a directory watcher (OPENFLARE_WATCH=dir) must not see this
        # proxy's log files or another proxy's config change
        config_dir = workdir / f"{name}.config"
        config_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = config_dir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False), encoding="utf-8")
        super().__init__(
            name=name,
            argv=[sys.executable, "-m", "openflare", "run", "--config", str(self.config_path)],
            workdir=workdir,
            env=clean_env({"OPENFLARE_ADMIN_TOKEN": token}),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start_and_wait(self) -> ProxyProcess:
        self.start()
        self.wait_ready(self.admin_url + "/readyz")
        return self

    # ---- the JSON lines the proxy writes on stdout

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.stdout_text().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def wait_log(self, timeout: float = 3.0, **match: Any) -> dict[str, Any]:
        """The first log record whose fields equal `match` (the log is flushed in batches)."""
        deadline = time.monotonic() + timeout
        while True:
            for record in self.log_records():
                if all(record.get(k) == v for k, v in match.items()):
                    return record
            if time.monotonic() > deadline:
                raise AssertionError(f"no log record matching {match} in {self.stdout_path}")
            time.sleep(0.05)

    def access_log(self, request_id: str, timeout: float = 3.0) -> dict[str, Any]:
        return self.wait_log(timeout, event="access", request_id=request_id)


# --------------------------------------------------------------------------------------------
# the stack under test


@dataclass
class Stack:
    """Where the proxy, its admin listener and the origin are, plus origin helpers."""

    target: str
    proxy_url: str
    admin_url: str
    origin_url: str
    admin_token: str
    proxy: ProxyProcess | None = None  # local target only
    origin: OriginProcess | None = None  # local target only

    @property
    def proxy_host(self) -> str:
        parts = urlsplit(self.proxy_url)
        return parts.hostname or "127.0.0.1"

    @property
    def proxy_port(self) -> int:
        parts = urlsplit(self.proxy_url)
        return parts.port or 80

    @property
    def host_header(self) -> str:
        """The Host the routes for 127.0.0.1 match (the port is ignored by the router)."""
        return f"127.0.0.1:{self.proxy_port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        headers = {"Host": self.host_header, **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 10.0)
        return httpx.Client(base_url=self.proxy_url, headers=headers, **kwargs)

    def admin(self, token: str | None = "__default__", **kwargs: Any) -> httpx.Client:
        headers = dict(kwargs.pop("headers", {}))
        if token == "__default__":
            token = self.admin_token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        kwargs.setdefault("timeout", 10.0)
        return httpx.Client(base_url=self.admin_url, headers=headers, **kwargs)

    def hits(self, path: str) -> int:
        response = httpx.get(f"{self.origin_url}/__hits", params={"path": path}, timeout=5.0)
        response.raise_for_status()
        return int(response.json()["hits"])

    def reset_hits(self) -> None:
        httpx.post(f"{self.origin_url}/__hits/reset", timeout=5.0).raise_for_status()

    def metrics(self) -> Metrics:
        response = httpx.get(f"{self.admin_url}/metrics", timeout=5.0)
        response.raise_for_status()
        return Metrics.parse(response.text)

    def raw(self, data: bytes, timeout: float = 10.0, head: bool = False) -> RawResponse:
        return raw_exchange(self.proxy_host, self.proxy_port, data, timeout=timeout, head=head)

    def raw_request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        host: str | None = None,
        send_host: bool = True,
        timeout: float = 10.0,
    ) -> RawResponse:
        """One request on a fresh connection; `host` defaults to `host_header`, `send_host`
        False sends no Host header at all."""
        host = (host or self.host_header) if send_host else None
        data = build_request(method, target, host, headers, body)
        return self.raw(data, timeout=timeout, head=method == "HEAD")


# --------------------------------------------------------------------------------------------
# raw HTTP/1.1 over a socket, for tests where the exact bytes on the wire matter


def build_request(
    method: str,
    target: str,
    host: str | None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    close: bool = True,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    names = set()
    for name, value in headers:
        names.add(name.lower())
        lines.append(f"{name}: {value}")
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    if close and "connection" not in names:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool  # the body was framed and fully received
    error: str | None = None  # how the connection ended early, if it did

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.eof = False
        self.error: str | None = None

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            self.eof, self.error = True, "reset"
            return False
        except TimeoutError:
            self.eof, self.error = True, "timeout"
            return False
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    def until(self, marker: bytes) -> bytes | None:
        while marker not in self.buffer:
            if not self._fill():
                return None
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def exactly(self, n: int) -> bytes:
        while len(self.buffer) < n and self._fill():
            pass
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def rest(self) -> bytes:
        while self._fill():
            pass
        out, self.buffer = self.buffer, b""
        return out


# one reader per socket, so bytes of a next (pipelined) response that arrived in the same recv
# as this one are kept for the next read_response instead of thrown away
_READERS: weakref.WeakKeyDictionary[socket.socket, _Reader] = weakref.WeakKeyDictionary()


def read_response(sock: socket.socket, head: bool = False) -> RawResponse:
    reader = _READERS.get(sock)
    if reader is None:
        reader = _READERS[sock] = _Reader(sock)
    block = reader.until(b"\r\n\r\n")
    if block is None:
        raise ConnectionError(
            f"no response head ({reader.error or 'eof'}); got {reader.buffer[:200]!r}"
        )
    lines = block.decode("latin-1").split("\r\n")
    _version, status, *reason = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    response = RawResponse(int(status), reason[0] if reason else "", headers, b"", False)
    if head or response.status in (204, 304) or 100 <= response.status < 200:
        response.complete = True
        return response
    te = (response.header("Transfer-Encoding") or "").lower()
    length = response.header("Content-Length")
    if "chunked" in te:
        body = bytearray()
        while True:
            size_line = reader.until(b"\r\n")
            if size_line is None:
                break
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                reader.until(b"\r\n")
                response.complete = True
                break
            chunk = reader.exactly(size)
            body += chunk
            if len(chunk) < size or reader.until(b"\r\n") is None:
                break
        response.body = bytes(body)
    elif length is not None:
        response.body = reader.exactly(int(length))
        response.complete = len(response.body) == int(length)
    else:
        response.body = reader.rest()
        response.complete = reader.error is None
    response.error = None if response.complete else (reader.error or "eof")
    return response


def connect(host: str, port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def raw_exchange(
    host: str, port: int, data: bytes, *, timeout: float = 10.0, head: bool = False
) -> RawResponse:
    with connect(host, port, timeout) as sock:
        sock.sendall(data)
        return read_response(sock, head=head)


def send_until_answered(
    sock: socket.socket, head: bytes, chunks: Iterator[bytes], *, timeout: float = 10.0
) -> tuple[RawResponse, int]:
    """Send `head`, then `chunks` one at a time, stopping as soon as the server answers (so
    an early error response is read before the server's close can turn into a reset).
    Returns the response and the number of body bytes written."""
    sock.sendall(head)
    sent = 0
    for chunk in chunks:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            break
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(chunk)
    sock.settimeout(timeout)
    return read_response(sock), sent


def chunked(parts: Iterable[bytes]) -> Iterator[bytes]:
    """HTTP/1.1 chunked framing of `parts`, ending with the last chunk."""
    for part in parts:
        if part:
            yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"


# --------------------------------------------------------------------------------------------
# Prometheus text format

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Metrics:
    text: str
    samples: list[tuple[str, dict[str, str], float]]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            match = _SAMPLE_RE.match(line)
            if match is None:
                raise AssertionError(f"unparseable metrics line: {line!r}")
            name, labels_text, value = match.groups()
            labels = dict(_LABEL_RE.findall(labels_text or ""))
            samples.append((name, labels, float(value)))
        return cls(text, samples)

    def families(self) -> set[str]:
        return {line.split()[2] for line in self.text.splitlines() if line.startswith("# TYPE ")}

    def family_type(self, name: str) -> str | None:
        for line in self.text.splitlines():
            parts = line.split()
            if line.startswith("# TYPE ") and parts[2] == name:
                return parts[3]
        return None

    def find(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [
            (sample_labels, value)
            for sample_name, sample_labels, value in self.samples
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
        return sum(value for _, value in self.find(name, **labels))
