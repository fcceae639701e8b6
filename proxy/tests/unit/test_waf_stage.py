"""The WAF stage: responses by Accept, audit events, metrics, shadow, bodies and their limit."""

from __future__ import annotations

import io
import json
from typing import Any
from unittest import mock

import bundle_factories
import pytest
import yaml
from aiohttp import StreamReader, web
from aiohttp.test_utils import make_mocked_request

from openflare.config.loader import ConfigBundle
from openflare.config.models import ProxyConfig
from openflare.deps import Deps
from openflare.observability.logging import LogWriter
from openflare.pipeline import waf
from openflare.pipeline.base import Exchange
from openflare.pipeline.stored_response import RenderedResponse
from openflare.pipeline.waf import wants_html
from openflare.waf.rules import WafRules

RULES = """
rules:
  - id: sqli-test
    tags: [sqli]
    match: {any: [{target: args, transforms: [lowercase], contains: "union select"}]}
    action: {type: block}
  - id: body-test
    match: {any: [{target: json_values, contains: "<script>"}]}
    action: {type: block}
  - id: note
    match: {any: [{target: path, prefix: /noted}]}
    action: {type: log}
  - id: live
    match: {any: [{target: path, prefix: /live}]}
    action: {type: bypass_cache}
"""
PROXY = {
    "upstreams": [{"name": "o", "base_url": "http://127.0.0.1:1"}],
    "routing": {
        "routes": [
            {"id": "trial", "path_prefix": "/trial/", "upstream": "o"},
            {"id": "rest", "path_prefix": "/", "upstream": "o"},
        ]
    },
    "security": {"max_body_inspect_bytes": 64},
}


def bundle(rules_text: str = RULES, **file: Any) -> ConfigBundle:
    data = yaml.safe_load(rules_text)
    data.update(file)
    return bundle_factories.config_bundle(
        ProxyConfig.model_validate(PROXY), waf=WafRules.model_validate(data)
    )


class Harness:
    def __init__(self, **file: Any) -> None:
        self.output = io.BytesIO()
        self.log = LogWriter(self.output)
        self.deps = Deps(log=self.log)
        stage = waf.build(bundle(**file), self.deps)
        assert stage is not None
        self.stage = stage
        self.forwarded: list[Exchange] = []

    async def next(self, exchange: Exchange) -> web.StreamResponse:
        self.forwarded.append(exchange)
        return web.Response(text="origin")

    async def send(
        self,
        target: str,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> tuple[web.StreamResponse, Exchange]:
        headers = dict(headers or {})
        payload: Any = mock.sentinel.no_payload
        kwargs: dict[str, Any] = {}
        if body is not None:
            headers["Content-Length"] = str(len(body))
            protocol = mock.Mock(_reading_paused=False)
            payload = StreamReader(protocol, 2**16, loop=mock.Mock())
            payload.feed_data(body)
            payload.feed_eof()
            kwargs["payload"] = payload
        request = make_mocked_request(method, target, headers=headers, **kwargs)
        exchange = Exchange(request, 0.0, False)
        exchange.request_id = "req-42"
        exchange.path = target.partition("?")[0]
        exchange.query = target.partition("?")[2]
        exchange.client_ip = "203.0.113.5"
        response = await self.stage(exchange, self.next)
        return response, exchange

    def events(self) -> list[dict[str, Any]]:
        self.log.flush()
        return [json.loads(line) for line in self.output.getvalue().splitlines()]

    def metric(self, rule_id: str, action: str) -> float:
        value = self.deps.metrics.registry.get_sample_value(
            "openflare_waf_decisions_total", {"rule_id": rule_id, "action": action}
        )
        return value or 0.0


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("text/html,application/xhtml+xml,*/*;q=0.8", True),
        ("application/json", False),
        ("*/*", False),
        ("", False),
        ("application/json, text/html", False),
    ],
)
def test_wants_html(accept: str, html: bool) -> None:
    assert wants_html(accept) is html


async def test_block_answers_json_with_request_id_and_rule_ids_never_patterns() -> None:
    h = Harness()
    response, exchange = await h.send("/search?q=1+UNION+SELECT+2")
    assert isinstance(response, RenderedResponse) and response.status == 403
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = json.loads(response.body)
    assert body["request_id"] == "req-42" and body["rule_ids"] == ["sqli-test"]
    assert "union select" not in json.dumps(body)
    assert exchange.waf == "block:sqli-test" and not h.forwarded
    assert h.metric("sqli-test", "block") == 1
    event = next(e for e in h.events() if e.get("event") == "waf")
    assert event["decision"] == "block" and event["request_id"] == "req-42"
    assert event["mode"] == "enforce" and event["score"] == 5
    assert event["rules"][0]["id"] == "sqli-test"
    assert event["rules"][0]["target"] == "arg:q"
    assert "union select" in event["rules"][0]["excerpt"].lower()


async def test_block_answers_html_to_browsers() -> None:
    h = Harness()
    response, _ = await h.send("/?q=union+select+1", headers={"Accept": "text/html"})
    assert isinstance(response, RenderedResponse)
    assert response.status == 403 and response.content_type == "text/html"
    text = response.body.decode()
    assert "req-42" in text and "sqli-test" in text


async def test_clean_request_passes_without_an_event() -> None:
    h = Harness()
    response, exchange = await h.send("/search?q=union+station")
    assert response.status == 200 and exchange.waf == "" and len(h.forwarded) == 1
    assert not [e for e in h.events() if e.get("event") == "waf"]


async def test_log_and_bypass_cache_pass() -> None:
    h = Harness()
    _, noted = await h.send("/noted/x")
    assert noted.waf == "log:note" and h.metric("note", "log") == 1
    _, live = await h.send("/live/x")
    assert live.cache_bypass and h.metric("live", "bypass_cache") == 1
    assert len(h.forwarded) == 2


async def test_json_body_is_inspected_and_kept_for_the_origin() -> None:
    h = Harness()
    body = b'{"comment": "<script>x</script>"}'
    response, exchange = await h.send(
        "/api", method="POST", body=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 403 and exchange.waf == "block:body-test"
    clean = b'{"comment": "hello"}'
    response, exchange = await h.send(
        "/api", method="POST", body=clean, headers={"Content-Type": "application/json"}
    )
    assert response.status == 200 and exchange.body_prefix == clean


async def test_global_shadow_mode_forwards_and_counts_would_block() -> None:
    h = Harness(mode="shadow")
    response, exchange = await h.send("/?q=union+select+1")
    assert response.status == 200 and exchange.waf == "would_block:sqli-test"
    assert h.metric("sqli-test", "would_block") == 1
    event = next(e for e in h.events() if e.get("event") == "waf")
    assert event["mode"] == "shadow" and event["decision"] == "would_block"


async def test_route_shadow_mode() -> None:
    h = Harness(routes=[{"id": "trial", "mode": "shadow"}])
    trial, _ = await h.send("/trial/x?q=union+select+1")
    other, _ = await h.send("/other?q=union+select+1")
    assert trial.status == 200 and other.status == 403


async def test_route_can_disable_the_waf() -> None:
    h = Harness(routes=[{"id": "trial", "enabled": False}])
    trial, exchange = await h.send("/trial/x?q=union+select+1")
    assert trial.status == 200 and exchange.waf == ""


async def test_body_beyond_the_window_inspect_prefix_passes() -> None:
    h = Harness()
    body = b'{"comment": "' + b"a" * 200 + b'"}'
    response, exchange = await h.send(
        "/api", method="POST", body=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 200
    assert exchange.body_prefix == body[:65]  # window + 1 byte read, all of it forwarded first


async def test_body_beyond_the_window_reject_is_413_and_shadow_never_refuses() -> None:
    h = Harness(body={"oversize": "reject"})
    body = b"x" * 200
    response, exchange = await h.send("/upload", method="POST", body=body)
    assert response.status == 413 and exchange.waf == "block:waf-body-oversize"
    shadow = Harness(body={"oversize": "reject"}, mode="shadow")
    response, exchange = await shadow.send("/upload", method="POST", body=body)
    assert response.status == 200 and exchange.waf == "would_block:waf-body-oversize"
    assert shadow.metric("waf-body-oversize", "would_block") == 1


def test_empty_rule_file_builds_no_stage() -> None:
    assert waf.build(bundle("rules: []"), Deps(log=LogWriter(io.BytesIO()))) is None
