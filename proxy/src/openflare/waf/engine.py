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

import re2

from openflare.waf.compile import Condition, Rule, Ruleset, Scanner, View
from openflare.waf.targets import Inspection, Value
from openflare.waf.transforms import TRANSFORMS

DETECTION_ACTIONS = ("block", "score")
UNANCHORED = re2._Anchor.UNANCHORED
SCAN_JOINED_TRIES = 8  # whole-text searches per verification before going line by line
MEMO_MAX_TEXT = 1024  # longer view texts (bodies, big queries) are not remembered
MEMO_MAX_ENTRIES = 4096  # per view; the memo is dropped whole when full (bounded, cheap)
# The whole-request memo (Ruleset.request_memo): bodyless requests whose target and headers
# hold at most this much text, this many of them
REQUEST_MEMO_MAX_CHARS = 4096
REQUEST_MEMO_MAX_ENTRIES = 2048


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

    __slots__ = (
        "ruleset",
        "request",
        "_chains",
        "_texts",
        "_hits",
        "_excerpt",
        "_raw",
        "_encoded",
        "_utf8_texts",
    )

    def __init__(self, ruleset: Ruleset, request: Inspection) -> None:
        self.ruleset = ruleset
        self.request = request
        self._chains: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Value]] = {}
        self._texts: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}
        self._hits: dict[int, frozenset[int]] = {}
        self._excerpt = ruleset.excerpt_chars
        self._raw: dict[tuple[str, ...], str | None] = {}  # targets → raw text (None: no values)
        self._encoded: dict[tuple[tuple[str, ...], tuple[str, ...]], bytes | None] = {}
        self._utf8_texts: dict[tuple[tuple[str, ...], tuple[str, ...]], bytes] = {}

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

    def _line_per_value(self, targets: tuple[str, ...], chain: tuple[str, ...]) -> bytes | None:
        """The view's transformed joined text as UTF-8 when line i of it is the chain's result
        for value i (see `_split`), else None."""
        key = (targets, chain)
        if key in self._encoded:
            return self._encoded[key]
        encoded: bytes | None = None
        base = self.transformed(targets, ())
        raw = self.raw_text(targets)
        if base and raw is not None:
            breaks = len(base) - 1
            text = self.text(targets, chain)
            if raw.count("\n") == breaks and text.count("\n") == breaks:
                encoded = self._utf8(targets, chain)
        self._encoded[key] = encoded
        return encoded

    def _scan(
        self, rule: Rule, scan: Scanner, targets: tuple[str, ...], text: bytes
    ) -> RuleMatch | None:
        """The first value (in order) the condition's regex finds, and where: exactly what
        searching value by value gives, mostly found by searching the joined text. RE2 reads
        the text around a window as context for `^ $ \\b`, so searching one line's window is
        searching that value alone. A match of the whole text that lies inside one line is
        that value's first match: every match of the value alone is one of the whole text (so
        none starts earlier, and with the same start the same alternative wins), and no
        earlier line has one. A match that starts at or runs across a line break (the `\\n`
        of `rce-unix-command`'s `[;|&\\n\\r]`) says nothing for its line: that line gets a
        search of its own and the scan goes on after it. After SCAN_JOINED_TRIES such whole-
        text searches the remaining lines are searched one by one (each search of the whole
        text may read to its end: the total stays linear)."""
        values = self.transformed(targets, ())
        check_exclusions = bool(rule.exclusions)
        size = len(text)
        position = index = 0  # the start of line `index`
        for _ in range(SCAN_JOINED_TRIES):
            start, end = scan(UNANCHORED, text, position, size)[0]
            if start < 0:
                return None
            breaks = text.count(b"\n", position, start)
            if breaks:
                index += breaks
                position = text.rfind(b"\n", position, start) + 1
            line_end = text.find(b"\n", start)
            if line_end < 0:
                line_end = size
            kind, name, _ = values[index]
            if not (check_exclusions and self._excluded(rule, kind, name)):
                if end > line_end:  # across a line break: this line on its own
                    start, end = scan(UNANCHORED, text, position, line_end)[0]
                if start >= 0:
                    return self._scan_match(
                        rule, values[index], text, position, line_end, start, end
                    )
            position = line_end + 1
            index += 1
            if position > size:
                return None
        while position <= size:
            line_end = text.find(b"\n", position)
            if line_end < 0:
                line_end = size
            kind, name, _ = values[index]
            if not (check_exclusions and self._excluded(rule, kind, name)):
                start, end = scan(UNANCHORED, text, position, line_end)[0]
                if start >= 0:
                    return self._scan_match(
                        rule, values[index], text, position, line_end, start, end
                    )
            position = line_end + 1
            index += 1
        return None

    def _scan_match(
        self,
        rule: Rule,
        found: Value,
        text: bytes,
        line_start: int,
        line_end: int,
        start: int,
        end: int,
    ) -> RuleMatch:
        kind, name, _ = found
        line = text[line_start:line_end]
        value = line.decode("utf-8")
        start -= line_start
        end -= line_start
        if len(line) != len(value):  # byte offsets → character offsets
            chars = len(line[:start].decode("utf-8"))
            start, end = chars, chars + len(line[start:end].decode("utf-8"))
        return RuleMatch(
            rule, f"{kind}:{name}" if kind else name, self._snippet(value, (start, end))
        )

    def hits(self, view_index: int) -> frozenset[int]:
        found = self._hits.get(view_index)
        if found is not None:
            return found
        view = self.ruleset.views[view_index]
        raw = self.raw_text(view.targets) if view.matcher is not None else None
        return self.view_hits(view, raw)

    def view_hits(self, view: View, raw: str | None) -> frozenset[int]:
        """The Set indices of `view` that hit, given its targets' raw text (from `raw_text`)."""
        result: frozenset[int] = frozenset()
        if raw is not None:
            memo = view.memo
            remembered = memo.get(raw)
            if remembered is not None:
                self._hits[view.index] = remembered
                return remembered
            matched = view.match(self._utf8(view.targets, view.chain))
            if matched:
                result = frozenset(matched)
            if len(raw) <= MEMO_MAX_TEXT:
                if len(memo) >= MEMO_MAX_ENTRIES:
                    memo.clear()
                memo[raw] = result
        self._hits[view.index] = result
        return result

    def _utf8(self, targets: tuple[str, ...], chain: tuple[str, ...]) -> bytes:
        """`text(targets, chain)` as UTF-8, encoded once (the Set pass and verification)."""
        key = (targets, chain)
        encoded = self._utf8_texts.get(key)
        if encoded is None:
            encoded = self._utf8_texts[key] = self.text(targets, chain).encode("utf-8")
        return encoded

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
            if condition.scan is not None:
                encoded = self._line_per_value(view.targets, view.chain)
                if encoded is not None:
                    return self._scan(rule, condition.scan, view.targets, encoded)
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
    key = request.key
    if key is None:
        return _evaluate(ruleset, request, route_shadow)
    memo = ruleset.request_memo
    remembered = memo.get(key)
    if remembered is not None:
        allowed, found = remembered
        if not found:
            return PASS
        matches = [RuleMatch(rule, target, excerpt) for rule, target, excerpt in found]
        if allowed:
            matches[0].action = "allow"
            return Verdict("allow", matches=matches)
        return decide(ruleset, matches, route_shadow=route_shadow)
    verdict = _evaluate(ruleset, request, route_shadow)
    if _request_chars(request) <= REQUEST_MEMO_MAX_CHARS:
        if len(memo) >= REQUEST_MEMO_MAX_ENTRIES:
            memo.clear()
        memo[key] = (
            verdict.decision == "allow",
            tuple((m.rule, m.target, m.excerpt) for m in verdict.matches),
        )
    return verdict


def _request_chars(request: Inspection) -> int:
    """About how much text a memo key of this request holds."""
    size = len(request.raw_target) + len(request.path)
    for name, value in request.headers:
        size += len(name) + len(value)
    return size


def _evaluate(ruleset: Ruleset, request: Inspection, route_shadow: bool) -> Verdict:
    run = Evaluation(ruleset, request)
    for rule in ruleset.allow_rules:
        found = run.match(rule)
        if found is not None:
            found.action = "allow"
            return Verdict("allow", matches=[found])
    candidates: set[int] = set(ruleset.always_rules)
    has_body = bool(request.body)
    view_hits = run.view_hits
    for targets, body_only, views in ruleset.detect_groups:
        if body_only and not has_body:
            continue  # every target is a body target: no values without a body
        raw = run.raw_text(targets)
        if raw is None:
            continue  # the targets have no values here: none of the group's views can hit
        for view in views:
            hit = view_hits(view, raw)
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
