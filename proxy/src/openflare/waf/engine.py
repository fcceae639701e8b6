"""Evaluate a compiled ruleset against one request: pure, synchronous, no I/O.

1. `allow` rules are checked first; one that matches ends the evaluation (an explicit
   allow-list).
2. Every view's `re2.Set` runs once over its transformed values; the rules whose patterns hit,
   plus the few rules that must always run (CIDR, numbers, negations), are evaluated in file
   order. Every applicable rule is evaluated — nothing stops at the first match, so a `log`
   rule never hides a `block`.
3. The decision: blocked when an enforcing `block` rule matched or the enforcing rules' scores
   reach the threshold; in shadow (file, route or rule) the same outcome is `would_block`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from openflare.waf.compile import Condition, Rule, Ruleset
from openflare.waf.targets import Inspection, Value
from openflare.waf.transforms import TRANSFORMS

DETECTION_ACTIONS = ("block", "score")
MEMO_MAX_TEXT = 1024  # longer view texts (bodies, big queries) are not remembered
MEMO_MAX_ENTRIES = 4096  # per view; the memo is dropped whole when full (bounded, cheap)


@dataclass(slots=True)
class RuleMatch:
    rule: Rule
    target: str
    excerpt: str
    action: str = ""  # what the metric and the audit report: block, log, would_block, ...


@dataclass(slots=True)
class Verdict:
    decision: str  # pass | allow | block | would_block | log
    status: int = 0
    score: int = 0
    matches: list[RuleMatch] = field(default_factory=list)
    bypass_cache: bool = False

    @property
    def rule_ids(self) -> list[str]:
        return [m.rule.id for m in self.matches]

    @property
    def blocked(self) -> bool:
        return self.decision == "block"


PASS = Verdict("pass")


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
            split = self._split(targets, chain)
            if split is not None:
                self._chains[key] = split
                return split
            plan = self.ruleset.plans.get(key)
            parent: tuple[str, ...] = ()
            if plan is None:  # a chain no view uses (tests, tools): no intermediate caching
                steps = tuple(TRANSFORMS[name] for name in chain)
            else:
                parent, steps = plan
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

    def _split(self, targets: tuple[str, ...], chain: tuple[str, ...]) -> list[Value] | None:
        """The per-value results of `chain`, read off the view's transformed joined text when
        it has exactly one line per value — no transform then, the joined text having been
        computed for the RE2 pass already. Sound because every transform works line by line
        and no transform ever removes a line break: with no value holding a line break and no
        line added by the chain (`base64_decode` finding something, a decoded `%0a`), line i
        of the joined result is the chain applied to value i. Otherwise None: the caller
        transforms value by value."""
        base = self.transformed(targets, ())
        if not base:
            return None
        breaks = len(base) - 1
        raw = self.raw_text(targets)
        if raw is None or raw.count("\n") != breaks:
            return None  # a value holds a line break
        text = self.text(targets, chain)
        if text.count("\n") != breaks:
            return None  # the chain added lines
        if not breaks:
            kind, name, _ = base[0]
            return [(kind, name, text)]
        return [
            (kind, name, line) for (kind, name, _), line in zip(base, text.split("\n"), strict=True)
        ]

    def hits(self, view_index: int) -> frozenset[int]:
        found = self._hits.get(view_index)
        if found is not None:
            return found
        view = self.ruleset.views[view_index]
        result: frozenset[int] = frozenset()
        raw = self.raw_text(view.targets) if view.matcher is not None else None
        if raw is not None:
            memo = view.memo
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
                span = verify(value)
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


def decide(ruleset: Ruleset, matches: list[RuleMatch], *, route_shadow: bool) -> Verdict:
    enforce_score = total_score = 0
    direct: RuleMatch | None = None
    shadow_direct = False
    strongest: RuleMatch | None = None
    bypass = False
    for found in matches:
        rule = found.rule
        if rule.action in DETECTION_ACTIONS:
            total_score += rule.score
            shadow = rule.shadow or route_shadow
            if rule.action == "block":
                if shadow:
                    shadow_direct = True
                elif direct is None:
                    direct = found
            if not shadow:
                enforce_score += rule.score
                if strongest is None or rule.score > strongest.rule.score:
                    strongest = found
        elif rule.action == "bypass_cache" and not (rule.shadow or route_shadow):
            bypass = True
    blocked = direct is not None or enforce_score >= ruleset.threshold
    would = not blocked and (shadow_direct or total_score >= ruleset.threshold)
    for found in matches:
        rule = found.rule
        shadow = rule.shadow or route_shadow
        if rule.action in DETECTION_ACTIONS:
            if blocked and not shadow:
                found.action = "block"
            elif (blocked or would) and shadow:
                found.action = "would_block"
            else:
                found.action = "log"
        elif rule.action == "bypass_cache" and not shadow:
            found.action = "bypass_cache"
        else:
            found.action = "log"
    if blocked:
        status = (direct or strongest or matches[0]).rule.status
        return Verdict("block", status, total_score, matches, bypass)
    return Verdict("would_block" if would else "log", 0, total_score, matches, bypass)
