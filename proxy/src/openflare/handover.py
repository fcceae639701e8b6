"""`in_a_task`: what code that needs the current task awaits first.

The stage chain of a request without a body starts inline, in the connection's read callback,
outside any task (pipeline/inline.py). Code that needs a task (`asyncio.timeout`,
`asyncio.current_task`) awaits `in_a_task()` first: in a task it returns at once; in an inline
run it stops the run there (`HANDOVER`), and aiohttp's handler goes on with the same coroutine
in a task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any


class _Handover:
    """What an inline run yields to stop and be handed to aiohttp (`await HANDOVER`)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        yield self


HANDOVER = _Handover()


async def in_a_task() -> None:
    """Return at once in a task; in an inline run, hand the request over to aiohttp first."""
    if asyncio.current_task() is None:
        await HANDOVER
