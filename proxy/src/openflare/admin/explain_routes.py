"""`POST /admin/explain` and `GET /admin/trace[/{request_id}]`: why the edge does what it does.

`POST /admin/explain` takes a request description, `{"method", "url", "headers", "body",
"client_ip"}`, and runs it through the current runtime's own stages with a dry-run
`DecisionTrace` (pipeline/explain.py): the WAF evaluates it, the rate limiter peeks at the
buckets (no token is spent), the router picks the route, the cache looks the key up and says
what it would do (nothing is stored, refreshed or collapsed), and the chain ends in
`DryRunTerminal` instead of the origin. The stages are built for this from the same factories
as the live chain, once per runtime, with their metrics and audit events sent to scratch sinks,
so an explanation never shows up as traffic. The live buckets, cache store and singleflight
table are the real ones (that is what is being explained).

`GET /admin/trace/{request_id}` returns a live request's trace from the ring buffer (only
traced requests are there: admin token or `explain.trace_cidrs`); `GET /admin/trace` lists the
newest ones.
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http import HttpVersion11
from multidict import CIMultiDict, CIMultiDictProxy

from openflare.admin.auth import json_error
from openflare.observability.logging import LogWriter
from openflare.observability.metrics import Metrics
from openflare.pipeline.base import Exchange, Handler, compose
from openflare.pipeline.explain import DecisionTrace, DryRunTerminal

if TYPE_CHECKING:
    from openflare.config.loader import ConfigBundle
    from openflare.deps import Deps
    from openflare.runtime import Runtime, RuntimeHolder
    from openflare.upstream.pool import UpstreamPool, UpstreamPools

MAX_BODY = 256 * 1024  # the explain request itself
MAX_HEADERS = 200
TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
# Not part of a dry run: the access log and its metrics, exception recovery, fault injection,
# the stage that decides whether a live request is traced (a dry run always is) and the one
# that adds Server-Timing (a dry run's answer is JSON, not the response).
NOT_EXPLAINED = frozenset({"access_log", "recovery", "fault", "explain", "server_timing"})
NO_STORE = {"Cache-Control": "no-store"}


class ExplainInputError(ValueError):
    """The request description is unusable; the message says why (a 400)."""


class SilentLog(LogWriter):
    """A LogWriter that writes nothing and starts no thread: the audit events of a dry run."""

    def __init__(self) -> None:  # no super().__init__: no stream, no writer thread
        self.dropped = 0
        self.level = 0
        self.trace_ids = None

    def write_line(self, line: bytes) -> None:
        return None

    def event(self, level: str, event: str, **fields: Any) -> None:
        return None


class _Body:
    """`request.content` for a described body: `read(n)` until it is used up."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = len(self._data)
        chunk, self._data = self._data[:n], self._data[n:]
        return chunk


class DescribedRequest:
    """What the stages read from an aiohttp request, built from an explain description.
    There is no connection: `transport` is None, so the exchange's peer is set explicitly."""

    def __init__(
        self, method: str, scheme: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        self.method = method
        self.scheme = scheme
        self.raw_path = target
        self.version = HttpVersion11
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(headers))
        self.raw_headers = tuple((k.encode(), v.encode()) for k, v in headers)
        self.body_exists = bool(body)
        self.content = _Body(body)
        declared = self.headers.get("Content-Length")
        self.content_length: int | None = (
            int(declared)
            if declared is not None and declared.isdigit()
            else (len(body) if body else None)
        )
        self.transport = None
        self.protocol = None
        self.writer = None


@dataclass(frozen=True, slots=True)
class Description:
    method: str
    scheme: str
    host: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    client_ip: str | None


def _text(data: dict[str, Any], name: str, default: str | None = None) -> str:
    value = data.get(name, default)
    if not isinstance(value, str):
        raise ExplainInputError(f'"{name}" must be a string')
    return value


def _header_pairs(value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = []
        for item in value:
            if not (isinstance(item, list | tuple) and len(item) == 2):
                raise ExplainInputError('"headers" as a list must hold [name, value] pairs')
            pairs.append((item[0], item[1]))
    else:
        raise ExplainInputError('"headers" must be an object or a list of [name, value] pairs')
    if len(pairs) > MAX_HEADERS:
        raise ExplainInputError(f'"headers": at most {MAX_HEADERS}')
    out: list[tuple[str, str]] = []
    for name, text in pairs:
        if not isinstance(name, str) or not name or not set(name) <= TOKEN_CHARS:
            raise ExplainInputError(f"header name {name!r} is not a valid HTTP token")
        if not isinstance(text, str) or any(c in text for c in "\r\n\0"):
            raise ExplainInputError(f"header {name}: the value must be a string on one line")
        out.append((name, text))
    return out


def parse_description(data: Any, default_client_ip: str | None) -> Description:
    """The explain request body, validated; ExplainInputError says what is wrong."""
    if not isinstance(data, dict):
        raise ExplainInputError("the body must be a JSON object")
    unknown = set(data) - {"method", "url", "headers", "body", "client_ip"}
    if unknown:
        raise ExplainInputError(f"unknown field(s): {', '.join(sorted(unknown))}")
    method = _text(data, "method", "GET").upper()
    if not method or not set(method) <= TOKEN_CHARS:
        raise ExplainInputError('"method" must be an HTTP method token such as GET')
    if "url" not in data:
        raise ExplainInputError('"url" is required: http(s)://host/path?query, or /path')
    url = _text(data, "url").strip()
    headers = _header_pairs(data.get("headers"))
    given_host = next((v for k, v in headers if k.lower() == "host"), None)
    if url.startswith("/"):
        scheme, netloc, target = "http", "", url
    else:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ExplainInputError('"url" must be http(s)://host/path or start with /')
        scheme, netloc = parts.scheme, parts.netloc
        target = url[len(f"{parts.scheme}://{parts.netloc}") :] or "/"
        if "#" in target:
            target = target.split("#", 1)[0]  # a client never sends the fragment
        if not target.startswith("/"):
            target = "/" + target
    if given_host is None:
        headers.insert(0, ("Host", netloc or "localhost"))
    body_text = data.get("body")
    if body_text is not None and not isinstance(body_text, str):
        raise ExplainInputError('"body" must be a string')
    body = (body_text or "").encode()
    client_ip = data.get("client_ip", default_client_ip)
    if client_ip is not None:
        if not isinstance(client_ip, str):
            raise ExplainInputError('"client_ip" must be a string')
        try:
            client_ip = str(ipaddress.ip_address(client_ip.strip()))
        except ValueError:
            raise ExplainInputError(f'"client_ip" {client_ip!r} is not an IP address') from None
    host = given_host if given_host is not None else (netloc or "localhost")
    return Description(method, scheme, host, target, headers, body, client_ip)


class NoUpstreams:
    """`Deps.upstreams` for the dry run, which never contacts an upstream: building its stages
    must neither create connection pools nor retire the live ones."""

    def refresh(self, configs: Any, tracing: Any = None) -> dict[str, UpstreamPool]:
        return {}


def build_explain_handler(bundle: ConfigBundle, deps: Deps) -> Handler:
    """The live chain's stages, built again from the same factories, minus `NOT_EXPLAINED`,
    ending in `DryRunTerminal`; metrics and audit events go to scratch sinks, and no upstream
    pool is made (the cache store, buckets and singleflight table are the live ones)."""
    from openflare.runtime import PIPELINE

    scratch = replace(
        deps,
        metrics=Metrics(),
        log=SilentLog(),
        upstreams=cast("UpstreamPools", NoUpstreams()),
    )
    stages = []
    for name, factory in PIPELINE:
        if name in NOT_EXPLAINED:
            continue
        stage = factory(bundle, scratch)
        if stage is not None:
            stages.append(stage)
    return compose(stages, DryRunTerminal(bundle))


def _first(trace: dict[str, Any], stage: str) -> dict[str, Any] | None:
    for entry in trace["stages"]:
        if entry["stage"] == stage:
            return cast(dict[str, Any], entry)
    return None


def summarize(record: dict[str, Any], answered_by: str, status: int) -> dict[str, Any]:
    """The short answer: who would answer, with what, and why."""
    waf = _first(record, "waf")
    ratelimit = _first(record, "ratelimit")
    cache = _first(record, "cache")
    upstream = _first(record, "upstream")
    error = record["response"]["error"]
    summary: dict[str, Any] = {
        "route": record["route"],
        "upstream": record["upstream"],
        "waf": None,
        "ratelimit": None,
        "cache": None,
    }
    if waf is not None:
        summary["waf"] = {
            "decision": waf["decision"],
            "would_block": waf["decision"] == "block",
            "rules": [m["id"] for m in waf.get("matched", [])],
            "score": waf.get("score"),
            "threshold": waf.get("threshold"),
        }
    if ratelimit is not None:
        rules = ratelimit.get("rules", [])
        summary["ratelimit"] = {
            "decision": ratelimit["decision"],
            "would_allow": ratelimit["decision"] != "deny",
            "rules": {r["id"]: r["remaining"] for r in rules},
        }
    if cache is not None:
        stored = cache.get("stored")
        summary["cache"] = {
            "decision": cache["decision"],
            "key": cache.get("key"),
            "stored": stored is not None,
            "fresh": stored["fresh"] if stored else None,
            "age_s": stored["age_s"] if stored else None,
            "ttl_s": stored["ttl_s"] if stored else None,
        }
    response: dict[str, Any]
    if answered_by == "origin" and upstream is not None:
        response = {"source": "origin", "status": None}
        would = (
            f"forward {record['request']['method']} {upstream['url_path']} to upstream "
            f"{upstream['upstream']} ({', '.join(upstream['targets'])});"
            " the origin's answer decides"
        )
    elif answered_by == "cache" and cache is not None:
        response = {"source": "cache", "status": status}
        stored = cache.get("stored") or {}
        would = (
            f"answer {status} from the cache ({cache['decision']}, age {stored.get('age_s')} s,"
            f" ttl {stored.get('ttl_s')} s)"
        )
    elif answered_by == "waf":
        response = {"source": "waf", "status": status}
        would = f"refuse with {status}: WAF rules {', '.join(summary['waf']['rules'])}"
    elif answered_by == "ratelimit":
        response = {"source": "ratelimit", "status": status}
        denied = [r["id"] for r in (ratelimit or {}).get("rules", []) if not r["allowed"]]
        would = f"refuse with {status}: rate limit {', '.join(denied)}"
    else:
        response = {"source": "edge", "status": status}
        would = f"answer {status} from the edge" + (f" ({error})" if error else "")
    summary["response"] = response
    summary["would"] = would
    return summary


def add_explain_routes(app: web.Application, holder: RuntimeHolder, deps: Deps) -> None:
    built: dict[str, tuple[Runtime, Handler]] = {}

    def handler_for(runtime: Runtime) -> Handler:
        cached = built.get("current")
        if cached is None or cached[0] is not runtime:
            cached = (runtime, build_explain_handler(runtime.bundle, deps))
            built["current"] = cached  # one per runtime; the old one goes with it
        return cached[1]

    async def explain(request: web.Request) -> web.Response:
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            return json_error(400, "bad_request", f"body larger than {MAX_BODY} bytes")
        try:
            data = json.loads(raw or b"null")
        except ValueError as exc:
            return json_error(400, "bad_request", f"body is not JSON: {exc}")
        try:
            described = parse_description(data, request.remote)
        except ExplainInputError as exc:
            return json_error(400, "bad_request", str(exc))
        runtime = holder.runtime
        fake = DescribedRequest(
            described.method, described.scheme, described.target, described.headers, described.body
        )
        exchange = Exchange(cast(web.BaseRequest, fake), time.monotonic(), False)
        if described.client_ip is not None:
            exchange.peer_ip = exchange.client_ip = described.client_ip
        exchange.continue_sent = True  # there is no client connection to answer
        trace = DecisionTrace(trigger="explain", dry_run=True)
        exchange.trace = trace
        try:
            response = await handler_for(runtime)(exchange)
        except Exception as exc:  # a stage failed on this description: say so, do not 500
            return json_error(422, "explain_failed", f"{type(exc).__name__}: {exc}"[:500])
        answered_by = trace.answered_by or "edge"
        status = response.status
        record = trace.finish(exchange, None if answered_by == "origin" else status)
        return web.json_response(
            {
                "summary": summarize(record, answered_by, status),
                "trace": record,
                "config_hash": runtime.bundle.hash,
            },
            headers=NO_STORE,
        )

    async def trace_by_id(request: web.Request) -> web.Response:
        request_id = request.match_info["request_id"]
        record = deps.traces.buffer.get(request_id)
        if record is None:
            return json_error(
                404,
                "trace_not_found",
                f"no trace for request {request_id!r}: only traced requests are kept, "
                f"the last {deps.traces.buffer.capacity}",
            )
        return web.json_response(record, headers=NO_STORE)

    async def recent_traces(request: web.Request) -> web.Response:
        buffer = deps.traces.buffer
        try:
            limit = max(1, min(int(request.query.get("limit", "50")), buffer.capacity))
        except ValueError:
            return json_error(400, "bad_request", "limit must be a whole number")
        return web.json_response(
            {
                "capacity": buffer.capacity,
                "kept": len(buffer),
                "recorded": buffer.recorded,
                "traces": buffer.recent(limit),
            },
            headers=NO_STORE,
        )

    app.router.add_post("/admin/explain", explain)
    app.router.add_get("/admin/trace", recent_traces)
    app.router.add_get("/admin/trace/{request_id}", trace_by_id)
