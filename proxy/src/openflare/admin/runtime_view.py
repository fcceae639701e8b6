"""What `GET /admin/config` reports about the running process besides its config: the
upstream pools (connections busy and idle, each target's passive-health state) and the number
of asyncio tasks — the figures that show a client or origin fault left nothing behind."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from openflare.deps import Deps


def runtime_view(deps: Deps) -> dict[str, Any]:
    tasks = asyncio.all_tasks()
    kinds = Counter(task.get_coro().__qualname__ for task in tasks)  # type: ignore[union-attr]
    return {
        "tasks": len(tasks),
        "tasks_by_coroutine": dict(kinds.most_common(10)),
        "in_flight_requests": deps.metrics.in_flight_now,
        "upstreams": [
            {
                "name": pool.name,
                "connections_in_use": pool.connections_in_use(),
                "connections_idle": pool.connections_idle(),
                "targets": pool.targets.view(),
            }
            for pool in deps.upstreams.current()
        ],
    }
