"""What the two bucket stores share: the `RateLimitBackend` protocol, and the one place that
picks a backend from config and keeps it across reloads (`BackendHolder`, held by `Deps`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from openflare.ratelimit.bucket import Decision, Limit
from openflare.ratelimit.memory import MemoryBackend

if TYPE_CHECKING:
    from openflare.observability.logging import LogWriter
    from openflare.observability.metrics import Metrics
    from openflare.ratelimit.rules import BackendConfig, RedisBackendConfig

# (rule id, client identity): buckets are keyed by rule id so they survive reloads.
BucketKey = tuple[str, str]


class RateLimitBackend(Protocol):
    name: str  # the `backend` label of openflare_ratelimit_backend_errors_total
    waits: bool  # decisions wait for a network round trip (see CacheStore.waits)

    async def decide(self, keys: Sequence[BucketKey], limits: Sequence[Limit]) -> Decision | None:
        """Check every bucket and commit atomically (see bucket.decide); None when the
        backend could not answer (the caller applies `on_backend_error`)."""
        ...

    async def peek(self, keys: Sequence[BucketKey], limits: Sequence[Limit]) -> Decision | None:
        """What `decide` would answer now, committing nothing (`POST /admin/explain`)."""
        ...

    async def close(self) -> None: ...


class BackendHolder:
    """The long-lived backends. A reload that keeps the backend settings keeps the very same
    object, so buckets survive; a changed `max_keys` resizes the local table in place. A Redis
    client whose settings changed is closed with the process, not at once: a runtime still
    finishing requests may use it, and a failed reload keeps the old runtime serving."""

    __slots__ = ("_clock", "_local", "_redis", "_redis_settings", "_retired")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock  # the local backend's clock (a fake one in tests)
        self._local: MemoryBackend | None = None
        self._redis: RateLimitBackend | None = None
        self._redis_settings: RedisBackendConfig | None = None
        self._retired: list[RateLimitBackend] = []

    def get(self, config: BackendConfig, log: LogWriter, metrics: Metrics) -> RateLimitBackend:
        if config.type == "local":
            if self._local is None:
                self._local = MemoryBackend(config.max_keys, self._clock)
            self._local.resize(config.max_keys)
            return self._local
        assert config.redis is not None  # validated: type redis needs a redis section
        if self._redis is None or config.redis != self._redis_settings:
            from openflare.ratelimit.redis import RedisBackend  # imports redis-py: only if used

            if self._redis is not None:
                self._retired.append(self._redis)
            self._redis = RedisBackend(config.redis, log, metrics)
            self._redis_settings = config.redis
        return self._redis

    async def close(self) -> None:
        backends = [*self._retired, self._redis, self._local]
        self._retired.clear()
        self._redis = self._local = None
        for backend in backends:
            if backend is not None:
                await backend.close()
