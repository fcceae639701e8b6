"""The local backend: buckets in this process's memory, bounded by `max_keys`.

The table maps (rule id, client) to the bucket's `tat` (one float, see bucket.py), ordered by
last update. Adding a key first forgets up to two of the oldest keys whose bucket is full again
(`tat <= now`: lossless), then, while the table is at `max_keys`, the least recently updated key
(that client starts over with a full bucket: a flood of new addresses costs memory of at most
`max_keys` entries, never more). Time comes from an injected monotonic clock.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from openflare.ratelimit.bucket import Decision, Limit, decide

if TYPE_CHECKING:
    from openflare.ratelimit.base import BucketKey

IDLE_SWEEP = 2  # full buckets forgotten per inserted key (amortised cleanup, no timer task)


class MemoryBackend:
    name = "local"
    waits = False
    __slots__ = ("_table", "_max_keys", "_clock", "evicted", "expired")

    def __init__(self, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._table: OrderedDict[BucketKey, float] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock
        self.evicted = 0  # forgotten before their bucket was full (table at max_keys)
        self.expired = 0  # forgotten because their bucket was full again

    def __len__(self) -> int:
        return len(self._table)

    @property
    def max_keys(self) -> int:
        return self._max_keys

    def resize(self, max_keys: int) -> None:
        self._max_keys = max_keys
        while len(self._table) > max_keys:
            self._table.popitem(last=False)
            self.evicted += 1

    async def decide(self, keys: Sequence[BucketKey], limits: Sequence[Limit]) -> Decision:
        return self.decide_now(keys, limits)

    def decide_now(self, keys: Sequence[BucketKey], limits: Sequence[Limit]) -> Decision:
        now = self._clock()
        table = self._table
        decision = decide(list(map(table.get, keys)), now, limits)
        if decision.admitted:
            new_tats = decision.tats
            for i in range(len(keys)):
                tat = new_tats[i]
                if tat is None:
                    continue
                key = keys[i]
                if key in table:
                    table[key] = tat
                    table.move_to_end(key)
                else:
                    self._insert(key, tat, now)
        return decision

    async def peek(self, keys: Sequence[BucketKey], limits: Sequence[Limit]) -> Decision:
        """The decision `decide` would make now; no bucket is changed or added."""
        return decide(list(map(self._table.get, keys)), self._clock(), limits)

    def _insert(self, key: BucketKey, tat: float, now: float) -> None:
        table = self._table
        for _ in range(IDLE_SWEEP):
            if not table:
                break
            oldest = next(iter(table))
            if table[oldest] > now:
                break
            del table[oldest]
            self.expired += 1
        while len(table) >= self._max_keys:
            table.popitem(last=False)
            self.evicted += 1
        table[key] = tat

    def sweep(self) -> int:
        """Forget every full bucket now (not on the request path; tests and admin use)."""
        now = self._clock()
        stale = [key for key, tat in self._table.items() if tat <= now]
        for key in stale:
            del self._table[key]
        self.expired += len(stale)
        return len(stale)

    async def close(self) -> None:
        self._table.clear()
