"""``python -m openflare_testsite [--host H] [--port P]`` (also the ``openflare-testsite``
console script). ``TESTSITE_HOST`` / ``TESTSITE_PORT`` provide the defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import uvicorn

from .server import DEFAULT_HOST, DEFAULT_PORT, build_config


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="openflare-testsite", description="Run the OpenFlare test origin (uvicorn, h11)."
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("TESTSITE_HOST", DEFAULT_HOST),
        help="bind address (default: $TESTSITE_HOST or %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("TESTSITE_PORT", DEFAULT_PORT)),
        help="TCP port (default: $TESTSITE_PORT or 8000)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "auto"),
        default="asyncio",
        help="event loop implementation (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=("critical", "error", "warning", "info", "debug", "trace"),
        help="uvicorn log level (default: %(default)s; access log is always off)",
    )
    parser.add_argument(
        "--keep-alive-timeout",
        type=int,
        default=5,
        help="idle keep-alive timeout in seconds (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    config = build_config(
        host=args.host,
        port=args.port,
        loop=args.loop,
        log_level=args.log_level,
        timeout_keep_alive=args.keep_alive_timeout,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
