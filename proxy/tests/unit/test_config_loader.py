from pathlib import Path

import pytest

from openflare.config.loader import (
    DEV_ADMIN_TOKEN,
    ConfigError,
    admin_token_problem,
    load_bundle,
    resolve_admin_token,
)
from openflare.config.models import ProxyConfig

REPO = Path(__file__).resolve().parents[3]
GOOD_TOKEN = "x" * 32

MINIMAL = """\
upstreams:
  - name: origin
    base_url: http://127.0.0.1:8000
routing:
  default_upstream: origin
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def errors_of(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_bundle(path, env if env is not None else {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN})
    return [str(issue) for issue in caught.value.issues]


@pytest.mark.parametrize("name", ["proxy.dev.yaml", "proxy.test.yaml"])
def test_shipped_configs_load(name: str) -> None:
    bundle = load_bundle(REPO / "configs" / name, {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN})
    assert bundle.proxy.upstreams[0].name == "origin"
    assert len(bundle.waf.rules) >= 4 and len(bundle.cache_rules.rules) >= 5
    assert len(bundle.rate_limits.rules) >= 3
    assert len(bundle.hash) == 12


def test_minimal_config_and_hash_is_content_based(tmp_path: Path) -> None:
    a = load_bundle(write(tmp_path, "a.yaml", MINIMAL), {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN})
    b = load_bundle(write(tmp_path, "b.yaml", MINIMAL), {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN})
    c = load_bundle(
        write(tmp_path, "c.yaml", MINIMAL + "dev_mode: false\n"),
        {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN},
    )
    assert a.hash == b.hash != c.hash
    assert a.proxy.server.listen_addr == ":8080"
    assert a.waf.rules == () and a.waf.mode == "enforce"


def test_errors_name_file_line_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.yaml",
        MINIMAL.replace("routing:", "bogus: 1\nrouting:").replace(
            "base_url: http://127.0.0.1:8000", "base_url: ftp://x"
        ),
    )
    assert errors_of(path) == [
        f"{path}:3: upstreams[origin].base_url: must start with http:// or https://",
        f"{path}:4: bogus: unknown key",
    ]


def test_cross_references_are_checked(tmp_path: Path) -> None:
    text = MINIMAL.replace("default_upstream: origin", "default_upstream: nowhere")
    text += "  routes:\n    - id: r1\n      upstream: ghost\n    - id: r1\n      upstream: origin\n"
    assert errors_of(write(tmp_path, "refs.yaml", text)) == [
        f"{tmp_path}/refs.yaml:5: routing.default_upstream: unknown upstream 'nowhere'",
        f"{tmp_path}/refs.yaml:8: routing.routes[r1].upstream: unknown upstream 'ghost'",
        f"{tmp_path}/refs.yaml:9: routing.routes[r1].id: duplicate route id 'r1'",
    ]


def test_invalid_yaml_and_duplicate_keys(tmp_path: Path) -> None:
    assert errors_of(write(tmp_path, "y.yaml", "a: [1, 2\n"))[0].startswith(
        f"{tmp_path}/y.yaml:2: <root>: invalid YAML"
    )
    dup = MINIMAL + "routing:\n  default_upstream: origin\n"
    assert f"{tmp_path}/d.yaml:6: routing: duplicate key" in errors_of(
        write(tmp_path, "d.yaml", dup)
    )


def test_rule_file_errors_name_the_rule(tmp_path: Path) -> None:
    write(
        tmp_path,
        "waf.yaml",
        "mode: enforce\nrules:\n  - id: sqli\n    match:\n      any:\n        - path_regex: '(a'\n"
        "    action: {type: block}\n  - id: sqli\n    match: {any: [{method: GET}]}\n"
        "    action: {type: log}\n",
    )
    main = write(
        tmp_path, "main.yaml", MINIMAL + "rule_files:\n  waf: waf.yaml\n  cache: nope.yaml\n"
    )
    errors = errors_of(main)
    assert errors == [
        f"{tmp_path}/waf.yaml:6: rules[sqli].match.any[0].path_regex: "
        "RE2 cannot compile '(a': missing ): (a",
        f"{main}:8: rule_files.cache: named here: {tmp_path}/nope.yaml is not a readable file",
    ]


def test_missing_waf_file_is_an_error_not_no_waf(tmp_path: Path) -> None:
    main = write(tmp_path, "main.yaml", MINIMAL + "rule_files:\n  waf: missing.yaml\n")
    assert errors_of(main) == [
        f"{main}:7: rule_files.waf: named here: {tmp_path}/missing.yaml is not a readable file"
    ]


def test_env_overrides_rule_file(tmp_path: Path) -> None:
    write(tmp_path, "other.yaml", "mode: shadow\nrules: []\n")
    main = write(tmp_path, "main.yaml", MINIMAL)
    bundle = load_bundle(
        main,
        {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN, "OPENFLARE_WAF_RULES": str(tmp_path / "other.yaml")},
    )
    assert bundle.waf.mode == "shadow"


@pytest.mark.parametrize(
    ("dev_mode", "env", "file_token", "resolved", "refused"),
    [
        (False, {}, None, None, True),
        (False, {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN}, None, GOOD_TOKEN, False),
        (False, {"ADMIN_TOKEN": GOOD_TOKEN}, None, GOOD_TOKEN, False),
        (
            False,
            {"OPENFLARE_ADMIN_TOKEN": "a" * 32, "ADMIN_TOKEN": "b" * 32},
            None,
            "a" * 32,
            False,
        ),
        (False, {}, "changeme", "changeme", True),
        (False, {}, DEV_ADMIN_TOKEN, DEV_ADMIN_TOKEN, True),
        (False, {}, "short", "short", True),
        (False, {}, "y" * 20, "y" * 20, False),
        (True, {}, None, DEV_ADMIN_TOKEN, False),
    ],
)
def test_admin_token_policy(
    dev_mode: bool,
    env: dict[str, str],
    file_token: str | None,
    resolved: str | None,
    refused: bool,
) -> None:
    config = ProxyConfig.model_validate(
        {
            "dev_mode": dev_mode,
            "upstreams": [{"name": "o", "base_url": "http://x"}],
            "admin_api": {"auth_token": file_token},
        }
    )
    token = resolve_admin_token(config, env)
    assert token == resolved
    assert (admin_token_problem(config, token) is not None) is refused
