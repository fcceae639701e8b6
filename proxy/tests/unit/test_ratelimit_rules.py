"""The rate-limit rule file: the original shape loads, new keys validate, errors name the rule."""

from pathlib import Path

import pytest
import yaml

from openflare.config.loader import ConfigError, load_bundle
from openflare.ratelimit.rules import RateLimitRules

REPO = Path(__file__).resolve().parents[3]
ENV = {"OPENFLARE_ADMIN_TOKEN": "x" * 32}
MAIN = """\
upstreams:
  - name: origin
    base_url: http://127.0.0.1:8000
routing:
  default_upstream: origin
rule_files:
  rate_limit: rl.yaml
"""

ORIGINAL = """\
rules:
  - id: global
    key: ip
    path_prefix: /
    rate: 50
    burst: 100
    enabled: true
  - id: api
    key: api_key
    path_prefix: /api/
    rate: 10
    burst: 20
    enabled: false
exemptions:
  cidrs: ["10.0.0.0/8"]
  paths: ["/healthz"]
"""


def load(tmp_path: Path, rules: str) -> RateLimitRules:
    (tmp_path / "rl.yaml").write_text(rules)
    (tmp_path / "main.yaml").write_text(MAIN)
    return load_bundle(tmp_path / "main.yaml", ENV).rate_limits


def errors(tmp_path: Path, rules: str) -> list[str]:
    (tmp_path / "rl.yaml").write_text(rules)
    (tmp_path / "main.yaml").write_text(MAIN)
    with pytest.raises(ConfigError) as caught:
        load_bundle(tmp_path / "main.yaml", ENV)
    return [f"{i.line}: {i.path}: {i.reason}" for i in caught.value.issues]


def test_original_shape_loads_with_defaults(tmp_path: Path) -> None:
    rules = load(tmp_path, ORIGINAL)
    first, second = rules.rules
    assert (first.id, first.key, first.rate, first.burst, first.period) == (
        "global",
        "ip",
        50.0,
        100,
        "second",
    )
    assert first.mode == "enforce" and first.methods == ()
    assert (first.cidr.ipv4_prefix, first.cidr.ipv6_prefix) == (32, 64)
    assert second.header_name == "X-API-Key" and not second.enabled
    assert rules.backend.type == "local" and rules.backend.max_keys == 100_000
    assert rules.on_backend_error == "allow" and rules.mode == "enforce"
    assert rules.exemptions.cidrs == ("10.0.0.0/8",)


@pytest.mark.parametrize("name", ["rate-limit.yaml", "rate-limit.test.yaml"])
def test_shipped_rule_files_validate(name: str) -> None:
    data = yaml.safe_load((REPO / "configs" / name).read_text())
    rules = RateLimitRules.model_validate(data)
    ids = [rule.id for rule in rules.rules]
    assert "global" in ids and len(ids) == len(set(ids))


def test_new_keys(tmp_path: Path) -> None:
    rules = load(
        tmp_path,
        """\
mode: shadow
on_backend_error: deny
response_headers: true
backend:
  type: redis
  redis: {url: "redis://:pw@127.0.0.1:6379/2", timeout_ms: 50}
rules:
  - id: login
    key: "header:X-Tenant"
    path_prefix: /auth/login
    methods: [POST]
    rate: 10
    period: minute
    burst: 5
    mode: enforce
    cidr: {ipv4_prefix: 24, ipv6_prefix: 48}
    on_backend_error: allow
    response_headers: false
""",
    )
    rule = rules.rules[0]
    assert rule.header_name == "X-Tenant" and rule.methods == ("POST",)
    assert rule.interval == 6.0
    assert rule.cidr.ipv4_prefix == 24 and rule.on_backend_error == "allow"
    assert rules.backend.redis is not None and rules.backend.redis.timeout_ms == 50
    assert rules.mode == "shadow" and rules.on_backend_error == "deny"


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("key: cookie", "rules[bad].key: key must be ip, ip_path, api_key or header:<Name>"),
        ("key: 'header:'", "rules[bad].key: key must be ip"),
        ("key: 'header:X Y'", "rules[bad].key: key must be ip"),
        ("path_prefix: api/", "rules[bad].path_prefix: 'api/' must start with /"),
        ("methods: [get]", "rules[bad].methods: 'get' is not an upper-case HTTP method"),
        ("period: hour", "rules[bad].period: Input should be 'second' or 'minute'"),
        ("mode: block", "rules[bad].mode: Input should be 'enforce' or 'shadow'"),
        ("cidr: {ipv4_prefix: 33}", "rules[bad].cidr.ipv4_prefix: Input should be less than"),
        ("on_backend_error: maybe", "rules[bad].on_backend_error: Input should be 'allow'"),
        ("burst_size: 3", "rules[bad].burst_size: unknown key"),
    ],
)
def test_invalid_rule_is_a_config_error_naming_the_rule(
    tmp_path: Path, rule: str, expected: str
) -> None:
    text = (
        "rules:\n  - id: ok\n    rate: 1\n    burst: 1\n"
        f"  - id: bad\n    rate: 1\n    burst: 1\n    {rule}\n"
    )
    found = errors(tmp_path, text)
    assert len(found) == 1, found
    assert found[0].startswith("8: ") and expected in found[0], found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rules:\n  - id: a\n    rate: 0\n    burst: 1\n",
            "rules[a].rate: Input should be greater than 0",
        ),
        (
            "rules:\n  - id: a\n    rate: 1\n    burst: 0\n",
            "rules[a].burst: Input should be greater",
        ),
        ("rules:\n  - id: a\n    rate: 1\n", "rules[a].burst: Field required"),
        (
            "rules:\n  - {id: a, rate: 1, burst: 1}\n  - {id: a, rate: 2, burst: 2}\n",
            "rules[a].id: duplicate rule id 'a'",
        ),
        ("backend: {type: redis}\n", "backend: Value error, type redis needs a redis"),
        (
            "backend: {type: redis, redis: {url: 'http://x'}}\n",
            "backend.redis.url: must start with redis://",
        ),
        ("backend: {type: memcached}\n", "backend.type: Input should be 'local' or 'redis'"),
        ("exemptions: {cidrs: [10.0.0.0/33]}\n", "exemptions.cidrs"),
        ("exemptions: {paths: [healthz]}\n", "exemptions.paths: 'healthz' must start with /"),
    ],
)
def test_invalid_file(tmp_path: Path, text: str, expected: str) -> None:
    found = errors(tmp_path, text)
    assert any(expected.replace("Value error, ", "") in line for line in found), found
