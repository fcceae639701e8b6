"""Rendered manifests against the Kubernetes schemas, the Prometheus Operator kinds against
vendored schemas, the rendered proxy config against the proxy's own loader, the alert rules
against promtool, and values.schema.json against bad values."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from conftest import (
    ALL_ON,
    CHART,
    HELM,
    MONITORING_APIS,
    REPO,
    TOOLS,
    Manifests,
    all_on,
    containers,
    env_of,
    render,
    render_error,
)

SCHEMAS = Path(__file__).parent / "schemas"
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
KUBERNETES_VERSIONS = ("1.25.0", "1.37.0")  # the chart's kubeVersion floor, and the newest


def renders() -> dict[str, Manifests]:
    return {
        "default": render(),
        "all-on": all_on(),
        "k8s-watch-origin": render({"reload.mode": "k8s", "origin.enabled": True}),
        "off-single": render({"reload.mode": "off", "replicaCount": 1, "testHook.enabled": False}),
    }


# --- Kubernetes schemas (kubernetes-validate, strict) -------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_strictly(version: str, tmp_path: Path) -> None:
    tool = TOOLS / "kubernetes-validate"
    if not tool.exists():
        pytest.fail(f"{tool} is missing: run scripts/install-tools.sh")
    files = []
    for name, manifests in renders().items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(manifests.text)
        files.append(str(path))
    result = subprocess.run(
        [str(tool), "--strict", "--quiet", "-k", version, *files],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = (result.stdout + result.stderr).strip()
    problems = []
    for line in output.splitlines():
        missing = re.search(r"Couldn't find schema for kind (\w+) with api version (\S+)", line)
        if missing and missing[1] in OPERATOR_KINDS and missing[2] == "monitoring.coreos.com/v1":
            continue  # validated below against the vendored schemas
        problems.append(line)  # an unknown kind counts as a failure, like an invalid one
    assert result.returncode == 0 and not problems, output


def test_every_kind_is_known_to_the_validator_or_vendored() -> None:
    kinds = {doc["kind"] for manifests in renders().values() for doc in manifests.docs}
    assert kinds >= OPERATOR_KINDS  # the all-on render really contains them


@pytest.mark.parametrize("kind", sorted(OPERATOR_KINDS))
def test_prometheus_operator_kinds_against_vendored_schemas(kind: str) -> None:
    schema = json.loads((SCHEMAS / f"monitoring.coreos.com_v1_{kind.lower()}.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    docs = [doc for manifests in renders().values() for doc in manifests.all(kind)]
    assert docs
    for doc in docs:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, errors


def test_vendored_schemas_reject_what_the_operator_would() -> None:
    schema = json.loads((SCHEMAS / "monitoring.coreos.com_v1_servicemonitor.json").read_text())
    monitor = all_on().one("ServiceMonitor")
    bad = json.loads(json.dumps(monitor))
    bad["spec"]["endpoints"][0]["interval"] = "30 seconds"
    bad["spec"]["endpoints"][0]["relabelings"] = [{"action": "explode"}]
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(bad))) == 2


# --- the rendered proxy config loads in the proxy ----------------------------------------------


def openflare_python() -> str:
    for candidate in (REPO / ".venv" / "bin" / "python", Path(sys.executable)):
        if candidate.exists():
            probe = subprocess.run(
                [str(candidate), "-c", "import openflare.config.watch"],
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                return str(candidate)
    pytest.fail("openflare is not importable: run `make setup` (the chart tests need it)")


# Secrets the chart mounts but does not render (`existingSecret`), as a cluster would hold them.
EXISTING_SECRETS = {"openflare-redis": {"url": "redis://redis.example:6379/0\n"}}


def secret_data(
    manifests: Manifests, name: str, existing: dict[str, dict[str, str]]
) -> dict[str, str]:
    if name in existing:
        return existing[name]
    data = manifests.one("Secret", name)["data"]
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def lay_out_volumes(
    manifests: Manifests, root: Path, existing: dict[str, dict[str, str]] = EXISTING_SECRETS
) -> None:
    """Write each mounted ConfigMap and Secret where the pod sees it (a folder per volume; a
    Secret's projected `items` under their paths)."""
    spec = manifests.proxy_deployment()["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for container in containers(spec):
        for mount in container["volumeMounts"]:
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                data = manifests.one("ConfigMap", volume["configMap"]["name"])["data"]
            elif "secret" in volume:
                items = volume["secret"]["items"]
                found = secret_data(manifests, volume["secret"]["secretName"], existing)
                data = {item["path"]: found[item["key"]] for item in items}
            else:
                continue
            folder = root / mount["mountPath"].lstrip("/")
            folder.mkdir(parents=True, exist_ok=True)
            for key, value in data.items():
                (folder / key).write_text(value)


def pod_file_env(container: dict[str, Any], root: Path) -> dict[str, str]:
    """The container's `*_FILE` variables (paths into its mounted Secrets), moved under root."""
    return {
        name: str(root / value.lstrip("/"))
        for name, value in env_of(container).items()
        if name.endswith("_FILE") and isinstance(value, str)
    }


@pytest.mark.parametrize("name", ["default", "all-on", "k8s-watch-origin", "off-single"])
def test_rendered_config_passes_check_config(name: str, tmp_path: Path) -> None:
    python = openflare_python()
    manifests = renders()[name]
    lay_out_volumes(manifests, tmp_path)
    spec = manifests.proxy_deployment()["spec"]["template"]["spec"]
    [proxy] = [c for c in spec["containers"] if c["name"] == "proxy"]

    def in_tmp(path: str) -> str:
        return str(tmp_path / path.lstrip("/"))

    for init in spec.get("initContainers", []):  # the k8s mode's mirror, as the pod runs it
        command = [in_tmp(a) if a.startswith("/") else a for a in init["command"][1:]]
        subprocess.run([python, *command], check=True, capture_output=True)
    # the Secrets as the pod reads them: files named by OPENFLARE_*_FILE, no token in the env
    env = {**pod_file_env(proxy, tmp_path), "PATH": os.environ.get("PATH", "")}
    assert "OPENFLARE_ADMIN_TOKEN_FILE" in env
    config = in_tmp(proxy["args"][2])
    result = subprocess.run(
        [python, "-m", "openflare", "check-config", config],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:")
    watch_env = env_of(proxy)
    if watch_env["OPENFLARE_WATCH"] == "k8s":
        assert config.startswith(in_tmp(watch_env["OPENFLARE_K8S_MIRROR_DIR"]) + "/")


def test_redis_secret_reaches_the_proxy_under_the_name_it_reads(tmp_path: Path) -> None:
    """redis.existingSecret: the Deployment mounts the Secret's key as a file and names it in
    a variable, and the proxy's loader, given the pod's variables and files, uses the URL in
    place of the rendered placeholder for the cache and the rate-limit backend."""
    python = openflare_python()
    manifests = render({"redis.enabled": True, "redis.existingSecret": "redis-conn"})
    spec = manifests.proxy_deployment()["spec"]["template"]["spec"]
    [proxy] = [c for c in spec["containers"] if c["name"] == "proxy"]
    url = "redis://:from-the-secret@redis.example:6379/3"
    lay_out_volumes(manifests, tmp_path, {"redis-conn": {"redis-url": url + "\n"}})
    files = pod_file_env(proxy, tmp_path)
    from_secret = [name for name, path in files.items() if Path(path).read_text() == url + "\n"]
    assert from_secret == ["OPENFLARE_REDIS_URL_FILE"]
    probe = (
        "import sys; from openflare.config.loader import load_bundle; b = load_bundle(sys.argv[1]);"
        " print(b.proxy.cache.store, b.proxy.cache.redis_url, b.rate_limits.backend.type,"
        " b.rate_limits.backend.redis.url)"
    )
    env = {**files, "PATH": os.environ.get("PATH", "")}
    result = subprocess.run(
        [python, "-c", probe, str(tmp_path / proxy["args"][2].lstrip("/"))],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["redis", url, "redis", url]


# --- alert rules ---------------------------------------------------------------------------------


def test_alert_rules_file() -> None:
    rules = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    names = [rule["alert"] for group in rules["groups"] for rule in group["rules"]]
    assert len(names) == len(set(names))
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"], rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
            for metric in re.findall(r"\b(openflare_[a-z_]+)", rule["expr"]):
                assert metric.startswith("openflare_"), metric


def test_alert_rules_have_one_source(tmp_path: Path) -> None:
    """The chart's rules file is a symlink to dashboards/alerts (promtool-tested there), and
    `helm package` puts those very bytes into the archive, without the rest of dashboards/."""
    link = CHART / "files" / "prometheus-rules.yaml"
    source = REPO / "dashboards" / "alerts" / "openflare-alerts.yaml"
    assert link.is_symlink() and link.resolve() == source.resolve()
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run scripts/install-tools.sh (make chart-test does)")
    result = subprocess.run(
        [str(HELM), "package", str(CHART), "-d", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [archive] = tmp_path.glob("openflare-*.tgz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        member = tar.extractfile("openflare/files/prometheus-rules.yaml")
        assert member is not None
        assert member.read() == source.read_bytes()
    assert not [name for name in names if name.startswith("openflare/dashboards/alerts/")]
    assert not [name for name in names if name.endswith(".py")]


def test_alert_rules_with_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make apt-deps` installs Debian's prometheus package"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": all_on().one("PrometheusRule")["spec"]["groups"]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- values.schema.json and the templates' own checks --------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCunt": 3}, "additional properties 'replicaCunt' not allowed"),
        ({"reload.mode": "inotify"}, "at '/reload/mode': value must be one of 'dir', 'k8s', 'off'"),
        ({"ports.http": 70000}, "at '/ports/http'"),
        ({"adminToken.value": "short"}, "at '/adminToken/value'"),
        ({"image.pullPolicy": "Sometimes"}, "at '/image/pullPolicy'"),
        ({"image.digest": "latest"}, "at '/image/digest'"),
        ({"serviceMonitor.interval": "30 seconds"}, "at '/serviceMonitor/interval'"),
        ({"securityContext.runAsUser": 0}, "at '/securityContext/runAsUser'"),
        ({"service.type": "ExternalName"}, "at '/service/type'"),
        ({"redis.url": "http://redis:6379"}, "at '/redis/url'"),
        ({"drain.gracefulShutdownTimeoutMs": -1}, "at '/drain/gracefulShutdownTimeoutMs'"),
        ({"testHook.path": "healthz"}, "at '/testHook/path'"),
        ({"extraEnv": [{"value": "1"}]}, "at '/extraEnv/0': missing property 'name'"),
        ({"resources.limits.memory": "lots"}, "at '/resources/limits/memory'"),
        ({"probes.readiness.periodSeconds": 0}, "at '/probes/readiness/periodSeconds'"),
        ({"rules.waf.enable": True}, "additional properties 'enable' not allowed"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    error = render_error(values)
    assert "values don't meet the specifications of the schema" in error
    assert message in error, error


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"proxy.config.upstreams": []}, "proxy.config.upstreams is empty"),
        (
            {"proxy.config.admin_api": {"auth_token": "x" * 20}},
            "do not put the admin token in a ConfigMap",
        ),
        ({"redis.enabled": True}, "redis.enabled needs redis.url"),
        (
            {"redis.enabled": True, "redis.url": "redis://r", "rules.rateLimit.content": "a: ["},
            "rules.rateLimit.content is not valid YAML",
        ),
        (
            {"autoscaling.enabled": True, "autoscaling.targetCPUUtilizationPercentage": None},
            "set targetCPUUtilizationPercentage and/or targetMemoryUtilizationPercentage",
        ),
    ],
)
def test_templates_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    assert message in render_error(values)


def test_the_all_on_values_file_passes_the_schema() -> None:
    assert render(files=(ALL_ON,), api_versions=MONITORING_APIS).docs
