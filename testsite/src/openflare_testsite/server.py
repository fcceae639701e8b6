"""uvicorn configuration shared by the CLI and the tests."""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from .app import create_app

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def build_config(
    app: FastAPI | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    loop: str = "asyncio",
    log_level: str = "warning",
    timeout_keep_alive: int = 5,
) -> uvicorn.Config:
    """uvicorn settings the origin relies on.

    * ``http="h11"``: request-target bytes reach ``scope["raw_path"]`` untouched and the
      connection-fault endpoints can reach the transport through ``send.__self__``;
    * ``proxy_headers=False``: ``scope["client"]`` stays the TCP peer even when the proxy
      sends ``X-Forwarded-For`` (uvicorn would otherwise rewrite it for 127.0.0.1 peers);
    * ``date_header=False``: the app sends ``Date`` itself, from the same clock reading as
      ``X-Origin-Time`` (so ``/cache/expires/{n}`` has ``Expires == Date + n`` exactly);
    * a 1 MiB h11 header-block limit, so the proxy (not the origin) enforces header limits;
    * a short graceful-shutdown timeout, because ``/fault/hang`` never finishes by itself.
    """
    return uvicorn.Config(
        app if app is not None else create_app(),
        host=host,
        port=port,
        http="h11",
        loop=loop,
        lifespan="off",
        log_level=log_level,
        access_log=False,
        proxy_headers=False,
        server_header=True,
        date_header=False,
        timeout_keep_alive=timeout_keep_alive,
        timeout_graceful_shutdown=2,
        h11_max_incomplete_event_size=1024 * 1024,
    )


def bind_socket(host: str = DEFAULT_HOST, port: int = 0) -> socket.socket:
    """A listening-ready bound socket (``port=0`` picks a free port), for ``Server.run``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock
