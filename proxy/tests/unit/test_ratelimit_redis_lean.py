"""The rate limiter's script calls on the lean RESP client (`LeanScripts`, openflare/resp.py):
against a real redis-server, the script is loaded once and then run by its SHA, decides as the
memory backend does, and error replies map as redis-py maps them; against a server that
answers late, a full pool queues calls in order and a call that gives up passes its turn on."""

from __future__ import annotations

import asyncio
import io

import pytest
import redis
import test_cache_peek
from redis.exceptions import NoScriptError, ResponseError

from openflare.observability.logging import LogWriter
from openflare.observability.metrics import Metrics
from openflare.ratelimit.bucket import Limit
from openflare.ratelimit.redis import SCRIPT_SHA, LeanScripts, RedisBackend
from openflare.ratelimit.rules import RedisBackendConfig

redis_port = test_cache_peek.redis_port  # a real redis-server


async def test_the_script_loads_once_then_runs_by_sha_and_decides(redis_port: int) -> None:
    config = RedisBackendConfig(url=f"redis://127.0.0.1:{redis_port}/2", key_prefix="t:")
    backend = RedisBackend(config, LogWriter(io.BytesIO()), Metrics())
    raw = redis.Redis(port=redis_port, db=2)
    try:
        assert isinstance(backend._client, LeanScripts)
        assert raw.script_exists(SCRIPT_SHA) == [False]
        limits = [Limit.of(1, 2, period=60)]  # a bucket of 2, one token a minute
        keys = [("api", "203.0.113.7")]
        first = await backend.decide(keys, limits)
        assert raw.script_exists(SCRIPT_SHA) == [True]  # NOSCRIPT, then EVAL loaded it
        second = await backend.decide(keys, limits)
        third = await backend.decide(keys, limits)
        assert first is not None and second is not None and third is not None
        assert (first.admitted, second.admitted, third.admitted) == (True, True, False)
        assert third.backlog[0] == pytest.approx(120, abs=1)  # two tokens spent, 60 s each
        assert 0 < raw.pttl("t:api:203.0.113.7") <= 120_000  # in database 2, with a TTL
        calls = raw.info("commandstats")
        assert calls["cmdstat_eval"]["calls"] == 1
        assert calls["cmdstat_evalsha"]["calls"] == 3
        assert not backend.failing
        assert backend._client.open_connections == 1  # one connection, reused
    finally:
        await backend.close()
        raw.close()


async def test_error_replies_map_as_redis_py_maps_them(redis_port: int) -> None:
    client = LeanScripts(port=redis_port, max_connections=2)
    try:
        with pytest.raises(NoScriptError):
            await client.evalsha("0" * 40, 0)
        with pytest.raises(ResponseError) as failed:
            await client.eval("return redis.call('NOSUCHCOMMAND')", 0)
        assert not isinstance(failed.value, NoScriptError)
        assert await client.eval("return {1, 2, ARGV[1]}", 1, "k", "three") == [1, 2, b"three"]
    finally:
        await client.aclose()
    assert client.open_connections == 0


class LateServer:
    """Answers each command with `:1` after `delay` seconds; counts connections."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while await reader.read(65536):
            await asyncio.sleep(self.delay)
            writer.write(b":1\r\n")

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


async def test_a_full_pool_queues_calls_in_order_on_its_connections() -> None:
    late = LateServer(0.01)
    client = LeanScripts(port=await late.start(), max_connections=2)
    try:
        replies = await asyncio.gather(*(client.eval("return 1", 0) for _ in range(10)))
        assert replies == [1] * 10  # none refused: each waited for a connection
        assert late.connections == 2 and client.open_connections == 2
        assert not client._waiters
    finally:
        await client.aclose()
        await late.stop()


async def test_a_call_that_gives_up_waiting_passes_its_turn_on() -> None:
    late = LateServer(0.2)
    client = LeanScripts(port=await late.start(), max_connections=1)

    async def impatient() -> None:
        async with asyncio.timeout(0.05):
            await client.eval("return 1", 0)

    try:
        busy = asyncio.ensure_future(client.eval("return 1", 0))  # holds the one connection
        await asyncio.sleep(0.02)
        gives_up = asyncio.ensure_future(impatient())
        patient = asyncio.ensure_future(client.eval("return 1", 0))
        with pytest.raises(TimeoutError):
            await gives_up
        assert await busy == 1
        assert await asyncio.wait_for(patient, 5) == 1  # woken when the connection came back
        assert late.connections == 1 and not client._waiters
    finally:
        await client.aclose()
        await late.stop()
