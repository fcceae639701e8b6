"""Failed admin authentications per client IP (admin/auth.py AuthFailures)."""

from __future__ import annotations

from openflare.admin.auth import AuthFailures, token_matches


def test_locked_after_the_limit_until_the_window_ends() -> None:
    clock = [1000.0]
    failures = AuthFailures(clock=lambda: clock[0])
    for expected in (1, 2, 3):
        assert failures.retry_after("10.0.0.1", 3, 60) == 0
        assert failures.failed("10.0.0.1", 60) == expected
    assert failures.retry_after("10.0.0.1", 3, 60) == 60
    assert failures.retry_after("10.0.0.2", 3, 60) == 0  # per client
    clock[0] += 59.5
    assert failures.retry_after("10.0.0.1", 3, 60) == 1  # rounded up
    clock[0] += 0.5
    assert failures.retry_after("10.0.0.1", 3, 60) == 0
    assert len(failures) == 0  # an expired window is forgotten
    assert failures.failed("10.0.0.1", 60) == 1  # a new window


def test_limit_zero_never_locks() -> None:
    failures = AuthFailures(clock=lambda: 0.0)
    for _ in range(50):
        failures.failed("c", 60)
    assert failures.retry_after("c", 0, 60) == 0


def test_the_table_is_bounded() -> None:
    failures = AuthFailures(clock=lambda: 0.0)
    failures.MAX_CLIENTS = 100
    for index in range(1000):
        failures.failed(f"10.0.{index // 256}.{index % 256}", 60)
    assert len(failures) == 100
    assert failures.retry_after("10.0.3.231", 1, 60) == 60  # the newest are kept


def test_token_check() -> None:
    assert token_matches("Bearer s3cret", "s3cret")
    assert token_matches("bearer  s3cret ", "s3cret")
    assert not token_matches("Basic s3cret", "s3cret")
    assert not token_matches("Bearer other", "s3cret")
    assert not token_matches(None, "s3cret") and not token_matches("Bearer x", None)
