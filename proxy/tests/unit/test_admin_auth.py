"""Failed admin authentications per client IP (admin/auth.py AuthFailures), and the one lockout
the admin listener and the decision trace's token header share (`Deps.auth_failures`)."""

from __future__ import annotations

import io
import time
from types import SimpleNamespace
from typing import Any, cast
from unittest import mock

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from openflare.admin.auth import (
    AuthFailures,
    admin_auth_middleware,
    client_key,
    secret_matches,
    token_matches,
)
from openflare.deps import Deps
from openflare.observability.logging import LogWriter
from openflare.pipeline import explain
from openflare.pipeline.base import Exchange


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


def test_token_check_never_raises_and_skips_huge_offers() -> None:
    assert not secret_matches("s3cret\udcff", "s3cret")  # a non-UTF-8 header, as aiohttp decodes it
    assert not token_matches("Bearer \udcff\ud800", "s3cret")
    assert not secret_matches("s3cret" + " x" * 600_000, "s3cret")  # a 1 MiB guess: not compared
    assert secret_matches(" s3cret ", "s3cret")


def test_client_key_one_spelling_per_address() -> None:
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key("::FFFF:192.0.2.1") == "192.0.2.1"
    assert client_key("192.0.2.1") == "192.0.2.1"
    assert client_key("2001:db8::1") == "2001:db8::1"
    assert client_key(None) == "unknown" and client_key("") == "unknown"
    failures = AuthFailures(clock=lambda: 0.0)
    failures.failed("::ffff:192.0.2.1", 60)
    failures.failed("192.0.2.1", 60)
    assert failures.retry_after("192.0.2.1", 2, 60) == 60 and len(failures) == 1


# --- one lockout for the admin listener and the trace token header ---------------------------

TOKEN = "a-very-secret-admin-token-1234"
LIMIT = 3
PEER = "198.51.100.7"


def _bundle() -> Any:
    from test_explain import PROXY, make_bundle

    proxy = {
        **PROXY,
        "admin_api": {"auth_failure_limit": LIMIT, "auth_failure_window_ms": 60_000},
        "explain": {"trace_enabled": True},
    }
    return make_bundle(proxy)


def _admin(deps: Deps, bundle: Any) -> Any:
    holder = SimpleNamespace(runtime=SimpleNamespace(bundle=bundle))
    return admin_auth_middleware(cast(Any, holder), None, deps.auth_failures)


async def _admin_status(middleware: Any, authorization: str, peer: str = PEER) -> int:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 40000) if name == "peername" else default
    )
    request = make_mocked_request(
        "GET", "/admin/config", headers={"Authorization": authorization}, transport=transport
    )

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    response = await middleware(request, handler)
    return int(response.status)


async def _traced(stage: explain.ExplainStage, token: str, ip: str = PEER) -> bool:
    request = make_mocked_request("GET", "/x", headers={"X-Edge-Trace-Token": token})
    exchange = Exchange(request, time.monotonic(), False)
    exchange.request_id = "req-lock"
    exchange.client_ip = ip
    seen: list[bool] = []

    async def next(exchange: Exchange) -> web.StreamResponse:
        seen.append(exchange.trace is not None)
        return web.Response(status=204)

    await stage(exchange, next)
    return seen[0]


async def test_wrong_trace_tokens_lock_the_admin_listener() -> None:
    bundle = _bundle()
    deps = Deps(log=LogWriter(io.BytesIO()))
    stage = explain.build(bundle, deps)
    assert stage is not None
    middleware = _admin(deps, bundle)
    assert await _admin_status(middleware, f"Bearer {TOKEN}") == 200
    for _ in range(LIMIT):
        assert not await _traced(stage, "guess", ip="::ffff:" + PEER)  # a dual-stack spelling
    assert await _admin_status(middleware, f"Bearer {TOKEN}") == 429  # the right token too
    assert not await _traced(stage, TOKEN)
    assert await _admin_status(middleware, f"Bearer {TOKEN}", peer="198.51.100.8") == 200
    assert await _traced(stage, TOKEN, ip="198.51.100.8")


async def test_wrong_admin_tokens_lock_the_trace_header() -> None:
    bundle = _bundle()
    deps = Deps(log=LogWriter(io.BytesIO()))
    stage = explain.build(bundle, deps)
    assert stage is not None
    middleware = _admin(deps, bundle)
    assert await _traced(stage, TOKEN)
    for _ in range(LIMIT - 1):
        assert await _admin_status(middleware, "Bearer guess") == 401
    assert not await _traced(stage, "guess")  # the third guess, on the public listener
    assert await _admin_status(middleware, "Bearer guess") == 429
    assert not await _traced(stage, TOKEN)  # locked out: the right token does not trace
    assert len(deps.auth_failures) == 1  # one entry per client, shared


async def test_mixed_guesses_stay_bounded() -> None:
    bundle = _bundle()
    deps = Deps(log=LogWriter(io.BytesIO()))
    deps.auth_failures.MAX_CLIENTS = 50
    stage = explain.build(bundle, deps)
    assert stage is not None
    middleware = _admin(deps, bundle)
    for index in range(200):
        await _traced(stage, "guess", ip=f"10.1.0.{index}")
        await _admin_status(middleware, "Bearer guess", peer=f"10.2.0.{index}")
    assert len(deps.auth_failures) == 50
