"""Connection-level control (close / TCP reset) through uvicorn's ASGI ``send`` machinery.

ASGI gives an application no socket. uvicorn's h11 (and httptools) protocol hands every
application the bound method ``RequestResponseCycle.send``; the cycle object carries the
``asyncio.Transport`` of the connection and a ``disconnected`` flag. The outermost ASGI
callable (:class:`openflare_testsite.app.OriginApp`) stores that cycle in the scope under
:data:`CYCLE_KEY` before any middleware wraps ``send``.

Under servers that do not expose it (e.g. Starlette's ``TestClient``) the endpoints that need
it answer ``501``.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable, MutableMapping
from typing import Any

CYCLE_KEY = "openflare.server_cycle"
_POLL_INTERVAL = 0.002


class ConnectionControlUnavailable(RuntimeError):
    """The ASGI server does not expose its transport."""


def _looks_like_transport(obj: object) -> bool:
    # uvloop transports are not asyncio.Transport subclasses: duck-type instead.
    return all(hasattr(obj, name) for name in ("abort", "close", "get_extra_info", "is_closing"))


def capture_server_cycle(scope: MutableMapping[str, Any], send: Callable[..., Any]) -> None:
    owner = getattr(send, "__self__", None)
    if owner is not None and _looks_like_transport(getattr(owner, "transport", None)):
        scope[CYCLE_KEY] = owner


def get_transport(scope: MutableMapping[str, Any]) -> asyncio.WriteTransport | None:
    transport = getattr(scope.get(CYCLE_KEY), "transport", None)
    return transport if _looks_like_transport(transport) else None


def connection_control_available(scope: MutableMapping[str, Any]) -> bool:
    return get_transport(scope) is not None


async def drop_connection(
    scope: MutableMapping[str, Any], *, reset: bool, delay_s: float = 0.0
) -> None:
    """Close (FIN) or reset (RST via ``SO_LINGER`` 0) the connection of ``scope``.

    Everything already passed to ``send`` is flushed to the kernel first, then ``delay_s`` is
    waited (so the peer can read it before a reset), then the socket is closed. Returns once
    uvicorn has noticed the disconnect, so it logs no "response not completed" error.
    """
    cycle = scope.get(CYCLE_KEY)
    transport = get_transport(scope)
    if transport is None:
        raise ConnectionControlUnavailable("the ASGI server does not expose its transport")
    await _poll_until(
        lambda: transport.get_write_buffer_size() == 0 or transport.is_closing(), limit_s=5.0
    )
    if delay_s > 0:
        await asyncio.sleep(delay_s)
    if transport.is_closing() or getattr(cycle, "disconnected", False):
        return  # the peer is already gone
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass  # socket already closed underneath us: nothing left to reset
        transport.abort()
    else:
        transport.close()
    await _poll_until(lambda: bool(getattr(cycle, "disconnected", True)), limit_s=2.0)


async def _poll_until(condition: Callable[[], bool], limit_s: float) -> None:
    """Poll state owned by asyncio/uvicorn, which offers nothing to await, until it holds."""
    for _ in range(max(1, round(limit_s / _POLL_INTERVAL))):
        if condition():
            return
        await asyncio.sleep(_POLL_INTERVAL)
