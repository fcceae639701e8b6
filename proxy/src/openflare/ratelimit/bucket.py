"""Token-bucket math, as GCRA: pure functions of a stored time and `now`, no I/O, no clock.

A bucket of `burst` tokens refilled at one token per `interval` seconds is stored as one number,
its theoretical arrival time `tat`: the moment the bucket would be full again. A request at `now`
is admitted when `tat - now <= tau`, with `tau = (burst - 1) * interval`, and then moves `tat`
to `max(tat, now) + interval`. This is exactly the token bucket: over any interval of T seconds
at most `burst + T / interval` requests are admitted, and waiting `interval` after a denial
gives exactly one more. A key whose `tat <= now` holds a full bucket, so forgetting it changes
nothing — which is what makes idle eviction (memory) and key expiry (Redis) lossless.

`decide` checks every rule a request matched, then commits: a request denied by an enforcing
rule spends no token of any rule. The Lua script in redis.py is this same function.
The caller supplies `now` (monotonic locally, the Redis server's TIME in Redis), so a time
that goes backwards never refills a bucket.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

# Slack when comparing times (seconds): sums of intervals are not exact in binary, and a
# monotonic clock after months of uptime has a resolution near 1e-9. One microsecond is far
# below any rate a rule can express usefully.
EPSILON = 1e-6


@dataclass(frozen=True, slots=True)
class Limit:
    interval: float  # seconds per token
    tau: float  # burst tolerance: (burst - 1) * interval
    burst: int
    enforce: bool = True

    @classmethod
    def of(cls, rate: float, burst: int, period: float = 1.0, enforce: bool = True) -> Limit:
        """`rate` tokens per `period` seconds, bucket size `burst`."""
        interval = period / rate
        return cls(interval, (burst - 1) * interval, burst, enforce)


class Decision(NamedTuple):
    """The outcome for one request over the buckets of the rules it matched (same order).

    `backlog[i]` is `tat - now` after the decision (after the commit when rule i spent a
    token): 0 for a full bucket, `tau + wait` for a denied one."""

    admitted: bool  # no enforcing rule denied
    allowed: Sequence[bool]  # rule i alone would admit this request
    backlog: Sequence[float]
    tats: Sequence[float | None]  # the new stored value per bucket; None = unchanged


def decide(tats: Sequence[float | None], now: float, limits: Sequence[Limit]) -> Decision:
    """Check every bucket, then commit the ones that admit if no enforcing rule denied.

    `tats[i]` is the stored value of bucket i (None: never seen, a full bucket). Shadow rules
    (`enforce=False`) never deny the request; they spend a token only when they would admit it
    and it is admitted, so their bucket follows what enforcing it would do."""
    n = len(limits)
    if len(tats) != n:
        raise ValueError(f"{len(tats)} stored times for {n} limits")
    if n == 1:
        return _decide_one(tats[0], now, limits[0])
    current = [now] * n  # max(tat, now): time never runs backwards for a bucket
    allowed = [True] * n
    admitted = True
    for i in range(n):
        tat = tats[i]
        if tat is not None and tat > now:
            current[i] = tat
            limit = limits[i]
            if tat - now > limit.tau + EPSILON:
                allowed[i] = False
                if limit.enforce:
                    admitted = False
    new_tats: list[float | None] = [None] * n
    for i in range(n):  # (loops, not comprehensions: this runs on every request)
        if admitted and allowed[i]:
            current[i] = new_tats[i] = current[i] + limits[i].interval
        current[i] -= now  # now the backlog
    return Decision(admitted, allowed, current, new_tats)


def _decide_one(tat: float | None, now: float, limit: Limit) -> Decision:
    """`decide` for one bucket (most requests match one rule): the same arithmetic, in the
    same order, without the loops."""
    current = now
    allowed = True
    if tat is not None and tat > now:
        current = tat
        allowed = tat - now <= limit.tau + EPSILON
    if allowed:  # then admitted: only this bucket could deny
        current += limit.interval
        return Decision(True, [True], [current - now], [current])
    return Decision(not limit.enforce, [False], [current - now], [None])


def retry_after(backlog: float, limit: Limit) -> int:
    """Whole seconds until a denied request would be admitted (rounded up, at least 1)."""
    return max(1, math.ceil(backlog - limit.tau - 1e-6))


def remaining(backlog: float, limit: Limit) -> int:
    """Requests the bucket would admit right now."""
    return max(0, math.floor(limit.burst - backlog / limit.interval + 1e-6))


def reset_seconds(backlog: float) -> int:
    """Whole seconds until the bucket is full again."""
    return max(0, math.ceil(backlog - 1e-6))


def policy_window(limit: Limit) -> int:
    """The window of the IETF `RateLimit-Policy` (`q=burst;w=...`): time to refill a bucket."""
    return max(1, math.ceil(limit.burst * limit.interval - 1e-6))
