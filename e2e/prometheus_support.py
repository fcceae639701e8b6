"""A real Prometheus server (Debian's `prometheus` package) for the E2E suite, and promtool.

`PrometheusServer` writes a config (scrape targets, rule files, 1 s scrape and evaluation
intervals), keeps its TSDB in a temporary folder, listens on a free loopback port and is
stopped at the end of the test; `query`, `label_values`, `alerts` and `exemplars` wrap its HTTP
API. `promtool_check_metrics` runs `promtool check metrics` on a scrape.

Run as a script, `python prometheus_support.py check-metrics` is `make promtool-metrics`:
it starts the test origin and a proxy (configs/proxy.test.yaml, tracing on), sends requests of
every kind, and checks a real scrape of `/metrics` with promtool (no warnings allowed) and the
OpenMetrics exposition with prometheus-client's strict parser.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from harness import ManagedProcess, StartError, clean_env, free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
OPENMETRICS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def require_prometheus() -> None:
    for binary in (PROMETHEUS, PROMTOOL):
        if not Path(binary).exists():
            raise AssertionError(
                f"{binary} not found: install the Debian package `prometheus` (make apt-deps)"
            )


@dataclass
class Target:
    address: str  # host:port
    labels: dict[str, str] = field(default_factory=dict)


class PrometheusServer(ManagedProcess):
    def __init__(
        self,
        workdir: Path,
        targets: list[Target],
        *,
        job: str = "openflare",
        rule_files: list[Path] | None = None,
        interval: str = "1s",
    ) -> None:
        require_prometheus()
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": "900ms",
                "evaluation_interval": interval,
            },
            "rule_files": [str(path) for path in rule_files or []],
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": "/metrics",
                    "static_configs": [
                        {"targets": [target.address], "labels": target.labels} for target in targets
                    ],
                }
            ],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False), encoding="utf-8")
        storage = workdir / "tsdb"
        super().__init__(
            name="prometheus",
            argv=[
                PROMETHEUS,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={storage}",
                "--storage.tsdb.retention.time=1h",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--enable-feature=exemplar-storage",
                "--log.level=warn",
            ],
            workdir=workdir,
            env=clean_env(),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_and_wait(self) -> PrometheusServer:
        self.start()
        self.wait_ready(self.url + "/-/ready", timeout=30.0)
        return self

    def api(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10.0)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {response.status_code} {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query; the vector (or a scalar as one sample)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self.api("query", **params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        values: list[str] = self.api(f"label/{label}/values", **{"match[]": match})
        return values

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return active

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query_exemplars", query=expr, start=start, end=end)
        return result

    def wait_until(self, check: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def promtool_check_metrics(text: str) -> str:
    """promtool's complaints about an exposition (empty when there are none)."""
    require_prometheus()
    done = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = (done.stdout + done.stderr).decode(errors="replace").strip()
    if done.returncode != 0 and not output:
        output = f"promtool exited with {done.returncode}"
    return output


def check_openmetrics(text: str) -> int:
    """Parses an OpenMetrics exposition strictly; returns the number of exemplars in it."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    exemplars = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.exemplar is not None:
                exemplars += 1
    return exemplars


# --------------------------------------------------------------------------------------------
# `make promtool-metrics`


def _traffic(client: httpx.Client) -> None:
    """One request of each kind the proxy answers differently."""
    for path, headers in [
        ("/cache/public-long", {}),
        ("/cache/public-long", {}),  # HIT
        ("/api/items", {}),  # BYPASS
        ("/debug/echo", {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}),
        ("/?q=1' OR '1'='1", {}),  # WAF block
        ("/error/503", {}),  # origin 5xx
        ("/a%2Fb", {}),  # normalize 400
        ("/__openflare/fault/raise", {}),  # panic → 500
    ]:
        client.get(path, headers=headers)
    for _ in range(12):
        client.get("/path-test/rl-burst/promtool")  # 429 after the burst
    client.get("/", headers={"Host": "unknown.example"})  # no route → 404


def check_metrics_main() -> int:
    import secrets
    import tempfile

    from harness import OriginProcess, ProxyProcess
    from otlp_receiver import otlp_receiver

    with tempfile.TemporaryDirectory(prefix="openflare-promtool-") as tmp, otlp_receiver() as rx:
        workdir = Path(tmp)
        origin = OriginProcess(workdir)
        proxy: ProxyProcess | None = None
        try:
            origin.start_and_wait()
            proxy = ProxyProcess(
                workdir,
                origin_url=origin.url,
                token=secrets.token_hex(16),
                overrides={"tracing": {"enabled": True, "endpoint": rx.endpoint}},
            )
            proxy.start_and_wait()
            with httpx.Client(
                base_url=proxy.url, headers={"Host": f"127.0.0.1:{proxy.port}"}, timeout=10
            ) as client:
                _traffic(client)
            text = httpx.get(proxy.admin_url + "/metrics", timeout=10).text
            complaints = promtool_check_metrics(text)
            openmetrics = httpx.get(
                proxy.admin_url + "/metrics", headers={"Accept": OPENMETRICS_ACCEPT}, timeout=10
            ).text
            exemplars = check_openmetrics(openmetrics)
        except StartError as exc:
            print(f"promtool-metrics: {exc}", file=sys.stderr)
            return 2
        finally:
            if proxy is not None:
                proxy.stop()
            origin.stop()
    families = sum(1 for line in text.splitlines() if line.startswith("# TYPE openflare_"))
    if complaints:
        print(f"promtool check metrics:\n{complaints}", file=sys.stderr)
        return 1
    if exemplars == 0:
        print("promtool-metrics: the OpenMetrics scrape carries no exemplar", file=sys.stderr)
        return 1
    print(
        f"promtool check metrics: ok ({families} openflare_* families, no warnings); "
        f"OpenMetrics: ok ({exemplars} exemplars)"
    )
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["check-metrics"]:
        print("usage: python prometheus_support.py check-metrics", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(check_metrics_main())
