"""Fixtures for the OpenFlare E2E suite.

Targets (`--target`, default `$E2E_TARGET`, else `compose` when `$E2E_PROXY_URL` is set, else
`local`):

* `local`   — starts the test origin and the proxy (configs/proxy.test.yaml with free loopback
              ports and a random admin token) as subprocesses for the session;
* `compose` — uses `$E2E_PROXY_URL`, `$E2E_ADMIN_URL`, `$E2E_ORIGIN_URL` (default
              http://127.0.0.1:8080 / 8081 / 8000) and `$E2E_ADMIN_TOKEN`;
* `kind`    — the same four variables, all required.

The proxy under test must run configs/proxy.test.yaml (its limits, routes and fault injection
are what the tests assert). Tests marked `local_only` start, signal or read the output of
processes of their own and are skipped on the other targets.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import OriginProcess, ProxyProcess, Stack, StartError

TARGETS = ("local", "compose", "kind")
COMPOSE_DEFAULTS = {
    "E2E_PROXY_URL": "http://127.0.0.1:8080",
    "E2E_ADMIN_URL": "http://127.0.0.1:8081",
    "E2E_ORIGIN_URL": "http://127.0.0.1:8000",
}
URL_VARS = ("E2E_PROXY_URL", "E2E_ADMIN_URL", "E2E_ORIGIN_URL", "E2E_ADMIN_TOKEN")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--target",
        choices=TARGETS,
        default=None,
        help="where the stack runs: local (start processes), compose or kind (use $E2E_*_URL)",
    )


def _target(config: pytest.Config) -> str:
    chosen = config.getoption("--target") or os.environ.get("E2E_TARGET")
    if chosen is None:
        chosen = "compose" if os.environ.get("E2E_PROXY_URL") else "local"
    if chosen not in TARGETS:
        raise pytest.UsageError(f"E2E_TARGET must be one of {', '.join(TARGETS)}, not {chosen!r}")
    return chosen


def pytest_configure(config: pytest.Config) -> None:
    config.stash[TARGET_KEY] = _target(config)


TARGET_KEY = pytest.StashKey[str]()


def pytest_report_header(config: pytest.Config) -> str:
    return f"openflare e2e target: {config.stash[TARGET_KEY]}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    target = config.stash[TARGET_KEY]
    if target == "local":
        return
    skip = pytest.mark.skip(
        reason=f"local_only: starts, signals or reads the logs of its own processes; "
        f"target is {target}"
    )
    for item in items:
        if item.get_closest_marker("local_only") is not None:
            item.add_marker(skip)


def _external_stack(target: str) -> Stack:
    values = {}
    for name in URL_VARS:
        default = COMPOSE_DEFAULTS.get(name) if target == "compose" else None
        value = os.environ.get(name) or default
        if not value:
            raise pytest.UsageError(f"--target {target} needs ${name}")
        values[name] = value.rstrip("/")
    stack = Stack(
        target=target,
        proxy_url=values["E2E_PROXY_URL"],
        admin_url=values["E2E_ADMIN_URL"],
        origin_url=values["E2E_ORIGIN_URL"],
        admin_token=values["E2E_ADMIN_TOKEN"],
    )
    try:
        httpx.get(stack.admin_url + "/readyz", timeout=5.0).raise_for_status()
        httpx.get(stack.origin_url + "/healthz", timeout=5.0).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.exit(f"{target} stack is not ready: {exc!r}", returncode=3)
    return stack


@pytest.fixture(scope="session")
def e2e_target(pytestconfig: pytest.Config) -> str:
    return pytestconfig.stash[TARGET_KEY]


@pytest.fixture(scope="session")
def stack(e2e_target: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack every test talks to (session-scoped: do not stop or reconfigure it)."""
    target = e2e_target
    if target != "local":
        yield _external_stack(target)
        return
    workdir = tmp_path_factory.mktemp("stack")
    origin = OriginProcess(workdir)
    proxy: ProxyProcess | None = None
    try:
        origin.start_and_wait()
        proxy = ProxyProcess(workdir, origin_url=origin.url, token=secrets.token_hex(16))
        proxy.start_and_wait()
    except StartError as exc:
        origin.stop()
        pytest.exit(str(exc), returncode=3)
    assert proxy is not None
    try:
        yield Stack(
            target=target,
            proxy_url=proxy.url,
            admin_url=proxy.admin_url,
            origin_url=origin.url,
            admin_token=proxy.token,
            proxy=proxy,
            origin=origin,
        )
    finally:
        proxy.stop()
        origin.stop()


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    """An httpx client for the proxy's public listener, Host set to the 127.0.0.1 routes."""
    with stack.client() as c:
        yield c


@pytest.fixture
def local_stack(stack: Stack) -> Stack:
    """The session stack, for local_only tests that read the proxy's output."""
    assert stack.proxy is not None and stack.origin is not None, "local_only test ran remotely"
    return stack


ProxyFactory = Callable[..., ProxyProcess]


def _proxies(stack: Stack, workdir: Path) -> Iterator[ProxyFactory]:
    """Start proxies in `workdir` on demand; stop them all when the generator is closed."""
    started: list[ProxyProcess] = []

    def start(
        overrides: dict[str, Any] | None = None,
        *,
        origin_url: str | None = None,
        env: Mapping[str, str | None] | None = None,
    ) -> ProxyProcess:
        proxy = ProxyProcess(
            workdir,
            origin_url=origin_url or stack.origin_url,
            token=secrets.token_hex(16),
            overrides=overrides,
            name=f"proxy{len(started) + 1}",
        )
        for name, value in (env or {}).items():
            if value is None:
                proxy.env.pop(name, None)
            else:
                proxy.env[name] = value
        started.append(proxy)
        try:
            proxy.start_and_wait()
        except StartError as exc:
            pytest.fail(str(exc))
        return proxy

    try:
        yield start
    finally:
        for proxy in started:
            proxy.stop()


@pytest.fixture
def proxy_factory(stack: Stack, tmp_path: Path) -> Iterator[ProxyFactory]:
    """Start extra proxies for one test (local target only): `proxy_factory(overrides,
    origin_url=..., env=...)` deep-merges `overrides` into the test config (lists are replaced)
    and returns a started ProxyProcess; every proxy is stopped at the end of the test. `env` is
    applied over the proxy's cleaned environment (`harness.clean_env` plus a random
    OPENFLARE_ADMIN_TOKEN); a value of None removes the variable (e.g. OPENFLARE_ADMIN_TOKEN,
    which must not be set next to OPENFLARE_ADMIN_TOKEN_FILE)."""
    assert stack.origin is not None, "proxy_factory needs the local target"
    yield from _proxies(stack, tmp_path)


@pytest.fixture(scope="module")
def module_proxy_factory(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyFactory]:
    """`proxy_factory` for a whole module (local target only): for modules whose many short
    tests share one proxy configuration; the proxies stop after the module's last test."""
    assert stack.origin is not None, "module_proxy_factory needs the local target"
    yield from _proxies(stack, tmp_path_factory.mktemp("module-proxies"))


@pytest.fixture(scope="module")
def raw_origin() -> Iterator[Any]:
    """A raw-bytes recording origin (testsite raw_origin.py) in a thread of this process."""
    from openflare_testsite.raw_origin import RawOrigin

    with RawOrigin().start_in_thread() as origin:
        yield origin


@pytest.fixture
def origin_factory(stack: Stack, tmp_path: Path) -> Iterator[Callable[..., OriginProcess]]:
    """Start extra test origins for one test (local target only)."""
    started: list[OriginProcess] = []

    def start(port: int | None = None, keep_alive_timeout: int | None = None) -> OriginProcess:
        origin = OriginProcess(
            tmp_path,
            port=port,
            name=f"origin{len(started) + 1}",
            keep_alive_timeout=keep_alive_timeout,
        )
        started.append(origin)
        try:
            origin.start_and_wait()
        except StartError as exc:
            pytest.fail(str(exc))
        return origin

    yield start
    for origin in started:
        origin.stop()
