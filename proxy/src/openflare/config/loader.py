"""Loads and validates the whole config bundle: the main file plus its rule files.

Errors are collected, not raised one at a time: `openflare check-config` prints every problem
as `file:line: key.path: reason`. Nothing here is used on the request path; a reload calls
`load_bundle` and only swaps the runtime when it returned without error.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from openflare.cache.rules import CacheRules
from openflare.config.models import Location, ProxyConfig, reference_errors
from openflare.config.rules import RuleFile, rule_reference_errors
from openflare.ratelimit.rules import RateLimitRules
from openflare.routing import DEFAULT_ROUTE_ID
from openflare.waf.rules import WafRules

DEFAULT_CONFIG_PATH = "configs/proxy.dev.yaml"
DEV_ADMIN_TOKEN = "openflare-dev-token"
# Tokens that appear in docs, examples and tutorials; refused outside dev mode.
WELL_KNOWN_TOKENS = frozenset(
    {DEV_ADMIN_TOKEN, "changeme", "change-me", "admin", "secret", "token", "password", "dev"}
)
MIN_TOKEN_LENGTH = 16
TOKEN_FILE_ENV = "OPENFLARE_ADMIN_TOKEN_FILE"
# Replaces `cache.redis_url` and the rate-limit `backend.redis.url` (the chart's
# `redis.existingSecret`): a URL with a password stays out of the ConfigMap.
REDIS_URL_ENV = "OPENFLARE_REDIS_URL"
REDIS_URL_FILE_ENV = "OPENFLARE_REDIS_URL_FILE"  # the same, from a file (a mounted Secret)
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path or '<root>'}: {self.reason}"


class ConfigError(Exception):
    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


@dataclass(frozen=True)
class ConfigBundle:
    """Everything one runtime is built from. Immutable; a reload makes a new one."""

    proxy: ProxyConfig
    waf: WafRules
    cache_rules: CacheRules
    rate_limits: RateLimitRules
    admin_token: str | None
    main_path: str
    sources: tuple[tuple[str, str], ...]  # (file, sha256 of its bytes)
    hash: str = field(default="")

    def summary(self) -> str:
        p = self.proxy
        return (
            f"ok: {self.main_path} hash={self.hash} upstreams={len(p.upstreams)} "
            f"routes={len(p.routing.routes)} waf_rules={len(self.waf.rules)} "
            f"cache_rules={len(self.cache_rules.rules)} "
            f"rate_limit_rules={len(self.rate_limits.rules)} dev_mode={p.dev_mode}"
        )


@dataclass
class _Document:
    file: str
    data: Any
    lines: dict[Location, int]
    raw: bytes


def _walk(
    node: yaml.Node,
    loc: Location,
    lines: dict[Location, int],
    duplicates: list[tuple[int, str]],
) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                duplicates.append((key_node.start_mark.line + 1, ".".join(map(str, (*loc, key)))))
            seen.add(key)
            lines[(*loc, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*loc, key), lines, duplicates)
            lines[(*loc, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*loc, index), lines, duplicates)


def _read_yaml(path: Path, issues: list[ConfigIssue]) -> _Document | None:
    file = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        issues.append(ConfigIssue(file, 0, "", "file not found"))
        return None
    except OSError as exc:
        issues.append(ConfigIssue(file, 0, "", f"cannot read: {exc.strerror}"))
        return None
    try:
        text = raw.decode("utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        issues.append(ConfigIssue(file, 0, "", f"not UTF-8: {exc.reason}"))
        return None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        issues.append(ConfigIssue(file, line, "", f"invalid YAML: {exc.problem or exc}"))
        return None
    except yaml.YAMLError as exc:
        issues.append(ConfigIssue(file, 0, "", f"invalid YAML: {exc}"))
        return None
    lines: dict[Location, int] = {}
    duplicates: list[tuple[int, str]] = []
    if node is not None:
        _walk(node, (), lines, duplicates)
    for line, key_path in duplicates:
        issues.append(ConfigIssue(file, line, key_path, "duplicate key"))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        issues.append(ConfigIssue(file, lines.get((), 1), "", "top level must be a mapping"))
        return None
    return _Document(file, data, lines, raw)


def _render_path(doc: _Document, loc: Location) -> str:
    """`rules[3].match` becomes `rules[sqli-union].match` when the item has an id."""
    parts: list[str] = []
    node: Any = doc.data
    for part in loc:
        if isinstance(part, int):
            label = str(part)
            if isinstance(node, list) and 0 <= part < len(node):
                item = node[part]
                if isinstance(item, dict) and isinstance(item.get("id") or item.get("name"), str):
                    label = str(item.get("id") or item.get("name"))
                node = node[part]
            else:
                node = None
            parts.append(f"[{label}]")
        else:
            node = node.get(part) if isinstance(node, dict) else None
            parts.append(("." if parts else "") + part)
    return "".join(parts)


def _line_of(doc: _Document, loc: Location) -> int:
    for end in range(len(loc), -1, -1):
        line = doc.lines.get(tuple(loc[:end]))
        if line is not None:
            return line
    return 1


def _issue(doc: _Document, loc: Location, reason: str) -> ConfigIssue:
    return ConfigIssue(doc.file, _line_of(doc, loc), _render_path(doc, loc), reason)


def _validate(doc: _Document, model: type[ModelT], issues: list[ConfigIssue]) -> ModelT | None:
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        locs = [tuple(error["loc"]) for error in errors]
        for error in errors:
            loc = tuple(error["loc"])
            if any(len(other) > len(loc) and other[: len(loc)] == loc for other in locs):
                continue  # a consequence of a deeper error that is reported itself
            reason = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                reason = "unknown key"
            issues.append(_issue(doc, loc, reason))
        return None


def read_secret_file(env: Mapping[str, str], name: str, direct: str) -> str | None:
    """The value in the file named by the variable `name` (e.g. a mounted Secret), without its
    trailing newline; None when `name` is unset. Read anew on every call, so every reload sees a
    rotated Secret. Raises ValueError naming the variable and the reason (never the content)
    when the file cannot be used, or when `direct`, the variable it stands in for, is set too."""
    path = env.get(name)
    if not path:
        return None
    if env.get(direct):
        raise ValueError(f"set {direct} or {name}, not both")
    try:
        value = Path(path).read_bytes().decode("utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"{name}={path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{name}={path}: not UTF-8") from None
    if not value:
        raise ValueError(f"{name}={path}: the file is empty")
    return value


def read_token_file(env: Mapping[str, str]) -> str | None:
    """The token in the file named by `OPENFLARE_ADMIN_TOKEN_FILE` (see `read_secret_file`)."""
    return read_secret_file(env, TOKEN_FILE_ENV, "OPENFLARE_ADMIN_TOKEN")


def resolve_admin_token(proxy: ProxyConfig, env: Mapping[str, str]) -> str | None:
    """`OPENFLARE_ADMIN_TOKEN` or `OPENFLARE_ADMIN_TOKEN_FILE` (exclusive), else `ADMIN_TOKEN`,
    else `admin_api.auth_token`, else the dev token in dev_mode. Raises ValueError for an
    unusable token file."""
    file_token = read_token_file(env)  # first: it refuses OPENFLARE_ADMIN_TOKEN set as well
    token = (
        env.get("OPENFLARE_ADMIN_TOKEN")
        or file_token
        or env.get("ADMIN_TOKEN")
        or proxy.admin_api.auth_token
    )
    if not token and proxy.dev_mode:
        return DEV_ADMIN_TOKEN
    return token or None


def admin_token_problem(proxy: ProxyConfig, token: str | None) -> str | None:
    """Why this token must not guard the admin API, or None when it may."""
    if not proxy.admin_api.enabled or proxy.dev_mode:
        return None
    if not token:
        return "no admin token: set OPENFLARE_ADMIN_TOKEN (or run with dev_mode: true)"
    if token.lower() in WELL_KNOWN_TOKENS:
        return (
            "refusing a well-known default admin token outside dev_mode; set OPENFLARE_ADMIN_TOKEN"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        return f"admin token shorter than {MIN_TOKEN_LENGTH} characters outside dev_mode"
    return None


def _rule_file(
    main: Path, configured: str | None, env_name: str, env: Mapping[str, str]
) -> Path | None:
    if env.get(env_name):
        return Path(env[env_name])
    if configured is None:
        return None
    candidate = Path(configured)
    return candidate if candidate.is_absolute() else main.parent / candidate


def _env_redis_url(doc: _Document, env: Mapping[str, str], issues: list[ConfigIssue]) -> str | None:
    """`OPENFLARE_REDIS_URL`, or the content of the file named by `OPENFLARE_REDIS_URL_FILE`
    (exclusive, like the admin token's pair), when set and valid; an invalid one is an issue
    that names the variable but never repeats its value (it may hold a password)."""
    try:
        from_file = read_secret_file(env, REDIS_URL_FILE_ENV, REDIS_URL_ENV)
    except ValueError as exc:
        issues.append(_issue(doc, ("cache", "redis_url"), str(exc)))
        return None
    url = env.get(REDIS_URL_ENV) or from_file
    if not url:
        return None
    if not url.startswith(REDIS_URL_SCHEMES):
        source = REDIS_URL_ENV
        if from_file is not None:
            source = f"{REDIS_URL_FILE_ENV}={env[REDIS_URL_FILE_ENV]}"
        reason = f"{source}: must start with redis://, rediss:// or unix://"
        issues.append(_issue(doc, ("cache", "redis_url"), reason))
        return None
    return url


def _set_redis_url(data: dict[str, Any], section: tuple[str, ...], key: str, url: str) -> None:
    """Environment over file: put `url` at `section.key` of a parsed document before it is
    validated, creating the sections that are missing. A section of the wrong type is left
    alone for validation to report."""
    node = data
    for name in section:
        child = node.setdefault(name, {})
        if child is None:
            child = node[name] = {}
        if not isinstance(child, dict):
            return
        node = child
    node[key] = url


def waf_route_errors(waf: WafRules, proxy: ProxyConfig) -> list[tuple[Location, str]]:
    """A WAF `routes[].id` must name a route the proxy has (a typo would silently leave the
    route in the file-wide mode)."""
    known = [route.id for route in proxy.routing.routes] + [DEFAULT_ROUTE_ID]
    return [
        (("routes", i, "id"), f"unknown route id {override.id!r} (routes: {', '.join(known)})")
        for i, override in enumerate(waf.routes)
        if override.id not in known
    ]


def load_bundle(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> ConfigBundle:
    """Read, parse and validate the main file and every rule file it names."""
    env = os.environ if env is None else env
    main_path = Path(path if path is not None else env.get("OPENFLARE_CONFIG", DEFAULT_CONFIG_PATH))
    issues: list[ConfigIssue] = []
    doc = _read_yaml(main_path, issues)
    if doc is None:
        raise ConfigError(issues)
    redis_url = _env_redis_url(doc, env, issues)
    if redis_url is not None:
        _set_redis_url(doc.data, ("cache",), "redis_url", redis_url)
    proxy = _validate(doc, ProxyConfig, issues)
    token: str | None = None
    if proxy is not None:
        issues.extend(_issue(doc, loc, reason) for loc, reason in reference_errors(proxy))
        try:
            token = resolve_admin_token(proxy, env)
        except ValueError as exc:
            problem: str | None = str(exc)
        else:
            problem = admin_token_problem(proxy, token)
        if problem:
            issues.append(_issue(doc, ("admin_api", "auth_token"), problem))
        rule_files = proxy.rule_files.model_dump()
    else:  # still check the rule files, so one run reports every problem
        raw = doc.data.get("rule_files")
        rule_files = (
            {k: v for k, v in raw.items() if isinstance(v, str)} if isinstance(raw, dict) else {}
        )

    sources = [(str(main_path), hashlib.sha256(doc.raw).hexdigest())]
    loaded: dict[str, Any] = {}
    rule_models: tuple[tuple[str, str, type[RuleFile]], ...] = (
        ("waf", "OPENFLARE_WAF_RULES", WafRules),
        ("cache", "OPENFLARE_CACHE_RULES", CacheRules),
        ("rate_limit", "OPENFLARE_RATE_LIMIT_RULES", RateLimitRules),
    )
    for key, env_name, model in rule_models:
        rule_path = _rule_file(main_path, rule_files.get(key), env_name, env)
        if rule_path is None:
            loaded[key] = model()
            continue
        if not rule_path.is_file():
            where = f"set by {env_name}" if env.get(env_name) else "named here"
            issues.append(
                _issue(doc, ("rule_files", key), f"{where}: {rule_path} is not a readable file")
            )
            continue
        rule_doc = _read_yaml(rule_path, issues)
        if rule_doc is None:
            continue
        sources.append((str(rule_path), hashlib.sha256(rule_doc.raw).hexdigest()))
        if key == "rate_limit" and redis_url is not None:
            backend = rule_doc.data.get("backend")
            if isinstance(backend, dict) and (
                backend.get("type") == "redis" or isinstance(backend.get("redis"), dict)
            ):
                _set_redis_url(rule_doc.data, ("backend", "redis"), "url", redis_url)
        rules = _validate(rule_doc, model, issues)
        if rules is not None:
            issues.extend(_issue(rule_doc, loc, r) for loc, r in rule_reference_errors(rules))
            if isinstance(rules, WafRules) and proxy is not None:
                issues.extend(_issue(rule_doc, loc, r) for loc, r in waf_route_errors(rules, proxy))
            loaded[key] = rules

    if issues or proxy is None:
        raise ConfigError(issues)
    digest = hashlib.sha256("\n".join(h for _, h in sources).encode()).hexdigest()
    return ConfigBundle(
        proxy=proxy,
        waf=loaded["waf"],
        cache_rules=loaded["cache"],
        rate_limits=loaded["rate_limit"],
        admin_token=token,
        main_path=str(main_path),
        sources=tuple(sources),
        hash=digest[:12],
    )
