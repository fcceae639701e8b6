"""One way to build a stored response for tests: `entry(**overrides)`."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from openflare.cache.entry import CacheEntry, render_headers


def entry(
    key: str = "http://edge.test/",
    *,
    headers: Iterable[tuple[str, str]] = (),
    **overrides: Any,
) -> CacheEntry:
    """A fresh 200 stored now under `key` (its own primary), fresh for 600 s, with `headers`
    rendered into the entry's header block; any other field by keyword."""
    now = time.time()
    fields: dict[str, Any] = {
        "key": key,
        "primary": key,
        "status": 200,
        "reason": "OK",
        "headers": render_headers(headers),
        "body": b"",
        "request_time": now,
        "response_time": now,
        "date_value": None,
        "age_value": 0.0,
        "lifetime": 600.0,
        "stale_while_revalidate": 0.0,
        "stale_if_error": 0.0,
        "must_revalidate": False,
        "no_cache": False,
        "auth_shareable": True,
    }
    fields.update(overrides)
    return CacheEntry(**fields)
