"""The local backend: bounded table, lossless idle eviction, check-all-then-commit."""

import pytest

from openflare.ratelimit.bucket import Limit
from openflare.ratelimit.memory import MemoryBackend


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_flood_of_distinct_keys_keeps_table_at_max_keys() -> None:
    clock = FakeClock()
    backend = MemoryBackend(max_keys=1000, clock=clock)
    limit = (Limit.of(1, 5),)
    for i in range(200_000):
        decision = backend.decide_now(
            [("global", f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")], limit
        )
        assert decision.admitted
        assert len(backend) <= 1000
    assert len(backend) == 1000
    assert backend.evicted == 199_000


def test_idle_full_buckets_are_forgotten_first() -> None:
    clock = FakeClock()
    backend = MemoryBackend(max_keys=100, clock=clock)
    limit = (Limit.of(10, 1),)  # full again 0.1 s after a request
    for i in range(100):
        backend.decide_now([("r", f"old{i}")], limit)
    clock.now += 1.0  # every old bucket is full again
    for i in range(50):
        backend.decide_now([("r", f"new{i}")], limit)
    assert backend.evicted == 0  # only full (lossless) buckets went: two per new key
    assert backend.expired == 100
    assert len(backend) == 50
    clock.now += 1.0
    assert backend.sweep() == 50
    assert len(backend) == 0


def test_eviction_under_pressure_drops_least_recently_used() -> None:
    clock = FakeClock()
    backend = MemoryBackend(max_keys=3, clock=clock)
    limit = (Limit.of(1, 2),)
    for name in ("a", "b", "c"):
        backend.decide_now([("r", name)], limit)
    backend.decide_now([("r", "a")], limit)  # a is now the most recent
    backend.decide_now([("r", "d")], limit)  # evicts b
    assert not backend.decide_now([("r", "a")], limit).admitted  # a kept its state
    assert backend.decide_now([("r", "b")], limit).admitted  # b starts over
    assert backend.evicted >= 1


def test_resize_shrinks_in_place() -> None:
    backend = MemoryBackend(max_keys=10, clock=FakeClock())
    for i in range(10):
        backend.decide_now([("r", str(i))], (Limit.of(1, 1),))
    backend.resize(4)
    assert len(backend) == 4 and backend.max_keys == 4


def test_denied_request_spends_nothing_in_any_bucket() -> None:
    clock = FakeClock()
    backend = MemoryBackend(max_keys=100, clock=clock)
    inner, outer = Limit.of(1, 1), Limit.of(1, 3)
    keys = [("inner", "c"), ("outer", "c")]
    assert backend.decide_now(keys, (inner, outer)).admitted
    assert not backend.decide_now(keys, (inner, outer)).admitted
    assert not backend.decide_now(keys, (inner, outer)).admitted
    # outer spent one token (the admitted request), not three
    assert backend.decide_now([("outer", "c")], (outer,)).admitted
    assert backend.decide_now([("outer", "c")], (outer,)).admitted
    assert not backend.decide_now([("outer", "c")], (outer,)).admitted


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # (advance seconds, admitted?) with 2/s, burst 2
        ([(0, True), (0, True), (0, False)], "burst"),
        ([(0, True), (0, True), (0.5, True), (0, False)], "refill"),
        ([(0, True), (0, True), (0.25, False), (0.25, True)], "fractional"),
        ([(0, True), (0, True), (3600, True), (0, True), (0, False)], "idle"),
    ],
)
def test_fake_clock_table(steps: list[tuple[float, bool]], expected: str) -> None:
    clock = FakeClock()
    backend = MemoryBackend(max_keys=10, clock=clock)
    limit = (Limit.of(2, 2),)
    for advance, admitted in steps:
        clock.now += advance
        assert backend.decide_now([("r", "k")], limit).admitted is admitted, expected


async def test_async_decide_and_close() -> None:
    backend = MemoryBackend(max_keys=10, clock=FakeClock())
    decision = await backend.decide([("r", "k")], (Limit.of(1, 1),))
    assert decision.admitted
    await backend.close()
    assert len(backend) == 0
