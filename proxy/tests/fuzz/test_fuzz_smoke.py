"""The fuzz target stays runnable: its seeds and a short hypothesis run pass `check` (the long
run is `make fuzz`)."""

from __future__ import annotations

import pytest
from fuzz_request_head import SEEDS, check
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize("seed", SEEDS)
def test_seed(seed: bytes) -> None:
    check(seed)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    check(data)
