"""Compile a validated rule file into the engine's matchers, once per load.

Conditions are grouped into *views*: one view per distinct (targets, transform chain). Every
string condition of a view (regex, phrases, contains, equals, prefix, suffix) becomes one
pattern of the view's `re2.Set`, so a request costs one linear RE2 pass per view however many
rules share it; identical patterns are added once. A Set hit is then verified value by value
(that is also where exclusions apply and where the audit excerpt comes from), so the joined-text
prefilter never changes what matches.

`^` and `$` match at the start and end of each value (and of each line inside one): the Set
scans a view's values joined by newlines, in multi-line mode.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import re2

from openflare.config.rules import re2_options
from openflare.waf.rules import (
    SEVERITY_SCORES,
    WafCondition,
    WafExclude,
    WafExclusion,
    WafRule,
)
from openflare.waf.targets import (
    BODY_TARGETS,
    HEADER,
    RequestKey,
    is_numeric_target,
    needs_body,
)
from openflare.waf.transforms import TRANSFORMS, Transform

if TYPE_CHECKING:
    from openflare.waf.rules import WafRules

Verifier = Callable[[str], "tuple[int, int] | None"]
# RE2's own Match: (anchor, UTF-8 text, start, end) → spans, [0] the whole match ((-1, -1):
# none). It searches text[start:end] with the text around it as context for ^ $ \b.
Scanner = Callable[[object, bytes, int, int], list[tuple[int, int]]]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SET_MAX_MEM = 64 << 20
VERIFY_MAX_MEM = 8 << 20


def _options(max_mem: int) -> re2.Options:
    options = re2_options()
    options.max_mem = max_mem
    return options


@dataclass(slots=True)
class View:
    index: int
    targets: tuple[str, ...]
    chain: tuple[str, ...]
    patterns: list[str] = field(default_factory=list)
    pattern_rules: list[set[int]] = field(default_factory=list)
    matcher: re2.Set | None = None
    needs_body: bool = False
    # the compiled set's own Match (bytes in, list of indices out), without the wrapper's
    # per-call str handling
    match: Callable[[bytes], list[int] | None] = field(default=lambda text: None)
    # raw (untransformed) view text → set indices that hit: a pure function of the text, so
    # repeated values (User-Agent, Accept, a popular path) skip transforms and the RE2 pass
    memo: dict[str, frozenset[int]] = field(default_factory=dict)


@dataclass(slots=True)
class Condition:
    op: str
    targets: tuple[str, ...]
    negate: bool
    view: int = -1  # string operators: the view that holds its pattern
    set_index: int = -1
    verify: Verifier | None = None
    # regex and phrases whose matches cannot depend on where the text starts or ends (no \A,
    # \z, no flag group turning multi-line off): they can be verified on the view's joined text
    scan: Scanner | None = None
    networks: tuple[IPNetwork, ...] = ()
    number: float = 0.0
    description: str = ""


@dataclass(slots=True)
class Exclusion:
    paths: tuple[str, ...]  # empty: everywhere
    kind: str
    names: frozenset[str]


@dataclass(slots=True)
class Rule:
    index: int
    id: str
    action: str
    status: int
    score: int
    shadow: bool
    paranoia: int
    tags: tuple[str, ...]
    any: tuple[Condition, ...]
    all: tuple[Condition, ...]
    skip_paths: tuple[tuple[str, ...], ...] = ()  # (prefixes) groups: rule off there
    exclusions: tuple[Exclusion, ...] = ()
    always: bool = False  # must be evaluated even without a Set hit
    needs_body: bool = False


@dataclass(slots=True)
class Ruleset:
    mode: str
    paranoia: int
    threshold: int
    oversize: str
    limits: tuple[int, int, int]
    excerpt_chars: int
    routes: dict[str, tuple[str | None, bool]]
    rules: tuple[Rule, ...]
    allow_rules: tuple[Rule, ...]
    views: tuple[View, ...]
    detect_views: tuple[View, ...]
    always_rules: tuple[int, ...]
    needs_body: bool
    loaded_rules: int
    # (targets, chain) → (the cached chain it continues from, the transforms still to apply)
    plans: dict[
        tuple[tuple[str, ...], tuple[str, ...]], tuple[tuple[str, ...], tuple[Transform, ...]]
    ]
    # detect_views grouped by targets: (targets, body only?, views). The engine extracts each
    # group's values once and skips a body-only group outright on a request without a body.
    detect_groups: tuple[tuple[tuple[str, ...], bool, tuple[View, ...]], ...] = ()
    # whole-request memo (waf/engine.py): Inspection.key → what the evaluation matched, as
    # (allowed?, ((rule, target, excerpt), ...)); a pure function of the key, so repeated
    # requests skip even the views' memos
    request_memo: dict[RequestKey, tuple[bool, tuple[tuple[Rule, str, str], ...]]] = field(
        default_factory=dict
    )

    @property
    def empty(self) -> bool:
        return not self.rules


class RuleCompileError(ValueError):
    pass


PlanKey = tuple[tuple[str, ...], tuple[str, ...]]


def _chain_plans(
    views: tuple[View, ...],
) -> dict[PlanKey, tuple[tuple[str, ...], tuple[Transform, ...]]]:
    """Which intermediate results are worth caching: every view's chain, and every prefix that
    two views on the same targets share (`[decode, base64_decode, ...]` under the three main
    chains). Each cached chain is computed from the longest cached chain it extends."""
    by_targets: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for view in views:
        by_targets.setdefault(view.targets, set()).add(view.chain)
    plans: dict[PlanKey, tuple[tuple[str, ...], tuple[Transform, ...]]] = {}
    for targets, chains in by_targets.items():
        nodes = set(chains)
        ordered = sorted(chains)
        for first in ordered:
            for second in ordered:
                if first < second:
                    shared = 0
                    while shared < min(len(first), len(second)) and first[shared] == second[shared]:
                        shared += 1
                    if shared:
                        nodes.add(first[:shared])
        for node in nodes:
            parent: tuple[str, ...] = ()
            for other in nodes:
                if len(parent) < len(other) < len(node) and node[: len(other)] == other:
                    parent = other
            plans[(targets, node)] = (parent, tuple(TRANSFORMS[n] for n in node[len(parent) :]))
    return plans


def _legacy(condition: WafCondition) -> WafCondition:
    """The original one-key conditions, as the general form."""
    if condition.path_regex is not None:
        return WafCondition(target=("path",), regex=condition.path_regex)
    if condition.query_regex is not None:
        return WafCondition(target=("query",), regex=condition.query_regex)
    if condition.body_regex is not None:
        return WafCondition(target=("body",), regex=condition.body_regex)
    if condition.header_regex is not None:
        name, _, pattern = condition.header_regex.partition(":")
        return WafCondition(target=(f"header:{name.strip()}",), regex=pattern.strip())
    if condition.header_name is not None:
        return WafCondition(
            target=("header_names",),
            equals=condition.header_name.lower(),
            transforms=("lowercase",),
        )
    if condition.ip_cidr is not None:
        return WafCondition(target=("client_ip",), cidr=(condition.ip_cidr,))
    if condition.method is not None:
        return WafCondition(target=("method",), equals=condition.method)
    if condition.user_agent_regex is not None:
        return WafCondition(target=("user_agent",), regex=condition.user_agent_regex)
    if condition.content_type is not None:
        return WafCondition(
            target=("content_type",), equals=condition.content_type.split(";")[0].strip().lower()
        )
    return condition


def _searcher(compiled: re2._Regexp) -> Verifier:
    """`compiled.search(value).span()`, without the `re2` module's per-call generator and
    offset bookkeeping: one RE2 Match on the UTF-8 bytes; byte offsets become character
    offsets only for a non-ASCII value that matched (RE2 matches at character boundaries)."""
    match = compiled._regexp.Match
    unanchored = re2._Anchor.UNANCHORED

    def search(value: str) -> tuple[int, int] | None:
        encoded = value.encode("utf-8")
        start, end = match(unanchored, encoded, 0, len(encoded))[0]
        if start < 0:
            return None
        if len(encoded) == len(value):
            return start, end
        start_chars = len(encoded[:start].decode("utf-8"))
        return start_chars, start_chars + len(encoded[start:end].decode("utf-8"))

    return search


_ANCHORED_TO_TEXT = re2.compile(r"\\[Az]|\(\?[a-zA-Z]*-")


def _context_free(pattern: str) -> bool:
    """Whether a match of `pattern` inside one line of a view's joined text is exactly a match
    on that line alone. True unless the pattern anchors to the whole text (`\\A`, `\\z`, or a
    flag group clearing `m`, so `^`/`$` mean the same); conservative: any such spelling counts,
    escaped or not."""
    return _ANCHORED_TO_TEXT.search(pattern) is None


def _string_pattern(condition: WafCondition) -> tuple[str, Verifier, Scanner | None]:
    op = condition.operator
    if op == "regex":
        assert condition.regex is not None
        pattern = "(?m)" + condition.regex
        compiled = re2.compile(pattern, _options(VERIFY_MAX_MEM))
        scan = compiled._regexp.Match if _context_free(pattern) else None
        return pattern, _searcher(compiled), scan
    if op == "phrases":
        assert condition.phrases is not None
        pattern = "(?:" + "|".join(re2.escape(p) for p in condition.phrases) + ")"
        compiled = re2.compile(pattern, _options(SET_MAX_MEM))
        return pattern, _searcher(compiled), compiled._regexp.Match
    text = getattr(condition, op)
    assert isinstance(text, str)
    escaped = re2.escape(text)
    size = len(text)
    if op == "contains":

        def verify_contains(value: str) -> tuple[int, int] | None:
            at = value.find(text)
            return (at, at + size) if at >= 0 else None

        return escaped, verify_contains, None
    if op == "equals":
        return f"(?m)^{escaped}$", lambda value: (0, size) if value == text else None, None
    if op == "prefix":
        return (
            f"(?m)^{escaped}",
            lambda value: (0, size) if value.startswith(text) else None,
            None,
        )
    if op == "suffix":

        def verify_suffix(value: str) -> tuple[int, int] | None:
            return (len(value) - size, len(value)) if value.endswith(text) else None

        return f"(?m){escaped}$", verify_suffix, None
    raise RuleCompileError(f"unknown operator {op}")  # pragma: no cover


class _Builder:
    def __init__(self) -> None:
        self.views: dict[tuple[tuple[str, ...], tuple[str, ...]], View] = {}
        self.pattern_index: dict[tuple[int, str], int] = {}

    def view(self, targets: tuple[str, ...], chain: tuple[str, ...]) -> View:
        key = (tuple(sorted(set(targets))), chain)
        view = self.views.get(key)
        if view is None:
            view = View(len(self.views), key[0], chain)
            view.needs_body = any(needs_body(t) for t in key[0])
            self.views[key] = view
        return view

    def condition(self, raw: WafCondition, rule_index: int) -> Condition:
        condition = _legacy(raw)
        assert condition.target is not None
        op = condition.operator
        compiled = Condition(op=op, targets=condition.target, negate=condition.negate)
        if op == "cidr":
            assert condition.cidr is not None
            compiled.networks = tuple(ipaddress.ip_network(c, strict=False) for c in condition.cidr)
            return compiled
        number = getattr(condition, op)
        if isinstance(number, float):
            compiled.number = number
            return compiled
        pattern, verify, scan = _string_pattern(condition)
        view = self.view(condition.target, condition.transforms)
        key = (view.index, pattern)
        index = self.pattern_index.get(key)
        if index is None:
            index = len(view.patterns)
            view.patterns.append(pattern)
            view.pattern_rules.append(set())
            self.pattern_index[key] = index
        view.pattern_rules[index].add(rule_index)
        compiled.view = view.index
        compiled.set_index = index
        compiled.verify = verify
        compiled.scan = scan
        return compiled


def _exclusions(
    rule: WafRule, global_exclusions: tuple[WafExclusion, ...]
) -> tuple[tuple[tuple[str, ...], ...], tuple[Exclusion, ...]]:
    skip: list[tuple[str, ...]] = []
    found: list[Exclusion] = []

    def names(scope: tuple[str, ...], exclude: WafExclude) -> bool:
        any_names = False
        for kind, items in (
            ("arg", exclude.args),
            (HEADER, exclude.headers),
            ("cookie", exclude.cookies),
        ):
            if items:
                any_names = True
                lowered = (
                    frozenset(i.lower() for i in items) if kind == HEADER else frozenset(items)
                )
                found.append(Exclusion(scope, kind, lowered))
        return any_names

    own = rule.exclude
    if own.paths:
        skip.append(own.paths)
    names((), own)
    for scoped in global_exclusions:
        if rule.id not in scoped.rules and not set(rule.tags) & set(scoped.tags):
            continue
        if not names(scoped.paths, scoped) and scoped.paths:
            skip.append(scoped.paths)
    return tuple(skip), tuple(found)


def compile_rules(rules: WafRules) -> Ruleset:
    builder = _Builder()
    compiled_rules: list[Rule] = []
    file_shadow = rules.mode == "shadow"
    for raw in rules.rules:
        if not raw.enabled or raw.paranoia > rules.paranoia:
            continue
        index = len(compiled_rules)
        try:
            any_conditions = tuple(builder.condition(c, index) for c in raw.match.any)
            all_conditions = tuple(builder.condition(c, index) for c in raw.match.all)
        except re2.error as exc:
            raise RuleCompileError(f"rule {raw.id!r}: RE2 cannot compile it: {exc}") from None
        conditions = any_conditions + all_conditions
        uses_body = any(needs_body(t) for c in conditions for t in c.targets)
        if raw.phase == "request_headers" and any(
            t not in ("args", "args_names", "flags", "args_count") and needs_body(t)
            for c in conditions
            for t in c.targets
        ):
            raise RuleCompileError(
                f"rule {raw.id!r}: phase request_headers cannot inspect body targets"
            )
        skip, exclusions = _exclusions(raw, rules.exclusions)
        compiled_rules.append(
            Rule(
                index=index,
                id=raw.id,
                action=raw.action.type,
                status=raw.action.status_code,
                score=raw.anomaly_score if raw.action.type in ("block", "score") else 0,
                shadow=file_shadow or raw.mode == "shadow",
                paranoia=raw.paranoia,
                tags=raw.tags,
                any=any_conditions,
                all=all_conditions,
                skip_paths=skip,
                exclusions=exclusions,
                always=any(
                    c.set_index < 0 or c.negate or is_numeric_target(c.targets[0])
                    for c in conditions
                ),
                needs_body=uses_body,
            )
        )
    views = tuple(builder.views.values())
    for view in views:
        matcher = re2.Set.SearchSet(_options(SET_MAX_MEM))
        for number, pattern in enumerate(view.patterns):
            try:
                matcher.Add(pattern)
            except re2.error:
                owners = ", ".join(compiled_rules[i].id for i in sorted(view.pattern_rules[number]))
                raise RuleCompileError(f"rule {owners}: RE2 cannot add {pattern!r}") from None
        try:
            matcher.Compile()
        except re2.error:
            owners = ", ".join(
                sorted({compiled_rules[i].id for rs in view.pattern_rules for i in rs})
            )
            raise RuleCompileError(
                f"the patterns of rules {owners} on {'+'.join(view.targets)} are too large "
                "for one RE2 set"
            ) from None
        view.matcher = matcher
        view.match = matcher._set.Match
    plans = _chain_plans(views)
    allow = tuple(r for r in compiled_rules if r.action == "allow")
    detect = [r for r in compiled_rules if r.action != "allow"]
    detect_ids = {r.index for r in detect}
    detect_views = tuple(v for v in views if any(ids & detect_ids for ids in v.pattern_rules))
    grouped: dict[tuple[str, ...], list[View]] = {}
    for view in detect_views:
        grouped.setdefault(view.targets, []).append(view)
    detect_groups = tuple(
        (targets, all(t in BODY_TARGETS for t in targets), tuple(group))
        for targets, group in grouped.items()
    )
    body = rules.body
    return Ruleset(
        mode=rules.mode,
        paranoia=rules.paranoia,
        threshold=rules.anomaly_threshold,
        oversize=body.oversize,
        limits=(body.max_depth, body.max_values, body.max_parts),
        excerpt_chars=rules.excerpt_chars,
        routes={r.id: (r.mode, r.enabled) for r in rules.routes},
        plans=plans,
        rules=tuple(compiled_rules),
        allow_rules=allow,
        views=views,
        detect_views=detect_views,
        detect_groups=detect_groups,
        always_rules=tuple(r.index for r in detect if r.always),
        needs_body=any(r.needs_body for r in compiled_rules),
        loaded_rules=len(compiled_rules),
    )


__all__ = [
    "SEVERITY_SCORES",
    "Condition",
    "Rule",
    "RuleCompileError",
    "Ruleset",
    "View",
    "compile_rules",
]
