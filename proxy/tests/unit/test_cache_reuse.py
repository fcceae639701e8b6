"""The freshness decision on a stored response (`cache.policy.reuse`), the stale-if-error one
(`may_serve_stale_on_error`), and that the explain dry run's prediction (`cache_explain.plan`)
is what the cache stage then does for the same stored entry and request."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from typing import Any

import bundle_factories
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from cache_factories import entry as cache_entry
from multidict import CIMultiDict, CIMultiDictProxy

from openflare.cache.entry import CacheEntry
from openflare.cache.policy import RequestDirectives, may_serve_stale_on_error, reuse
from openflare.config.loader import ConfigBundle
from openflare.deps import Deps
from openflare.observability.logging import LogWriter
from openflare.pipeline import cache, cache_explain
from openflare.pipeline.base import Exchange
from openflare.routing import Route

NOW = 1_800_000_000.0
ETAG = '"v1"'


def directives(*pairs: tuple[str, str]) -> RequestDirectives:
    return RequestDirectives.parse(CIMultiDictProxy(CIMultiDict(pairs)))


def stored(age: float, **fields: Any) -> CacheEntry:
    """A 200 fresh for 60 s (unless `lifetime` says otherwise), `age` seconds old at `NOW`."""
    return cache_entry(
        request_time=NOW - age,
        response_time=NOW - age,
        **{"lifetime": 60.0, **fields},
    )


CC = "Cache-Control"
# (request headers, age, entry fields, decision); every entry is fresh for 60 s unless its
# fields say otherwise
REUSE_CASES: list[tuple[tuple[tuple[str, str], ...], float, dict[str, Any], str]] = [
    ((), 10, {}, "fresh"),
    ((), 59, {}, "fresh"),
    ((), 60, {}, "validate"),  # fresh until the lifetime is reached, not at it
    ((), 61, {}, "validate"),
    ((), 0, {"lifetime": 0.0}, "validate"),
    ((), 10, {"no_cache": True}, "validate"),  # a no-cache response is always validated
    ((), 10, {"must_revalidate": True}, "fresh"),  # must-revalidate only matters once stale
    ((), 10, {"invalidated": True}, "validate"),  # soft purged: never fresh again
    # stale-while-revalidate (RFC 5861 §3)
    ((), 75, {"stale_while_revalidate": 30.0}, "stale-while-revalidate"),
    ((), 90, {"stale_while_revalidate": 30.0}, "stale-while-revalidate"),  # up to the edge
    ((), 91, {"stale_while_revalidate": 30.0}, "validate"),
    ((), 60, {"stale_while_revalidate": 30.0}, "validate"),  # 0 s stale is not "within"
    ((), 75, {"stale_while_revalidate": 30.0, "must_revalidate": True}, "validate"),
    ((), 75, {"stale_while_revalidate": 30.0, "no_cache": True}, "validate"),
    (((CC, "no-cache"),), 75, {"stale_while_revalidate": 30.0}, "validate"),
    (((CC, "max-age=5"),), 75, {"stale_while_revalidate": 30.0}, "stale-while-revalidate"),
    ((), 10, {"stale_while_revalidate": 30.0, "invalidated": True}, "stale-while-revalidate"),
    # stale-if-error only applies once the origin failed: before that, validate
    ((), 75, {"stale_if_error": 300.0}, "validate"),
    # request directives (RFC 9111 §5.2.1)
    (((CC, "no-cache"),), 10, {}, "validate"),
    ((("Pragma", "no-cache"),), 10, {}, "validate"),
    (((CC, "max-age=0"),), 10, {}, "validate"),
    (((CC, "max-age=20"),), 10, {}, "fresh"),
    (((CC, "max-age=5"),), 10, {}, "validate"),
    (((CC, "min-fresh=30"),), 20, {}, "fresh"),
    (((CC, "min-fresh=30"),), 40, {}, "validate"),
    (((CC, "max-stale=30"),), 80, {}, "fresh"),
    (((CC, "max-stale=10"),), 80, {}, "validate"),
    (((CC, "max-stale"),), 10_000, {}, "fresh"),
    (((CC, "max-stale"),), 10, {"lifetime": 0.0}, "validate"),  # never fresh: nothing to stretch
    (((CC, "max-stale=30, min-fresh=5"),), 80, {}, "validate"),
    (((CC, "max-stale=30"),), 80, {"no_cache": True}, "validate"),
    # only-if-cached (§5.2.1.7): a usable response, else 504, never the origin
    (((CC, "only-if-cached"),), 10, {}, "fresh"),
    (((CC, "only-if-cached"),), 80, {}, "only-if-cached"),
    (((CC, "only-if-cached"),), 75, {"stale_while_revalidate": 30.0}, "only-if-cached"),
    (((CC, "only-if-cached"),), 10, {"no_cache": True}, "only-if-cached"),
    (((CC, "only-if-cached, max-stale=30"),), 80, {}, "fresh"),
]


@pytest.mark.parametrize(("request_headers", "age", "fields", "decision"), REUSE_CASES)
def test_reuse_decision(
    request_headers: tuple[tuple[str, str], ...], age: float, fields: dict[str, Any], decision: str
) -> None:
    entry = stored(age, **fields)
    assert entry.age(NOW) == age
    assert reuse(entry, age, directives(*request_headers)) == decision


@pytest.mark.parametrize(
    ("request_headers", "age", "fields", "allowed"),
    [
        ((), 100, {"stale_if_error": 60.0}, True),
        ((), 120, {"stale_if_error": 60.0}, True),  # up to the edge
        ((), 121, {"stale_if_error": 60.0}, False),
        ((), 70, {}, False),
        ((), 70, {"stale_if_error": 60.0, "must_revalidate": True}, False),
        (((CC, "max-stale=200"),), 160, {}, True),
        (((CC, "max-stale=50"),), 160, {}, False),
        (((CC, "max-stale"),), 10_000, {}, True),
        (((CC, "max-stale"),), 10_000, {"must_revalidate": True}, False),
        ((), 10, {}, True),  # still fresh (validated because the request said no-cache)
    ],
)
def test_stale_if_error(
    request_headers: tuple[tuple[str, str], ...], age: float, fields: dict[str, Any], allowed: bool
) -> None:
    entry = stored(age, **fields)
    assert may_serve_stale_on_error(entry, directives(*request_headers), NOW) is allowed


# --- the explain prediction is what the stage does ------------------------------------------


def make_bundle() -> ConfigBundle:
    return bundle_factories.config_bundle()


def exchange_for(path: str, headers: dict[str, str]) -> Exchange:
    request = make_mocked_request("GET", path, headers={"Host": "edge.test", **headers})
    exchange = Exchange(request, 0.0, True)
    exchange.path = path
    exchange.request_id = "req-1"
    exchange.route = Route("r", "o", "/")
    return exchange


@pytest.fixture
async def stage(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[cache.CacheStage]:
    """The cache stage, with the origin fetch and the background refresh replaced by stand-ins
    that only record that the stage went to the origin."""

    async def fetch(
        self: cache.CacheStage,
        exchange: Exchange,
        primary: str,
        entry: CacheEntry | None,
        *_: object,
    ) -> web.StreamResponse:
        exchange.cache_status = "MISS" if entry is None else "REVALIDATE"
        return web.Response(status=200, text="from the origin")

    monkeypatch.setattr(cache.CacheStage, "_fetch_and_answer", fetch)
    monkeypatch.setattr(cache.CacheStage, "_refresh_in_background", lambda *_: None)
    deps = Deps(log=LogWriter(io.BytesIO()))
    built = cache.build(make_bundle(), deps)
    assert built is not None
    yield built
    await deps.close()


async def not_called(exchange: Exchange) -> web.StreamResponse:
    raise AssertionError("the cache stage passed on a cacheable GET")


# (request headers, age or None for nothing stored, entry fields)
AGREEMENT_CASES: list[tuple[dict[str, str], float | None, dict[str, Any]]] = [
    ({}, 10, {}),
    ({"If-None-Match": ETAG}, 10, {}),
    ({}, 10, {"status": 404, "reason": "Not Found"}),
    ({}, 75, {}),
    ({}, 75, {"stale_while_revalidate": 30.0}),
    ({}, 75, {"stale_while_revalidate": 30.0, "must_revalidate": True}),
    ({}, 200, {"stale_while_revalidate": 30.0}),
    ({}, 75, {"stale_if_error": 300.0}),
    ({}, 10, {"no_cache": True}),
    ({}, 10, {"invalidated": True, "stale_while_revalidate": 30.0}),
    ({"Cache-Control": "no-cache"}, 10, {}),
    ({"Cache-Control": "max-age=5"}, 10, {}),
    ({"Cache-Control": "min-fresh=30"}, 40, {}),
    ({"Cache-Control": "max-stale=30"}, 75, {}),
    ({"Cache-Control": "only-if-cached"}, 10, {}),
    ({"Cache-Control": "only-if-cached"}, 75, {}),
    ({"Cache-Control": "only-if-cached"}, 75, {"stale_while_revalidate": 30.0}),
    ({"Cache-Control": "only-if-cached"}, None, {}),
    ({}, None, {}),
]


@pytest.mark.parametrize(("request_headers", "age", "fields"), AGREEMENT_CASES)
async def test_explain_predicts_what_the_stage_does(
    stage: cache.CacheStage,
    request_headers: dict[str, str],
    age: float | None,
    fields: dict[str, Any],
) -> None:
    key = "http://edge.test/page"
    if age is not None:  # ages are whole seconds away from any edge: the two calls agree
        now = time.time()
        entry = cache_entry(
            key,
            headers=(("ETag", ETAG),),
            body=b"stored",
            request_time=now - age,
            response_time=now - age,
            **{"lifetime": 60.0, **fields},
        )
        await stage.store.put(entry)
    step: dict[str, Any] = {}
    predicted, answer = await cache_explain.plan(
        stage, exchange_for("/page", request_headers), step
    )
    assert step["key"] == key

    exchange = exchange_for("/page", request_headers)
    response = await stage(exchange, not_called)
    assert predicted == exchange.cache_status
    if answer is None:  # the prediction: to the origin
        assert isinstance(response, web.Response) and response.text == "from the origin"
    else:
        assert response.status == answer
