"""The chart README lists every value (with its default), and the values are all documented."""

from __future__ import annotations

from typing import Any

import yaml
from values_table import readme_table, rows, table

from conftest import CHART


def leaf_paths(node: Any, prefix: str = "") -> set[str]:
    if isinstance(node, dict) and node:
        paths: set[str] = set()
        for key, value in node.items():
            paths |= leaf_paths(value, f"{prefix}.{key}" if prefix else key)
        return paths
    return {prefix}


def test_every_value_has_a_row() -> None:
    text = (CHART / "values.yaml").read_text()
    documented = [path for path, _ in rows(text)]
    assert len(documented) == len(set(documented))
    for leaf in leaf_paths(yaml.safe_load(text)):
        assert any(leaf == row or leaf.startswith(row + ".") for row in documented), leaf


def test_readme_table_is_current() -> None:
    readme = (CHART / "README.md").read_text()
    assert readme_table(readme) == table(), (
        "charts/openflare/README.md is stale: run python charts/tests/values_table.py --write"
    )


def test_schema_knows_every_top_level_value() -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_checkov_skips_have_reasons() -> None:
    lines = (CHART.parent / "tests" / "checkov.yaml").read_text().splitlines()
    skips = [i for i, line in enumerate(lines) if line.strip().startswith("- CKV")]
    assert skips
    for index in skips:
        check = lines[index].strip()[2:]
        above = index - 1
        while lines[above].strip().startswith("- CKV"):  # a reason may cover a pair
            above -= 1
        assert lines[above].strip().startswith("# "), f"{check} has no reason"
        assert check in lines[above] or check[:-1] in lines[above], f"{check}: reason names it"
