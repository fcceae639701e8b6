"""Request collapsing: concurrent misses for one key make one origin request.

The fetch runs as its own task, so the leader's client leaving never fails the requests waiting
on it; waiters give up after `wait_seconds` and fetch for themselves.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from openflare.handover import in_a_task

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._calls: dict[str, asyncio.Task[T]] = {}

    def in_flight(self, key: str) -> bool:
        return key in self._calls

    def start(self, key: str, fetch: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """The running fetch for `key`, or a new one."""
        task = self._calls.get(key)
        if task is None:
            task = asyncio.ensure_future(fetch())
            self._calls[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        return task

    def _done(self, key: str, task: asyncio.Task[T]) -> None:
        if self._calls.get(key) is task:
            del self._calls[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: a background refresh may have no one waiting

    async def join(
        self, key: str, fetch: Callable[[], Awaitable[T]], wait_seconds: float
    ) -> tuple[T | None, bool]:
        """(result, leader). A waiter that waits longer than `wait_seconds` gets (None, False)
        and fetches for itself."""
        # leader or waiter is decided at once, in the same step as the caller's cache lookup:
        # an inline run handed over in between could find the leader gone and fetch again
        existing = self._calls.get(key)
        if existing is None:
            task = self.start(key, fetch)
            return await asyncio.shield(task), True
        await in_a_task()  # asyncio.timeout needs a task (an inline run is handed over)
        try:
            async with asyncio.timeout(wait_seconds):
                return await asyncio.shield(existing), False
        except TimeoutError:
            return None, False
