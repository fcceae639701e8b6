"""Configuration faults on a running proxy: a reload with invalid YAML, an invalid regex, an
unknown key or a missing rule file keeps the old config serving, logs one clear error, counts
it and reports it at `GET /admin/config` — whether the reload came from SIGHUP or
`POST /admin/config/reload`; a deleted config directory does not crash the process; the admin
API rate-limits failed authentications (the refusal of a default token outside dev mode is
tested at start-up in test_config.py).
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from harness import CONFIGS_DIR, Metrics, ProxyProcess

pytestmark = pytest.mark.local_only

SQLI = {"q": "1' UNION SELECT password FROM users--"}


class Running:
    """A proxy whose main config and rule files are copies the test may break and mend."""

    def __init__(self, proxy: ProxyProcess, rules: Path) -> None:
        self.proxy = proxy
        self.rules = rules
        self.admin = httpx.Client(
            base_url=proxy.admin_url,
            headers={"Authorization": f"Bearer {proxy.token}"},
            timeout=10,
        )
        self.public = httpx.Client(base_url=proxy.url, headers={"Host": "127.0.0.1"}, timeout=10)

    @property
    def main(self) -> Path:
        return self.proxy.config_path

    def status(self) -> dict[str, Any]:
        response = self.admin.get("/admin/config")
        response.raise_for_status()
        return dict(response.json())

    def reload_errors(self) -> float:
        text = httpx.get(self.proxy.admin_url + "/metrics", timeout=5).text
        return Metrics.parse(text).value("openflare_config_reloads_total", result="error")

    def failure_lines(self) -> list[dict[str, Any]]:
        return [r for r in self.proxy.log_records() if r.get("event") == "config_reload_failed"]

    def serving_old_config(self, expected_hash: str) -> None:
        assert self.public.get("/debug/echo").status_code == 200
        assert self.public.get("/debug/echo", params=SQLI).status_code == 403  # WAF still on
        assert self.status()["hash"] == expected_hash
        assert httpx.get(self.proxy.admin_url + "/readyz").status_code == 200


@pytest.fixture(scope="module")
def running(
    module_proxy_factory: Callable[..., ProxyProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    """One proxy for the reload cases: each breaks a file, reloads, then mends it."""
    rules = tmp_path_factory.mktemp("rules")
    for name in ("rules.waf.yaml", "cache-rules.yaml", "rate-limit.test.yaml"):
        shutil.copy(CONFIGS_DIR / name, rules / name)
    proxy = module_proxy_factory(
        {
            "rule_files": {
                "waf": str(rules / "rules.waf.yaml"),
                "cache": str(rules / "cache-rules.yaml"),
                "rate_limit": str(rules / "rate-limit.test.yaml"),
            }
        }
    )
    state = Running(proxy, rules)
    yield state
    state.admin.close()
    state.public.close()


def _sighup(state: Running) -> dict[str, Any]:
    """SIGHUP, then the reload outcome it produced (the newest history entry)."""
    count = len(state.status()["history"])
    state.proxy.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        history = state.status()["history"]
        if len(history) > count:
            return dict(history[-1])
        time.sleep(0.05)
    raise AssertionError("SIGHUP produced no reload")


def _post(state: Running) -> dict[str, Any]:
    response = state.admin.post("/admin/config/reload")
    assert response.status_code in (200, 422)
    outcome = dict(response.json())
    assert (response.status_code == 422) == (outcome["result"] == "error")
    return outcome


def _break_yaml(state: Running) -> str:
    state.main.write_text(state.main.read_text() + "\nserver: [unclosed\n")
    return "invalid YAML"


def _break_regex(state: Running) -> str:
    waf = state.rules / "rules.waf.yaml"
    data = yaml.safe_load(waf.read_text())
    data["rules"][0]["match"]["any"][0]["regex"] = "(unclosed"
    waf.write_text(yaml.safe_dump(data, sort_keys=False))
    return "rules.waf.yaml"


def _unknown_key(state: Running) -> str:
    data = yaml.safe_load(state.main.read_text())
    data["server"]["max_conections"] = 5  # a typo must not be silently ignored
    state.main.write_text(yaml.safe_dump(data, sort_keys=False))
    return "max_conections"


def _missing_rule_file(state: Running) -> str:
    (state.rules / "cache-rules.yaml").unlink()
    return "cache-rules.yaml"


FAULTS = {
    "invalid_yaml": _break_yaml,
    "invalid_regex": _break_regex,
    "unknown_key": _unknown_key,
    "missing_rule_file": _missing_rule_file,
}


@pytest.mark.parametrize("trigger", ["sighup", "admin_api"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_bad_reload_keeps_the_old_config_and_says_why(
    running: Running, fault: str, trigger: str
) -> None:
    before = running.status()
    errors_before = running.reload_errors()
    lines_before = len(running.failure_lines())
    saved = {p: p.read_bytes() for p in [running.main, *running.rules.iterdir()]}
    expected = FAULTS[fault](running)
    outcome = _sighup(running) if trigger == "sighup" else _post(running)
    assert outcome["result"] == "error"
    assert outcome["source"] == ("sighup" if trigger == "sighup" else "admin_api")
    assert outcome["hash"] == before["hash"]
    assert any(expected in error for error in outcome["errors"]), outcome["errors"]
    running.serving_old_config(before["hash"])
    status = running.status()
    assert status["last_error"]["errors"] == outcome["errors"]
    assert running.reload_errors() == errors_before + 1
    deadline = time.monotonic() + 3  # the log is written in batches
    while len(running.failure_lines()) == lines_before and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # and a second line would follow at once
    lines = running.failure_lines()
    assert len(lines) == lines_before + 1  # one clear line per failed reload
    assert lines[-1]["level"] == "error" and lines[-1]["kept_hash"] == before["hash"]
    assert lines[-1]["errors"] == outcome["errors"]
    # mended, the next reload applies (unchanged content: nothing to swap)
    for path, data in saved.items():
        path.write_bytes(data)
    assert _post(running)["result"] in ("ok", "unchanged")
    assert running.status()["hash"] == before["hash"]


def test_deleted_config_directory_does_not_crash(
    proxy_factory: Callable[..., ProxyProcess],
    tmp_path: Path,
) -> None:
    """The rule files' folder and the main file disappear (a ConfigMap gone wrong): every
    reload fails cleanly — SIGHUP, the admin API and the directory watcher — and the proxy
    keeps serving the config it has; once the files are back, a reload applies."""
    watch = {
        "OPENFLARE_WATCH": "dir",
        "OPENFLARE_WATCH_INTERVAL_MS": "100",
        "OPENFLARE_WATCH_DEBOUNCE_MS": "100",
    }
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("rules.waf.yaml", "cache-rules.yaml", "rate-limit.test.yaml"):
        shutil.copy(CONFIGS_DIR / name, rules / name)
    proxy = proxy_factory(
        {
            "rule_files": {
                "waf": str(rules / "rules.waf.yaml"),
                "cache": str(rules / "cache-rules.yaml"),
                "rate_limit": str(rules / "rate-limit.test.yaml"),
            }
        },
        env=watch,
    )
    state = Running(proxy, rules)
    before = state.status()
    main_text = state.main.read_text()
    backup = tmp_path / "rules-backup"
    shutil.copytree(rules, backup)
    shutil.rmtree(rules)
    state.main.unlink()
    proxy.wait_log(10.0, event="config_watch_missing")  # the watcher noticed, and lives on
    assert _sighup(state)["result"] == "error"
    outcome = _post(state)
    assert outcome["result"] == "error"
    assert any("not found" in e or "No such file" in e for e in outcome["errors"]), outcome
    assert proxy.alive()
    state.serving_old_config(before["hash"])
    shutil.copytree(backup, rules)
    state.main.write_text(main_text)
    assert _post(state)["result"] in ("ok", "unchanged")
    assert proxy.alive()


# --------------------------------------------------------------------------------------------
# failed admin authentications


def test_failed_admin_authentications_are_rate_limited(
    proxy_factory: Callable[..., ProxyProcess],
) -> None:
    proxy = proxy_factory({"admin_api": {"auth_failure_limit": 3, "auth_failure_window_ms": 2000}})
    good = {"Authorization": f"Bearer {proxy.token}"}
    bad = {"Authorization": "Bearer wrong-token-0123456789abcdef"}
    url = proxy.admin_url + "/admin/config"
    for _ in range(4):  # no credentials at all: refused, but not counted as guesses
        assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers=good).status_code == 200
    for _ in range(3):
        assert httpx.get(url, headers=bad).status_code == 401
    locked = httpx.get(url, headers=bad)
    assert locked.status_code == 429
    assert locked.json()["error"] == "too_many_auth_failures"
    assert 1 <= int(locked.headers["Retry-After"]) <= 2
    # the right token too, or the lockout would tell a guesser when it guessed right
    assert httpx.get(url, headers=good).status_code == 429
    assert httpx.post(proxy.admin_url + "/admin/cache/purge-all", headers=good).status_code == 429
    # health and metrics are not behind the token: unaffected
    assert httpx.get(proxy.admin_url + "/readyz").status_code == 200
    event = proxy.wait_log(event="admin_auth_locked")
    assert event["client_ip"] == "127.0.0.1" and event["failures"] == 3
    time.sleep(2.1)
    assert httpx.get(url, headers=good).status_code == 200
