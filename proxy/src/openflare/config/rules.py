"""What the three rule files share (the models themselves live with their stage:
`waf/rules.py`, `cache/rules.py`, `ratelimit/rules.py`).

Strict like the main file: unknown keys, duplicate ids and patterns RE2 cannot compile are
config errors naming the rule. Every regex is compiled with google-re2 (linear time); Python's
`re` never touches request data.
"""

from __future__ import annotations

import ipaddress

import re2
from pydantic import Field

from openflare.config.models import NAME_PATTERN, Location, StrictModel

HTTP_METHOD_PATTERN = r"^[A-Z][A-Z0-9-]{0,19}$"


def re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # errors become config errors, not lines on stderr
    return options


def check_re2(pattern: str) -> str:
    try:
        re2.compile(pattern, re2_options())
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(f"RE2 cannot compile {pattern!r}: {detail}") from None
    return pattern


def check_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP or CIDR: {exc}") from None
    return value


def duplicate_id_errors(section: str, ids: list[str]) -> list[tuple[Location, str]]:
    seen: set[str] = set()
    errors: list[tuple[Location, str]] = []
    for index, rule_id in enumerate(ids):
        if rule_id in seen:
            errors.append(((section, index, "id"), f"duplicate rule id {rule_id!r}"))
        seen.add(rule_id)
    return errors


class RuleWithId(StrictModel):
    id: str = Field(pattern=NAME_PATTERN)


class RuleFile(StrictModel):
    rules: tuple[RuleWithId, ...] = ()


def rule_reference_errors(rules: RuleFile) -> list[tuple[Location, str]]:
    return duplicate_id_errors("rules", [rule.id for rule in rules.rules])
