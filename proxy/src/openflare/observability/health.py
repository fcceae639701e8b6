"""Liveness and readiness state shared by the admin endpoints and the shutdown sequence."""

from __future__ import annotations


class Health:
    __slots__ = ("ready", "draining")

    def __init__(self) -> None:
        self.ready = False  # set once a valid config is loaded and the listeners are up
        self.draining = False  # set on SIGTERM: /readyz fails before the listeners close

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if not self.ready:
            return False, "starting"
        return True, "ready"
