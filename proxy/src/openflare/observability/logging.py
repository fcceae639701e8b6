"""JSON logs on stdout that never block the event loop.

The event loop only serialises a line (one `orjson.dumps`) and appends it to a deque; a daemon
thread writes batches to stdout. If stdout stalls, the backlog is capped at `max_pending` lines
and the overflow is counted and reported instead of growing memory without bound.

While tracing is on, `trace_ids` is set (observability/tracing.py `current_ids`) and every event
line written inside a request (`waf`, `panic`, ...) carries the `trace_id` and `span_id` of the
span it was written in, next to its `request_id`; access lines get theirs from the access-log
stage.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

import orjson

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


_second: list[tuple[int, str]] = [(-1, "")]  # (epoch second, its "YYYY-MM-DDTHH:MM:SS")
_milli: list[tuple[int, str]] = [(-1, "")]  # (epoch millisecond, the whole timestamp)


def utc_timestamp() -> str:
    """`datetime.now(UTC).isoformat(timespec="milliseconds")` with `Z`: the same string, but
    the date and time of day are formatted once per second, not once per log line, and the
    lines of one millisecond (several, under load) share one string."""
    ms = time.time_ns() // 1_000_000
    last, stamp = _milli[0]
    if ms == last:
        return stamp
    second, prefix = _second[0]
    now = ms // 1000
    if now != second:
        prefix = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[0] = (now, prefix)
    stamp = f"{prefix}.{ms % 1000:03d}Z"
    _milli[0] = (ms, stamp)
    return stamp


class LogWriter:
    def __init__(
        self,
        stream: IO[bytes] | None = None,
        *,
        level: str = "info",
        max_pending: int = 100_000,
        flush_interval: float = 0.05,
    ) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._pending: deque[bytes] = deque()
        self._max_pending = max_pending
        self._flush_interval = flush_interval
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self.dropped = 0
        self.level = LEVELS[level]
        # (trace_id, span_id) of the current span, or None; set only once tracing is turned on
        self.trace_ids: Callable[[], tuple[str, str] | None] | None = None
        self._thread = threading.Thread(target=self._run, name="openflare-log", daemon=True)
        self._thread.start()

    def set_level(self, level: str) -> None:
        self.level = LEVELS[level]

    def write_line(self, line: bytes) -> None:
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        self._pending.append(line)

    def write(self, record: dict[str, Any]) -> None:
        self.write_line(orjson.dumps(record, default=str) + b"\n")

    def event(self, level: str, event: str, **fields: Any) -> None:
        """A structured event line (startup, reload, errors) — not for the per-request path."""
        if LEVELS[level] < self.level:
            return
        record = {"time": utc_timestamp(), "level": level, "event": event}
        record.update(fields)
        if self.trace_ids is not None:
            ids = self.trace_ids()
            if ids is not None:
                record["trace_id"], record["span_id"] = ids
        self.write(record)

    def _drain(self) -> None:
        pending = self._pending
        if not pending:
            return
        batch: list[bytes] = []
        while pending:
            try:
                batch.append(pending.popleft())
            except IndexError:
                break
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            batch.append(
                orjson.dumps(
                    {
                        "time": utc_timestamp(),
                        "level": "warning",
                        "event": "log_dropped",
                        "lines": dropped,
                    }
                )
                + b"\n"
            )
        try:
            self._stream.write(b"".join(batch))
            self._stream.flush()
        except (OSError, ValueError):
            pass  # stdout closed: nothing sensible left to do with log lines

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            self._drain()
        self._drain()

    def flush(self, timeout: float = 2.0) -> None:
        """Write everything pending now (used at shutdown and by tests)."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        self._stopped.set()
        self._wake.set()
        self._thread.join(timeout=2.0)


class StdlibBridge(logging.Handler):
    """Routes library log records (aiohttp's "Error handling request", parser refusals) into
    the JSON stream as one short line each, without tracebacks of client garbage."""

    def __init__(self, writer: LogWriter) -> None:
        super().__init__(logging.WARNING)
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        self._writer.event(
            "warning",
            "library",
            logger=record.name,
            message=record.getMessage()[:300],
            error=f"{type(error).__name__}: {str(error)[:200]}" if error else None,
        )


def bridge_library_logs(writer: LogWriter) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, StdlibBridge):
            root.removeHandler(handler)
    root.addHandler(StdlibBridge(writer))
    root.setLevel(logging.WARNING)
