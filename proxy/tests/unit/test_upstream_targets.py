"""Several targets per upstream: round robin, passive health (upstream/targets.py), and the
`base_url` / `targets` config forms (config/models.py)."""

from __future__ import annotations

from unittest import mock

import pytest
from pydantic import ValidationError

from openflare.config.models import UpstreamConfig
from openflare.upstream import targets as targets_module
from openflare.upstream.targets import TargetSet


def config(**extra: object) -> UpstreamConfig:
    data: dict[str, object] = {"name": "o", "targets": ["http://a", "http://b", "http://c"]}
    data.update(extra)
    return UpstreamConfig.model_validate(data)


@pytest.mark.parametrize(
    ("data", "base_url", "targets"),
    [
        ({"base_url": "http://a/"}, "http://a", ("http://a",)),
        ({"targets": ["http://a", "http://b/"]}, "http://a", ("http://a", "http://b")),
        (
            {"base_url": "http://a", "targets": ["http://a/", "http://b"]},
            "http://a",
            ("http://a", "http://b"),
        ),
    ],
)
def test_base_url_and_targets_forms(
    data: dict[str, object], base_url: str, targets: tuple[str, ...]
) -> None:
    upstream = UpstreamConfig.model_validate({"name": "o", **data})
    assert (upstream.base_url, upstream.targets) == (base_url, targets)
    assert UpstreamConfig.model_validate(upstream.model_dump()) == upstream  # round trip


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "set base_url (one target) or targets"),
        ({"base_url": "http://z", "targets": ["http://a"]}, "base_url must be targets[0]"),
        ({"targets": ["http://a", "http://a/"]}, "duplicate target"),
        ({"targets": ["ftp://a"]}, "must start with http:// or https://"),
        ({"targets": ["http://a?x=1"]}, "must not contain a query"),
        ({"base_url": "http://a", "max_fails": -1}, "greater than or equal to 0"),
        ({"base_url": "http://a", "retries": 11}, "less than or equal to 10"),
    ],
)
def test_invalid_target_configs(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        UpstreamConfig.model_validate({"name": "o", **data})
    assert message in str(info.value)


def test_round_robin() -> None:
    targets = TargetSet(config())
    assert [targets.pick().url for _ in range(6)] == [  # type: ignore[union-attr]
        "http://a",
        "http://b",
        "http://c",
        "http://a",
        "http://b",
        "http://c",
    ]


def test_a_retry_takes_the_next_target_without_shifting_the_rotation() -> None:
    targets = TargetSet(config())
    first = targets.pick()
    assert first is not None and first.url == "http://a"
    retry = targets.pick([first])
    assert retry is not None and retry.url == "http://b"
    assert targets.pick().url == "http://b"  # type: ignore[union-attr]
    everything = list(targets.targets)
    assert targets.pick(everything) is None


def test_consecutive_failures_eject_for_a_while() -> None:
    clock = [100.0]
    with mock.patch.object(targets_module.time, "monotonic", lambda: clock[0]):
        targets = TargetSet(config(max_fails=2, fail_timeout_ms=5000))
        b = targets.targets[1]
        assert targets.failed(b) is False
        targets.succeeded(b)  # a success clears the count
        assert targets.failed(b) is False
        assert targets.failed(b) is True  # two in a row: ejected
        assert b.ejections == 1
        picked = [targets.pick() for _ in range(4)]
        assert b not in picked
        view = {v["url"]: v for v in targets.view()}
        assert view["http://b"]["healthy"] is False and view["http://b"]["ejected_for_ms"] == 5000
        clock[0] += 5.0  # rested
        assert b in [targets.pick() for _ in range(3)]
        assert targets.view()[1]["healthy"] is True


def test_all_ejected_still_picks_the_one_back_soonest() -> None:
    clock = [0.0]
    with mock.patch.object(targets_module.time, "monotonic", lambda: clock[0]):
        targets = TargetSet(config(max_fails=1, fail_timeout_ms=1000))
        a, b, c = targets.targets
        targets.failed(a)
        clock[0] = 0.5
        targets.failed(b)
        targets.failed(c)
        assert targets.pick() is a
        assert targets.pick([a]) is b


def test_single_target_is_never_ejected_and_max_fails_zero_never_ejects() -> None:
    single = TargetSet(UpstreamConfig(name="o", base_url="http://a"))
    (only,) = single.targets
    for _ in range(10):
        assert single.failed(only) is False
    assert single.pick() is only and single.pick([only]) is None
    never = TargetSet(config(max_fails=0))
    for _ in range(10):
        assert never.failed(never.targets[0]) is False
