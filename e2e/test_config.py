"""`openflare check-config` and start-up refusals: every problem reported as
`file:line: key.path: reason`, exit code 2."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from harness import CONFIGS_DIR, TEST_CONFIG, clean_env

ISSUE_RE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<path>\S+): (?P<reason>.+)$")


def _run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openflare", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or clean_env(),
        cwd=Path(__file__).parent,
    )


BROKEN = """\
dev_mode: false
server:
  listen_adr: "127.0.0.1:1"
  max_header_count: 3
upstreams:
  - name: origin
    base_url: "ftp://origin.internal"
logging:
  level: loud
"""


def test_check_config_reports_every_problem_with_location(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = _run("check-config", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, "no diagnostics"
    for line in lines:
        match = ISSUE_RE.match(line)
        assert match, f"not file:line: key.path: reason: {line!r}"
        assert match["file"] == str(path)
    issues = {(int(ISSUE_RE.match(x)["line"]), ISSUE_RE.match(x)["path"]): x for x in lines}
    assert issues[(3, "server.listen_adr")].endswith(": unknown key")
    assert (4, "server.max_header_count") in issues
    assert "8" in issues[(4, "server.max_header_count")]
    assert issues[(7, "upstreams[origin].base_url")].endswith(
        ": must start with http:// or https://"
    )
    assert (9, "logging.level") in issues
    assert len(lines) == 4, lines


def test_check_config_reports_unknown_references(tmp_path: Path) -> None:
    path = tmp_path / "refs.yaml"
    path.write_text(
        "upstreams:\n"
        "  - name: origin\n"
        '    base_url: "http://127.0.0.1:1"\n'
        "routing:\n"
        "  default_upstream: nope\n"
        "  routes:\n"
        "    - id: r1\n"
        "      upstream: missing\n"
    )
    env = clean_env({"OPENFLARE_ADMIN_TOKEN": secrets.token_hex(16)})
    result = _run("check-config", str(path), env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert f"{path}:5: routing.default_upstream: unknown upstream 'nope'" in lines
    assert f"{path}:8: routing.routes[r1].upstream: unknown upstream 'missing'" in lines


def test_check_config_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "invalid.yaml"
    path.write_text("server:\n  listen_addr: [unclosed\n")
    result = _run("check-config", str(path))
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[0]
    assert line.startswith(f"{path}:")
    assert "invalid YAML" in line


def test_check_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    result = _run("check-config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"{path}:0: <root>: file not found"


def test_check_config_missing_rule_file_is_an_error(tmp_path: Path) -> None:
    """A missing WAF file is an error, never 'no WAF' (seed defect 12)."""
    path = tmp_path / "norules.yaml"
    path.write_text(
        "upstreams:\n"
        "  - name: origin\n"
        '    base_url: "http://127.0.0.1:1"\n'
        "rule_files:\n"
        "  waf: does-not-exist.yaml\n"
    )
    env = clean_env({"OPENFLARE_ADMIN_TOKEN": secrets.token_hex(16)})
    result = _run("check-config", str(path), env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:5: rule_files.waf: ")
    assert "does-not-exist.yaml" in lines[0]


def _rule_bundle(tmp_path: Path, waf: dict[str, Any]) -> Path:
    """A main config whose WAF file is `waf` (written next to it)."""
    (tmp_path / "waf.yaml").write_text(yaml.safe_dump(waf, sort_keys=False))
    main = tmp_path / "main.yaml"
    main.write_text(
        "upstreams:\n"
        "  - name: origin\n"
        '    base_url: "http://127.0.0.1:1"\n'
        "rule_files:\n"
        "  waf: waf.yaml\n"
    )
    return main


def _shipped_waf() -> dict[str, Any]:
    data = yaml.safe_load((CONFIGS_DIR / "rules.waf.yaml").read_text())
    assert isinstance(data, dict) and data.get("rules"), "configs/rules.waf.yaml has no rules"
    return data


def _first_regex(node: Any) -> tuple[dict[str, Any], str] | None:
    """The first mapping holding a `regex` / `*_regex` string, and that key."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and (key == "regex" or key.endswith("_regex")):
                return node, key
        children = list(node.values())
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _first_regex(child)
        if found is not None:
            return found
    return None


def test_unknown_key_in_rule_file_is_an_error(tmp_path: Path) -> None:
    waf = _shipped_waf()
    waf["bogus_setting"] = True
    main = _rule_bundle(tmp_path, waf)
    env = clean_env({"OPENFLARE_ADMIN_TOKEN": secrets.token_hex(16)})
    result = _run("check-config", str(main), env=env)
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert re.fullmatch(
        rf"{re.escape(str(tmp_path / 'waf.yaml'))}:\d+: bogus_setting: unknown key", lines[0]
    ), lines[0]


def test_invalid_regex_in_rule_file_is_an_error(tmp_path: Path) -> None:
    waf = _shipped_waf()
    rule = waf["rules"][0]
    found = _first_regex(rule)
    assert found is not None, "the first shipped WAF rule has no regex"
    holder, key = found
    holder[key] = "(unclosed"
    main = _rule_bundle(tmp_path, waf)
    env = clean_env({"OPENFLARE_ADMIN_TOKEN": secrets.token_hex(16)})
    result = _run("check-config", str(main), env=env)
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    match = ISSUE_RE.match(lines[0])
    assert match, lines[0]
    assert match["file"] == str(tmp_path / "waf.yaml")
    assert match["path"].startswith(f"rules[{rule['id']}]"), lines[0]


def test_check_config_test_config_ok() -> None:
    env = clean_env({"OPENFLARE_ADMIN_TOKEN": secrets.token_hex(16)})
    result = _run("check-config", str(TEST_CONFIG), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: {TEST_CONFIG} hash=")
    assert "dev_mode=False" in result.stdout
    assert result.stderr == ""


def test_run_without_admin_token_refuses_to_start() -> None:
    env = clean_env()
    assert "OPENFLARE_ADMIN_TOKEN" not in env and "ADMIN_TOKEN" not in env
    result = _run("run", "--config", str(TEST_CONFIG), env=env, timeout=20)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert re.match(rf"^{re.escape(str(TEST_CONFIG))}:\d+: admin_api.auth_token: ", lines[0])
    assert "OPENFLARE_ADMIN_TOKEN" in lines[0]


def test_run_refuses_well_known_or_short_token() -> None:
    for token in ("changeme", "openflare-dev-token", "short-token"):
        env = clean_env({"OPENFLARE_ADMIN_TOKEN": token})
        result = _run("check-config", str(TEST_CONFIG), env=env)
        assert result.returncode == 2, token
        assert ": admin_api.auth_token: " in result.stderr, token


def test_admin_token_env_alias_accepted() -> None:
    env = clean_env({"ADMIN_TOKEN": secrets.token_hex(16)})
    result = _run("check-config", str(TEST_CONFIG), env=env)
    assert result.returncode == 0, result.stderr


def test_cli_version() -> None:
    result = _run("version")
    assert result.returncode == 0
    assert re.fullmatch(r"openflare \d+\.\d+\.\d+\S*\n", result.stdout)
