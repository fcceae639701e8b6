"""The Redis store's read path (`cache/storage/redis_reads.py`, on the lean client of
`openflare/resp.py`) against a real redis-server:
replies whole and in pieces, misses, errors, credentials and databases, connections Redis
closed, concurrent calls, and calls abandoned mid-reply (the fixtures of test_cache_peek.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import test_cache_peek
import test_cache_store_lookup
from redis.exceptions import ResponseError

from openflare.cache.storage.redis_reads import LeanReads, RedisPyReads, reads_for
from openflare.resp import IncompleteReply, encode_command, parse_reply

redis_port = test_cache_peek.redis_port  # a real redis-server
silent_port = test_cache_store_lookup.silent_port  # a hung one


@pytest.fixture
def raw(redis_port: int) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_port)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def reads(redis_port: int) -> AsyncIterator[LeanReads]:
    lean = LeanReads(port=redis_port)
    try:
        yield lean
    finally:
        await lean.aclose()


async def test_get_and_mget_read_what_redis_holds(reads: LeanReads, raw: redis.Redis) -> None:
    big = bytes(range(256)) * 8192  # 2 MiB with every byte value, \r\n included
    raw.set("small", b"value")
    raw.set("big", big)
    raw.set("empty", b"")
    assert await reads.get("small") == b"value"
    assert await reads.get("missing") is None
    assert await reads.get("empty") == b""
    assert await reads.get("big") == big  # arrives in many reads
    assert await reads.mget("small", "missing", "big") == [b"value", None, big]
    assert len(reads._idle) == 1  # one connection, reused for every call


async def test_an_error_reply_raises_and_the_next_call_works(
    reads: LeanReads, raw: redis.Redis
) -> None:
    raw.rpush("a-list", "x")
    raw.set("k", "v")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await reads.get("a-list")
    assert await reads.get("k") == b"v"


async def test_a_connection_redis_closed_while_idle_is_replaced(
    reads: LeanReads, raw: redis.Redis
) -> None:
    raw.set("k", "v")
    assert await reads.get("k") == b"v"
    assert raw.client_kill_filter(_type="normal", skipme=True) >= 1
    for _ in range(100):  # until the close has reached the idle connection
        if reads._idle[0].closed:
            break
        await asyncio.sleep(0.01)
    assert await reads.get("k") == b"v"


async def test_concurrent_calls_each_get_their_own_reply(
    reads: LeanReads, raw: redis.Redis
) -> None:
    raw.mset({f"key-{n}": f"value-{n}" for n in range(200)})
    replies = await asyncio.gather(*(reads.mget(f"key-{n}", f"key-{n + 1}") for n in range(199)))
    assert replies == [[f"value-{n}".encode(), f"value-{n + 1}".encode()] for n in range(199)]
    assert len(reads._idle) > 1  # the calls did not queue on one connection


async def test_credentials_and_database_are_sent_once_per_connection(
    redis_port: int, raw: redis.Redis
) -> None:
    raw.execute_command("ACL", "SETUSER", "reader", "on", ">reader-pw", "~*", "+@all")
    in_db_3 = redis.Redis(port=redis_port, db=3)
    in_db_3.set("k", "in db 3")
    in_db_3.close()
    raw.set("k", "in db 0")
    lean = reads_for(f"redis://reader:reader-pw@127.0.0.1:{redis_port}/3", 1.0)
    wrong = reads_for(f"redis://reader:wrong@127.0.0.1:{redis_port}/3", 1.0)
    try:
        assert isinstance(lean, LeanReads)
        assert await lean.get("k") == b"in db 3"
        assert await lean.get("k") == b"in db 3"
        with pytest.raises(ResponseError):
            await wrong.get("k")
    finally:
        await lean.aclose()
        await wrong.aclose()


async def test_an_abandoned_call_never_returns_its_connection_to_the_pool(
    silent_port: int,
) -> None:
    lean = LeanReads(port=silent_port)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await lean.get("k")
        assert lean._idle == []  # its reply could still come and answer the next call
    finally:
        await lean.aclose()


def test_replies_parse_only_once_whole() -> None:
    reply = b"*3\r\n$5\r\nhello\r\n$-1\r\n$0\r\n\r\n"
    assert parse_reply(reply) == ([b"hello", None, b""], len(reply))
    for cut in range(len(reply)):
        with pytest.raises(IncompleteReply):
            parse_reply(reply[:cut])
    assert parse_reply(b"+OK\r\n:42\r\n") == (b"OK", 5)
    assert parse_reply(b"+OK\r\n:42\r\n", 5) == (42, 10)
    error, _ = parse_reply(b"-ERR no\r\n")
    assert isinstance(error, ResponseError) and str(error) == "ERR no"
    with pytest.raises(ConnectionError):
        parse_reply(b"?what\r\n")
    assert encode_command("MGET", "a", b"\r\n") == b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$2\r\n\r\n\r\n"


@pytest.mark.parametrize(
    ("url", "lean"),
    [
        ("redis://127.0.0.1:6379/0", True),
        ("redis://:secret@cache.test/2", True),
        ("unix:///run/redis.sock?db=1", True),
        ("rediss://cache.test:6380/0", False),  # TLS
        ("redis://cache.test/0?socket_keepalive=true", False),  # an option LeanReads lacks
    ],
)
def test_plain_urls_read_lean_and_the_rest_through_redis_py(url: str, lean: bool) -> None:
    reads = reads_for(url, 0.25)
    assert isinstance(reads, LeanReads if lean else RedisPyReads)


async def test_a_server_out_of_step_fails_the_call_and_loses_the_connection() -> None:
    answers: list[bytes] = [b"$1\r\na\r\n$1\r\nb\r\n", b"$1\r\nc\r\n"]  # two replies to one

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            writer.write(answers.pop(0) if answers else b"$-1\r\n")

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    lean = LeanReads(port=port)
    try:
        with pytest.raises(ConnectionError, match="unexpected bytes"):
            await lean.get("k")
        assert lean._idle == []
        assert await lean.get("k") == b"c"  # a new connection, in step
    finally:
        await lean.aclose()
        server.close()
        await server.wait_closed()


async def test_reads_past_the_connection_cap_fail_at_once(
    redis_port: int, raw: redis.Redis
) -> None:
    raw.set("k", "v")
    lean = LeanReads(port=redis_port, max_connections=2)
    try:
        paused = [asyncio.ensure_future(lean.get("k")) for _ in range(3)]
        results = await asyncio.gather(*paused, return_exceptions=True)
        assert results.count(b"v") == 2
        refused = [r for r in results if isinstance(r, ConnectionError)]
        assert len(refused) == 1 and "too many Redis connections" in str(refused[0])
        assert await lean.get("k") == b"v"  # the two are back in the pool
        assert lean._open == 2
    finally:
        await lean.aclose()
    assert lean._open == 0
