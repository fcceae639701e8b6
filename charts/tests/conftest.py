"""Helpers for the chart tests: render `charts/openflare` with helm and look at the result.

helm comes from .tools/bin (scripts/install-tools.sh); `helm plugin install` cannot reach the
internet here, so these tests are pytest over `helm template` output instead of helm-unittest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "openflare"
TOOLS = REPO / ".tools" / "bin"
HELM = Path(os.environ.get("HELM", TOOLS / "helm"))
RELEASE = "of"
NAMESPACE = "edge"
MONITORING_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)
ALL_ON = CHART / "ci" / "all-on-values.yaml"


class RenderError(Exception):
    pass


@dataclass(frozen=True)
class Manifests:
    docs: tuple[dict[str, Any], ...]
    text: str

    def kinds(self) -> list[str]:
        return sorted(doc["kind"] for doc in self.docs)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.all(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def has(self, kind: str) -> bool:
        return bool(self.all(kind))

    def proxy_deployment(self) -> dict[str, Any]:
        return self.one("Deployment", f"{RELEASE}-openflare")

    def configmap_data(self, suffix: str) -> dict[str, str]:
        data: dict[str, str] = self.one("ConfigMap", f"{RELEASE}-openflare-{suffix}")["data"]
        return data

    def proxy_config(self) -> dict[str, Any]:
        config: dict[str, Any] = yaml.safe_load(self.configmap_data("config")["proxy.yaml"])
        return config


def _helm(args: list[str]) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run scripts/install-tools.sh (make chart-test does)")
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=120, check=False
    )


@lru_cache(maxsize=128)
def _render(
    sets: tuple[tuple[str, str], ...],
    values_files: tuple[str, ...],
    api_versions: tuple[str, ...],
    chart: str,
    namespace: str,
) -> Manifests:
    args = ["template", RELEASE, chart, "--namespace", namespace]
    for file in values_files:
        args += ["-f", file]
    for key, value in sets:
        args += ["--set-json", f"{key}={value}"]
    for api in api_versions:
        args += ["--api-versions", api]
    result = _helm(args)
    if result.returncode != 0:
        lines = [x for x in result.stderr.splitlines() if not x.startswith("walk.go:")]
        raise RenderError("\n".join(lines).strip())  # without helm's symlink notices
    docs = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
    return Manifests(docs, result.stdout)


def render(
    values: dict[str, Any] | None = None,
    *,
    files: tuple[Path, ...] = (),
    api_versions: tuple[str, ...] = (),
    chart: Path = CHART,
    namespace: str = NAMESPACE,
) -> Manifests:
    """`helm template` with `--set-json key=value` for each item of `values` (dotted keys)."""
    sets = tuple(sorted((key, json.dumps(value)) for key, value in (values or {}).items()))
    return _render(sets, tuple(map(str, files)), api_versions, str(chart), namespace)


def render_error(values: dict[str, Any] | None = None, **kwargs: Any) -> str:
    try:
        render(values, **kwargs)
    except RenderError as exc:
        return str(exc)
    raise AssertionError(f"rendering {values} succeeded; expected a failure")


def all_on() -> Manifests:
    return render(files=(ALL_ON,), api_versions=MONITORING_APIS)


def pod_specs(manifests: Manifests) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every Deployment and bare Pod."""
    for doc in manifests.docs:
        if doc["kind"] == "Deployment":
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]
        elif doc["kind"] == "Pod":
            yield doc["metadata"]["name"], doc["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    """A copy of the chart (symlinks resolved) that a test may add files to."""
    target = tmp_path / "openflare"
    shutil.copytree(CHART, target, symlinks=False)
    return target
