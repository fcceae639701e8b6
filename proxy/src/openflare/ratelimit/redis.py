"""The Redis backend: one atomic Lua script per decision, so N replicas enforce one limit.

The script is `bucket.decide` in Lua: it reads the Redis server's clock (`TIME`), checks the
bucket of every rule the request matched, and commits them only if no enforcing rule denied —
all in one EVALSHA, so two proxies can never both spend the last token. Each bucket is one
string key holding its `tat` (µs since `EPOCH`) with a TTL that ends when the bucket is full
again, so Redis forgets idle clients by itself.

Failures (refused or timed-out connections, script errors) never raise into the request:
`decide` returns None and the stage applies `on_backend_error`. Each failure is counted; an
error line is logged at most once per `error_log_interval_s` (with how many were suppressed).
After a failure, requests skip Redis for `retry_interval_ms` (no request waits on a dead
server), then one request probes it; when it answers, a recovery line is logged and every
request uses Redis again. One `asyncio.timeout` bounds each call (no per-command socket
timeout, no hidden retries), so a decision waits at most `connect_timeout_ms + timeout_ms`.

The script goes over the lean RESP client (`openflare/resp.py`, `LeanScripts`) for plain
`redis://` and `unix://` URLs: redis-py's Python cost more than the rest of a request's rate
limiting (docs/12-performance.md). At `max_connections` a call waits for a connection to come
back, as redis-py's blocking pool did, within the same timeout. A `rediss://` (TLS) URL or one
with other connection options keeps redis-py.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from openflare.ratelimit.bucket import EPSILON, Decision, Limit
from openflare.resp import RespPool, encode_command, lean_options

if TYPE_CHECKING:
    from openflare.observability.logging import LogWriter
    from openflare.observability.metrics import Metrics
    from openflare.ratelimit.base import BucketKey
    from openflare.ratelimit.rules import RedisBackendConfig

# TIME is taken relative to this (2020-09-13), so µs timestamps stay far below 2**53 and
# keep sub-µs resolution in Lua's doubles.
EPOCH = 1_600_000_000
EPSILON_US = EPSILON * 1e6

# KEYS[i]: the bucket of the i-th matched rule (most specific first).
# ARGV[1]: "" to use the server's TIME (always, in production); a time in µs (tests only).
# ARGV[2 + 3(i-1) ..]: interval µs, tau µs, "1" enforce / "0" shadow, for KEYS[i].
# Returns {admitted, allowed_1, backlog_1_us, allowed_2, backlog_2_us, ...} (integers).
SCRIPT = f"""
if redis.replicate_commands then redis.replicate_commands() end
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = (tonumber(t[1]) - {EPOCH}) * 1000000 + tonumber(t[2])
end
local n = #KEYS
local tats, allowed = {{}}, {{}}
local admitted = true
for i = 1, n do
  local j = 2 + (i - 1) * 3
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat == nil or tat < now then tat = now end
  tats[i] = tat
  allowed[i] = (tat - now) <= tonumber(ARGV[j + 1]) + {EPSILON_US!r}
  if not allowed[i] and ARGV[j + 2] == '1' then admitted = false end
end
local out = {{admitted and 1 or 0}}
for i = 1, n do
  local tat = tats[i]
  if admitted and allowed[i] then
    tat = tat + tonumber(ARGV[2 + (i - 1) * 3])
    redis.call('SET', KEYS[i], string.format('%.17g', tat), 'PX',
               math.max(1, math.ceil((tat - now) / 1000)))
  end
  out[#out + 1] = allowed[i] and 1 or 0
  out[#out + 1] = math.floor(tat - now + 0.5)
end
return out
"""
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
# The same checks without the commit, for `peek` (POST /admin/explain): no bucket is written.
_COMMIT = """    redis.call('SET', KEYS[i], string.format('%.17g', tat), 'PX',
               math.max(1, math.ceil((tat - now) / 1000)))
"""
PEEK_SCRIPT = SCRIPT.replace(_COMMIT, "")
assert PEEK_SCRIPT != SCRIPT, "the commit in SCRIPT changed: update _COMMIT"
BACKEND_ERRORS = (RedisError, OSError, TimeoutError)


class ScriptClient(Protocol):
    """The three calls this backend makes (redis.asyncio.Redis; a fake in unit tests)."""

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: str) -> Any: ...

    async def eval(self, script: str, numkeys: int, *keys_and_args: str) -> Any: ...

    async def aclose(self) -> None: ...


def redacted(url: str) -> str:
    """The URL without its password, for logs: in the authority (`redis://:pw@host`) and in
    the query (`?password=`, which redis-py reads too)."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        url = urlunsplit(parts._replace(netloc=netloc))
    base, question, query = url.partition("?")
    if not question:
        return url
    query = "&".join(
        f"{name}=***" if sep and value and name.lower() == "password" else f"{name}{sep}{value}"
        for name, sep, value in (pair.partition("=") for pair in query.split("&"))
    )
    return f"{base}?{query}"


class LeanScripts(RespPool):
    """`EVALSHA` / `EVAL` on the lean client's pool (a full pool waits for a connection)."""

    def __init__(self, *, max_connections: int, **address: Any) -> None:
        super().__init__(max_connections=max_connections, wait_for_room=True, **address)

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: str) -> Any:
        try:
            return await self.call(encode_command("EVALSHA", sha, str(numkeys), *keys_and_args))
        except ResponseError as error:
            if str(error).startswith("NOSCRIPT"):  # as redis-py maps it
                raise NoScriptError(str(error)) from None
            raise

    async def eval(self, script: str, numkeys: int, *keys_and_args: str) -> Any:
        return await self.call(encode_command("EVAL", script, str(numkeys), *keys_and_args))


def connect(config: RedisBackendConfig) -> tuple[ScriptClient, BlockingConnectionPool | None]:
    """The script client for `config.url`: `LeanScripts` for a plain URL (no redis-py pool to
    disconnect: None), else redis-py on a blocking pool."""
    address = lean_options(config.url)
    if address is not None:
        return LeanScripts(max_connections=config.max_connections, **address), None
    timeout = config.timeout_ms / 1000
    pool = BlockingConnectionPool.from_url(
        config.url,
        max_connections=config.max_connections,
        timeout=timeout,  # wait for a free pooled connection at most this long
        socket_connect_timeout=config.connect_timeout_ms / 1000,
        # no per-command timeout: `decide` and `peek` bound the whole call (asyncio.timeout),
        # and a `socket_timeout` would cost an `asyncio.wait_for` (a new task before Python
        # 3.12) and a timeout context per command (redis-py 8 defaults to 5 s: say None)
        socket_timeout=None,
        retry=Retry(NoBackoff(), 0),  # the timeouts are the whole budget: no hidden retries
    )
    return cast(ScriptClient, Redis(connection_pool=pool)), pool


def script_args(limits: Sequence[Limit]) -> list[str]:
    args = [""]
    for limit in limits:
        args += (repr(limit.interval * 1e6), repr(limit.tau * 1e6), "1" if limit.enforce else "0")
    return args


def parse_reply(reply: Sequence[Any], count: int) -> Decision:
    if len(reply) != 1 + 2 * count:
        raise RedisError(f"unexpected script reply of {len(reply)} items for {count} buckets")
    allowed = tuple(bool(int(reply[1 + 2 * i])) for i in range(count))
    backlog = tuple(int(reply[2 + 2 * i]) / 1e6 for i in range(count))
    return Decision(bool(int(reply[0])), allowed, backlog, (None,) * count)


class RedisBackend:
    name = "redis"
    waits = True  # so no request is run inline with it: its calls are always in a task
    __slots__ = (
        "_client",
        "_pool",
        "_prefix",
        "_budget",
        "_retry_interval",
        "_log_interval",
        "_clock",
        "_log",
        "_errors",
        "_url",
        "_args",
        "_failing",
        "_probing",
        "_down_until",
        "_last_logged",
        "_suppressed",
    )

    def __init__(
        self,
        config: RedisBackendConfig,
        log: LogWriter,
        metrics: Metrics,
        *,
        client: ScriptClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool: BlockingConnectionPool | None = None
        if client is None:
            client, self._pool = connect(config)
        self._client = client
        self._prefix = config.key_prefix
        # the whole wait of one decision: a new connection, then the script
        self._budget = (config.connect_timeout_ms + config.timeout_ms) / 1000
        self._retry_interval = config.retry_interval_ms / 1000
        self._log_interval = config.error_log_interval_s
        self._clock = clock
        self._log = log
        self._errors = metrics.ratelimit_backend_errors.labels(self.name)
        self._url = redacted(config.url)
        self._args: dict[tuple[Limit, ...], list[str]] = {}
        self._failing = False  # the last attempt failed
        self._probing = False  # one request is trying Redis again
        self._down_until = 0.0  # while failing, requests skip Redis until then
        self._last_logged = -math.inf
        self._suppressed = 0

    @property
    def failing(self) -> bool:
        return self._failing

    async def decide(self, keys: Sequence[BucketKey], limits: Sequence[Limit]) -> Decision | None:
        probe = False
        if self._failing:
            if self._probing or self._clock() < self._down_until:
                return None
            self._probing = probe = True
        limits = tuple(limits)
        args = self._args.get(limits)
        if args is None:
            if len(self._args) >= 1024:  # combinations of matched rules; reloads add more
                self._args.clear()
            args = self._args[limits] = script_args(limits)
        prefix = self._prefix
        redis_keys = [f"{prefix}{rule_id}:{client}" for rule_id, client in keys]
        try:
            async with asyncio.timeout(self._budget):
                reply = await self._eval(redis_keys, args)
            decision = parse_reply(reply, len(keys))
        except BACKEND_ERRORS as exc:
            self._failed(exc)
            return None
        finally:
            if probe:
                self._probing = False
        if self._failing:
            self._recovered()
        return decision

    async def peek(self, keys: Sequence[BucketKey], limits: Sequence[Limit]) -> Decision | None:
        """What `decide` would answer now, writing nothing; None when Redis cannot answer
        (not counted as a backend failure: an explain request is not traffic)."""
        redis_keys = [f"{self._prefix}{rule_id}:{client}" for rule_id, client in keys]
        args = script_args(tuple(limits))
        try:
            async with asyncio.timeout(self._budget):
                reply = await self._client.eval(PEEK_SCRIPT, len(keys), *redis_keys, *args)
            return parse_reply(cast(Sequence[Any], reply), len(keys))
        except BACKEND_ERRORS:
            return None

    async def _eval(self, keys: list[str], args: list[str]) -> Sequence[Any]:
        client = self._client
        try:
            reply = await client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
        except NoScriptError:  # first use on this server, or it restarted: EVAL caches it
            reply = await client.eval(SCRIPT, len(keys), *keys, *args)
        return cast(Sequence[Any], reply)

    def _failed(self, exc: BaseException) -> None:
        self._errors.inc()
        now = self._clock()
        self._failing = True
        self._down_until = now + self._retry_interval
        if now - self._last_logged < self._log_interval:
            self._suppressed += 1
            return
        self._log.event(
            "error",
            "ratelimit_backend_error",
            backend=self.name,
            url=self._url,
            error=f"{type(exc).__name__}: {exc}"[:300],
            suppressed=self._suppressed,
            retry_in_ms=round(self._retry_interval * 1000),
        )
        self._last_logged = now
        self._suppressed = 0

    def _recovered(self) -> None:
        self._failing = False
        self._log.event(
            "info",
            "ratelimit_backend_recovered",
            backend=self.name,
            url=self._url,
            suppressed=self._suppressed,
        )
        self._suppressed = 0

    async def close(self) -> None:
        try:
            await self._client.aclose()
            if self._pool is not None:
                await self._pool.disconnect()
        except BACKEND_ERRORS:
            pass  # closing a connection to a dead server: nothing left to release
