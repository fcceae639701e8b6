"""Dashboards and alert rules, statically: the committed JSON is what dashboards/generate.py
makes, every query parses as PromQL and names only metrics the proxy exports, every panel uses
the `${datasource}` variable, every alert links a runbook entry that exists, and every metric
family is documented. (e2e/test_observability.py evaluates all of it against Prometheus.)"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import promql_parser
import pytest
import yaml

from openflare.observability.metrics import Metrics

REPO = Path(__file__).resolve().parents[3]
DASHBOARDS = REPO / "dashboards"
ALERTS = DASHBOARDS / "alerts" / "openflare-alerts.yaml"
DOC = REPO / "docs" / "10-observability.md"
RUNBOOK = REPO / "docs" / "07-runbook.md"
MACROS = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "30s"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboards_generate", DASHBOARDS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS.glob("*.json"))
    }


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def fill(expr: str) -> str:
    for macro, value in MACROS.items():
        expr = expr.replace(macro, value)
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


def queries() -> list[tuple[str, str]]:
    found = []
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{name}: {panel['title']}", target["expr"]))
        for annotation in board["annotations"]["list"]:
            if "expr" in annotation:
                found.append((f"{name}: annotation", annotation["expr"]))
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                match = re.fullmatch(r"label_values\((.*), *(\w+)\)", var["query"]["query"])
                assert match, var
                found.append((f"{name}: variable {var['name']}", match.group(1)))
    found.extend((f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules())
    return found


def exported_names() -> set[str]:
    """Every sample name the proxy can export."""
    metrics = Metrics()
    names = {"up"}
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "info": ("_info",),
        "gauge": ("",),
    }
    for family in metrics.registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def test_committed_dashboards_are_generated() -> None:
    module = generator()
    assert set(dashboards()) == set(module.DASHBOARDS)
    for name, build in module.DASHBOARDS.items():
        assert (DASHBOARDS / name).read_text(encoding="utf-8") == module.render(build), (
            f"{name} is out of date: run python dashboards/generate.py"
        )


def test_dashboard_model() -> None:
    boards = dashboards()
    assert {b["uid"] for b in boards.values()} == {
        "openflare-overview",
        "openflare-cache",
        "openflare-security",
    }
    for name, board in boards.items():
        assert board["schemaVersion"] >= 41, name
        assert board["id"] is None
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert {"datasource", "namespace", "job", "instance"} <= set(variables), name
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (name, panel["title"])
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == DATASOURCE, (name, panel["title"])
            assert panel["description"], (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"] == DATASOURCE
                assert 'namespace=~"$namespace"' in target["expr"], (name, panel["title"])
                assert 'job=~"$job"' in target["expr"] and 'instance=~"$instance"' in target["expr"]


@pytest.mark.parametrize(("where", "expr"), queries())
def test_every_query_parses_and_names_exported_metrics(where: str, expr: str) -> None:
    promql_parser.parse(fill(expr))
    names = set(re.findall(r"\b(openflare_[a-z_]+)\b", expr))
    if re.search(r"\bup\{", expr):
        names.add("up")
    assert names, where
    unknown = names - exported_names()
    assert not unknown, f"{where}: {unknown}"


def slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).strip().replace(" ", "-")


def anchors_of(doc: Path) -> set[str]:
    text = doc.read_text(encoding="utf-8")
    return {slug(line.lstrip("#").strip()) for line in text.splitlines() if line.startswith("#")}


def test_alerts_have_severity_text_and_a_runbook_entry() -> None:
    anchors = anchors_of(RUNBOOK)
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    assert {
        "OpenFlareDown",
        "OpenFlareHigh5xxRatio",
        "OpenFlareUpstreamErrors",
        "OpenFlareHighLatencyP99",
        "OpenFlareCacheHitRatioDrop",
        "OpenFlareConfigReloadFailed",
        "OpenFlareWafBlockSpike",
    } <= set(names)
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert path == "docs/07-runbook.md"
        assert anchor == rule["alert"].lower()
        assert anchor in anchors, f"{rule['alert']}: no heading for #{anchor} in {RUNBOOK.name}"


def test_alert_table_links_resolve() -> None:
    """docs/10-observability.md's alert table links every alert to its runbook entry."""
    doc = DOC.read_text(encoding="utf-8")
    anchors = anchors_of(RUNBOOK)
    links = re.findall(r"\]\(07-runbook\.md#([a-z0-9-]+)\)", doc)
    assert {rule["alert"].lower() for rule in alert_rules()} <= set(links)
    for anchor in links:
        assert anchor in anchors, f"docs/10-observability.md links to a missing #{anchor}"


def test_every_metric_family_is_documented() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        name = name + ("_info" if family.type == "info" else "")
        assert f"`{name}`" in doc, f"{name} is not in docs/10-observability.md"


def test_every_server_and_parser_rejection_reason_is_documented() -> None:
    """`stage="server"` and `stage="parser"` refusals have no access line: the metric and
    docs/10-observability.md are all an operator has, so every reason app.py counts is listed."""
    source = (REPO / "proxy" / "src" / "openflare" / "app.py").read_text(encoding="utf-8")
    server = set(re.findall(r'reject\("server", "([a-z_]+)"\)', source))
    assert server >= {"max_connections", "header_timeout", "write_timeout"}
    refused = source[source.index("def refused(") :]
    parser = set(re.findall(r'"([a-z_]+)"', refused[: refused.index("\n\n")]))
    assert parser >= {"uri_too_long", "headers_too_large", "bad_request"}
    function = source[source.index("def refusal_reason(") :]
    phrases = re.findall(r'return "([a-z A-Z]+)"', function[: function.index("\n\n\n")])
    assert len(phrases) >= 9
    doc = DOC.read_text(encoding="utf-8")
    rows = {line for line in doc.splitlines() if line.startswith(("| `server`", "| `parser`"))}
    for stage, reasons in (("server", server), ("parser", parser - {"parser"})):
        for reason in reasons:
            assert any(f"| `{stage}` | `{reason}` |" in row for row in rows), (stage, reason)
    for phrase in phrases:
        assert phrase in doc, f"parser refusal phrase {phrase!r} is not documented"
