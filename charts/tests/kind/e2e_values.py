"""Values for installing the chart as the E2E suite's proxy (`make kind-e2e`).

The suite asserts the behaviour of configs/proxy.test.yaml (limits, routes, fault injection),
so the chart's proxy.config is that file, minus the keys the chart owns (listen addresses, drain
timings, rule_files), with the test origin as the upstream named `origin`. The rate limits come
from configs/rate-limit.test.yaml (`--set-file rules.rateLimit.content=...`).

    python charts/tests/kind/e2e_values.py > /tmp/e2e-values.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART_OWNED_SERVER_KEYS = (
    "listen_addr",
    "admin_listen_addr",
    "shutdown_delay_ms",
    "graceful_shutdown_timeout_ms",
)


def e2e_values(test_config: Path = REPO / "configs" / "proxy.test.yaml") -> dict[str, Any]:
    config = yaml.safe_load(test_config.read_text())
    server = dict(config.get("server", {}))
    drain = {
        "gracefulShutdownTimeoutMs": server.get("graceful_shutdown_timeout_ms", 15000),
        "shutdownDelayMs": server.get("shutdown_delay_ms", 0),
    }
    for key in CHART_OWNED_SERVER_KEYS:
        server.pop(key, None)
    config["server"] = server
    config.pop("rule_files", None)
    # Helm merges these over the chart's defaults: null removes a default the file does not set
    # (the test config has no default upstream: an unknown host must get 404).
    config.setdefault("routing", {}).setdefault("default_upstream", None)
    return {"proxy": {"config": config}, "drain": drain, "origin": {"enabled": True}}


if __name__ == "__main__":
    yaml.safe_dump(e2e_values(), sys.stdout, sort_keys=False)
