"""The WAF evaluation as it was before per-value results were derived from the joined view text
and verification matched through RE2 directly (2026-11-29): a frozen copy of `waf/engine.py`
kept as the reference the engine is tested against (test_waf_differential.py) and measured
against (benchmarks/waf_microbench.py --baseline), with the one transform whose code changed
(`remove_comments`) in its previous form. It keeps its own per-view memo,
so running it never warms the engine's. It reuses the engine's result types (`RuleMatch`,
`Verdict`, `decide`): the differential test compares decisions, not the decision function.

Only the evaluation is frozen; it uses the compiled ruleset's views, plans and verifiers
(`compile.py`), whose per-pattern semantics did not change.
"""

from __future__ import annotations

import re2

from openflare.waf import transforms
from openflare.waf.compile import SET_MAX_MEM, Condition, Rule, Ruleset, View, _options
from openflare.waf.engine import PASS, RuleMatch, Verdict, decide
from openflare.waf.targets import Inspection, Value
from openflare.waf.transforms import TRANSFORMS, Transform

MEMO_MAX_TEXT = 1024
MEMO_MAX_ENTRIES = 4096
_MEMOS: dict[int, tuple[View, dict[str, frozenset[int]]]] = {}
_PATTERNS: dict[tuple[int, int], tuple[View, re2._Regexp]] = {}


def _memo(view: View) -> dict[str, frozenset[int]]:
    found = _MEMOS.get(id(view))
    if found is None or found[0] is not view:
        found = _MEMOS[id(view)] = (view, {})
    return found[1]


def _search(view: View, condition: Condition, value: str) -> tuple[int, int] | None:
    """`regex` and `phrases` verified as before: the pattern through the `re2` module's
    `search` (the engine now calls RE2's Match directly)."""
    key = (id(view), condition.set_index)
    found = _PATTERNS.get(key)
    if found is None or found[0] is not view:
        compiled = re2.compile(view.patterns[condition.set_index], _options(SET_MAX_MEM))
        found = _PATTERNS[key] = (view, compiled)
    hit = found[1].search(value)
    return hit.span() if hit is not None else None


def _remove_comments(value: str) -> str:
    """transforms.remove_comments as it was: every line rewritten."""
    if "/*" not in value:
        return value
    if "\n" in value:
        return "\n".join([transforms._remove_comments_line(line) for line in value.split("\n")])
    return transforms._remove_comments_line(value)


# the transforms whose code changed, in their previous form (their results did not change)
_PREVIOUS: dict[Transform, Transform] = {transforms.remove_comments: _remove_comments}


def _escape(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii")


class Evaluation:
    """The per-request state of one evaluation: transformed views and Set hits, each computed
    once and shared by every rule that needs it."""

    __slots__ = ("ruleset", "request", "_chains", "_texts", "_hits", "_excerpt", "_raw")

    def __init__(self, ruleset: Ruleset, request: Inspection) -> None:
        self.ruleset = ruleset
        self.request = request
        self._chains: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Value]] = {}
        self._texts: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}
        self._hits: dict[int, frozenset[int]] = {}
        self._excerpt = ruleset.excerpt_chars
        self._raw: dict[tuple[str, ...], str | None] = {}  # targets → raw text (None: no values)

    def raw_text(self, targets: tuple[str, ...]) -> str | None:
        """The untransformed text of `targets` (what a view's memo is keyed on, the same as
        `text(targets, ())`), or None when they have no values at all; computed once per
        target group and shared by its views."""
        cache = self._raw
        if targets in cache:
            return cache[targets]
        strings_of = self.request.strings
        if len(targets) == 1:
            strings = strings_of(targets[0])
        else:
            strings = []
            for target in targets:
                strings.extend(strings_of(target))
        if not strings:
            self._raw[targets] = None
            self._texts[(targets, ())] = ""
            return None
        text = strings[0] if len(strings) == 1 else "\n".join(strings)
        self._raw[targets] = text
        self._texts[(targets, ())] = text
        return text

    def text(self, targets: tuple[str, ...], chain: tuple[str, ...]) -> str:
        """A view's values joined by newlines, then transformed as one string: what its RE2
        set scans. Transforms work line by line (see transforms.py), so this holds every
        per-value result; the per-value form is only computed to verify a hit."""
        key = (targets, chain)
        cached = self._texts.get(key)
        if cached is not None:
            return cached
        if not chain:
            values = self.transformed(targets, ())
            text = values[0][2] if len(values) == 1 else "\n".join([v[2] for v in values])
        else:
            plan = self.ruleset.plans.get(key)
            parent: tuple[str, ...] = ()
            if plan is None:
                steps = tuple(TRANSFORMS[name] for name in chain)
            else:
                parent, steps = plan
            steps = tuple(_PREVIOUS.get(step, step) for step in steps)
            text = self.text(targets, parent)
            if text:
                for step in steps:
                    text = step(text)
        self._texts[key] = text
        return text

    def transformed(self, targets: tuple[str, ...], chain: tuple[str, ...]) -> list[Value]:
        key = (targets, chain)
        cached = self._chains.get(key)
        if cached is not None:
            return cached
        if not chain:
            request = self.request
            if len(targets) == 1:
                values = request.values(targets[0])
            else:
                values = []
                for target in targets:
                    values.extend(request.values(target))
        else:
            plan = self.ruleset.plans.get(key)
            parent: tuple[str, ...] = ()
            if plan is None:  # a chain no view uses (tests, tools): no intermediate caching
                steps = tuple(TRANSFORMS[name] for name in chain)
            else:
                parent, steps = plan
            steps = tuple(_PREVIOUS.get(step, step) for step in steps)
            base = self.transformed(targets, parent)
            if len(steps) == 1:
                step = steps[0]
                values = [(kind, name, step(value)) for kind, name, value in base]
            else:
                values = []
                append = values.append
                for kind, name, value in base:
                    for step in steps:
                        value = step(value)
                    append((kind, name, value))
        self._chains[key] = values
        return values

    def hits(self, view_index: int) -> frozenset[int]:
        found = self._hits.get(view_index)
        if found is not None:
            return found
        view = self.ruleset.views[view_index]
        result: frozenset[int] = frozenset()
        raw = self.raw_text(view.targets) if view.matcher is not None else None
        if raw is not None:
            memo = _memo(view)
            remembered = memo.get(raw)
            if remembered is not None:
                self._hits[view_index] = remembered
                return remembered
            matched = view.match(self.text(view.targets, view.chain).encode("utf-8"))
            if matched:
                result = frozenset(matched)
            if len(raw) <= MEMO_MAX_TEXT:
                if len(memo) >= MEMO_MAX_ENTRIES:
                    memo.clear()
                memo[raw] = result
        self._hits[view_index] = result
        return result

    # ---- one condition, one rule

    def _excluded(self, rule: Rule, kind: str, name: str) -> bool:
        path = self.request.path
        for exclusion in rule.exclusions:
            wanted = name.lower() if kind == "header" else name
            if (
                exclusion.kind == kind
                and wanted in exclusion.names
                and (not exclusion.paths or path.startswith(exclusion.paths))
            ):
                return True
        return False

    def _test(self, rule: Rule, condition: Condition) -> RuleMatch | None:
        found = self._find(rule, condition)
        if condition.negate:
            return None if found is not None else RuleMatch(rule, "+".join(condition.targets), "")
        return found

    def _find(self, rule: Rule, condition: Condition) -> RuleMatch | None:
        if condition.verify is not None:
            view = self.ruleset.views[condition.view]
            if condition.set_index not in self.hits(condition.view):
                return None
            verify = condition.verify
            check_exclusions = bool(rule.exclusions)
            for kind, name, value in self.transformed(view.targets, view.chain):
                if check_exclusions and self._excluded(rule, kind, name):
                    continue
                span = (
                    _search(view, condition, value)
                    if condition.op in ("regex", "phrases")
                    else verify(value)
                )
                if span is not None:
                    return RuleMatch(
                        rule, f"{kind}:{name}" if kind else name, self._snippet(value, span)
                    )
            return None
        if condition.networks:
            address = self.request.ip()
            if address is not None:
                for network in condition.networks:
                    if address.version == network.version and address in network:
                        return RuleMatch(rule, "client_ip", self.request.client_ip)
            return None
        return self._numeric(rule, condition)

    def _numeric(self, rule: Rule, condition: Condition) -> RuleMatch | None:
        op, limit = condition.op, condition.number
        for target in condition.targets:
            try:
                numbers = [(target, float(self.request.number(target)))]
            except KeyError:
                numbers = [
                    (f"{kind}:{name}" if kind else name, float(len(value)))
                    for kind, name, value in self.request.values(target)
                    if not (rule.exclusions and self._excluded(rule, kind, name))
                ]
            for where, number in numbers:
                if (
                    (op == "gt" and number > limit)
                    or (op == "ge" and number >= limit)
                    or (op == "lt" and number < limit)
                    or (op == "le" and number <= limit)
                    or (op == "eq" and number == limit)
                ):
                    return RuleMatch(rule, where, str(int(number)))
        return None

    def _snippet(self, value: str, span: tuple[int, int]) -> str:
        limit = self._excerpt
        if limit <= 0:
            return ""
        start, end = span
        start = max(0, start - 8)
        return _escape(value[start : min(end + 8, start + limit)])[: limit * 2]

    def match(self, rule: Rule) -> RuleMatch | None:
        if rule.skip_paths:
            path = self.request.path
            for prefixes in rule.skip_paths:
                if path.startswith(prefixes):
                    return None
        first: RuleMatch | None = None
        for condition in rule.all:
            found = self._test(rule, condition)
            if found is None:
                return None
            first = first or found
        if rule.any:
            for condition in rule.any:
                found = self._test(rule, condition)
                if found is not None:
                    return found if first is None or not first.excerpt else first
            return None
        return first


def evaluate(ruleset: Ruleset, request: Inspection, *, route_shadow: bool = False) -> Verdict:
    if ruleset.empty:
        return PASS
    run = Evaluation(ruleset, request)
    for rule in ruleset.allow_rules:
        found = run.match(rule)
        if found is not None:
            found.action = "allow"
            return Verdict("allow", matches=[found])
    candidates: set[int] = set(ruleset.always_rules)
    has_body = bool(request.body)
    hits = run.hits
    for targets, body_only, views in ruleset.detect_groups:
        if body_only and not has_body:
            continue  # every target is a body target: no values without a body
        if run.raw_text(targets) is None:
            continue  # the targets have no values here: none of the group's views can hit
        for view in views:
            hit = hits(view.index)
            if hit:
                owners = view.pattern_rules
                for index in hit:
                    candidates.update(owners[index])
    if not candidates:
        return PASS
    matches: list[RuleMatch] = []
    rules = ruleset.rules
    for index in sorted(candidates):
        rule = rules[index]
        if rule.action == "allow":
            continue
        found = run.match(rule)
        if found is not None:
            matches.append(found)
    if not matches:
        return PASS
    return decide(ruleset, matches, route_shadow=route_shadow)
