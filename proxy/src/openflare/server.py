"""Process lifecycle: load config, start both listeners, reload on SIGHUP, drain on SIGTERM.

Shutdown order (what a Kubernetes rollout needs): `/readyz` turns 503 at once, then after
`server.shutdown_delay_ms` the public listener stops accepting, in-flight requests get up to
`server.graceful_shutdown_timeout_ms` to finish, then the admin listener and upstream pools
close.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping

from aiohttp import web

from openflare import __version__
from openflare.admin.routes import create_admin_app
from openflare.app import create_public_server
from openflare.config.loader import ConfigBundle
from openflare.config.models import parse_listen_addr
from openflare.config.reload import ConfigManager
from openflare.deps import Deps
from openflare.observability.logging import LogWriter, bridge_library_logs
from openflare.runtime import RuntimeHolder, build_runtime


async def serve(bundle: ConfigBundle, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    proxy = bundle.proxy
    deps = Deps(log=LogWriter(level=proxy.logging.level))
    log = deps.log
    bridge_library_logs(log)
    holder = RuntimeHolder(build_runtime(bundle, deps))
    manager = ConfigManager(bundle.main_path, env, deps, holder)
    grace = proxy.server.graceful_shutdown_timeout_ms / 1000

    public = web.ServerRunner(
        create_public_server(holder, proxy.server), handle_signals=False, shutdown_timeout=grace
    )
    admin = web.AppRunner(
        create_admin_app(holder, deps, manager),
        handle_signals=False,
        access_log=None,
        shutdown_timeout=1.0,
    )
    await public.setup()
    await admin.setup()
    public_host, public_port = parse_listen_addr(proxy.server.listen_addr)
    admin_host, admin_port = parse_listen_addr(proxy.server.admin_listen_addr)
    await web.TCPSite(public, public_host, public_port, backlog=2048, reuse_address=True).start()
    await web.TCPSite(admin, admin_host, admin_port, reuse_address=True).start()
    deps.health.ready = True
    if proxy.dev_mode:
        log.event("warning", "dev_mode", message="dev_mode is on: do not expose this instance")
    log.event(
        "info",
        "started",
        version=__version__,
        config=bundle.main_path,
        hash=bundle.hash,
        listen=proxy.server.listen_addr,
        admin=proxy.server.admin_listen_addr,
        stages=list(holder.runtime.stages),
    )

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[object]] = set()

    def on_sighup() -> None:
        task = loop.create_task(manager.reload("sighup"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    try:
        await stop.wait()
        deps.health.draining = True
        current = holder.runtime.bundle.proxy.server
        log.event(
            "info",
            "draining",
            delay_ms=current.shutdown_delay_ms,
            grace_s=grace,
            in_flight=int(deps.metrics.in_flight._value.get()),
        )
        await asyncio.sleep(current.shutdown_delay_ms / 1000)
        await public.cleanup()  # stop accepting, wait for in-flight requests up to the grace
        await admin.cleanup()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await deps.close()
        log.event("info", "stopped")
        log.close()
