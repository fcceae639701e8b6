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
import time
from collections.abc import Mapping

from aiohttp import web

from openflare import __version__
from openflare.admin.routes import create_admin_app
from openflare.app import create_public_server
from openflare.config.loader import ConfigBundle
from openflare.config.models import parse_listen_addr
from openflare.config.reload import ConfigManager
from openflare.config.watch import watch_config
from openflare.deps import Deps
from openflare.observability.logging import LogWriter, bridge_library_logs
from openflare.runtime import RuntimeHolder, build_runtime

LEFTOVER_CANCEL_SECONDS = 1.0  # after the grace period: how long cancelled handlers get


async def serve(bundle: ConfigBundle, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[object]] = set()
    manager: ConfigManager | None = None

    def on_sighup() -> None:
        if manager is None:
            return  # still starting: the config being loaded is the newest anyway
        task = loop.create_task(manager.reload("sighup"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    # installed first, so a signal that arrives while starting never kills the process
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_sighup)

    proxy = bundle.proxy
    deps = Deps(log=LogWriter(level=proxy.logging.level))
    log = deps.log
    bridge_library_logs(log)
    holder = RuntimeHolder(build_runtime(bundle, deps))
    manager = ConfigManager(bundle.main_path, env, deps, holder)
    public = web.ServerRunner(
        create_public_server(holder, deps.metrics),
        handle_signals=False,
        shutdown_timeout=LEFTOVER_CANCEL_SECONDS,
    )
    admin = web.AppRunner(
        create_admin_app(holder, deps, manager),
        handle_signals=False,
        access_log=None,
        shutdown_timeout=LEFTOVER_CANCEL_SECONDS,
    )
    try:
        await public.setup()
        await admin.setup()
        public_host, public_port = parse_listen_addr(proxy.server.listen_addr)
        admin_host, admin_port = parse_listen_addr(proxy.server.admin_listen_addr)
        await web.TCPSite(
            public, public_host, public_port, backlog=2048, reuse_address=True
        ).start()
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
        async with watch_config(manager, env, log):  # OPENFLARE_WATCH=dir|k8s
            await stop.wait()
        await drain(public, holder, deps)
        await admin.cleanup()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await deps.close()
        log.event("info", "stopped")
        log.close()


async def drain(public: web.ServerRunner, holder: RuntimeHolder, deps: Deps) -> None:
    """SIGTERM: fail readiness, wait `shutdown_delay_ms` (load balancers notice), stop
    accepting, close idle keep-alive connections, give in-flight requests up to
    `graceful_shutdown_timeout_ms`, then cancel what is left. Both values are read from the
    config in force now, so a reload changes them."""
    deps.health.draining = True
    current = holder.runtime.bundle.proxy.server
    grace = current.graceful_shutdown_timeout_ms / 1000
    deps.log.event(
        "info",
        "draining",
        delay_ms=current.shutdown_delay_ms,
        grace_s=grace,
        in_flight=deps.metrics.in_flight_now,
    )
    await asyncio.sleep(current.shutdown_delay_ms / 1000)
    for site in list(public.sites):
        await site.stop()
    if public.server is not None:
        public.server.pre_shutdown()  # idle keep-alive connections close; busy ones finish
    deadline = time.monotonic() + grace
    # polling a counter keeps the request path free of any drain bookkeeping
    while deps.metrics.in_flight_now > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if deps.metrics.in_flight_now > 0:
        deps.log.event("warning", "drain_timeout", cancelled=deps.metrics.in_flight_now)
    await public.cleanup()
