"""Answering a request inside the read callback: the inline run, and its handover to aiohttp.

aiohttp serves each request with a `BaseRequest`, a `StreamWriter`, a task, and its dispatch
around the handler: about 60 µs of Python per request here, more than the whole stage chain
of a cache HIT (docs/12-performance.md). For a request without a body, `EdgeRequestHandler`
(app.py) runs the stage chain straight from `data_received`, on a `LeanRequest` built from the
parsed message, while the coroutine never waits:

- The chain finishes without waiting (a HIT from the memory store, answered with
  `StoredResponse.send_now`): the request is done; no aiohttp request, task or dispatch.
- The chain waits (a Redis lookup, a MISS going to the origin, a client that reads slowly) or
  needs what only aiohttp's request has (`Exchange.full_request`: a streamed or non-stored
  answer, the request body): the run stops where it is, the message goes into aiohttp's
  queue as usual, and the handler aiohttp calls for it finds the `Handover`, puts aiohttp's
  request into the exchange and continues the same coroutine in aiohttp's task for it
  (`Handover.resume`).
  Nothing runs twice: the stages before that point ran once, inline.

```mermaid
sequenceDiagram
    participant L as event loop
    participant P as EdgeRequestHandler.data_received
    participant C as stage chain (coroutine)
    participant A as aiohttp start() / handler
    L->>P: bytes
    P->>C: send(None) on a LeanRequest
    alt finishes (HIT)
        C-->>P: StopIteration(response), already written
    else waits or needs aiohttp's request
        C-->>P: yields (a future, or HANDOVER)
        P->>A: message queued, start() woken
        A->>C: Handover.resume(request): same coroutine, in aiohttp's task
    end
```

Code that needs to run in a task (`asyncio.timeout`, `asyncio.current_task`) awaits
`openflare.handover.in_a_task()` first: a no-op in a task, a handover inline.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any

from aiohttp import hdrs

from openflare.handover import HANDOVER

if TYPE_CHECKING:
    from aiohttp import web
    from aiohttp.http_writer import HttpVersion, StreamWriter
    from aiohttp.web_protocol import RequestHandler
    from multidict import CIMultiDictProxy

    from openflare.pipeline.base import Exchange


class LeanRequest:
    """What the stages read of a request, taken from aiohttp's parsed message; the same values
    as `web.BaseRequest` gives for a request without a body."""

    __slots__ = (
        "method",
        "raw_path",
        "version",
        "headers",
        "raw_headers",
        "keep_alive",
        "scheme",
        "protocol",
        "_payload_writer",
        "_message",
    )

    body_exists = False  # only requests without a body are run inline

    def __init__(self, message: Any, protocol: RequestHandler, writer: StreamWriter, scheme: str):
        self.method: str = message.method
        self.raw_path: str = message.path
        self.version: HttpVersion = message.version
        self.headers: CIMultiDictProxy[str] = message.headers
        self.raw_headers: tuple[tuple[bytes, bytes], ...] = message.raw_headers
        self.keep_alive: bool = not message.should_close
        self.scheme = scheme
        self.protocol = protocol
        self._payload_writer = writer
        self._message = message

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.protocol.transport

    @property
    def writer(self) -> StreamWriter:
        return self._payload_writer

    @property
    def content_length(self) -> int | None:
        value = self.headers.get(hdrs.CONTENT_LENGTH)
        return None if value is None else int(value)


class Handover:
    """A chain that stopped inline, waiting for aiohttp's handler to continue it."""

    __slots__ = ("message", "_exchange", "_steps", "_yielded", "_context", "_error", "_response")

    def __init__(
        self,
        message: Any,
        exchange: Exchange | None,
        steps: Generator[Any, None, web.StreamResponse] | None,
        yielded: Any,
        context: contextvars.Context,
        error: BaseException | None = None,
        response: web.StreamResponse | None = None,
    ) -> None:
        self.message = message
        self._exchange = exchange
        self._steps = steps
        self._yielded = yielded
        self._context = context
        self._error = error
        self._response = response  # finished inline but not sent: aiohttp sends it

    def resume(self, request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        """aiohttp's handler for this message: continue the chain with aiohttp's request, in
        aiohttp's task for it (each step runs in the inline run's context)."""
        if self._exchange is not None:
            self._exchange.request = request
        if self._error is not None:  # the inline run raised: aiohttp handles it as usual
            raise self._error
        if self._response is not None:
            answer: asyncio.Future[web.StreamResponse] = asyncio.get_running_loop().create_future()
            answer.set_result(self._response)
            return answer
        assert self._steps is not None
        return _Trampoline(self._steps, self._yielded, None, self._context)

    def cache_status(self) -> str:
        """The request's cache outcome, once its chain finished ("" when it never got there)."""
        return self._exchange.cache_status if self._exchange is not None else ""

    def abandon(self) -> None:
        """The connection closed before aiohttp reached this message: cancel the chain as a
        handler is cancelled when its client leaves (its `finally` blocks run, in a task)."""
        if self._steps is None:
            return
        trampoline = _Trampoline(self._steps, None, asyncio.CancelledError(), self._context)
        asyncio.get_running_loop().create_task(_await(trampoline))


def start_inline(
    start: Callable[[], tuple[Exchange, Awaitable[web.StreamResponse]]], message: Any
) -> web.StreamResponse | Handover:
    """`start()` (the exchange and its chain; the plain-`def` stages at the front run here),
    then the chain until it finishes (its response) or first waits (a `Handover`), all in a
    context of its own."""
    context = contextvars.copy_context()
    exchange: Exchange | None = None
    try:
        exchange, chain = context.run(start)
        steps = chain.__await__()
        yielded = context.run(steps.send, None)
    except StopIteration as finished:
        response: web.StreamResponse = finished.value
        if not response.prepared:  # (every stage sends what it answers; in case one did not)
            return Handover(message, exchange, None, None, context, response=response)
        return response
    except BaseException as error:
        return Handover(message, exchange, None, None, context, error)
    return Handover(message, exchange, steps, yielded, context)


async def _await(trampoline: _Trampoline) -> web.StreamResponse:
    return await trampoline


class _Trampoline:
    """Drives a coroutine that was started outside any task from inside one: what it yielded
    last is yielded again to the task (which waits for that future), then it goes on, each
    step in the inline run's context (its context variables, e.g. a trace's span, stay)."""

    __slots__ = ("_steps", "_yielded", "_error", "_context")

    def __init__(
        self,
        steps: Generator[Any, None, web.StreamResponse],
        yielded: Any,
        error: BaseException | None,
        context: contextvars.Context,
    ) -> None:
        self._steps = steps
        self._yielded = yielded
        self._error = error
        self._context = context

    def __await__(self) -> Generator[Any, None, web.StreamResponse]:
        steps, yielded, error, run = self._steps, self._yielded, self._error, self._context.run
        while True:
            if error is None and yielded is not HANDOVER:  # HANDOVER: already in a task
                try:
                    yield yielded
                except BaseException as exc:  # cancellation: into the chain
                    error = exc
            try:
                if error is not None:
                    pending, error = error, None
                    yielded = run(steps.throw, pending)
                else:
                    yielded = run(steps.send, None)
            except StopIteration as finished:
                response: web.StreamResponse = finished.value
                return response
