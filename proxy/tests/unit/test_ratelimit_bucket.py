"""The token-bucket math (GCRA) on a fake clock: table-driven cases and an exactness check."""

import random

import pytest

from openflare.ratelimit.bucket import (
    Limit,
    decide,
    policy_window,
    remaining,
    reset_seconds,
    retry_after,
)


def run(limit: Limit, times: list[float]) -> list[bool]:
    """Admission of one request at each time, against one bucket."""
    tat: float | None = None
    out = []
    for now in times:
        decision = decide([tat], now, [limit])
        out.append(decision.admitted)
        if decision.tats[0] is not None:
            tat = decision.tats[0]
    return out


def burst_at(t: float, n: int) -> list[float]:
    return [t] * n


CASES = [
    # (id, rate/s, burst, request times, expected admissions)
    ("burst-exactly-b", 1.0, 3, burst_at(0, 4), [True, True, True, False]),
    ("burst-of-one", 1.0, 1, burst_at(5, 2), [True, False]),
    ("2b-at-once-gives-b", 10.0, 5, burst_at(0, 10), [True] * 5 + [False] * 5),
    ("refill-one-after-1/r", 2.0, 2, [0, 0, 0, 0.5, 0.5], [True, True, False, True, False]),
    ("just-before-1/r", 2.0, 1, [0, 0.4999, 0.5], [True, False, True]),
    ("fractional-refill-accumulates", 4.0, 1, [0, 0.1, 0.2, 0.25], [True, False, False, True]),
    ("fractional-rate", 0.5, 1, [0, 1.0, 1.999, 2.0], [True, False, False, True]),
    ("steady-at-rate", 10.0, 1, [i / 10 for i in range(20)], [True] * 20),
    ("faster-than-rate", 10.0, 1, [i / 20 for i in range(6)], [True, False] * 3),
    (
        "long-idle-refills-to-burst-only",
        1.0,
        3,
        [0, 0, 0, 1e6, 1e6, 1e6, 1e6],
        [True] * 3 + [True] * 3 + [False],
    ),
    ("huge-timestamps", 3.0, 2, [1e9, 1e9, 1e9, 1e9 + 1 / 3], [True, True, False, True]),
    (
        "clock-backwards-never-refills",
        1.0,
        2,
        [100, 100, 50, 99, 100, 101],
        [True, True, False, False, False, True],
    ),
    ("backwards-fresh-bucket", 1.0, 1, [100, 10, 11], [True, False, False]),
    ("per-minute", 6.0 / 60, 1, [0, 9.99, 10.0], [True, False, True]),
]


@pytest.mark.parametrize(
    ("rate", "burst", "times", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_single_bucket(rate: float, burst: int, times: list[float], expected: list[bool]) -> None:
    assert run(Limit.of(rate, burst), times) == expected


@pytest.mark.parametrize("seed", range(8))
def test_never_more_than_b_plus_rt_in_any_window(seed: int) -> None:
    """Random arrivals: in every window [t_i, t_j] at most b + r·(t_j - t_i) are admitted,
    and a client that keeps asking gets exactly that many over a long run."""
    rng = random.Random(seed)
    rate = rng.choice([0.5, 1.0, 3.0, 7.0, 10.0])
    burst = rng.randint(1, 8)
    limit = Limit.of(rate, burst)
    times = sorted(rng.uniform(0, 20) for _ in range(400))
    admitted = [t for t, ok in zip(times, run(limit, times), strict=True) if ok]
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= burst + rate * (admitted[j] - start) + 1e-6
    # a greedy client (asking far more often than the rate) gets b + r·T, minus the fraction
    greedy = [k * 0.001 for k in range(20_000)]  # 20 s at 1000 req/s
    got = sum(run(limit, greedy))
    assert got == burst + int(rate * greedy[-1] + 1e-9)


def test_period_minute_is_rate_per_minute() -> None:
    limit = Limit.of(30, 1, period=60.0)
    assert limit.interval == 2.0
    assert run(limit, [0, 1.9, 2.0]) == [True, False, True]


# ---- several rules: check all, then commit


def test_denied_by_one_rule_spends_no_token_of_the_others() -> None:
    loose, tight = Limit.of(1, 5), Limit.of(1, 1)
    first = decide([None, None], 0.0, [tight, loose])
    assert first.admitted and list(first.allowed) == [True, True]
    tats = [first.tats[0], first.tats[1]]
    second = decide(tats, 0.0, [tight, loose])
    assert not second.admitted
    assert list(second.allowed) == [False, True]
    assert list(second.tats) == [None, None]  # the loose bucket was not charged
    assert remaining(second.backlog[1], loose) == 4


def test_shadow_rule_never_denies_and_spends_only_when_it_would_admit() -> None:
    enforce = Limit.of(1, 10)
    shadow = Limit.of(1, 1, enforce=False)
    first = decide([None, None], 0.0, [shadow, enforce])
    second = decide(list(first.tats), 0.0, [shadow, enforce])
    assert second.admitted
    assert list(second.allowed) == [False, True]
    assert second.tats[0] is None and second.tats[1] is not None


def test_shadow_rule_not_charged_when_an_enforcing_rule_denies() -> None:
    enforce = Limit.of(1, 1)
    shadow = Limit.of(1, 5, enforce=False)
    first = decide([None, None], 0.0, [enforce, shadow])
    second = decide(list(first.tats), 0.0, [enforce, shadow])
    assert not second.admitted
    assert list(second.tats) == [None, None]


# ---- what the 429 and the RateLimit headers report


@pytest.mark.parametrize(
    ("rate", "burst", "requests_at_0", "now", "expected"),
    [
        (1.0, 1, 1, 0.0, 1),
        (1 / 3, 1, 1, 0.0, 3),  # one token every 3 s: not the original's constant 1
        (1 / 3, 1, 1, 0.5, 3),  # 2.5 s left → 3
        (1 / 3, 1, 1, 1.0, 2),  # exactly 2 s left → 2, not 3
        (10.0, 5, 5, 0.0, 1),  # 0.1 s → 1
        (1 / 60, 2, 2, 0.0, 60),
    ],
)
def test_retry_after_is_seconds_until_next_token_rounded_up(
    rate: float, burst: int, requests_at_0: int, now: float, expected: int
) -> None:
    limit = Limit.of(rate, burst)
    tat: float | None = None
    for _ in range(requests_at_0):
        tat = decide([tat], 0.0, [limit]).tats[0]
    denied = decide([tat], now, [limit])
    assert not denied.admitted
    assert retry_after(denied.backlog[0], limit) == expected
    # waiting exactly that long is enough
    assert decide([tat], now + expected, [limit]).admitted


@pytest.mark.parametrize(
    ("taken", "later", "left", "reset"),
    [(1, None, 9, 1), (5, None, 5, 1), (10, None, 0, 1), (10, 0.5, 4, 1), (3, 5.0, 9, 1)],
)
def test_remaining_and_reset_after_admission(
    taken: int, later: float | None, left: int, reset: int
) -> None:
    """After `taken` requests at 0 (and one more at `later`), what the headers report."""
    limit = Limit.of(10, 10)
    tat: float | None = None
    for now in [0.0] * taken + ([later] if later is not None else []):
        decision = decide([tat], now, [limit])
        assert decision.admitted
        tat = decision.tats[0]
    assert remaining(decision.backlog[0], limit) == left
    assert reset_seconds(decision.backlog[0]) == reset


def test_remaining_is_zero_when_denied() -> None:
    limit = Limit.of(10, 2)
    tat = decide([decide([None], 0.0, [limit]).tats[0]], 0.0, [limit]).tats[0]
    denied = decide([tat], 0.0, [limit])
    assert not denied.admitted
    assert remaining(denied.backlog[0], limit) == 0
    assert reset_seconds(denied.backlog[0]) == 1


@pytest.mark.parametrize(
    ("rate", "period", "burst", "window"),
    [(10, 1.0, 20, 2), (50, 1.0, 100, 2), (5, 1.0, 10, 2), (10, 60.0, 5, 30), (3, 1.0, 1, 1)],
)
def test_policy_window(rate: float, period: float, burst: int, window: int) -> None:
    assert policy_window(Limit.of(rate, burst, period)) == window


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("enforce", [True, False])
def test_one_bucket_decides_as_that_bucket_does_among_several(seed: int, enforce: bool) -> None:
    """`decide` takes a shorter path for one bucket: it must give exactly (bit for bit) what the
    general loop gives for that bucket next to one that always admits."""
    rng = random.Random(seed)
    limit = Limit.of(rng.choice([0.5, 1.0, 3.0, 7.0]), rng.randint(1, 4), enforce=enforce)
    spare = Limit.of(1.0, 1_000_000)
    tat: float | None = None
    now = 1000.0
    for _ in range(300):
        now += rng.choice([0.0, 0.0, 0.01, 0.1, 0.3, 1.0, 2.5])
        if rng.random() < 0.05:
            tat = None
        one = decide([tat], now, [limit])
        pair = decide([tat, None], now, [limit, spare])
        assert one.admitted == pair.admitted
        assert list(one.allowed) == [pair.allowed[0]]
        assert list(one.backlog) == [pair.backlog[0]]
        assert list(one.tats) == [pair.tats[0]]
        if one.tats[0] is not None:
            tat = one.tats[0]
