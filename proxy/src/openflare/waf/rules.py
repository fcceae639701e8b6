"""The WAF rule file (`configs/rules.waf.yaml`), as strict pydantic models.

The original shape loads unchanged: a global `mode: enforce|shadow`; rules with `id`,
`enabled`, `phase`, `description`, `match.any[]` of one-key conditions (`path_regex`,
`query_regex`, `body_regex`, `header_regex: "Name: regex"`, `header_name`, `ip_cidr`, `method`,
`user_agent_regex`, `content_type`) and `action.type: block|log|allow|bypass_cache` with
`action.status_code`.

Added since (docs/04-waf.md has the whole format):

* conditions on any target (`target: args` or a list of targets) with one operator
  (`regex`, `phrases`, `contains`, `equals`, `prefix`, `suffix`, `cidr`, `gt|ge|lt|le|eq`),
  `transforms` and `negate`; `match.all` next to `match.any`;
* per rule: `severity` (→ anomaly score) or `score`, `paranoia` 1-4, `tags`, `mode`,
  `exclude` (paths, argument, header and cookie names), and `action.type: score`;
* per file: `paranoia`, `anomaly_threshold`, `body` (inspection behaviour), global
  `exclusions` by rule id or tag, and per-route `routes[].mode`.

Every pattern is compiled with google-re2 here, so a pattern RE2 cannot compile is a validation
error naming the rule; the whole file is then compiled into the engine's matchers once
(`waf/compile.py`) and the result is kept on the model, so a reload that validates is a reload
that is ready to serve.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from openflare.config.models import NAME_PATTERN, StrictModel
from openflare.config.rules import (
    HTTP_METHOD_PATTERN,
    RuleFile,
    RuleWithId,
    check_cidr,
    check_re2,
)
from openflare.waf.targets import check_target, is_numeric_target
from openflare.waf.transforms import TRANSFORM_NAMES

if TYPE_CHECKING:
    from openflare.waf.compile import Ruleset

Mode = Literal["enforce", "shadow"]
Severity = Literal["critical", "error", "warning", "notice"]
SEVERITY_SCORES: dict[str, int] = {"critical": 5, "error": 4, "warning": 3, "notice": 2}
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
TransformName = Literal[
    "url_decode",
    "plus_to_space",
    "html_entity_decode",
    "js_decode",
    "base64_decode",
    "hex_decode",
    "lowercase",
    "compress_whitespace",
    "remove_whitespace",
    "remove_comments",
    "remove_nulls",
    "normalize_path",
    "unicode_normalize",
    "cmdline",
    "decode",
]
LEGACY_KEYS = (
    "path_regex",
    "query_regex",
    "body_regex",
    "header_regex",
    "header_name",
    "ip_cidr",
    "method",
    "user_agent_regex",
    "content_type",
)
STRING_OPERATORS = ("regex", "phrases", "contains", "equals", "prefix", "suffix")
NUMERIC_OPERATORS = ("gt", "ge", "lt", "le", "eq")
OPERATORS = (*STRING_OPERATORS, "cidr", *NUMERIC_OPERATORS)
MAX_PHRASES = 5000


def _as_tuple(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


class WafCondition(StrictModel):
    """One condition. Either exactly one of the original keys, or `target` + one operator."""

    # -- the original one-key forms
    path_regex: str | None = None
    query_regex: str | None = None
    body_regex: str | None = None
    header_regex: str | None = Field(None, description='"Header-Name: value-regex"')
    header_name: str | None = None
    ip_cidr: str | None = None
    method: str | None = None
    user_agent_regex: str | None = None
    content_type: str | None = None
    # -- the general form
    target: tuple[str, ...] | None = Field(None, description="a target or a list of targets")
    transforms: tuple[TransformName, ...] = ()
    negate: bool = False
    regex: str | None = None
    phrases: tuple[str, ...] | None = None
    contains: str | None = None
    equals: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    cidr: tuple[str, ...] | None = None
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    eq: float | None = None

    @field_validator("target", "cidr", "phrases", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _as_tuple(value)

    @field_validator("path_regex", "query_regex", "body_regex", "user_agent_regex", "regex")
    @classmethod
    def _re2(cls, value: str | None) -> str | None:
        return None if value is None else check_re2(value)

    @field_validator("header_regex")
    @classmethod
    def _header_regex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name, sep, pattern = value.partition(":")
        if not sep or not HEADER_NAME_RE.match(name.strip()):
            raise ValueError('must be "Header-Name: value-regex"')
        check_re2(pattern.strip())
        return value

    @field_validator("header_name")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not HEADER_NAME_RE.match(value):
            raise ValueError(f"{value!r} is not a header name")
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str | None) -> str | None:
        if value is not None and not re.match(HTTP_METHOD_PATTERN, value):
            raise ValueError(f"{value!r} is not an upper-case HTTP method")
        return value

    @field_validator("ip_cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        return None if value is None else check_cidr(value)

    @field_validator("cidr")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            if not value:
                raise ValueError("needs at least one CIDR")
            for item in value:
                check_cidr(item)
        return value

    @field_validator("phrases")
    @classmethod
    def _phrases(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            if not value or len(value) > MAX_PHRASES:
                raise ValueError(f"needs 1 to {MAX_PHRASES} phrases")
            if any(not phrase for phrase in value):
                raise ValueError("a phrase must not be empty")
        return value

    @field_validator("target")
    @classmethod
    def _targets(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            if not value:
                raise ValueError("needs at least one target")
            value = tuple(check_target(item) for item in value)
        return value

    @model_validator(mode="after")
    def _shape(self) -> WafCondition:
        legacy = [key for key in LEGACY_KEYS if getattr(self, key) is not None]
        operators = [key for key in OPERATORS if getattr(self, key) is not None]
        if legacy:
            if len(legacy) != 1:
                raise ValueError(f"a condition needs exactly one key, got {legacy}")
            if operators or self.target is not None or self.transforms or self.negate:
                raise ValueError(
                    f"{legacy[0]!r} is a complete condition; do not mix it with target/operators"
                )
            return self
        if self.target is None:
            raise ValueError(
                "a condition needs one of the keys "
                f"{', '.join(LEGACY_KEYS)} or a target with one operator"
            )
        if len(operators) != 1:
            raise ValueError(
                f"a condition needs exactly one operator of {', '.join(OPERATORS)}, "
                f"got {operators or 'none'}"
            )
        operator = operators[0]
        numeric = [t for t in self.target if is_numeric_target(t)]
        if operator == "cidr":
            if self.target != ("client_ip",):
                raise ValueError("cidr applies to the target client_ip only")
        elif operator in STRING_OPERATORS and numeric:
            raise ValueError(f"{operator} cannot apply to the numeric target {numeric[0]!r}")
        if numeric and self.transforms:
            raise ValueError("numeric targets take no transforms")
        return self

    @property
    def operator(self) -> str:
        for key in OPERATORS:
            if getattr(self, key) is not None:
                return key
        raise ValueError("legacy condition has no general operator")


class WafMatch(StrictModel):
    """`any`: one condition is enough; `all`: every condition must hold (both may be given)."""

    any: tuple[WafCondition, ...] = ()
    all: tuple[WafCondition, ...] = ()

    @model_validator(mode="after")
    def _not_empty(self) -> WafMatch:
        if not self.any and not self.all:
            raise ValueError("match needs at least one condition in any or all")
        return self


class WafAction(StrictModel):
    """`block` blocks on its own; `score` adds the rule's score to the anomaly total;
    `log` only records; `allow` skips every detection rule; `bypass_cache` marks the request
    as not served from or stored in the cache."""

    type: Literal["block", "score", "log", "allow", "bypass_cache"]
    status_code: int = Field(403, ge=400, le=599)


class WafExclude(StrictModel):
    """False-positive tuning for one rule: `paths` (prefixes) where the rule does not run,
    and names whose values it never inspects."""

    paths: tuple[str, ...] = ()
    args: tuple[str, ...] = Field((), description="query/form/multipart/JSON/XML names")
    headers: tuple[str, ...] = ()
    cookies: tuple[str, ...] = ()

    @field_validator("paths")
    @classmethod
    def _absolute(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"{path!r} must start with /")
        return value


class WafExclusion(WafExclude):
    """A file-level exclusion for the rules named by `rules` (ids) or `tags`: within `paths`
    (every path when empty) the named args/headers/cookies are not inspected, or, when no
    names are given, the rules do not run at all."""

    rules: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _selects(self) -> WafExclusion:
        if not self.rules and not self.tags:
            raise ValueError("an exclusion needs rules or tags to apply to")
        if not (self.paths or self.args or self.headers or self.cookies):
            raise ValueError("an exclusion needs paths, args, headers or cookies")
        return self


class WafRule(RuleWithId):
    enabled: bool = True
    phase: Literal["request", "request_headers", "request_body"] = "request"
    description: str = ""
    match: WafMatch
    action: WafAction
    severity: Severity = "critical"
    score: int | None = Field(None, ge=0, le=1000, description="default: from severity")
    paranoia: int = Field(1, ge=1, le=4)
    tags: tuple[str, ...] = ()
    mode: Mode | None = Field(None, description="default: the file's mode")
    exclude: WafExclude = WafExclude()

    @property
    def anomaly_score(self) -> int:
        return self.score if self.score is not None else SEVERITY_SCORES[self.severity]


class WafBody(StrictModel):
    """How bodies are inspected (the window itself is `security.max_body_inspect_bytes`)."""

    oversize: Literal["inspect_prefix", "reject"] = Field(
        "inspect_prefix",
        description="a body longer than the window: inspect its prefix and pass, or 413",
    )
    max_depth: int = Field(64, ge=1, le=1024, description="JSON/XML nesting inspected")
    max_values: int = Field(10_000, ge=1, le=1_000_000, description="body values inspected")
    max_parts: int = Field(1_000, ge=1, le=100_000, description="multipart parts inspected")


class WafRouteOverride(StrictModel):
    """Per-route behaviour, by `routing.routes[].id` (the route the proxy would pick)."""

    id: str = Field(pattern=NAME_PATTERN)
    mode: Mode | None = None
    enabled: bool = True


class WafRules(RuleFile):
    mode: Mode = "enforce"
    paranoia: int = Field(1, ge=1, le=4, description="rules above this level are not loaded")
    anomaly_threshold: int = Field(5, ge=1, le=10_000)
    body: WafBody = WafBody()
    excerpt_chars: int = Field(64, ge=0, le=1024, description="matched text kept in audit")
    exclusions: tuple[WafExclusion, ...] = ()
    routes: tuple[WafRouteOverride, ...] = ()
    rules: tuple[WafRule, ...] = ()

    _compiled: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _compile(self) -> WafRules:
        from openflare.waf.compile import compile_rules  # compile.py imports these models

        self._compiled = compile_rules(self)
        return self

    @property
    def compiled(self) -> Ruleset:
        """The engine's form of this file, compiled once when the file was validated."""
        compiled: Ruleset = self._compiled
        return compiled


__all__ = [
    "SEVERITY_SCORES",
    "TRANSFORM_NAMES",
    "WafAction",
    "WafBody",
    "WafCondition",
    "WafExclude",
    "WafExclusion",
    "WafMatch",
    "WafRouteOverride",
    "WafRule",
    "WafRules",
]
