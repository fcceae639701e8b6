"""What the chart renders: probes, ports, security, config layout, drain, optional parts."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import (
    CHART,
    MONITORING_APIS,
    NAMESPACE,
    RELEASE,
    Manifests,
    all_on,
    containers,
    env_of,
    pod_specs,
    render,
    render_error,
)

FULL = f"{RELEASE}-openflare"


def proxy_container(manifests: Manifests) -> dict[str, Any]:
    spec = manifests.proxy_deployment()["spec"]["template"]["spec"]
    [container] = [c for c in spec["containers"] if c["name"] == "proxy"]
    return container


def secret_behind(manifests: Manifests, variable: str) -> tuple[str, str]:
    """(Secret name, key) of the file the proxy's `variable` names: a key projected into a
    read-only Secret volume mounted as a folder (never subPath) in the proxy container."""
    spec = manifests.proxy_deployment()["spec"]["template"]["spec"]
    container = proxy_container(manifests)
    path = env_of(container)[variable]
    assert isinstance(path, str) and path.startswith("/"), path
    folder, _, file = path.rpartition("/")
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == folder]
    assert mount["readOnly"] is True and "subPath" not in mount and "subPathExpr" not in mount
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    [item] = [i for i in volume["secret"]["items"] if i["path"] == file]
    assert volume["secret"]["defaultMode"] == 0o440  # group-readable: the pod's fsGroup
    return volume["secret"]["secretName"], item["key"]


# --- the default render ---------------------------------------------------------------------------


def test_default_kinds() -> None:
    assert render().kinds() == [
        "ConfigMap",
        "ConfigMap",
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "Pod",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "Service",
        "ServiceAccount",
    ]


def test_every_resource_is_namespaced_and_labelled() -> None:
    for doc in all_on().docs:
        meta = doc["metadata"]
        assert meta["namespace"] == NAMESPACE, meta["name"]
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert len(meta["name"]) <= 63


@pytest.mark.parametrize("ports", [{"http": 8080, "admin": 8081}, {"http": 9000, "admin": 9901}])
def test_probes_paths_and_ports(ports: dict[str, int]) -> None:
    manifests = render({"ports": ports})
    container = proxy_container(manifests)
    declared = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert declared == ports
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    server = manifests.proxy_config()["server"]
    assert server["listen_addr"] == f":{ports['http']}"
    assert server["admin_listen_addr"] == f":{ports['admin']}"
    public = manifests.one("Service", FULL)["spec"]["ports"]
    admin = manifests.one("Service", f"{FULL}-admin")["spec"]["ports"]
    assert [(p["name"], p["targetPort"]) for p in public] == [("http", "http")]
    assert [(p["name"], p["targetPort"]) for p in admin] == [("admin", "admin")]


def test_rolling_update_never_drops_capacity() -> None:
    strategy = render({"maxSurge": 2}).proxy_deployment()["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 2},
    }


@pytest.mark.parametrize("manifests", [render(), all_on()], ids=["default", "all-on"])
def test_security_context_of_every_container(manifests: Manifests) -> None:
    specs = dict(pod_specs(manifests))
    assert len(specs) == (2 if manifests is not all_on() else 3)
    for name, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 65532, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in containers(spec):
            sc = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["privileged"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert container["resources"]["limits"]["memory"], where
        if not name.endswith("-test"):  # long-running pods write only to an emptyDir /tmp
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes["tmp"]
            for container in containers(spec):
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                assert mounts["/tmp"] == "tmp"


def test_service_account_token_is_not_mounted_by_default() -> None:
    manifests = render()
    assert manifests.one("ServiceAccount")["automountServiceAccountToken"] is False
    for _, spec in pod_specs(manifests):
        assert spec["automountServiceAccountToken"] is False


# --- config: ConfigMaps mounted as folders --------------------------------------------------------


@pytest.mark.parametrize("mode", ["dir", "off", "k8s"])
def test_config_is_mounted_as_folders_never_subpath(mode: str) -> None:
    manifests = render({"reload.mode": mode})
    spec = manifests.proxy_deployment()["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    configmaps = {cm["metadata"]["name"] for cm in manifests.all("ConfigMap")}
    mounted: dict[str, str] = {}
    for container in containers(spec):
        for mount in container["volumeMounts"]:
            assert "subPath" not in mount and "subPathExpr" not in mount
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                assert mount["readOnly"] is True
                mounted[volume["configMap"]["name"]] = mount["mountPath"]
    assert set(mounted) == configmaps
    assert mounted == {
        f"{FULL}-config": "/etc/openflare/config",
        f"{FULL}-waf": "/etc/openflare/waf",
        f"{FULL}-cache": "/etc/openflare/cache",
        f"{FULL}-rate-limit": "/etc/openflare/rate-limit",
    }


def test_rule_files_point_into_the_mounted_folders() -> None:
    manifests = render()
    config = manifests.proxy_config()
    assert config["rule_files"] == {
        "waf": "../waf/rules.waf.yaml",
        "cache": "../cache/cache-rules.yaml",
        "rate_limit": "../rate-limit/rate-limit.yaml",
    }
    assert "rules.waf.yaml" in manifests.configmap_data("waf")
    assert "cache-rules.yaml" in manifests.configmap_data("cache")
    assert "rate-limit.yaml" in manifests.configmap_data("rate-limit")
    assert proxy_container(manifests)["args"] == [
        "run",
        "--config",
        "/etc/openflare/config/proxy.yaml",
    ]


def test_default_rules_are_the_shipped_files() -> None:
    repo = Path(__file__).resolve().parents[2]
    data = render().configmap_data("waf")["rules.waf.yaml"]
    assert data == (repo / "configs" / "rules.waf.yaml").read_text()


def test_rule_files_can_be_replaced_or_left_out() -> None:
    manifests = render(
        {"rules.waf.content": "mode: shadow\nrules: []\n", "rules.cache.enabled": False}
    )
    assert manifests.configmap_data("waf")["rules.waf.yaml"] == "mode: shadow\nrules: []\n"
    assert f"{FULL}-cache" not in {cm["metadata"]["name"] for cm in manifests.all("ConfigMap")}
    assert "cache" not in manifests.proxy_config()["rule_files"]


def test_user_config_is_kept_and_chart_keys_win() -> None:
    config = render(
        {
            "proxy.config.server": {"listen_addr": ":1", "max_header_bytes": 16384},
            "proxy.config.cache": {"enabled": False},
            "proxy.config.rule_files": {"waf": "/elsewhere.yaml"},
        }
    ).proxy_config()
    assert config["server"]["listen_addr"] == ":8080"  # the chart owns the ports
    assert config["server"]["max_header_bytes"] == 16384
    assert config["cache"] == {"enabled": False, "max_bytes": 268435456}  # merged with defaults
    assert config["rule_files"]["waf"] == "../waf/rules.waf.yaml"


def test_no_pod_restart_on_config_change() -> None:
    """Config changes are applied live: no checksum of the ConfigMaps on the pod template."""
    token = {"adminToken.value": "x" * 20}
    a = render({**token, "rules.waf.content": "rules: []\n"}).proxy_deployment()
    b = render({**token, "rules.waf.content": "mode: shadow\nrules: []\n"}).proxy_deployment()
    assert a["spec"]["template"] == b["spec"]["template"]


# --- reload modes and RBAC ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["dir", "off"])
def test_no_rbac_without_api_watch(mode: str) -> None:
    manifests = render({"reload.mode": mode, "rbac.create": True})
    assert not manifests.has("Role") and not manifests.has("RoleBinding")
    env = env_of(proxy_container(manifests))
    assert env["OPENFLARE_WATCH"] == mode
    assert "OPENFLARE_K8S_CONFIGMAPS" not in env
    spec = manifests.proxy_deployment()["spec"]["template"]["spec"]
    assert "initContainers" not in spec and spec["automountServiceAccountToken"] is False


def test_api_watch_has_rbac_on_its_own_configmaps_only() -> None:
    manifests = render({"reload.mode": "k8s"})
    role = manifests.one("Role")
    names = sorted(cm["metadata"]["name"] for cm in manifests.all("ConfigMap"))
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [
                f"{FULL}-config",
                f"{FULL}-waf",
                f"{FULL}-cache",
                f"{FULL}-rate-limit",
            ],
            "verbs": ["get", "list", "watch"],
        }
    ]
    assert sorted(role["rules"][0]["resourceNames"]) == names
    binding = manifests.one("RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULL, "namespace": NAMESPACE}]
    spec = manifests.proxy_deployment()["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is True
    env = env_of(proxy_container(manifests))
    assert env["OPENFLARE_WATCH"] == "k8s"
    assert env["OPENFLARE_K8S_CONFIGMAPS"] == (
        f"{FULL}-config=config,{FULL}-waf=waf,{FULL}-cache=cache,{FULL}-rate-limit=rate-limit"
    )
    assert env["OPENFLARE_K8S_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    [init] = spec["initContainers"]
    assert init["command"][:4] == ["python", "-m", "openflare.config.watch", "mirror"]
    assert init["command"][4:] == ["/etc/openflare", env["OPENFLARE_K8S_MIRROR_DIR"]]
    config_arg = proxy_container(manifests)["args"][2]
    assert config_arg == env["OPENFLARE_K8S_MIRROR_DIR"] + "/config/proxy.yaml"


def test_rbac_can_be_left_to_the_operator() -> None:
    manifests = render({"reload.mode": "k8s", "rbac.create": False})
    assert not manifests.has("Role") and not manifests.has("RoleBinding")


# --- drain ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "drain",
    [
        {"preStopSleepSeconds": 5, "shutdownDelayMs": 2000, "gracefulShutdownTimeoutMs": 15000},
        {"preStopSleepSeconds": 0, "shutdownDelayMs": 0, "gracefulShutdownTimeoutMs": 30500},
    ],
)
def test_termination_grace_covers_the_whole_drain(drain: dict[str, int]) -> None:
    manifests = render({"drain": {**drain, "extraGraceSeconds": 5}})
    spec = manifests.proxy_deployment()["spec"]["template"]["spec"]
    server = manifests.proxy_config()["server"]
    assert server["shutdown_delay_ms"] == drain["shutdownDelayMs"]
    assert server["graceful_shutdown_timeout_ms"] == drain["gracefulShutdownTimeoutMs"]
    drain_s = math.ceil((drain["shutdownDelayMs"] + drain["gracefulShutdownTimeoutMs"]) / 1000)
    assert spec["terminationGracePeriodSeconds"] == drain["preStopSleepSeconds"] + drain_s + 5
    pre_stop = proxy_container(manifests)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[-1] == f"import time; time.sleep({drain['preStopSleepSeconds']})"


# --- optional resources ---------------------------------------------------------------------------


def test_service_monitor_off_by_default() -> None:
    assert not render(api_versions=MONITORING_APIS).has("ServiceMonitor")


def test_service_monitor_fails_clearly_without_the_operator_api() -> None:
    message = render_error({"serviceMonitor.enabled": True})
    assert "does not serve monitoring.coreos.com/v1 ServiceMonitor" in message
    assert "serviceMonitor.skipApiCheck=true" in message


@pytest.mark.parametrize("how", ["api", "skip"])
def test_service_monitor_when_enabled(how: str) -> None:
    values: dict[str, Any] = {
        "serviceMonitor.enabled": True,
        "serviceMonitor.additionalLabels": {"release": "kp"},
        "serviceMonitor.interval": "15s",
        "serviceMonitor.scrapeTimeout": "5s",
        "serviceMonitor.relabelings": [{"targetLabel": "cluster", "replacement": "eu1"}],
    }
    if how == "skip":
        values["serviceMonitor.skipApiCheck"] = True
    manifests = render(values, api_versions=MONITORING_APIS if how == "api" else ())
    monitor = manifests.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kp"
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "admin" and endpoint["path"] == "/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "5s")
    assert endpoint["relabelings"] == [{"targetLabel": "cluster", "replacement": "eu1"}]
    admin = manifests.one("Service", f"{FULL}-admin")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= admin["metadata"]["labels"].items()
    public = manifests.one("Service", FULL)
    assert not selector.items() <= public["metadata"]["labels"].items()


def test_prometheus_rule() -> None:
    assert "PrometheusRule" in render_error({"prometheusRule.enabled": True})
    rule = all_on().one("PrometheusRule")
    shipped = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())["groups"]
    assert rule["spec"]["groups"][: len(shipped)] == shipped  # dashboards/alerts, verbatim
    assert rule["spec"]["groups"][len(shipped)]["name"] == "openflare.site"  # additionalGroups
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"OpenFlareDown", "OpenFlareConfigReloadFailed", "OpenFlareNoTraffic"} <= alerts


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicaCount": 2}, {"minAvailable": 1}),
        ({"replicaCount": 1}, None),
        ({"replicaCount": 3, "podDisruptionBudget.maxUnavailable": 1}, {"maxUnavailable": 1}),
        ({"replicaCount": 3, "podDisruptionBudget.enabled": False}, None),
        ({"replicaCount": 1, "autoscaling.enabled": True, "autoscaling.minReplicas": 2}, {}),
        ({"replicaCount": 5, "autoscaling.enabled": True, "autoscaling.minReplicas": 1}, None),
    ],
)
def test_pdb_only_with_more_than_one_replica(
    values: dict[str, Any], expected: dict[str, Any] | None
) -> None:
    pdbs = render(values).all("PodDisruptionBudget")
    if expected is None:
        assert pdbs == []
    else:
        [pdb] = pdbs
        assert expected.items() <= pdb["spec"].items()
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "proxy"


def test_hpa_autoscaling_v2() -> None:
    manifests = all_on()
    hpa = manifests.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == FULL
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    assert "replicas" not in manifests.proxy_deployment()["spec"]
    assert "must" not in render_error(
        {
            "autoscaling.enabled": True,
            "autoscaling.targetCPUUtilizationPercentage": None,
            "autoscaling.targetMemoryUtilizationPercentage": None,
        }
    )


def test_admin_token_secret() -> None:
    manifests = render()
    secret = manifests.one("Secret")
    token = base64.b64decode(secret["data"]["admin-token"]).decode()
    assert len(token) == 40 and token.isalnum()
    env = env_of(proxy_container(manifests))
    assert env["OPENFLARE_ADMIN_TOKEN_FILE"] == "/var/run/secrets/openflare/admin-token/token"
    assert "OPENFLARE_ADMIN_TOKEN" not in env  # the proxy refuses both
    assert secret_behind(manifests, "OPENFLARE_ADMIN_TOKEN_FILE") == (
        secret["metadata"]["name"],
        "admin-token",
    )
    given = render({"adminToken.value": "a-long-enough-admin-token"}).one("Secret")
    assert base64.b64decode(given["data"]["admin-token"]) == b"a-long-enough-admin-token"


def test_existing_admin_secret() -> None:
    manifests = render({"adminToken.existingSecret": "mine", "adminToken.existingSecretKey": "t"})
    assert not manifests.has("Secret")
    assert secret_behind(manifests, "OPENFLARE_ADMIN_TOKEN_FILE") == ("mine", "t")
    assert "OPENFLARE_ADMIN_TOKEN" not in env_of(proxy_container(manifests))


@pytest.mark.parametrize(
    "manifests",
    [
        render(),
        render({"reload.mode": "k8s", "adminToken.existingSecret": "mine"}),
        render({"redis.enabled": True, "redis.existingSecret": "r", "reload.mode": "off"}),
        all_on(),
    ],
    ids=["default", "k8s-existing-token", "redis-secret", "all-on"],
)
def test_secrets_reach_the_pods_as_files_never_as_environment(manifests: Manifests) -> None:
    """checkov CKV_K8S_35 (no skip): no container of any pod takes a Secret into its
    environment; the proxy gets paths (OPENFLARE_*_FILE) into read-only Secret folders."""
    for name, spec in pod_specs(manifests):
        for container in containers(spec):
            for item in container.get("env", []):
                assert "secretKeyRef" not in item.get("valueFrom", {}), (name, item["name"])
            assert "envFrom" not in container, name
    env = env_of(proxy_container(manifests))
    assert not {"OPENFLARE_ADMIN_TOKEN", "ADMIN_TOKEN", "OPENFLARE_REDIS_URL"} & set(env)
    secrets = {var: secret_behind(manifests, var) for var in env if var.endswith("_FILE")}
    assert "OPENFLARE_ADMIN_TOKEN_FILE" in secrets
    spec = manifests.proxy_deployment()["spec"]["template"]["spec"]
    for init in spec.get("initContainers", []):  # the k8s mirror copies config, never secrets
        assert {m["name"] for m in init["volumeMounts"]}.isdisjoint({"admin-token", "redis-url"})


def test_only_the_charts_own_token_rolls_the_pods() -> None:
    """An existingSecret is mounted by name and its content never reaches the pod template: a
    rotation is the kubelet's file update plus a reload, never a rollout. A changed
    adminToken.value (the chart's own Secret, through helm) rolls the pods by its checksum."""
    existing = {"adminToken.existingSecret": "mine", "redis.existingSecret": "r"}
    template = render({**existing, "redis.enabled": True}).proxy_deployment()["spec"]["template"]
    assert "checksum/admin-token" not in template["metadata"]["annotations"]
    own = [render({"adminToken.value": c * 20}).proxy_deployment() for c in "ab"]
    annotations = [d["spec"]["template"]["metadata"]["annotations"] for d in own]
    assert len({item["checksum/admin-token"] for item in annotations}) == 2


def test_redis_url_goes_into_both_files() -> None:
    manifests = render({"redis.enabled": True, "redis.url": "redis://redis.cache:6379/2"})
    assert manifests.proxy_config()["cache"]["store"] == "redis"
    assert manifests.proxy_config()["cache"]["redis_url"] == "redis://redis.cache:6379/2"
    limits = yaml.safe_load(manifests.configmap_data("rate-limit")["rate-limit.yaml"])
    assert limits["backend"]["type"] == "redis"
    assert limits["backend"]["redis"]["url"] == "redis://redis.cache:6379/2"
    assert "OPENFLARE_REDIS_URL" not in env_of(proxy_container(manifests))
    assert "OPENFLARE_REDIS_URL_FILE" not in env_of(proxy_container(manifests))
    spec = manifests.proxy_deployment()["spec"]["template"]["spec"]
    assert "redis-url" not in {v["name"] for v in spec["volumes"]}


def test_redis_url_from_a_secret() -> None:
    manifests = render(
        {"redis.enabled": True, "redis.existingSecret": "r", "redis.rateLimit": False}
    )
    env = env_of(proxy_container(manifests))
    assert env["OPENFLARE_REDIS_URL_FILE"] == "/var/run/secrets/openflare/redis/url"
    assert "OPENFLARE_REDIS_URL" not in env  # the proxy refuses both
    assert secret_behind(manifests, "OPENFLARE_REDIS_URL_FILE") == ("r", "redis-url")
    limits = yaml.safe_load(manifests.configmap_data("rate-limit")["rate-limit.yaml"])
    assert limits["backend"]["type"] == "local"  # redis.rateLimit: false
    assert manifests.proxy_config()["cache"]["redis_url"] == (
        "redis://redis-url-from-OPENFLARE_REDIS_URL_FILE.invalid:6379/0"
    )


def test_test_origin() -> None:
    manifests = render({"origin.enabled": True})
    origin = manifests.one("Deployment", f"{FULL}-origin")
    service = manifests.one("Service", f"{FULL}-origin")
    assert service["spec"]["ports"][0]["port"] == 8000
    labels = origin["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert manifests.proxy_config()["upstreams"] == [
        {"name": "origin", "base_url": f"http://{FULL}-origin:8000"}
    ]
    # the proxy Services must not select the origin pods, nor the origin Service the proxy
    proxy_labels = manifests.proxy_deployment()["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= proxy_labels.items()
    assert not manifests.one("Service", FULL)["spec"]["selector"].items() <= labels.items()


def test_origin_upstream_with_targets_fails_clearly() -> None:
    """origin.enabled sets the `origin` upstream's base_url; targets next to it would make the
    proxy refuse the config (base_url must be targets[0]), so the chart refuses first."""
    upstreams = [{"name": "origin", "targets": ["http://a:80", "http://b:80"]}]
    error = render_error({"origin.enabled": True, "proxy.config.upstreams": upstreams})
    assert "proxy.config.upstreams[origin]: origin.enabled sets its base_url to" in error
    assert f"http://{FULL}-origin:8000" in error and "remove targets" in error
    # without origin.enabled the user's targets are kept as they are
    config = render({"proxy.config.upstreams": upstreams}).proxy_config()
    assert config["upstreams"] == upstreams


@pytest.mark.parametrize(
    ("upstream", "refused"),
    [
        ({"name": "api", "base_url": "http://a:80", "targets": ["http://a:80/"]}, False),
        ({"name": "api", "base_url": "http://b:80", "targets": ["http://a:80"]}, True),
    ],
)
def test_base_url_must_be_the_first_target(upstream: dict[str, Any], refused: bool) -> None:
    values = {"proxy.config.upstreams": [upstream]}
    if not refused:
        assert render(values).proxy_config()["upstreams"] == [upstream]
        return
    error = render_error(values)
    assert (
        "proxy.config.upstreams[api]: base_url (http://b:80) must equal targets[0] (http://a:80)"
        " when both are set; set only one of them"
    ) in error


def test_dashboards_as_labelled_configmaps(chart_copy: Path) -> None:
    (chart_copy / "dashboards").mkdir(exist_ok=True)
    (chart_copy / "dashboards" / "openflare_overview.json").write_text('{"title": "Overview"}')
    manifests = render(
        {"dashboards.enabled": True, "dashboards.annotations": {"grafana_folder": "Edge"}},
        chart=chart_copy,
    )
    dashboards = {
        key: cm
        for cm in manifests.all("ConfigMap")
        if "grafana_dashboard" in cm["metadata"]["labels"]
        for key in cm["data"]
    }
    shipped = sorted(p.name for p in (CHART / "dashboards").glob("*.json"))
    assert sorted(dashboards) == sorted([*shipped, "openflare_overview.json"])
    dashboard = dashboards["openflare_overview.json"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Edge"}
    assert dashboard["data"] == {"openflare_overview.json": '{"title": "Overview"}'}
    for name in shipped:  # the real dashboards arrive intact and are JSON
        assert json.loads(dashboards[name]["data"][name])["title"]
    assert not [
        cm
        for cm in render(chart=chart_copy).all("ConfigMap")
        if "grafana_dashboard" in cm["metadata"]["labels"]
    ]


def test_network_policy_keeps_the_admin_port_internal() -> None:
    manifests = all_on()
    policy = manifests.one("NetworkPolicy", FULL)
    public, admin = policy["spec"]["ingress"]
    assert public == {"ports": [{"port": "http", "protocol": "TCP"}]}
    assert admin["ports"] == [{"port": "admin", "protocol": "TCP"}]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    } in (admin["from"])
    assert not render().has("NetworkPolicy")


def test_helm_test_hook() -> None:
    pod = render().one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    assert f"http://{FULL}-admin:8081/readyz" in script
    assert f"http://{FULL}:80/" in script
    compile(script, "helm-test", "exec")  # the inline Python is valid
    assert not render({"testHook.enabled": False}).has("Pod")


def test_image_tag_and_digest() -> None:
    image = proxy_container(render())["image"]
    assert image == "openflare-proxy:0.1.0"
    pinned = proxy_container(all_on())["image"]
    assert pinned.startswith("registry.example.test/openflare-proxy@sha256:")


@pytest.mark.parametrize("mode", ["dir", "k8s", "off"])
def test_notes(mode: str, chart_copy: Path) -> None:
    """NOTES.txt, rendered through `tpl` in a copy of the chart (`helm template` skips it)."""
    (chart_copy / "templates" / "NOTES.txt").rename(chart_copy / "files" / "NOTES.txt")
    (chart_copy / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n"
        '    {{- tpl (.Files.Get "files/NOTES.txt") . | nindent 4 }}\n'
    )
    values = {"reload.mode": mode, "redis.enabled": True, "redis.existingSecret": "r"}
    notes = render(values, chart=chart_copy).one("ConfigMap", "notes")["data"]["notes"]
    assert f"service/{FULL} port 80" in notes
    assert f"helm test {RELEASE} -n {NAMESPACE}" in notes
    assert f"get secret {FULL}-admin" in notes
    assert f"Config reload: {mode}" in notes
    expected = {"dir": "the kubelet syncs", "k8s": "through the API", "off": "POST /admin"}
    assert expected[mode] in notes
    assert "OPENFLARE_REDIS_URL_FILE" in notes
