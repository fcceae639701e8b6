"""The WAF rule file: the original shape loads, the extended shape validates strictly, and every
error names the rule (file:line: rules[<id>].key: reason)."""

from __future__ import annotations

from pathlib import Path

import pytest

from openflare.config.loader import ConfigError, load_bundle
from openflare.waf.rules import WafRules

GOOD_TOKEN = "x" * 32
MAIN = """\
upstreams:
  - name: origin
    base_url: http://127.0.0.1:8000
routing:
  default_upstream: origin
rule_files:
  waf: waf.yaml
"""

ORIGINAL = """\
mode: enforce
rules:
  - id: path-traversal
    enabled: true
    phase: request
    description: "Path traversal"
    match:
      any:
        - path_regex: '(?i)(\\.\\./|%2e%2e%2f)'
        - query_regex: '(?i)(\\.\\./)'
    action:
      type: block
      status_code: 403
  - id: xss-log
    match:
      any:
        - header_regex: 'Referer: (?i)<script'
        - header_name: X-Debug
        - ip_cidr: 10.0.0.0/8
        - method: TRACE
        - user_agent_regex: '(?i)nikto'
        - content_type: text/xml
        - body_regex: 'evil'
    action: {type: log}
  - id: no-cache
    match: {any: [{path_regex: '^/live'}]}
    action: {type: bypass_cache}
  - id: office
    match: {any: [{ip_cidr: 192.0.2.0/24}]}
    action: {type: allow}
"""


def load_errors(tmp_path: Path, waf_text: str) -> list[str]:
    (tmp_path / "main.yaml").write_text(MAIN)
    (tmp_path / "waf.yaml").write_text(waf_text)
    with pytest.raises(ConfigError) as caught:
        load_bundle(tmp_path / "main.yaml", {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN})
    return [str(issue) for issue in caught.value.issues]


def test_original_shape_loads_and_compiles(tmp_path: Path) -> None:
    (tmp_path / "main.yaml").write_text(MAIN)
    (tmp_path / "waf.yaml").write_text(ORIGINAL)
    bundle = load_bundle(tmp_path / "main.yaml", {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN})
    assert [r.id for r in bundle.waf.rules] == ["path-traversal", "xss-log", "no-cache", "office"]
    compiled = bundle.waf.compiled
    assert compiled.loaded_rules == 4 and [r.id for r in compiled.allow_rules] == ["office"]


def test_shipped_pack_loads() -> None:
    repo = Path(__file__).resolve().parents[3]
    bundle = load_bundle(
        repo / "configs" / "proxy.test.yaml", {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN}
    )
    compiled = bundle.waf.compiled
    assert compiled.loaded_rules >= 30 and compiled.needs_body
    assert compiled.threshold == 5 and compiled.paranoia == 1


@pytest.mark.parametrize(
    ("rule_yaml", "expected"),
    [
        (
            "    match: {any: [{target: args, regex: '(?<=a)b'}]}\n",
            "waf.yaml:6: rules[bad].match.any[0].regex: RE2 cannot compile",
        ),
        (
            "    match: {any: [{path_regex: '(a'}]}\n",
            "waf.yaml:6: rules[bad].match.any[0].path_regex: RE2 cannot compile",
        ),
        (
            "    match: {any: [{target: bogus, contains: x}]}\n",
            "waf.yaml:6: rules[bad].match.any[0].target: unknown target 'bogus'",
        ),
        (
            "    match: {any: [{target: args, contains: x, regex: y}]}\n",
            "waf.yaml:6: rules[bad].match.any[0]: a condition needs exactly one operator",
        ),
        (
            "    match: {any: [{target: args}]}\n",
            "waf.yaml:6: rules[bad].match.any[0]: a condition needs exactly one operator",
        ),
        (
            "    match: {any: [{target: args, cidr: 10.0.0.0/8}]}\n",
            "waf.yaml:6: rules[bad].match.any[0]: cidr applies to the target client_ip only",
        ),
        (
            "    match: {any: [{target: body_size, contains: x}]}\n",
            "waf.yaml:6: rules[bad].match.any[0]: contains cannot apply to the numeric target",
        ),
        (
            "    match: {any: [{path_regex: a, target: args}]}\n",
            "waf.yaml:6: rules[bad].match.any[0]: 'path_regex' is a complete condition",
        ),
        (
            "    match: {any: [{target: args, transforms: [rot13], contains: x}]}\n",
            "waf.yaml:6: rules[bad].match.any[0].transforms[0]: Input should be",
        ),
        (
            "    match: {any: [{target: args, contains: x, nope: 1}]}\n",
            "waf.yaml:6: rules[bad].match.any[0].nope: unknown key",
        ),
        ("    match: {}\n", "waf.yaml:6: rules[bad].match: match needs at least one condition"),
        (
            "    paranoia: 5\n    match: {any: [{method: GET}]}\n",
            "waf.yaml:6: rules[bad].paranoia: Input should be less than or equal to 4",
        ),
        (
            "    phase: request_headers\n    match: {any: [{target: json_values, contains: x}]}\n",
            "rule 'bad': phase request_headers cannot inspect body targets",
        ),
    ],
)
def test_errors_name_the_rule(tmp_path: Path, rule_yaml: str, expected: str) -> None:
    text = "rules:\n  - id: ok\n    match: {any: [{method: GET}]}\n    action: {type: log}\n"
    text += "  - id: bad\n" + rule_yaml + "    action: {type: block}\n"
    errors = load_errors(tmp_path, text)
    assert any(expected in error for error in errors), errors


def test_duplicate_ids_and_bad_exclusions(tmp_path: Path) -> None:
    text = (
        "exclusions:\n  - paths: [/x]\n"
        "rules:\n  - id: a\n    match: {any: [{method: GET}]}\n    action: {type: log}\n"
        "  - id: a\n    match: {any: [{method: GET}]}\n    action: {type: log}\n"
    )
    errors = load_errors(tmp_path, text)
    assert any("exclusions[0]: an exclusion needs rules or tags" in e for e in errors), errors
    (tmp_path / "waf.yaml").write_text(text.replace("exclusions:\n  - paths: [/x]\n", ""))
    errors = load_errors(tmp_path, text.replace("exclusions:\n  - paths: [/x]\n", ""))
    assert any("rules[a].id: duplicate rule id 'a'" in e for e in errors), errors


def test_model_defaults() -> None:
    file = WafRules()
    assert file.mode == "enforce" and file.paranoia == 1 and file.anomaly_threshold == 5
    assert file.body.oversize == "inspect_prefix"
    assert file.compiled.empty
