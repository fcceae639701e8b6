"""The waiting line of the connection pools (`openflare/waiting_line.py`): callers go on in
arrival order, one per `wake_one`; one that leaves after being picked passes its turn on; a
closed pool fails everyone still waiting."""

from __future__ import annotations

import asyncio

import pytest

from openflare.waiting_line import WaitingLine


async def test_callers_go_on_one_per_wake_in_arrival_order() -> None:
    line = WaitingLine()
    went_on: list[int] = []

    async def caller(number: int) -> None:
        await line.wait()
        went_on.append(number)

    callers = [asyncio.ensure_future(caller(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert len(line) == 3
    line.wake_one()
    await asyncio.sleep(0)
    assert went_on == [0]
    line.wake_one()
    line.wake_one()
    await asyncio.gather(*callers)
    assert went_on == [0, 1, 2] and len(line) == 0
    line.wake_one()  # nobody waiting: nothing happens


async def test_a_caller_picked_but_leaving_passes_its_turn_on() -> None:
    line = WaitingLine()
    first = asyncio.ensure_future(line.wait())
    second = asyncio.ensure_future(line.wait())
    await asyncio.sleep(0)
    line.wake_one()  # picks the first ...
    first.cancel()  # ... which leaves before it runs (a timeout)
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 5)  # the turn went to the second
    assert len(line) == 0


async def test_a_caller_that_leaves_unpicked_takes_no_turn() -> None:
    line = WaitingLine()
    leaving = asyncio.ensure_future(line.wait())
    staying = asyncio.ensure_future(line.wait())
    await asyncio.sleep(0)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    line.wake_one()  # the cancelled one is skipped
    await asyncio.wait_for(staying, 5)


async def test_fail_all_gives_every_waiting_caller_the_error() -> None:
    line = WaitingLine()
    callers = [asyncio.ensure_future(line.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    line.fail_all(ConnectionError("pool closed"))
    for caller in callers:
        with pytest.raises(ConnectionError, match="pool closed"):
            await caller
    assert len(line) == 0
