"""`openflare explain URL`: asks a running proxy's admin API (`POST /admin/explain`) what it
would do with a request, and prints the answer stage by stage.

The URL's path and query are percent-encoded the way curl sends them (`encode_url`: spaces,
control and non-ASCII characters become `%XX` of their UTF-8 bytes; everything else, `%XX`
escapes already there included, is kept as typed); `--raw-url` sends it exactly as given.

Colour only on a terminal, and never when `NO_COLOR` is set (https://no-color.org). Exit 0
with an explanation, 1 when the admin API answered with an error or could not be reached, 2 for
unusable arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import IO, Any

DEFAULT_ADMIN_URL = "http://127.0.0.1:8081"
TIMEOUT_S = 10.0
EXIT_FAILED = 1
EXIT_USAGE = 2

GOOD = frozenset({"pass", "allow", "HIT", "STORE", "REVALIDATED", "forwarded", "exempt"})
BAD = frozenset({"block", "deny", "no_route", "error", "ERROR"})
COLOURS = {"good": "32", "bad": "31", "other": "33", "dim": "2", "bold": "1"}


def add_parser(commands: Any) -> None:
    explain = commands.add_parser(
        "explain",
        help="ask a running proxy what it would do with a request (no origin contact)",
        description="Runs a request description through the proxy's decisions via "
        "POST /admin/explain: WAF, rate limits (peeked, no token spent), route, cache "
        "(looked up, nothing stored), without contacting the origin.",
    )
    explain.add_argument("url", help="http(s)://host/path?query, or /path (Host: localhost)")
    explain.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'Name: value'",
        help="a request header (repeatable)",
    )
    explain.add_argument("-X", "--method", default="GET", help="request method (default GET)")
    explain.add_argument("-d", "--data", default=None, help="request body")
    explain.add_argument(
        "--client-ip", default=None, help="client address to explain for (default: yours)"
    )
    explain.add_argument(
        "--admin",
        default=os.environ.get("OPENFLARE_ADMIN_URL", DEFAULT_ADMIN_URL),
        help=f"admin API base URL (default: $OPENFLARE_ADMIN_URL or {DEFAULT_ADMIN_URL})",
    )
    explain.add_argument(
        "--token", default=None, help="admin token (default: $OPENFLARE_ADMIN_TOKEN)"
    )
    explain.add_argument("--json", action="store_true", help="print the raw JSON answer")
    explain.add_argument(
        "--raw-url",
        action="store_true",
        help="send the URL exactly as given (default: percent-encode spaces, control and "
        "non-ASCII characters in its path and query, as curl does)",
    )


def _quote(text: str) -> str:
    if all("!" <= ch <= "~" for ch in text):
        return text  # printable ASCII only: nothing to do
    out: list[str] = []
    for ch in text:
        if "!" <= ch <= "~":
            out.append(ch)  # `%` too: an escape the user typed stays as it is
        else:
            out.extend(f"%{byte:02X}" for byte in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def encode_url(url: str) -> str:
    """The URL as curl would send it: in the path and query (not the scheme and authority,
    not the fragment), every space, control character and non-ASCII character becomes `%XX`
    (its UTF-8 bytes); existing `%XX` sequences and other characters are kept."""
    head, rest = "", url
    scheme, sep, after = url.partition("://")
    if sep and "/" not in scheme:
        ends = [i for i in (after.find("/"), after.find("?"), after.find("#")) if i >= 0]
        cut = min(ends) if ends else len(after)
        head, rest = scheme + sep + after[:cut], after[cut:]
    target, hash_mark, fragment = rest.partition("#")
    return head + _quote(target) + hash_mark + fragment


def parse_headers(lines: list[str]) -> list[list[str]]:
    pairs: list[list[str]] = []
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"header {line!r} is not 'Name: value'")
        pairs.append([name.strip(), value.strip()])
    return pairs


def use_colour(stream: IO[str], environ: dict[str, str] | os._Environ[str]) -> bool:
    return stream.isatty() and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


class Painter:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def paint(self, text: str, kind: str) -> str:
        if not self.enabled:
            return text
        return f"\033[{COLOURS[kind]}m{text}\033[0m"

    def decision(self, word: str, width: int = 0) -> str:
        padded = word.ljust(width)
        if word in GOOD:
            return self.paint(padded, "good")
        if word in BAD:
            return self.paint(padded, "bad")
        return self.paint(padded, "other")


def _ms(entry: dict[str, Any]) -> str:
    return f"{entry['ms']:.2f} ms" if entry.get("ms") is not None else ""


def _stage_lines(entry: dict[str, Any]) -> list[str]:
    """The details of one stage entry, in words."""
    stage = entry["stage"]
    if stage == "waf":
        head = (
            f"score {entry.get('score')}/{entry.get('threshold')}, "
            f"{entry.get('rules_evaluated')} rules evaluated ({entry.get('mode')})"
        )
        lines = [head]
        for found in entry.get("matched", []):
            lines.append(
                f"matched {found['id']} ({found['action']}, score {found['score']}) "
                f"in {found['target']}: {found['excerpt']!r}"
            )
        if not entry.get("matched"):
            lines.append("no rule matched")
        return lines
    if stage == "ratelimit":
        lines = []
        for rule in entry.get("rules", []):
            text = (
                f"{rule['id']}: {rule['remaining']} of {rule['burst']} left after this request, "
                f"bucket {rule['bucket']}"
            )
            if rule.get("retry_after_s"):
                text += f", retry after {rule['retry_after_s']} s"
            if not rule.get("enforce", True):
                text += " (shadow)"
            lines.append(text)
        lines.append("token spent" if entry.get("spent") else "no token spent")
        return lines
    if stage == "route":
        if entry["decision"] == "no_route":
            return ["no route matches this host and path"]
        return [f"-> upstream {entry.get('upstream')} (prefix {entry.get('path_prefix')})"]
    if stage == "cache":
        if entry.get("eligible") is False:
            return [f"not cacheable: {entry.get('reason')}"]
        lines = [f"key {entry.get('key')}"]
        if entry.get("vary"):
            lines.append(f"vary {', '.join(entry['vary'])} -> variant {entry.get('variant')}")
        stored = entry.get("stored")
        if stored:
            state = "fresh" if stored["fresh"] else "stale"
            lines.append(f"stored {stored['status']}, {state}: {stored['freshness']}")
            directives = ", ".join(
                k if v is None else f"{k}={v}" for k, v in stored.get("directives", {}).items()
            )
            lines.append(f"directives: {directives or '(none)'}")
        else:
            lines.append("nothing stored for this key")
        if entry.get("refresh"):
            lines.append(f"background refresh: {entry['refresh']}")
        if entry.get("collapsing"):
            lines.append(f"collapsing: {entry['collapsing']}")
        return lines
    if stage == "upstream":
        if entry["decision"] == "would_forward":
            targets = ", ".join(entry.get("targets", []))
            return [f"{entry.get('url_path')} -> {entry.get('upstream')} ({targets})"]
        return [f"{entry.get('target')} answered {entry.get('status')}"]
    return []


def render(result: dict[str, Any], painter: Painter) -> str:
    summary = result["summary"]
    trace = result["trace"]
    request = trace["request"]
    out = [
        painter.paint(f"{request['method']} {request['host']}{request['target']}", "bold")
        + painter.paint(
            f"  (client {request['client_ip']}, config {result.get('config_hash', '?')})", "dim"
        ),
        f"=> {painter.paint(summary['would'], 'bold')}",
        "",
    ]
    if request.get("path") and request["path"] != request["target"].partition("?")[0]:
        out.insert(2, painter.paint(f"   normalized path {request['path']}", "dim"))
    for entry in trace["stages"]:
        lines = _stage_lines(entry)
        head = f"  {entry['stage']:<10} {painter.decision(entry['decision'], 14)}"
        first = lines[0] if lines else ""
        timing = _ms(entry)
        out.append(f"{head} {first}" + (painter.paint(f"  [{timing}]", "dim") if timing else ""))
        for line in lines[1:]:
            out.append(" " * 28 + line)
    error = trace["response"].get("error")
    if error:
        out.append(f"  {'edge':<10} {painter.decision(error, 14)}")
    return "\n".join(out)


def run(
    args: argparse.Namespace, stdout: IO[str] = sys.stdout, stderr: IO[str] = sys.stderr
) -> int:
    try:
        headers = parse_headers(args.header)
    except ValueError as exc:
        print(f"openflare explain: {exc}", file=stderr)
        return EXIT_USAGE
    token = args.token or os.environ.get("OPENFLARE_ADMIN_TOKEN")
    url = args.url if getattr(args, "raw_url", False) else encode_url(args.url)
    payload: dict[str, Any] = {"method": args.method, "url": url, "headers": headers}
    if args.data is not None:
        payload["body"] = args.data
    if args.client_ip:
        payload["client_ip"] = args.client_ip
    request = urllib.request.Request(
        args.admin.rstrip("/") + "/admin/explain",
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            result = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read())
            message = f"{problem.get('error')}: {problem.get('message')}"
        except ValueError:
            message = exc.reason
        hint = " (set --token or OPENFLARE_ADMIN_TOKEN)" if exc.code == 401 else ""
        print(f"openflare explain: admin API answered {exc.code}: {message}{hint}", file=stderr)
        return EXIT_FAILED
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"openflare explain: cannot reach {args.admin}: {reason}", file=stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(result, indent=2), file=stdout)
        return 0
    print(render(result, Painter(use_colour(stdout, os.environ))), file=stdout)
    return 0
