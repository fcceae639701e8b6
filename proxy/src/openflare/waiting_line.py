"""Callers waiting for room in a connection pool, woken one at a time in arrival order: the
upstream client's pool (upstream/http1.py) and the lean Redis client's (resp.py)."""

from __future__ import annotations

import asyncio
from collections import deque


class WaitingLine:
    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self._waiters)

    async def wait(self) -> None:
        """Until `wake_one` picks this caller. A caller that leaves (a timeout, a cancel) after
        being picked passes its turn to the next in line."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.wake_one()  # picked but leaving: the room goes to the next in line
            else:
                waiter.cancel()
            raise

    def wake_one(self) -> None:
        """Room came free: the longest-waiting caller still waiting goes on."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def fail_all(self, error: BaseException) -> None:
        """The pool closed: every caller still waiting gets `error`."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self._waiters.clear()
