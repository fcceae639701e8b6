"""The last refusals the edge made itself (WAF blocks, rate-limit denials), for the dashboard.

A bounded ring, filled by the access-log stage only for responses of 400 and above that carry
a WAF or rate-limit decision, and read by `GET /admin/stats/security`. Each entry holds the
request id (to find the access-log line and the `waf` event), the decision and rule ids, the
status, and the normalized path without its query (queries may carry secrets). Both stages run
before routing, so there is no route to report. Nothing here runs for a request the edge let
through.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openflare.pipeline.base import Exchange

RECENT_EVENTS = 100
MAX_PATH = 256
# the `exchange.waf` / `exchange.ratelimit` decisions that are refusals by the edge itself
REFUSALS = {"waf": ("block",), "ratelimit": ("deny", "error")}


def _split(value: str) -> tuple[str, list[str]]:
    """`"block:rule-a,rule-b"` → ("block", ["rule-a", "rule-b"])."""
    decision, _, ids = value.partition(":")
    return decision, [i for i in ids.split(",") if i]


class RecentEvents:
    """A ring of the last `capacity` refusals, newest last."""

    __slots__ = ("_events", "capacity", "recorded")

    def __init__(self, capacity: int = RECENT_EVENTS) -> None:
        self.capacity = capacity
        self._events: deque[dict[str, Any]] = deque(maxlen=capacity)
        self.recorded = 0  # since start, so a reader can tell that older ones fell off

    def note(self, exchange: Exchange, status: int) -> None:
        """Keep `exchange` if a WAF block or a rate-limit denial answered it."""
        for kind, value in (("waf", exchange.waf), ("ratelimit", exchange.ratelimit)):
            if not value:
                continue
            decision, rule_ids = _split(value)
            if decision not in REFUSALS[kind]:
                continue
            self._events.append(
                {
                    "time": time.time(),
                    "request_id": exchange.request_id,
                    "kind": kind,
                    "decision": decision,
                    "rule_ids": rule_ids,
                    "status": status,
                    "method": exchange.method,
                    "path": (exchange.path or "")[:MAX_PATH],
                    "client_ip": exchange.client_ip,
                }
            )
            self.recorded += 1
            return

    def snapshot(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Newest first."""
        events = list(reversed(self._events))
        return events if limit is None else events[:limit]
