"""The Redis backend's failure handling with a fake client: errors and timeouts become None
(the stage applies on_backend_error), are counted, logged once per interval, skip Redis for
retry_interval, and recover by themselves. The script itself runs against a real redis-server
in e2e/test_ratelimit.py."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, NoScriptError, RedisError, ResponseError

from openflare.observability.logging import LogWriter
from openflare.observability.metrics import Metrics
from openflare.ratelimit.bucket import Limit
from openflare.ratelimit.redis import (
    SCRIPT,
    SCRIPT_SHA,
    LeanScripts,
    RedisBackend,
    connect,
    parse_reply,
    redacted,
    script_args,
)
from openflare.ratelimit.rules import RedisBackendConfig

LIMITS = (Limit.of(10, 20), Limit.of(1, 1, enforce=False))
KEYS = [("api", "203.0.113.7"), ("global", "203.0.113.7")]
OK_REPLY = [1, 1, 100_000, 1, 1_000_000]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeRedis:
    def __init__(self) -> None:
        self.fail: BaseException | None = None
        self.delay = 0.0
        self.loaded = False
        self.calls: list[tuple[Any, ...]] = []
        self.closed = False

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: str) -> Any:
        self.calls.append((sha, numkeys, *keys_and_args))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        if not self.loaded:
            raise NoScriptError("NOSCRIPT No matching script.")
        return OK_REPLY

    async def eval(self, script: str, numkeys: int, *keys_and_args: str) -> Any:
        assert script == SCRIPT
        self.loaded = True
        return await self.evalsha(SCRIPT_SHA, numkeys, *keys_and_args)

    async def aclose(self) -> None:
        self.closed = True


class Setup:
    def __init__(self, **config: Any) -> None:
        self.clock = FakeClock()
        self.client = FakeRedis()
        self.stream = io.BytesIO()
        self.log = LogWriter(self.stream, flush_interval=0.001)
        self.metrics = Metrics()
        settings = {"url": "redis://user:secret@127.0.0.1:6390/1", "timeout_ms": 50, **config}
        self.backend = RedisBackend(
            RedisBackendConfig(**settings),
            self.log,
            self.metrics,
            client=self.client,
            clock=self.clock,
        )

    async def decide(self) -> Any:
        return await self.backend.decide(KEYS, LIMITS)

    def errors(self) -> float:
        value = self.metrics.registry.get_sample_value(
            "openflare_ratelimit_backend_errors_total", {"backend": "redis"}
        )
        return value or 0.0

    def events(self, name: str) -> list[dict[str, Any]]:
        self.log.flush()
        lines = self.stream.getvalue().decode().splitlines()
        return [r for r in map(json.loads, lines) if r.get("event") == name]


async def test_evals_the_script_once_then_uses_evalsha() -> None:
    s = Setup()
    decision = await s.decide()
    assert decision is not None and decision.admitted
    assert list(decision.allowed) == [True, True]
    assert list(decision.backlog) == [0.1, 1.0]
    assert s.client.loaded
    await s.decide()
    sha, numkeys, *rest = s.client.calls[-1]
    assert sha == SCRIPT_SHA and numkeys == 2
    assert rest[:2] == ["openflare:rl:api:203.0.113.7", "openflare:rl:global:203.0.113.7"]
    assert rest[2:] == script_args(LIMITS)
    assert len(s.client.calls) == 3  # NOSCRIPT, then EVAL (which caches it), then EVALSHA


def test_script_args_in_microseconds() -> None:
    args = script_args(LIMITS)
    assert args[0] == ""  # the server's TIME, always
    assert [float(a) for a in args[1:]] == pytest.approx([1e5, 1.9e6, 1, 1e6, 0, 0])
    assert args[3] == "1" and args[6] == "0"  # enforce, shadow


def test_parse_reply_checks_its_shape() -> None:
    decision = parse_reply([0, 0, 2_500_000, 1, 0], 2)
    assert not decision.admitted and decision.allowed == (False, True)
    assert decision.backlog == (2.5, 0.0)
    with pytest.raises(RedisError):
        parse_reply([1, 1], 2)


@pytest.mark.parametrize(
    "failure", [ConnectionError("Connection refused"), ResponseError("WRONGTYPE"), OSError(111)]
)
async def test_failure_returns_none_counts_and_logs(failure: BaseException) -> None:
    s = Setup()
    s.client.loaded = True
    s.client.fail = failure
    assert await s.decide() is None
    assert s.errors() == 1
    (event,) = s.events("ratelimit_backend_error")
    assert event["level"] == "error" and event["backend"] == "redis"
    assert event["url"] == "redis://user:***@127.0.0.1:6390/1"  # never the password
    assert "secret" not in s.stream.getvalue().decode()


async def test_timeouts_are_the_whole_budget() -> None:
    s = Setup(timeout_ms=30, connect_timeout_ms=30)
    s.client.loaded = True
    s.client.delay = 5.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await s.decide() is None
    assert loop.time() - started < 1.0
    assert s.errors() == 1
    assert "TimeoutError" in s.events("ratelimit_backend_error")[0]["error"]


async def test_skips_redis_during_retry_interval_then_probes_and_recovers() -> None:
    s = Setup(retry_interval_ms=500, error_log_interval_s=10)
    s.client.loaded = True
    s.client.fail = ConnectionError("down")
    assert await s.decide() is None
    calls = len(s.client.calls)
    for _ in range(5):  # within the retry interval: no call at all, no wait
        assert await s.decide() is None
    assert len(s.client.calls) == calls
    assert s.errors() == 1
    s.clock.now += 0.6  # one probe, still down
    assert await s.decide() is None
    assert len(s.client.calls) == calls + 1 and s.errors() == 2
    assert len(s.events("ratelimit_backend_error")) == 1  # logged once per interval
    s.client.fail = None
    assert await s.decide() is None  # still inside the new retry interval
    s.clock.now += 0.6
    decision = await s.decide()
    assert decision is not None and decision.admitted
    assert not s.backend.failing
    (recovered,) = s.events("ratelimit_backend_recovered")
    assert recovered["suppressed"] == 1
    assert await s.decide() is not None


async def test_one_probe_at_a_time() -> None:
    s = Setup(retry_interval_ms=100, timeout_ms=200, connect_timeout_ms=200)
    s.client.loaded = True
    s.client.fail = ConnectionError("down")
    await s.decide()
    s.clock.now += 1.0
    s.client.fail = None
    s.client.delay = 0.05
    results = await asyncio.gather(*(s.decide() for _ in range(5)))
    assert sum(r is not None for r in results) == 1  # the probe; the others did not wait
    assert await s.decide() is not None


async def test_error_lines_once_per_interval() -> None:
    s = Setup(retry_interval_ms=0, error_log_interval_s=10)
    s.client.loaded = True
    s.client.fail = ConnectionError("down")
    for _ in range(20):
        await s.decide()
    assert s.errors() == 20
    assert len(s.events("ratelimit_backend_error")) == 1
    s.clock.now += 11
    await s.decide()
    events = s.events("ratelimit_backend_error")
    assert len(events) == 2 and events[1]["suppressed"] == 19


def test_plain_urls_get_the_lean_client_and_the_rest_redis_py() -> None:
    for url in ("redis://127.0.0.1:6390/1", "redis://:pw@cache.test/0", "unix:///run/r.sock"):
        client, pool = connect(RedisBackendConfig(url=url, max_connections=3))
        assert isinstance(client, LeanScripts) and pool is None
        assert client._max_connections == 3 and client._wait_for_room
    for url in ("rediss://cache.test:6380/0", "redis://cache.test/0?socket_keepalive=true"):
        client, pool = connect(RedisBackendConfig(url=url))
        assert isinstance(client, Redis) and pool is not None


def test_connect_sets_no_per_command_timeout() -> None:
    # an option the lean client lacks: redis-py's blocking pool
    config = RedisBackendConfig(url="redis://127.0.0.1:6390/1?socket_keepalive=true", timeout_ms=80)
    _, pool = connect(config)
    assert pool is not None
    kwargs = pool.connection_kwargs
    assert kwargs["socket_timeout"] is None  # decide's asyncio.timeout bounds the call
    assert kwargs["socket_connect_timeout"] == config.connect_timeout_ms / 1000
    assert pool.timeout == 0.08  # the wait for a free pooled connection stays bounded


async def test_a_hung_server_fails_within_the_budget_with_a_real_client() -> None:
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        stream = io.BytesIO()
        log = LogWriter(stream, flush_interval=0.001)
        metrics = Metrics()
        config = RedisBackendConfig(
            url=f"redis://127.0.0.1:{port}/0", timeout_ms=30, connect_timeout_ms=30
        )
        backend = RedisBackend(config, log, metrics)
        try:
            # the outer wait_for only keeps a missing bound from hanging the test
            assert await asyncio.wait_for(backend.decide(KEYS, LIMITS), 10) is None
            assert backend.failing
            log.flush()
            assert b"TimeoutError" in stream.getvalue()
        finally:
            await backend.close()


async def test_close_closes_the_client() -> None:
    s = Setup()
    await s.backend.close()
    assert s.client.closed


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://u:pw@host/0", "rediss://u:***@host/0"),
        ("redis://host:6379/0?password=pw&db=1", "redis://host:6379/0?password=***&db=1"),
        ("unix:///run/redis.sock?password=pw", "unix:///run/redis.sock?password=***"),
    ],
)
def test_redacted(url: str, expected: str) -> None:
    assert redacted(url) == expected
