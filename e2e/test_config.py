"""`openflare check-config` and start-up refusals: every problem reported as
`file:line: key.path: reason`, exit code 2; and a rotated admin token file (a Secret volume
updated the kubelet's way) applied by the watcher with no manual reload."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from harness import CONFIGS_DIR, TEST_CONFIG, ProxyProcess, clean_env

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


# --------------------------------------------------------------------------------------------
# a rotated Secret, applied by the watcher


def kubelet_update(folder: Path, data: dict[str, str]) -> None:
    """Write a Secret volume as the kubelet's AtomicWriter does: the files into a new
    `..<timestamp>` folder, a `..data_tmp` symlink to it renamed over `..data`, the visible
    names symlinks through `..data`, the previous folder removed."""
    folder.mkdir(parents=True, exist_ok=True)
    data_link = folder / "..data"
    old = os.readlink(data_link) if data_link.is_symlink() else None
    new = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()) + str(time.monotonic_ns())
    (folder / new).mkdir()
    for key, value in data.items():
        (folder / new / key).write_text(value)
    os.symlink(new, folder / "..data_tmp")
    os.rename(folder / "..data_tmp", data_link)  # the atomic swap
    for key in data:
        if not (folder / key).is_symlink():
            os.symlink(os.path.join("..data", key), folder / key)
    if old is not None:
        shutil.rmtree(folder / old)


@pytest.mark.local_only
def test_rotated_admin_token_file_applies_without_a_manual_reload(
    proxy_factory: Callable[..., ProxyProcess], tmp_path: Path
) -> None:
    """OPENFLARE_WATCH=dir with OPENFLARE_ADMIN_TOKEN_FILE on a Secret volume (as the Helm chart
    runs it): after the kubelet's swap the proxy reloads by itself (source `secret_watch`), the
    new token is accepted and the old one refused; nobody sent SIGHUP or POSTed a reload."""
    volume = tmp_path / "secrets" / "admin-token"
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    kubelet_update(volume, {"token": old + "\n"})
    token_file = str(volume / "token")
    proxy = proxy_factory(
        env={
            "OPENFLARE_ADMIN_TOKEN": None,  # the file is the only token
            "OPENFLARE_ADMIN_TOKEN_FILE": token_file,
            "OPENFLARE_WATCH": "dir",
            "OPENFLARE_WATCH_INTERVAL_MS": "100",
            "OPENFLARE_WATCH_DEBOUNCE_MS": "100",
        }
    )
    config_url = proxy.admin_url + "/admin/config"

    def get_config(token: str) -> httpx.Response:
        return httpx.get(config_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    assert get_config(old).status_code == 200
    started = proxy.wait_log(timeout=10, event="config_watch_started")  # its first look is taken
    assert started["mode"] == "dir" and started["secrets"] == {
        "OPENFLARE_ADMIN_TOKEN_FILE": token_file
    }

    kubelet_update(volume, {"token": new + "\n"})
    update = proxy.wait_log(timeout=15, event="secret_watch_update")
    assert update["variable"] == "OPENFLARE_ADMIN_TOKEN_FILE" and update["file"] == token_file
    assert update["sha256"] == hashlib.sha256(new.encode()).hexdigest()[:12]  # the runbook's

    # the watcher's reload follows that line (nothing else changes: the config folder holds
    # only the proxy's own file)
    deadline = time.monotonic() + 15
    while True:
        answer = get_config(new)  # 401 until applied; a refusal is not logged
        history = []
        if answer.status_code == 200:
            history = [(item["source"], item["result"]) for item in answer.json()["history"]]
        if any(source == "secret_watch" for source, _ in history):
            break
        assert time.monotonic() < deadline, (answer.status_code, history, proxy.output())
        time.sleep(0.1)
    assert ("secret_watch", "ok") in history, history
    assert not {"sighup", "admin_api", "file_watch"} & {source for source, _ in history}
    assert get_config(old).status_code == 401
    assert proxy.alive()
    output = proxy.output(limit=10**7)
    assert old not in output and new not in output  # the log names the variable, never the value
