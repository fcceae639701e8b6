"""The Python ceiling: the least an aiohttp server can do per request.

aiohttp's low-level `web.Server` (the same server class OpenFlare runs on, no router, no
middleware, no access log) on uvloop, answering the origin's files from memory with the same
`Content-Type` and `Cache-Control` as the origin. A proxy on aiohttp cannot answer a request
with less Python than this, so OpenFlare's HIT path is reported as a ratio of it.

    python -m benchmarks.ceiling --port 9000 --root DIR
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import uvloop
from aiohttp import web

CACHEABLE = "public, max-age=3600"


def load_files(root: Path) -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    for path in sorted(root.glob("*.bin")):
        data = path.read_bytes()
        files[f"/{path.name}"] = (data, CACHEABLE)
        files[f"/nostore/{path.name}"] = (data, "no-store")
    return files


async def serve(port: int, root: Path) -> None:
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

    server = web.Server(handle, access_log=None)
    runner = web.ServerRunner(server, handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=2048, reuse_address=True).start()
    try:
        await asyncio.Event().wait()  # until SIGTERM/SIGINT (handle_signals) cancels us
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True, help="directory with the *.bin files")
    args = parser.parse_args()
    try:
        uvloop.run(serve(args.port, args.root))
    except (KeyboardInterrupt, web.GracefulExit):
        pass


if __name__ == "__main__":
    main()
