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


def test_waf_route_overrides_must_name_a_route(tmp_path: Path) -> None:
    write(
        tmp_path,
        "waf.yaml",
        "routes:\n  - id: api\n    mode: shadow\n  - id: apii\n    mode: shadow\n"
        "  - id: default\n    enabled: false\nrules: []\n",
    )
    routes = "  routes:\n    - id: api\n      path_prefix: /api/\n      upstream: origin\n"
    main = write(tmp_path, "main.yaml", MINIMAL + routes + "rule_files:\n  waf: waf.yaml\n")
    assert errors_of(main) == [
        f"{tmp_path}/waf.yaml:4: routes[apii].id: unknown route id 'apii' (routes: api, default)"
    ]
    write(tmp_path, "waf.yaml", "routes:\n  - id: api\n    mode: shadow\nrules: []\n")
    assert load_bundle(main, {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN}).waf.routes[0].id == "api"


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


# --------------------------------------------------------------------------------------------
# OPENFLARE_ADMIN_TOKEN_FILE and OPENFLARE_REDIS_URL (the chart's Secrets)

REDIS_LIMITS = """\
backend:
  type: redis
  redis:
    url: redis://placeholder.invalid:6379/0
    timeout_ms: 150
rules: []
"""


def test_token_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    secret = write(tmp_path, "token", GOOD_TOKEN + "\n")
    bundle = load_bundle(
        write(tmp_path, "main.yaml", MINIMAL), {"OPENFLARE_ADMIN_TOKEN_FILE": str(secret)}
    )
    assert bundle.admin_token == GOOD_TOKEN


@pytest.mark.parametrize(
    ("content", "extra_env", "reason"),
    [
        (None, {}, "cannot read: No such file or directory"),
        ("\n", {}, "the file is empty"),
        (
            GOOD_TOKEN,
            {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN},
            "set OPENFLARE_ADMIN_TOKEN or OPENFLARE_ADMIN_TOKEN_FILE, not both",
        ),
    ],
)
def test_unusable_token_file_is_a_config_error(
    tmp_path: Path, content: str | None, extra_env: dict[str, str], reason: str
) -> None:
    secret = tmp_path / "token"
    if content is not None:
        secret.write_text(content)
    main = write(tmp_path, "main.yaml", MINIMAL)
    errors = errors_of(main, {"OPENFLARE_ADMIN_TOKEN_FILE": str(secret), **extra_env})
    assert len(errors) == 1
    assert errors[0].startswith(f"{main}:1: admin_api.auth_token: ")
    assert reason in errors[0]
    if "not both" not in reason:
        assert f"OPENFLARE_ADMIN_TOKEN_FILE={secret}: " in errors[0]


def test_token_file_that_is_a_directory_names_the_reason(tmp_path: Path) -> None:
    main = write(tmp_path, "main.yaml", MINIMAL)
    errors = errors_of(main, {"OPENFLARE_ADMIN_TOKEN_FILE": str(tmp_path)})
    assert errors == [
        f"{main}:1: admin_api.auth_token: OPENFLARE_ADMIN_TOKEN_FILE={tmp_path}: "
        "cannot read: Is a directory"
    ]


def test_token_file_still_goes_through_the_token_policy(tmp_path: Path) -> None:
    secret = write(tmp_path, "token", "changeme\n")
    errors = errors_of(
        write(tmp_path, "main.yaml", MINIMAL), {"OPENFLARE_ADMIN_TOKEN_FILE": str(secret)}
    )
    assert len(errors) == 1 and "well-known default admin token" in errors[0]


def test_redis_url_from_env_wins_over_both_files(tmp_path: Path) -> None:
    write(tmp_path, "limits.yaml", REDIS_LIMITS)
    main = write(
        tmp_path,
        "main.yaml",
        MINIMAL + "cache:\n  store: redis\n  redis_url: redis://from-file:6379/0\n"
        "rule_files:\n  rate_limit: limits.yaml\n",
    )
    url = "rediss://default:s3cret@redis.example:6380/2"
    env = {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN, "OPENFLARE_REDIS_URL": url}
    bundle = load_bundle(main, env)
    assert bundle.proxy.cache.redis_url == url
    backend = bundle.rate_limits.backend
    assert backend.redis is not None and backend.redis.url == url
    assert backend.redis.timeout_ms == 150  # the file's other settings are kept
    # the file alone still decides without the variable
    plain = load_bundle(main, {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN})
    assert plain.proxy.cache.redis_url == "redis://from-file:6379/0"
    assert plain.rate_limits.backend.redis is not None
    assert plain.rate_limits.backend.redis.url == "redis://placeholder.invalid:6379/0"


def test_redis_url_from_env_fills_sections_the_files_leave_out(tmp_path: Path) -> None:
    write(tmp_path, "limits.yaml", "backend:\n  type: redis\nrules: []\n")
    write(tmp_path, "local.yaml", "backend:\n  type: local\nrules: []\n")
    url = "redis://r:6379/1"
    env = {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN, "OPENFLARE_REDIS_URL": url}
    main = write(tmp_path, "main.yaml", MINIMAL + "rule_files:\n  rate_limit: limits.yaml\n")
    bundle = load_bundle(main, env)
    assert bundle.proxy.cache.redis_url == url  # no cache section in the file
    assert bundle.rate_limits.backend.redis is not None
    assert bundle.rate_limits.backend.redis.url == url  # type redis with no redis section
    local = load_bundle(main, {**env, "OPENFLARE_RATE_LIMIT_RULES": str(tmp_path / "local.yaml")})
    assert local.rate_limits.backend.type == "local"
    assert local.rate_limits.backend.redis is None  # a local backend gets no Redis section


def test_invalid_redis_url_from_env_names_the_variable_not_the_value(tmp_path: Path) -> None:
    main = write(tmp_path, "main.yaml", MINIMAL)
    env = {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN, "OPENFLARE_REDIS_URL": "http://u:s3cret@x"}
    errors = errors_of(main, env)
    assert errors == [
        f"{main}:1: cache.redis_url: OPENFLARE_REDIS_URL: "
        "must start with redis://, rediss:// or unix://"
    ]
    assert "s3cret" not in "".join(errors)


def test_redis_url_from_env_is_redacted_in_the_effective_config(tmp_path: Path) -> None:
    from openflare.admin.stats_routes import effective_config

    write(tmp_path, "limits.yaml", REDIS_LIMITS)
    main = write(tmp_path, "main.yaml", MINIMAL + "rule_files:\n  rate_limit: limits.yaml\n")
    url = "redis://:s3cret-pass@redis.internal:6379/0?password=s3cret-query"
    bundle = load_bundle(main, {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN, "OPENFLARE_REDIS_URL": url})
    effective, redacted = effective_config(bundle)
    assert "s3cret" not in repr(effective)
    assert effective["proxy"]["cache"]["redis_url"].startswith("redis://:<redacted>@redis.")
    assert {"proxy.cache.redis_url", "rate_limits.backend.redis.url"} <= set(redacted)


# --------------------------------------------------------------------------------------------
# OPENFLARE_REDIS_URL_FILE (the chart mounts redis.existingSecret as a file), and rotation


def test_redis_url_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    write(tmp_path, "limits.yaml", REDIS_LIMITS)
    main = write(
        tmp_path,
        "main.yaml",
        MINIMAL + "cache:\n  store: redis\n  redis_url: redis://from-file:6379/0\n"
        "rule_files:\n  rate_limit: limits.yaml\n",
    )
    url = "rediss://default:s3cret@redis.example:6380/2"
    secret = write(tmp_path, "redis-url", url + "\n")
    env = {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN, "OPENFLARE_REDIS_URL_FILE": str(secret)}
    bundle = load_bundle(main, env)
    assert bundle.proxy.cache.redis_url == url  # as with OPENFLARE_REDIS_URL: over both files
    backend = bundle.rate_limits.backend
    assert backend.redis is not None and backend.redis.url == url
    assert backend.redis.timeout_ms == 150
    # the URL is not part of the hash (/readyz shows it without a token)
    assert bundle.hash == load_bundle(main, {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN}).hash


@pytest.mark.parametrize(
    ("content", "extra_env", "reason"),
    [
        (None, {}, "OPENFLARE_REDIS_URL_FILE={secret}: cannot read: No such file or directory"),
        ("\n", {}, "OPENFLARE_REDIS_URL_FILE={secret}: the file is empty"),
        (
            "redis://r:6379/0",
            {"OPENFLARE_REDIS_URL": "redis://r:6379/0"},
            "set OPENFLARE_REDIS_URL or OPENFLARE_REDIS_URL_FILE, not both",
        ),
        (
            "http://u:s3cret@x\n",
            {},
            "OPENFLARE_REDIS_URL_FILE={secret}: must start with redis://, rediss:// or unix://",
        ),
    ],
)
def test_unusable_redis_url_file_is_a_config_error(
    tmp_path: Path, content: str | None, extra_env: dict[str, str], reason: str
) -> None:
    secret = tmp_path / "redis-url"
    if content is not None:
        secret.write_text(content)
    main = write(tmp_path, "main.yaml", MINIMAL)
    env = {"OPENFLARE_ADMIN_TOKEN": GOOD_TOKEN, "OPENFLARE_REDIS_URL_FILE": str(secret)}
    errors = errors_of(main, {**env, **extra_env})
    assert errors == [f"{main}:1: cache.redis_url: " + reason.format(secret=secret)]
    assert "s3cret" not in errors[0]  # the content is never repeated


def kubelet_secret(folder: Path, data: dict[str, str]) -> None:
    """Write `data` as the kubelet updates a Secret volume: a new `..vN` folder, a `..data`
    symlink renamed over to point at it, and each visible `<key> -> ..data/<key>`."""
    folder.mkdir(exist_ok=True)
    version = folder / f"..v{len(list(folder.glob('..v*')))}"
    version.mkdir()
    for key, value in data.items():
        (version / key).write_text(value)
    (folder / "..data_tmp").symlink_to(version.name)
    (folder / "..data_tmp").rename(folder / "..data")  # the atomic swap
    for key in data:
        if not (folder / key).is_symlink():
            (folder / key).symlink_to(Path("..data") / key)


async def test_rotated_secret_files_are_applied_by_the_next_reload(tmp_path: Path) -> None:
    """A Secret mounted as a folder (the chart's way, never subPath) is swapped by the kubelet;
    the next reload reads the new token and Redis URL although no config file changed, and an
    unusable new value keeps the running config."""
    import io

    from openflare.config.reload import ConfigManager
    from openflare.deps import Deps
    from openflare.observability.logging import LogWriter
    from openflare.runtime import RuntimeHolder, build_runtime

    secrets = tmp_path / "secrets"
    kubelet_secret(secrets, {"token": GOOD_TOKEN + "\n", "url": "redis://old:6379/0\n"})
    main = write(tmp_path, "main.yaml", MINIMAL)
    env = {
        "OPENFLARE_ADMIN_TOKEN_FILE": str(secrets / "token"),
        "OPENFLARE_REDIS_URL_FILE": str(secrets / "url"),
    }
    deps = Deps(log=LogWriter(io.BytesIO()))
    holder = RuntimeHolder(build_runtime(load_bundle(main, env), deps))
    manager = ConfigManager(str(main), env, deps, holder)
    started = holder.runtime.bundle.hash
    try:
        assert (await manager.reload("sighup")).result == "unchanged"

        rotated = "r" * 40
        kubelet_secret(secrets, {"token": rotated + "\n", "url": "redis://old:6379/0\n"})
        outcome = await manager.reload("sighup")
        assert (outcome.result, outcome.hash) == ("ok", started)  # same files, same hash
        assert holder.runtime.bundle.admin_token == rotated

        kubelet_secret(secrets, {"token": rotated + "\n", "url": "rediss://new:6380/1\n"})
        assert (await manager.reload("sighup")).result == "ok"
        assert holder.runtime.bundle.proxy.cache.redis_url == "rediss://new:6380/1"

        kubelet_secret(secrets, {"token": "\n", "url": "rediss://new:6380/1\n"})
        outcome = await manager.reload("sighup")
        assert outcome.result == "error"
        assert outcome.errors == (
            f"{main}:1: admin_api.auth_token: "
            f"OPENFLARE_ADMIN_TOKEN_FILE={secrets / 'token'}: the file is empty",
        )
        assert holder.runtime.bundle.admin_token == rotated  # the running config is kept
    finally:
        await deps.close()
        deps.log.close()
