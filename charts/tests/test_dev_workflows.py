"""skaffold.yaml, the kind E2E values and docker-compose.yml agree with the chart and the proxy."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from test_validate import lay_out_volumes, openflare_python

from conftest import CHART, MONITORING_APIS, REPO, render

sys.path.insert(0, str(Path(__file__).parent / "kind"))
from e2e_values import e2e_values

TOKEN_ENV = {"OPENFLARE_ADMIN_TOKEN": "t" * 32}


def check_config(path: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [openflare_python(), "-m", "openflare", "check-config", str(path)],
        capture_output=True,
        text=True,
        env={**TOKEN_ENV, **(env or {})},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_skaffold_matches_the_repository() -> None:
    skaffold = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    assert skaffold["apiVersion"].startswith("skaffold/v4")
    images = {a["image"]: a for a in skaffold["build"]["artifacts"]}
    assert set(images) == {"openflare-proxy", "openflare-testsite"}
    for artifact in images.values():
        assert (REPO / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()
    [release] = skaffold["deploy"]["helm"]["releases"]
    assert (REPO / release["chartPath"]) == CHART
    values_file = REPO / release["valuesFiles"][0]
    manifests = render(
        {"image.tag": "dev", "origin.image.tag": "dev"},
        files=(values_file,),
        namespace=release["namespace"],
    )
    services = {s["metadata"]["name"]: s for s in manifests.all("Service")}
    forwards = {f["localPort"]: f for f in skaffold["portForward"]}
    assert set(forwards) == {8080, 8081}
    for forward in skaffold["portForward"]:
        service = services[forward["resourceName"]]
        assert forward["port"] in [p["port"] for p in service["spec"]["ports"]]
    [e2e] = [p for p in skaffold["profiles"] if p["name"] == "e2e"]
    for forward in e2e["portForward"]:
        assert forward["resourceName"].startswith(release["name"] + "-openflare")
    assert {f["localPort"] for f in e2e["portForward"]} == {18080, 18081, 18000}


def test_kind_e2e_values_run_the_test_config(tmp_path: Path) -> None:
    values_file = tmp_path / "e2e-values.yaml"
    values_file.write_text(yaml.safe_dump(e2e_values()))
    rate_limits = (REPO / "configs" / "rate-limit.test.yaml").read_text()
    manifests = render(
        {"rules.rateLimit.content": rate_limits},
        files=(CHART / "ci" / "kind-values.yaml", values_file),
        api_versions=MONITORING_APIS,
        namespace="openflare",
    )
    config = manifests.proxy_config()
    test_config = yaml.safe_load((REPO / "configs" / "proxy.test.yaml").read_text())
    assert config["routing"] == test_config["routing"]
    assert config["server"]["fault_injection"] is True
    assert config["upstreams"][0]["base_url"] == "http://of-openflare-origin:8000"
    assert manifests.configmap_data("rate-limit")["rate-limit.yaml"] == rate_limits
    lay_out_volumes(manifests, tmp_path)
    assert check_config(tmp_path / "etc/openflare/config/proxy.yaml").startswith("ok:")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def test_compose_proxy_config_loads() -> None:
    configs = REPO / "configs"
    env = {
        "OPENFLARE_WAF_RULES": str(configs / "rules.waf.yaml"),
        "OPENFLARE_CACHE_RULES": str(configs / "cache-rules.yaml"),
        "OPENFLARE_RATE_LIMIT_RULES": str(configs / "rate-limit.yaml"),
    }
    assert check_config(REPO / "compose" / "proxy" / "proxy.yaml", env).startswith("ok:")
    proxy = compose()["services"]["proxy"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in proxy["volumes"]}
    assert mounts == {
        "/etc/openflare/config": "./compose/proxy",
        "/etc/openflare/rules": "./configs",
    }
    config = yaml.safe_load((REPO / "compose" / "proxy" / "proxy.yaml").read_text())
    for path in config["rule_files"].values():
        assert path.startswith("/etc/openflare/rules/")
        assert (configs / Path(path).name).is_file()


def test_compose_services_are_hardened_and_wired() -> None:
    services = compose()["services"]
    for name in ("proxy", "origin", "proxy-e2e", "origin-e2e"):
        service = services[name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert service["user"] == "65532:65532", name
    assert set(services) >= {"proxy", "origin", "redis", "prometheus", "grafana", "e2e"}
    prometheus = yaml.safe_load((REPO / "compose" / "prometheus" / "prometheus.yml").read_text())
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "openflare"]
    assert job["static_configs"][0]["targets"] == ["proxy:8081"]
    image, _, tag = services["grafana"]["image"].partition(":")
    assert image == "grafana/grafana"
    assert re.fullmatch(r"12\.\d+\.\d+", tag), f"pin Grafana to an exact 12.x tag, not {tag!r}"
    grafana = services["grafana"]["volumes"]
    assert "./dashboards:/var/lib/grafana/dashboards:ro" in grafana
    provider = yaml.safe_load(
        (REPO / "compose/grafana/provisioning/dashboards/openflare.yaml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    e2e = services["e2e"]
    assert e2e["network_mode"] == services["proxy-e2e"]["network_mode"] == "service:origin-e2e"
    assert services["origin-e2e"]["network_mode"] == "none"  # loopback only
    assert services["proxy-e2e"]["command"][-1] == "/etc/openflare/config/proxy.test.yaml"
