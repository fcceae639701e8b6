"""Process and application state: response stamps, hit counters, fail switch, stores."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection

#: Scope key holding the lazily allocated :class:`Stamp` of the current response.
STAMP_KEY = "openflare.stamp"


@dataclass(frozen=True, slots=True)
class Stamp:
    """Identity of one response: ``X-Origin-Seq`` / ``X-Origin-Time`` and body ``seq``/``ts``."""

    seq: int
    epoch: float

    @property
    def ts(self) -> str:
        """``time.time()`` with microseconds, exactly as sent in ``X-Origin-Time``."""
        return f"{self.epoch:.6f}"


class _SeqCounter:
    """Process-wide, thread-safe response counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0

    def next(self) -> int:
        with self._lock:
            self._value += 1
            return self._value


SEQ = _SeqCounter()


def stamp_scope(scope: MutableMapping[str, Any]) -> Stamp:
    """Return the stamp of the response being produced for ``scope``, allocating it once."""
    stamp = scope.get(STAMP_KEY)
    if stamp is None:
        stamp = Stamp(seq=SEQ.next(), epoch=round(time.time(), 6))
        scope[STAMP_KEY] = stamp
    assert isinstance(stamp, Stamp)
    return stamp


def stamp_of(conn: HTTPConnection) -> Stamp:
    return stamp_scope(conn.scope)


class HitCounter:
    """Per raw-path request counter, safe to use from the event loop and worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: dict[str, int] = {}

    def add(self, path: str) -> None:
        with self._lock:
            self._hits[path] = self._hits.get(path, 0) + 1

    def get(self, path: str) -> int:
        with self._lock:
            return self._hits.get(path, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._hits)

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


@dataclass
class OriginState:
    """Mutable per-application state (one instance per :func:`create_app` call)."""

    hits: HitCounter = field(default_factory=HitCounter)
    #: ``None`` when off, else ``"close"`` or a 5xx status code as a string.
    fail_mode: str | None = None
    etag_version: int = 1
    last_modified_version: int = 1
    items: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_item_id: int = 1
    sessions: dict[str, str] = field(default_factory=dict)
    webhooks: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=100))
    next_webhook_id: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        """Back to the start-up state (hit counters, fail switch, versions, stores)."""
        with self.lock:
            self.hits.reset()
            self.fail_mode = None
            self.etag_version = 1
            self.last_modified_version = 1
            self.items.clear()
            self.next_item_id = 1
            self.sessions.clear()
            self.webhooks.clear()
            self.next_webhook_id = 1


def origin_state(conn: HTTPConnection) -> OriginState:
    state = conn.app.state.origin
    assert isinstance(state, OriginState)
    return state
