"""The last decision traces of live requests, for `GET /admin/trace/{request_id}`.

A bounded ring keyed by request id (`explain.trace_buffer_size`, oldest forgotten first; a
request id a client reuses replaces the older trace). It lives in `Deps`, so traces survive a
reload, and it holds only traced requests (admin token or debug CIDR): nothing is stored for
any other request. (Wrong trace tokens are counted in `Deps.auth_failures`, the table the admin
listener's lockout uses, so the public listener is no better place to guess the admin token.)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

DEFAULT_CAPACITY = 256


class TraceBuffer:
    __slots__ = ("_traces", "capacity", "recorded")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._traces: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.capacity = capacity
        self.recorded = 0  # since start: a reader can tell how many fell off

    def __len__(self) -> int:
        return len(self._traces)

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        while len(self._traces) > capacity:
            self._traces.popitem(last=False)

    def add(self, request_id: str, record: dict[str, Any]) -> None:
        traces = self._traces
        traces.pop(request_id, None)
        traces[request_id] = record
        self.recorded += 1
        while len(traces) > self.capacity:
            traces.popitem(last=False)

    def get(self, request_id: str) -> dict[str, Any] | None:
        return self._traces.get(request_id)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """One line per trace, newest first: enough to pick a request id."""
        out: list[dict[str, Any]] = []
        for request_id in reversed(self._traces):
            if len(out) >= limit:
                break
            record = self._traces[request_id]
            request = record.get("request", {})
            out.append(
                {
                    "request_id": request_id,
                    "time": record.get("time"),
                    "method": request.get("method"),
                    "path": request.get("path"),
                    "status": record.get("response", {}).get("status"),
                }
            )
        return out


class TraceState:
    """What decision tracing keeps across reloads."""

    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer = TraceBuffer()
