"""The Python ceiling, and the least a proxy on aiohttp can do per request.

The ceiling: aiohttp's low-level `web.Server` (the same server class OpenFlare runs on, no
router, no middleware, no access log) on uvloop, answering the origin's files from memory with
the same `Content-Type` and `Cache-Control` as the origin. A proxy on aiohttp cannot answer a
request with less Python than this, so OpenFlare's HIT path is reported as a ratio of it.

With `--upstream`, the same server is a minimal pass-through proxy instead: every request is
fetched from the origin and answered with its status, body and end-to-end headers, and
nothing else (no stage, log, metric, timeout policy or header rewriting). It shows what the
pass-through target means: the share of the ceiling a proxy reaches with no pipeline at all.

- `--client session`: `aiohttp.ClientSession` as it is usually used (one session, default
  connector, `await response.read()`).
- `--client lean`: OpenFlare's pooled HTTP/1.1 client (`openflare.upstream.http1`), the one
  its forward stage uses for requests without a body.

    python -m benchmarks.ceiling --port 9000 --root DIR
    python -m benchmarks.ceiling --port 9000 --upstream http://127.0.0.1:8000 --client lean
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop
from aiohttp import web
from multidict import CIMultiDictProxy

from openflare.upstream.headers import client_response_headers

CACHEABLE = "public, max-age=3600"
Handler = Callable[[web.BaseRequest], Awaitable[web.Response]]


def load_files(root: Path) -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    for path in sorted(root.glob("*.bin")):
        data = path.read_bytes()
        files[f"/{path.name}"] = (data, CACHEABLE)
        files[f"/nostore/{path.name}"] = (data, "no-store")
    return files


def from_memory(root: Path) -> Handler:
    files = load_files(root)
    not_found = b"not found\n"

    async def handle(request: web.BaseRequest) -> web.Response:
        found = files.get(request.path)
        if found is None:
            return web.Response(status=404, body=not_found)
        body, cache_control = found
        return web.Response(
            body=body,
            content_type="application/octet-stream",
            headers={"Cache-Control": cache_control},
        )

    return handle


def relayed(headers: CIMultiDictProxy[str]) -> list[tuple[str, str]]:
    """The origin's end-to-end headers: OpenFlare's own rule (hop-by-hop ones, those named in
    `Connection`, and `Content-Length`, which aiohttp sets from the body), not a copy of it."""
    return list(client_response_headers(headers))


def through_session(upstream: str) -> tuple[Handler, Callable[[], Awaitable[None]]]:
    session = aiohttp.ClientSession(auto_decompress=False)

    async def handle(request: web.BaseRequest) -> web.Response:
        async with session.get(upstream + request.raw_path, allow_redirects=False) as answer:
            body = await answer.read()
            return web.Response(status=answer.status, body=body, headers=relayed(answer.headers))

    return handle, session.close


def through_lean_client(upstream: str) -> tuple[Handler, Callable[[], Awaitable[None]]]:
    from openflare.upstream.http1 import Http1Pool, Origin

    origin = Origin(upstream)
    pool = Http1Pool(limit=100, limit_per_host=0, connect_timeout=10.0, total_timeout=60.0)

    async def handle(request: web.BaseRequest) -> web.Response:
        head = origin.request_head(request.method, request.raw_path, [])
        answer = await pool.send(origin, request.method, head, 60.0)
        try:
            body = await answer.content.read()
        except BaseException:
            answer.close()
            raise
        answer.release()
        return web.Response(status=answer.status, body=body, headers=relayed(answer.headers))

    async def close() -> None:
        pool.close()

    return handle, close


async def serve(port: int, root: Path | None, upstream: str | None, client: str) -> None:
    close: Callable[[], Awaitable[None]] | None = None
    if upstream is None:
        assert root is not None
        handle = from_memory(root)
    elif client == "lean":
        handle, close = through_lean_client(upstream.rstrip("/"))
    else:
        handle, close = through_session(upstream.rstrip("/"))
    server = web.Server(handle, access_log=None)
    runner = web.ServerRunner(server, handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=2048, reuse_address=True).start()
    try:
        await asyncio.Event().wait()  # until SIGTERM/SIGINT (handle_signals) cancels us
    finally:
        await runner.cleanup()
        if close is not None:
            await close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, help="directory with the *.bin files")
    parser.add_argument("--upstream", help="a minimal proxy to this origin instead")
    parser.add_argument("--client", choices=("session", "lean"), default="lean")
    args = parser.parse_args()
    if (args.root is None) == (args.upstream is None):
        parser.error("give either --root (the ceiling) or --upstream (a minimal proxy)")
    try:
        uvloop.run(serve(args.port, args.root, args.upstream, args.client))
    except (KeyboardInterrupt, web.GracefulExit):
        pass


if __name__ == "__main__":
    main()
