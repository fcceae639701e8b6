"""The targets of one upstream: round-robin choice and passive health.

Passive health means the proxy learns from the requests it sends: `max_fails` consecutive
transport failures on a target (connect error, reset or invalid response before the headers,
time-to-first-byte timeout) eject it for `fail_timeout_ms`; a response with headers, whatever its
status, counts as a success and clears the count. An ejected target gets traffic again when its
rest is over (and is ejected again at once if it still fails). When every target is ejected,
the one whose rest ends first is used anyway: a request is never refused for want of a target.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from openflare.config.models import UpstreamConfig
from openflare.upstream.http1 import lean_origin


class Target:
    __slots__ = ("url", "origin", "failures", "ejected_until", "ejections")

    def __init__(self, url: str) -> None:
        self.url = url
        # the lean HTTP/1.1 client's view of it (upstream/http1.py); None for https targets
        self.origin = lean_origin(url)
        self.failures = 0  # consecutive
        self.ejected_until = 0.0  # monotonic
        self.ejections = 0

    def view(self, now: float) -> dict[str, Any]:
        rest = max(0.0, self.ejected_until - now)
        return {
            "url": self.url,
            "healthy": rest == 0.0,
            "consecutive_failures": self.failures,
            "ejected_for_ms": round(rest * 1000),
            "ejections": self.ejections,
        }


class TargetSet:
    __slots__ = ("targets", "_next", "_max_fails", "_rest")

    def __init__(self, config: UpstreamConfig) -> None:
        self.targets = tuple(Target(url) for url in config.targets)
        self._next = 0
        self._max_fails = config.max_fails
        self._rest = config.fail_timeout_ms / 1000

    def __len__(self) -> int:
        return len(self.targets)

    def pick(self, exclude: Collection[Target] = ()) -> Target | None:
        """The next healthy target not in `exclude` (round robin); if all of those are
        ejected, the one whose rest ends first; None only when `exclude` holds every target.
        Only a request's first pick moves the rotation: a retry takes the next target without
        shifting the turn of the others."""
        targets = self.targets
        if len(targets) == 1:
            return None if exclude else targets[0]
        now = time.monotonic()
        count = len(targets)
        start = self._next
        fallback: Target | None = None
        for step in range(count):
            target = targets[(start + step) % count]
            if target in exclude:
                continue
            if target.ejected_until <= now:
                if not exclude:
                    self._next = (start + step + 1) % count
                return target
            if fallback is None or target.ejected_until < fallback.ejected_until:
                fallback = target
        if fallback is not None and not exclude:
            self._next = (targets.index(fallback) + 1) % count
        return fallback

    def succeeded(self, target: Target) -> None:
        target.failures = 0

    def failed(self, target: Target) -> bool:
        """Count a failure; True when it ejected the target just now."""
        target.failures += 1
        if self._max_fails == 0 or target.failures < self._max_fails or len(self.targets) == 1:
            return False
        target.failures = 0
        target.ejected_until = time.monotonic() + self._rest
        target.ejections += 1
        return True

    def view(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [target.view(now) for target in self.targets]
