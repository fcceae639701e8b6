"""A varied request mix for the WAF: every request is new (path, query, cookies, some headers,
JSON body), as on real traffic, so no per-view memo of a whole request can hit.

Header values that real clients share (User-Agent, Accept, Accept-Language, Accept-Encoding)
come from small pools, as they do across real clients; everything else carries a sequence
number that makes it unique process-wide (`fresh_mix` never repeats a request, however often
it is called).

    from benchmarks.waf_traffic import fresh_mix
    requests = fresh_mix(200)   # zero-argument callables, each building a new Inspection
"""

from __future__ import annotations

import functools
import itertools
import json
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus

from openflare.waf.targets import Inspection

USER_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4_1) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "okhttp/4.12.0",
    "python-requests/2.31.0",
    "curl/8.5.0",
)
ACCEPTS = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "application/json",
    "application/json, text/plain, */*",
    "*/*",
)
LANGUAGES = ("en-US,en;q=0.5", "de-DE,de;q=0.9,en;q=0.8", "fr-FR,fr;q=0.9", "en-GB,en;q=0.9")
ENCODINGS = ("gzip, deflate, br", "gzip, deflate, br, zstd", "gzip")
WORDS = [
    "red",
    "running",
    "shoes",
    "size",
    "with",
    "free",
    "delivery",
    "and",
    "easy",
    "returns",
    "trail",
    "road",
    "waterproof",
    "men",
    "women",
    "kids",
    "sale",
    "new",
    "arrivals",
    "jacket",
    "O'Brien",
    "café",
    "naïve",
    "50%",
    "off",
    "best-seller",
]
SECTIONS = ("products", "category", "search", "api/v2/items", "blog", "account/orders", "static")

_sequence = itertools.count()


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def _headers(rng: random.Random, n: int) -> list[tuple[str, str]]:
    headers = [
        ("Host", "shop.example.com"),
        ("User-Agent", rng.choice(USER_AGENTS)),
        ("Accept", rng.choice(ACCEPTS)),
        ("Accept-Language", rng.choice(LANGUAGES)),
        ("Accept-Encoding", rng.choice(ENCODINGS)),
        ("Referer", f"https://shop.example.com/{rng.choice(SECTIONS)}/{n}?page={n % 7}"),
        (
            "Cookie",
            f"_ga=GA1.2.{1000000000 + n}.1700000000; session=s{n:08x}{rng.getrandbits(64):016x}; "
            f"theme={rng.choice(('dark', 'light'))}",
        ),
        ("Sec-Fetch-Site", "same-origin"),
        ("Sec-Fetch-Mode", "navigate"),
        ("X-Request-Start", f"t={1700000000000 + n}"),
    ]
    if rng.random() < 0.3:
        headers.append(("Authorization", f"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI{n}In0.sig{n}"))
    return headers


def _query(rng: random.Random, n: int, size: int) -> str:
    pairs = [("q", _words(rng, 1, 4)), ("page", str(n % 50)), ("ref", f"r{n}")]
    while len("&".join(f"{k}={quote_plus(v)}" for k, v in pairs)) < size:
        pairs.append((f"f{len(pairs)}", _words(rng, 2, 10) + f" {n}"))
    return "&".join(f"{k}={quote_plus(v)}" for k, v in pairs)[:size]


def _json(rng: random.Random, n: int, size: int) -> bytes:
    items: list[dict[str, Any]] = []
    document: dict[str, Any] = {"order": {"id": n, "customer": "Seán O'Brien", "items": items}}
    while len(json.dumps(document)) < size - 120:
        i = len(items)
        items.append(
            {
                "sku": f"SKU-{n}-{i:04d}",
                "name": _words(rng, 2, 5).title(),
                "note": _words(rng, 4, 12),
                "tags": [rng.choice(WORDS) for _ in range(3)],
                "price": round(rng.uniform(5, 200), 2),
            }
        )
    return json.dumps(document).encode()


def request_fields(rng: random.Random, n: int) -> dict[str, Any]:
    """One request of the mix: 50% plain GET, 25% GET with a 2 KB query, 15% JSON POST
    (1–4 KB), 10% form POST."""
    kind = rng.random()
    headers = _headers(rng, n)
    path = f"/{rng.choice(SECTIONS)}/{quote(_words(rng, 1, 2).replace(' ', '-'))}-{n}"
    body: bytes | None = None
    method = "GET"
    if kind < 0.5:
        query = f"q={quote_plus(_words(rng, 1, 3))}&page={n % 9}&sid={n}"
    elif kind < 0.75:
        query = _query(rng, n, 2048)
    elif kind < 0.9:
        method, query = "POST", ""
        body = _json(rng, n, rng.choice((1024, 2048, 4096)))
        headers.append(("Content-Type", "application/json"))
    else:
        method, query = "POST", ""
        form = {"name": _words(rng, 1, 3), "comment": _words(rng, 5, 40), "n": str(n)}
        body = "&".join(f"{k}={quote_plus(v)}" for k, v in form.items()).encode()
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
    if body is not None:
        headers.append(("Content-Length", str(len(body))))
    target = f"{path}?{query}" if query else path
    return {
        "method": method,
        "raw_target": target,
        "path": path,
        "query": query,
        "headers": headers,
        "client_ip": f"198.51.{n % 256}.{(n // 256) % 256}",
        "body": body,
        "body_size": len(body or b""),
    }


def fresh_mix(count: int, seed: int = 7) -> list[Callable[[], Inspection]]:
    """`count` request factories never seen before in this process; each call builds a fresh
    `Inspection` (as the stage does per request) from fields generated in advance."""
    rng = random.Random(seed * 1_000_003 + next(_sequence))
    fields = [request_fields(rng, next(_sequence)) for _ in range(count)]
    return [functools.partial(Inspection, **f) for f in fields]
