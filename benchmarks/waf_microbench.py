"""WAF cost per request with the default rule pack (configs/rules.waf.yaml) loaded.

    python benchmarks/waf_microbench.py [--rules configs/rules.waf.yaml] [--json] [--baseline]

Figures are µs of CPU time per request (`time.process_time`, median of several runs, so a busy
machine does not inflate them with other processes' time slices):

* `engine …` — parse the request's targets, transform, run every RE2 set, decide
  (`waf.engine.evaluate` on a fresh `Inspection`, as the stage does per request), with the
  whole-request memo emptied each time (the per-view memos answer what repeats);
* `engine plain GET, repeated` — the same request again: the whole-request memo answers;
* `stage plain GET, repeated` — the whole WafStage.__call__ on a mocked aiohttp request,
  metrics and all, the same request again;
* `attack …` — the same requests carrying an attack (verification, audit excerpt, decision);
* `engine varied mix` — requests never seen before (benchmarks/waf_traffic.py: new path,
  query, cookies and bodies every request, header values from pools as real clients send
  them), so the per-view memo cannot answer: what real traffic costs. With `--baseline`, the
  same mix through the evaluation as it was before 2026-11-29 (proxy/tests/unit/waf_reference.py),
  interleaved run by run with the engine's.

Requests: a plain browser GET (10 headers, a cookie, a short query), a 2 KB query string
(20 arguments), a 4 KB JSON body (nested, 60 strings), a 64 KB form body. The first line is a
yardstick of the machine's speed: a fixed pure-Python loop, in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import yaml
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from openflare.observability.logging import LogWriter
from openflare.observability.metrics import Metrics
from openflare.pipeline.base import Exchange
from openflare.pipeline.waf import WafStage
from openflare.waf.compile import Ruleset
from openflare.waf.engine import evaluate
from openflare.waf.rules import WafRules
from openflare.waf.targets import Inspection

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: `benchmarks.waf_traffic` importable
from benchmarks.waf_traffic import fresh_mix  # noqa: E402

MIX_SIZE = 300
RUNS = 7
clock = time.process_time

HEADERS = [
    ("Host", "shop.example.com"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("Accept-Language", "en-US,en;q=0.5"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Referer", "https://shop.example.com/category/shoes?page=2"),
    ("Cookie", "_ga=GA1.2.1234567890.1700000000; session=eyJ1c2VyIjoiamFuZSJ9.ZmF0.abc123"),
    ("Sec-Fetch-Site", "same-origin"),
    ("Sec-Fetch-Mode", "navigate"),
    ("Upgrade-Insecure-Requests", "1"),
]


def _query_2k() -> str:
    words = ["red", "running", "shoes", "size", "42", "with", "free", "delivery", "and", "easy"]
    pairs = [(f"f{i}", " ".join(words[(i + j) % len(words)] for j in range(12))) for i in range(20)]
    query = "&".join(f"{k}={quote_plus(v)}" for k, v in pairs)
    while len(query) < 2048:
        query += "&pad=" + "x" * 40
    return query[:2048]


def _json_4k() -> bytes:
    """A 4 KB order: nested objects, 60-odd strings, numbers, an apostrophe or two."""
    items: list[dict[str, Any]] = []
    document: dict[str, Any] = {"order": {"customer": "Seán O'Brien", "items": items}}
    while len(json.dumps(document)) < 4096 - 160:
        i = len(items)
        items.append(
            {
                "sku": f"SKU-{i:04d}",
                "name": f"Trail runner model {i}",
                "note": "Leave at the front door, ring twice; it's for O'Brien",
                "tags": ["shoes", "running", "sale"],
                "price": 59.9 + i,
            }
        )
    document["order"]["comment"] = "x" * (4096 - len(json.dumps(document)) - 16)
    return json.dumps(document).encode()


def inspection(
    target: str, *, method: str = "GET", body: bytes | None = None, content_type: str | None = None
) -> Callable[[], Inspection]:
    headers = list(HEADERS)
    if content_type:
        headers.append(("Content-Type", content_type))
    if body is not None:
        headers.append(("Content-Length", str(len(body))))
    path, _, query = target.partition("?")

    def make() -> Inspection:
        return Inspection(
            method=method,
            raw_target=target,
            path=path,
            query=query,
            headers=headers,
            client_ip="198.51.100.7",
            body=body,
            body_size=len(body or b""),
        )

    return make


def per_request(
    ruleset: Ruleset, make: Callable[[], Inspection], n: int, *, remember: bool = False
) -> float:
    """µs per evaluation of the same request. Without `remember` the whole-request memo is
    emptied before each one (what a request seen for the first time costs: the per-view memos
    still answer its repeated parts); with it, the memo answers (an exact repeat)."""
    evaluate(ruleset, make())  # warm the DFA caches for this shape
    memo = ruleset.request_memo
    started = clock()
    for _ in range(n):
        if not remember:
            memo.clear()
        evaluate(ruleset, make())
    return (clock() - started) / n * 1e6


def varied_mix(ruleset: Ruleset, engine: Callable[..., Any] = evaluate) -> float:
    """µs per request over MIX_SIZE requests never seen before (built outside the clock)."""
    requests = fresh_mix(MIX_SIZE)
    started = clock()
    for make in requests:
        engine(ruleset, make())
    return (clock() - started) / MIX_SIZE * 1e6


def stage_get(ruleset: Ruleset, n: int) -> float:
    stage = WafStage(ruleset, LogWriter(io.BytesIO()), Metrics(), 65536, 5.0, None)
    request = make_mocked_request(
        "GET", "/search?q=blue+running+shoes&page=2", headers=dict(HEADERS)
    )
    ok = web.Response(text="ok")

    async def forward(exchange: Exchange) -> web.StreamResponse:
        return ok

    exchange = Exchange(request, 0.0, False)  # once: a mocked transport is slow to query
    exchange.path, exchange.query = "/search", "q=blue+running+shoes&page=2"

    async def loop() -> float:
        started = clock()
        for _ in range(n):
            exchange.waf = ""
            await stage(exchange, forward)
        return (clock() - started) / n * 1e6

    return asyncio.run(loop())


def yardstick_ms() -> float:
    started = clock()
    total = 0
    for i in range(2_000_000):
        total += i % 7
    return (clock() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default=str(ROOT / "configs" / "rules.waf.yaml"))
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also run the varied mix through the evaluation as it was before 2026-11-29",
    )
    args = parser.parse_args()
    ruleset = WafRules.model_validate(yaml.safe_load(Path(args.rules).read_text())).compiled
    query = _query_2k()
    body = _json_4k()
    form = ("comment=" + quote_plus("a fine pair of shoes, would buy again " * 1700))[:65536]
    cases: list[tuple[str, Callable[[], float]]] = [
        (
            "engine plain GET",
            lambda: per_request(ruleset, inspection("/search?q=blue+running+shoes&page=2"), 2000),
        ),
        (
            f"engine {len(query)} B query",
            lambda: per_request(ruleset, inspection("/search?" + query), 500),
        ),
        (
            f"engine {len(body)} B JSON body",
            lambda: per_request(
                ruleset,
                inspection(
                    "/api/orders", method="POST", body=body, content_type="application/json"
                ),
                500,
            ),
        ),
        (
            "engine 64 KB form body",
            lambda: per_request(
                ruleset,
                inspection(
                    "/submit",
                    method="POST",
                    body=form.encode(),
                    content_type="application/x-www-form-urlencoded",
                ),
                50,
            ),
        ),
        (
            "engine plain GET, repeated",
            lambda: per_request(
                ruleset, inspection("/search?q=blue+running+shoes&page=2"), 2000, remember=True
            ),
        ),
        ("stage plain GET, repeated", lambda: stage_get(ruleset, 2000)),
        ("engine varied mix", lambda: varied_mix(ruleset)),
        (
            "attack GET (sqli in query)",
            lambda: per_request(
                ruleset,
                inspection("/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--"),
                2000,
            ),
        ),
        (
            "attack JSON (xss in body)",
            lambda: per_request(
                ruleset,
                inspection(
                    "/api",
                    method="POST",
                    body=b'{"comment": "<img src=x onerror=alert(1)>"}',
                    content_type="application/json",
                ),
                1000,
            ),
        ),
    ]
    results: dict[str, Any] = {
        "yardstick_ms": round(yardstick_ms(), 1),
        "rules": ruleset.loaded_rules,
        "views": len(ruleset.views),
    }
    for name, run in cases:
        results[name] = round(statistics.median(run() for _ in range(RUNS)), 1)
    names = [name for name, _ in cases]
    if args.baseline:
        sys.path.insert(0, str(ROOT / "proxy" / "tests" / "unit"))
        import waf_reference  # a test helper: imported only with --baseline

        before: list[float] = []
        after: list[float] = []
        for _ in range(RUNS):  # interleaved: both see the same machine load
            before.append(varied_mix(ruleset, waf_reference.evaluate))
            after.append(varied_mix(ruleset))
        results["baseline varied mix (before)"] = round(statistics.median(before), 1)
        results["engine varied mix (interleaved)"] = round(statistics.median(after), 1)
        names += ["baseline varied mix (before)", "engine varied mix (interleaved)"]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"yardstick: {results['yardstick_ms']} ms   rules loaded: {results['rules']}, "
        f"RE2 sets: {results['views']}"
    )
    for name in names:
        print(f"{name:32s} {results[name]:9.1f} µs/request")


if __name__ == "__main__":
    main()
