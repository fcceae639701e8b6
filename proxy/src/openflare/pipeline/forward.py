"""Stage 12 — forward to the origin (the end of the chain).

Request and response bodies are streamed, never buffered whole: the request body is counted
while it streams (413 past `security.max_request_body_bytes`, 408 when a chunk takes longer
than `server.read_timeout_ms`) and is forwarded intact. Failures map to statuses the way nginx
and Envoy do: origin too slow (connect or time-to-first-byte) → 504, refused or reset → 502,
invalid HTTP → 502, each with the request ID in a short body and counted by kind. If the origin
breaks off mid-body, the client connection is aborted so it sees a truncated response, never a
short one that looks complete.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from openflare.clientip import ClientIpResolver
from openflare.handover import in_a_task
from openflare.observability.metrics import trace_exemplar
from openflare.observability.tracing import tracing_for
from openflare.pipeline.base import Exchange, plain_error
from openflare.pipeline.stored_response import RenderedResponse
from openflare.upstream.headers import (
    DROPPED_REQUEST_HEADERS,
    NEVER_FORWARDED,
    REBUILT_REQUEST_HEADERS,
    client_response_headers,
    upstream_request_headers,
)
from openflare.upstream.http1 import ConnectFailed, UpstreamResponse

if TYPE_CHECKING:
    from openflare.config.loader import ConfigBundle
    from openflare.deps import Deps
    from openflare.observability.logging import LogWriter
    from openflare.observability.metrics import Metrics
    from openflare.upstream.pool import UpstreamPool
    from openflare.upstream.targets import Target

NO_BODY_STATUSES = frozenset({204, 304})
# RFC 9110 §9.2.2: may be sent again on another target when the first one failed before any
# response (only without a request body, which has been consumed by then)
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class RequestBodyError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _BodyStream:
    """The client's request body as an async iterator, counted and timed as it streams."""

    __slots__ = (
        "_content",
        "_prefix",
        "_limit",
        "_timeout",
        "_deadline",
        "error",
        "sent",
        "finished",
    )

    def __init__(
        self,
        content: aiohttp.StreamReader,
        prefix: bytes,
        limit: int,
        timeout: float,
        deadline: float | None = None,
    ) -> None:
        self._content = content
        self._prefix = prefix
        self._limit = limit
        self._timeout = timeout  # per chunk (server.read_timeout_ms)
        self._deadline = deadline  # whole body, monotonic (server.body_timeout_ms; slow POST)
        self.error: RequestBodyError | None = None
        self.sent = len(prefix)
        self.finished = asyncio.Event()  # set when the body ended, completely or not

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks():
                yield chunk
        finally:
            self.finished.set()

    async def _chunks(self) -> AsyncIterator[bytes]:
        if self._prefix:
            yield self._prefix  # already read (and checked against the limit) by the WAF
        content = self._content
        while True:
            wait = self._timeout
            if self._deadline is not None:
                wait = min(wait, self._deadline - time.monotonic())
            try:
                if wait <= 0:
                    raise TimeoutError
                async with asyncio.timeout(wait):
                    chunk = await content.readany()
            except TimeoutError:
                late = self._deadline is not None and time.monotonic() >= self._deadline - 0.001
                self.error = RequestBodyError(408, "body_timeout" if late else "body_read_timeout")
                raise self.error from None
            if not chunk:
                return
            self.sent += len(chunk)
            if self.sent > self._limit:
                self.error = RequestBodyError(413, "body_too_large")
                raise self.error
            yield chunk


class UpstreamFailure(Exception):
    """The origin could not be reached or answered badly; `status` is what the client gets."""

    def __init__(self, upstream: str, kind: str, status: int, message: str) -> None:
        super().__init__(message)
        self.upstream = upstream
        self.kind = kind
        self.status = status
        self.message = message


# Headers origins commonly honour for URL building that are not part of the cache key: never
# forwarded on a request whose response may be stored (cache poisoning), nor client validators
# (the cache wants a full response it can store; it adds its own validators to revalidate).
CACHE_FETCH_DROPPED = frozenset(
    {
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-scheme",
        "forwarded",  # RFC 7239 host=/proto= from the client: the proxy rebuilds X-Forwarded-*
        "x-host",
        "x-original-host",
        "x-forwarded-server",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "if-none-match",
        "if-modified-since",
        "if-match",
        "if-unmodified-since",
        "if-range",
        "range",
    }
)


class UpstreamClient:
    """Opens upstream exchanges and relays their responses; shared by the forward stage and
    the cache stage (which fetches on its own for storable requests)."""

    __slots__ = (
        "_pools",
        "_resolver",
        "_metrics",
        "_max_body",
        "_read_timeout",
        "_log",
        "_body_timeout",
        "_trace_header",
        "_dropped",
        "_dropped_for_cache",
    )

    def __init__(
        self,
        pools: Mapping[str, UpstreamPool],
        resolver: ClientIpResolver,
        metrics: Metrics,
        max_body: int,
        read_timeout: float,
        log: LogWriter | None = None,
        body_timeout: float = 0.0,
        trace_header: str | None = None,
    ) -> None:
        self._pools = pools
        self._resolver = resolver
        self._metrics = metrics
        self._max_body = max_body
        self._read_timeout = read_timeout
        self._log = log
        self._body_timeout = body_timeout
        # the decision-trace token header (explain.trace_header) is never forwarded
        trace_header = trace_header.lower() if trace_header else None
        never = frozenset({trace_header}) if trace_header else frozenset()
        self._dropped = DROPPED_REQUEST_HEADERS | never
        self._dropped_for_cache = DROPPED_REQUEST_HEADERS | CACHE_FETCH_DROPPED | never
        # named like a header the proxy adds itself: that one is dropped too (filtered after)
        self._trace_header = trace_header if trace_header in REBUILT_REQUEST_HEADERS else None

    async def open(
        self,
        exchange: Exchange,
        *,
        for_cache: bool = False,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> UpstreamResponse:
        """Send the request upstream and return the response once its headers arrived.
        Raises UpstreamFailure or RequestBodyError."""
        assert exchange.route is not None, "the route stage runs before any upstream request"
        pool = self._pools[exchange.route.upstream]
        await in_a_task()  # the upstream client's timeouts need a task (pipeline/inline.py)
        request = exchange.request
        headers = upstream_request_headers(
            request.headers,
            request_id=exchange.request_id,
            peer_ip=exchange.peer_ip,
            peer_trusted=not for_cache and self._resolver.is_trusted(exchange.peer_ip),
            scheme=request.scheme,
            pass_host=pool.pass_host_header,
            dropped=self._dropped_for_cache if for_cache else self._dropped,
        )
        if self._trace_header is not None:
            dropped = self._trace_header
            headers = [(k, v) for k, v in headers if k.lower() != dropped]
        if extra_headers:
            headers.extend(extra_headers)
        path = exchange.path + ("?" + exchange.query if exchange.query else "")
        body = None
        if request.body_exists and not for_cache:
            body = _BodyStream(
                (await exchange.full_request()).content,
                exchange.body_prefix,
                self._max_body,
                self._read_timeout,
                exchange.started + self._body_timeout if self._body_timeout else None,
            )
            await exchange.send_continue()  # every earlier stage accepted the request
        targets = pool.targets
        method = exchange.method
        retryable = body is None and method in IDEMPOTENT_METHODS and len(targets) > 1
        attempts = 1 + pool.retries if retryable else 1
        http1 = pool.http1 if body is None else None  # upstream/pool.py decides, once
        tried: list[Target] = []
        started = time.monotonic()
        upstream: UpstreamResponse
        while True:
            target = targets.pick(tried)
            assert target is not None, "fewer attempts than targets"
            tried.append(target)
            try:
                if http1 is not None:
                    origin = target.origin
                    assert origin is not None, "the lean client is only built for http targets"
                    upstream = await http1.send(
                        origin,
                        method,
                        origin.request_head(method, path, headers),
                        pool.header_timeout,
                    )
                elif body is None:
                    async with asyncio.timeout(pool.header_timeout):
                        upstream = await self._session_request(pool, target, method, path, headers)
                else:
                    sending = self._session_request(pool, target, method, path, headers, body)
                    upstream = await self._after_body(sending, body, pool.header_timeout)
            except Exception as exc:
                if body is not None and body.error is not None:
                    raise body.error from None
                failure = self._failure(pool, exc)
                if targets.failed(target) and self._log is not None:
                    self._log.event(
                        "warning", "upstream_target_ejected", upstream=pool.name, target=target.url
                    )
                # nothing reached the client yet; a time-to-first-byte timeout is not retried
                # (the origin may still be working on it, and the 504 stays on time)
                nothing_sent = failure.kind != "timeout" or isinstance(
                    exc, aiohttp.ConnectionTimeoutError
                )
                if len(tried) < attempts and nothing_sent:
                    continue
                raise failure from exc
            targets.succeeded(target)
            break
        elapsed = time.monotonic() - started
        exchange.upstream_status = upstream.status
        exchange.upstream_ms = round(elapsed * 1000, 3)
        if exchange.trace is not None:
            exchange.trace.note_upstream(pool.name, target.url, len(tried), elapsed, upstream)
        span = exchange.span
        if span is None:
            self._metrics.upstream_latency(pool.name).observe(elapsed)
        else:
            self._metrics.upstream_latency(pool.name).observe(elapsed, trace_exemplar(span))
        return upstream

    async def relay(
        self,
        exchange: Exchange,
        upstream: UpstreamResponse,
        prefix: bytes = b"",
        complete: bool = False,
    ) -> web.StreamResponse:
        """Stream `upstream` to the client (`prefix`: body bytes already read from it;
        `complete`: they are the whole body)."""
        has_body = exchange.method != "HEAD" and upstream.status not in NO_BODY_STATUSES
        content = upstream.content
        if has_body and not complete and content.is_eof() and content.exception() is None:
            prefix += content.read_nowait()  # the whole body already arrived (small responses)
            complete = True
        # a body that arrived whole goes out with the headers in one transport write, as a HIT
        # does; a streamed one gets its headers first, before the origin's first body bytes
        headers = client_response_headers(upstream.headers)
        whole = has_body and complete
        response: web.StreamResponse
        if whole:
            response = RenderedResponse(upstream.status, prefix, headers, upstream.reason)
        else:
            response = (web.StreamResponse if has_body else _HeadOnlyResponse)(
                status=upstream.status, reason=upstream.reason, headers=headers
            )
            length = upstream.content_length
            if length is not None:
                if has_body:
                    response.content_length = length
                else:
                    response.headers["Content-Length"] = str(length)
        try:
            if whole:
                await exchange.send(response)  # counts exchange.bytes_sent
            elif not has_body:
                await exchange.start_response(response)
                await response.write_eof()
            else:
                await exchange.start_response(response)
                if prefix:
                    await response.write(prefix)
                    exchange.bytes_sent += len(prefix)
                async for chunk in content.iter_any():
                    await response.write(chunk)
                    exchange.bytes_sent += len(chunk)
                await response.write_eof()
        except ConnectionResetError:
            # app.py cuts a client that stopped reading for server.write_timeout_ms
            timed_out = getattr(exchange.request.protocol, "write_timed_out", False)
            exchange.error = "client_write_timeout" if timed_out else "client_disconnected"
            upstream.close()  # the unread rest of the body makes the connection unusable
            return response
        except asyncio.CancelledError:
            # the client left (handler cancellation) or shutdown: free the upstream connection
            timed_out = getattr(exchange.request.protocol, "write_timed_out", False)
            exchange.error = exchange.error or (
                "client_write_timeout" if timed_out else "client_disconnected"
            )
            upstream.close()
            raise
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):  # upstreams[].total_timeout_ms ran out mid-body
                exchange.error = "upstream_total_timeout"
                self._metrics.upstream_error(upstream_name(exchange), "timeout")
            else:
                exchange.error = f"upstream_body_{type(exc).__name__}"
                self._metrics.upstream_error(upstream_name(exchange), "reset")
            upstream.close()
            transport = exchange.request.transport
            if transport is not None:
                transport.abort()  # the client must see the truncation
            return response
        upstream.release()
        return response

    @staticmethod
    async def _session_request(
        pool: UpstreamPool,
        target: Target,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: _BodyStream | None = None,
    ) -> aiohttp.ClientResponse:
        return await pool.session.request(
            method,
            URL(target.url + path, encoded=True),
            headers=headers,
            data=body.__aiter__() if body is not None else None,
            allow_redirects=False,
            compress=None,
        )

    @staticmethod
    async def _after_body(
        sending: Awaitable[aiohttp.ClientResponse], body: _BodyStream, header_timeout: float
    ) -> aiohttp.ClientResponse:
        """The time-to-first-byte timeout starts once the whole body is sent, so a slow
        upload (bounded per chunk by read_timeout_ms) is never blamed on the origin."""
        exchange_task: asyncio.Future[aiohttp.ClientResponse] = asyncio.ensure_future(sending)
        body_sent = asyncio.ensure_future(body.finished.wait())
        try:
            await asyncio.wait((exchange_task, body_sent), return_when=asyncio.FIRST_COMPLETED)
            async with asyncio.timeout(header_timeout):
                return await exchange_task
        finally:
            body_sent.cancel()
            if not exchange_task.done():
                exchange_task.cancel()

    def _failure(self, pool: UpstreamPool, exc: BaseException) -> UpstreamFailure:
        if isinstance(exc, TimeoutError):
            kind, status, message = (
                "timeout",
                504,
                "Gateway Timeout (origin did not answer in time)",
            )
        elif isinstance(exc, aiohttp.ClientConnectorError | ConnectFailed):
            kind, status, message = "connect", 502, "Bad Gateway (cannot connect to origin)"
        elif isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
            kind, status, message = "reset", 502, "Bad Gateway (origin closed the connection)"
        elif isinstance(exc, aiohttp.ClientError | HttpProcessingError | ValueError):
            kind, status, message = "protocol", 502, "Bad Gateway (invalid response from origin)"
        else:
            raise exc
        self._metrics.upstream_error(pool.name, kind)
        return UpstreamFailure(pool.name, kind, status, message)

    def failure_response(self, exchange: Exchange, failure: UpstreamFailure) -> web.StreamResponse:
        exchange.error = f"upstream_{failure.kind}"
        return plain_error(exchange, failure.status, failure.message)

    def refuse_body(self, exchange: Exchange, error: RequestBodyError) -> web.StreamResponse:
        self._metrics.reject("forward", error.reason)
        exchange.error = error.reason
        message = "Content Too Large" if error.status == 413 else "Request Timeout"
        response = plain_error(exchange, error.status, message)
        response.force_close()
        return response


class _HeadOnlyResponse(web.StreamResponse):
    """A relayed answer without a body (HEAD, 204, 304): its head goes out in one write at
    `write_eof`, as a `web.Response`'s does."""

    _send_headers_immediately = False


def upstream_name(exchange: Exchange) -> str:
    return exchange.route.upstream if exchange.route is not None else "none"


class ForwardStage:
    __slots__ = ("_client",)

    def __init__(self, client: UpstreamClient) -> None:
        self._client = client

    async def __call__(self, exchange: Exchange) -> web.StreamResponse:
        client = self._client
        try:
            upstream = await client.open(exchange)
        except RequestBodyError as error:
            return client.refuse_body(exchange, error)
        except UpstreamFailure as failure:
            return client.failure_response(exchange, failure)
        return await client.relay(exchange, upstream)


def build_client(bundle: ConfigBundle, deps: Deps) -> UpstreamClient:
    """The runtime's one upstream client, built once per bundle: the cache stage and the
    forward stage use the same one."""
    built = deps.upstream_client
    if built is not None and built[0] is bundle:
        return built[1]
    client = _new_client(bundle, deps)
    deps.upstream_client = (bundle, client)
    return client


def _new_client(bundle: ConfigBundle, deps: Deps) -> UpstreamClient:
    security = bundle.proxy.security
    explain = bundle.proxy.explain
    tracing, _ = tracing_for(bundle.proxy.tracing, on_export=deps.metrics.export_result)
    return UpstreamClient(
        deps.upstreams.refresh(bundle.proxy.upstreams, tracing),
        ClientIpResolver(security.trusted_proxies, trust_all=security.trust_x_forwarded_for),
        deps.metrics,
        security.max_request_body_bytes,
        bundle.proxy.server.read_timeout_ms / 1000,
        deps.log,
        bundle.proxy.server.body_timeout_ms / 1000,
        # the default name is always dropped (upstream/headers.py NEVER_FORWARDED)
        explain.trace_header
        if explain.trace_enabled and explain.trace_header.lower() not in NEVER_FORWARDED
        else None,
    )


def build_terminal(bundle: ConfigBundle, deps: Deps) -> ForwardStage:
    return ForwardStage(build_client(bundle, deps))
