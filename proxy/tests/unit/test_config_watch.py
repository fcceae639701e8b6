"""Reload triggers (openflare.config.watch).

The directory watcher runs against folders updated exactly as the kubelet updates a ConfigMap
volume (files written into a new `..<timestamp>` folder, a `..data_tmp` symlink renamed over
`..data`, the old folder removed; the visible files are symlinks through `..data`), with a real
ConfigManager, so a change is proven to reach the running config. The API watcher runs the real
kubernetes_asyncio client against a fake API server that replays a recorded watch stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import io
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from openflare.config.loader import load_bundle
from openflare.config.reload import ConfigManager
from openflare.config.watch import (
    ConfigMapTarget,
    ConfigMapWatcher,
    DirectoryWatcher,
    build_watcher,
    data_hash,
    fingerprint,
    main,
    mirror_tree,
    parse_targets,
    read_namespace,
    secret_files,
    secret_fingerprint,
    source_folders,
    watch_config,
    write_folder,
)
from openflare.deps import Deps
from openflare.observability.logging import LogWriter
from openflare.runtime import RuntimeHolder, build_runtime

TOKEN = "t" * 32
ENV = {"OPENFLARE_ADMIN_TOKEN": TOKEN}

PROXY_YAML = """\
upstreams:
  - name: origin
    base_url: http://127.0.0.1:9
routing:
  default_upstream: origin
rule_files:
  waf: ../waf/rules.waf.yaml
"""


def waf_yaml(word: str) -> str:
    return f"""\
rules:
  - id: block-{word}
    match:
      any:
        - target: [raw_path]
          regex: '{word}'
    action: {{type: block}}
"""


BAD_WAF_YAML = "rules:\n  - id: broken\n    match: {any: []}\n    action: {type: explode}\n"


# --- a ConfigMap volume, written the way the kubelet's AtomicWriter does it ---------------------


class KubeletVolume:
    """A ConfigMap volume: `..<timestamp>/<key>` (e.g. `..2025_11_29_12_00_00.000000001`),
    `..data -> ..<timestamp>`, and the visible `<key> -> ..data/<key>`."""

    def __init__(self, folder: Path, data: dict[str, str]) -> None:
        self.folder = folder
        self.generation = 0
        folder.mkdir(parents=True)
        self.update(data)

    def _timestamped(self) -> str:
        self.generation += 1
        return time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()) + f"{self.generation:09d}"

    def update(self, data: dict[str, str]) -> None:
        data_link = self.folder / "..data"
        old = os.readlink(data_link) if data_link.is_symlink() else None
        new = self._timestamped()
        (self.folder / new).mkdir(mode=0o755)
        for key, value in data.items():
            (self.folder / new / key).write_text(value)
        tmp_link = self.folder / "..data_tmp"
        os.symlink(new, tmp_link)
        os.rename(tmp_link, data_link)  # the atomic swap
        for key in data:
            visible = self.folder / key
            if not visible.is_symlink():
                os.symlink(os.path.join("..data", key), visible)
        for entry in self.folder.iterdir():
            if not entry.name.startswith(".") and entry.name not in data:
                entry.unlink()
        if old is not None:
            shutil.rmtree(self.folder / old)


@dataclass
class RecordingLog:
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def event(self, level: str, event: str, **fields: Any) -> None:
        self.events.append((level, event, fields))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [fields for _, event, fields in self.events if event == name]


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@dataclass
class Stack:
    manager: ConfigManager
    holder: RuntimeHolder
    deps: Deps

    @property
    def hash(self) -> str:
        return self.holder.runtime.bundle.hash

    def results(self) -> list[tuple[str, str]]:
        return [(item.source, item.result) for item in self.manager.history]


@pytest.fixture
async def stack_factory() -> AsyncIterator[Callable[[Path], Awaitable[Stack]]]:
    made: list[Deps] = []

    async def make(main_file: Path, env: dict[str, str] | None = None) -> Stack:
        env = ENV if env is None else env
        bundle = load_bundle(main_file, env)
        deps = Deps(log=LogWriter(io.BytesIO()))
        made.append(deps)
        holder = RuntimeHolder(build_runtime(bundle, deps))
        return Stack(ConfigManager(str(main_file), env, deps, holder), holder, deps)

    yield make
    for deps in made:
        await deps.close()
        deps.log.close()


@pytest.fixture
def volumes(tmp_path: Path) -> tuple[KubeletVolume, KubeletVolume]:
    config = KubeletVolume(tmp_path / "etc" / "config", {"proxy.yaml": PROXY_YAML})
    waf = KubeletVolume(tmp_path / "etc" / "waf", {"rules.waf.yaml": waf_yaml("alpha")})
    return config, waf


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Any], asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []

    def start(watcher: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(watcher.run())
        tasks.append(task)
        return task

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def dir_watcher(manager: Any, log: RecordingLog | None = None, **kw: Any) -> DirectoryWatcher:
    return DirectoryWatcher(manager, log or RecordingLog(), interval=0.02, debounce=0.08, **kw)


# --- the kubelet-style volume itself ------------------------------------------------------------


def test_kubelet_volume_layout(tmp_path: Path) -> None:
    volume = KubeletVolume(tmp_path / "v", {"a.yaml": "1", "b.yaml": "2"})
    volume.update({"a.yaml": "3"})
    names = sorted(entry.name for entry in volume.folder.iterdir())
    assert names[0] == "..2" or names[0].startswith("..20")  # one timestamped folder left
    assert [n for n in names if not n.startswith(".")] == ["a.yaml"]
    assert "..data" in names and "..data_tmp" not in names
    assert (volume.folder / "a.yaml").is_symlink() and (volume.folder / "a.yaml").read_text() == "3"
    assert len([n for n in names if n.startswith("..2")]) == 1


def test_fingerprint_follows_content_not_the_swap(tmp_path: Path) -> None:
    volume = KubeletVolume(tmp_path / "v", {"a.yaml": "x: 1\n"})
    before = fingerprint([volume.folder])
    volume.update({"a.yaml": "x: 1\n"})  # same content, new timestamped folder
    assert fingerprint([volume.folder]) == before
    volume.update({"a.yaml": "x: 2\n"})
    assert fingerprint([volume.folder]) != before
    volume.update({"a.yaml": "x: 2\n", "b.yaml": ""})  # a new key counts too
    assert fingerprint([volume.folder]) not in (before, None)
    assert fingerprint([tmp_path / "missing"]) is None


def test_source_folders_are_those_of_the_loaded_files(
    volumes: tuple[KubeletVolume, KubeletVolume],
) -> None:
    config, waf = volumes

    class Status:
        def status(self) -> dict[str, Any]:
            sources = load_bundle(config.folder / "proxy.yaml", ENV).sources
            return {"sources": [{"file": f, "sha256": h} for f, h in sources]}

    folders = source_folders(Status())  # type: ignore[arg-type]
    assert [f.resolve() for f in folders] == sorted([config.folder.resolve(), waf.folder.resolve()])


# --- the directory watcher against a real ConfigManager ------------------------------------------


async def test_kubelet_swap_reloads_the_new_rules(
    volumes: tuple[KubeletVolume, KubeletVolume],
    stack_factory: Callable[[Path], Awaitable[Stack]],
    running: Callable[[Any], asyncio.Task[None]],
) -> None:
    config, waf = volumes
    stack = await stack_factory(config.folder / "proxy.yaml")
    first = stack.hash
    assert stack.holder.runtime.bundle.waf.rules[0].id == "block-alpha"
    watcher = dir_watcher(stack.manager)
    running(watcher)
    await asyncio.sleep(0.1)

    waf.update({"rules.waf.yaml": waf_yaml("beta")})
    await eventually(lambda: stack.hash != first)
    assert stack.holder.runtime.bundle.waf.rules[0].id == "block-beta"
    assert stack.results() == [("file_watch", "ok")]
    reloads = stack.deps.metrics.config_reloads
    assert reloads.labels("ok")._value.get() == 1


async def test_unchanged_content_does_not_reload(
    volumes: tuple[KubeletVolume, KubeletVolume],
    stack_factory: Callable[[Path], Awaitable[Stack]],
    running: Callable[[Any], asyncio.Task[None]],
) -> None:
    config, waf = volumes
    stack = await stack_factory(config.folder / "proxy.yaml")
    watcher = dir_watcher(stack.manager)
    running(watcher)
    await asyncio.sleep(0.1)
    for _ in range(3):  # the kubelet rewrites the same content (e.g. only labels changed)
        waf.update({"rules.waf.yaml": waf_yaml("alpha")})
        config.update({"proxy.yaml": PROXY_YAML})
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert watcher.reloads == 0 and stack.results() == []


async def test_bad_edit_keeps_the_old_config_then_a_fix_applies(
    volumes: tuple[KubeletVolume, KubeletVolume],
    stack_factory: Callable[[Path], Awaitable[Stack]],
    running: Callable[[Any], asyncio.Task[None]],
) -> None:
    config, waf = volumes
    stack = await stack_factory(config.folder / "proxy.yaml")
    first = stack.hash
    running(dir_watcher(stack.manager))
    await asyncio.sleep(0.1)

    waf.update({"rules.waf.yaml": BAD_WAF_YAML})
    await eventually(lambda: len(stack.manager.history) == 1)
    assert stack.results() == [("file_watch", "error")]
    assert stack.hash == first  # still serving the old rules
    status = stack.manager.status()
    assert status["last_error"]["source"] == "file_watch"
    assert any("rules.waf.yaml" in e for e in status["last_error"]["errors"])
    assert stack.deps.metrics.config_reloads.labels("error")._value.get() == 1

    waf.update({"rules.waf.yaml": waf_yaml("gamma")})
    await eventually(lambda: stack.hash != first)
    assert stack.results() == [("file_watch", "error"), ("file_watch", "ok")]


async def test_burst_of_swaps_is_debounced_into_one_reload(
    volumes: tuple[KubeletVolume, KubeletVolume],
    stack_factory: Callable[[Path], Awaitable[Stack]],
    running: Callable[[Any], asyncio.Task[None]],
) -> None:
    config, waf = volumes
    stack = await stack_factory(config.folder / "proxy.yaml")
    watcher = DirectoryWatcher(stack.manager, RecordingLog(), interval=0.02, debounce=0.6)
    running(watcher)
    await asyncio.sleep(0.1)
    for word in ("one", "two", "three", "four", "five"):
        waf.update({"rules.waf.yaml": waf_yaml(word)})
        await asyncio.sleep(0.03)
    await eventually(lambda: watcher.reloads >= 1)
    await asyncio.sleep(0.8)
    assert watcher.reloads == 1 and stack.results() == [("file_watch", "ok")]
    assert stack.holder.runtime.bundle.waf.rules[0].id == "block-five"


async def test_a_deleted_folder_does_not_crash_the_watcher(
    volumes: tuple[KubeletVolume, KubeletVolume],
    stack_factory: Callable[[Path], Awaitable[Stack]],
    running: Callable[[Any], asyncio.Task[None]],
) -> None:
    config, waf = volumes
    stack = await stack_factory(config.folder / "proxy.yaml")
    first = stack.hash
    log = RecordingLog()
    task = running(dir_watcher(stack.manager, log))
    await asyncio.sleep(0.1)

    shutil.rmtree(waf.folder)
    await eventually(lambda: bool(log.named("config_watch_missing")))
    await asyncio.sleep(0.2)
    assert not task.done() and stack.results() == [] and stack.hash == first
    assert len(log.named("config_watch_missing")) == 1  # reported once, not every poll

    KubeletVolume(waf.folder, {"rules.waf.yaml": waf_yaml("delta")})  # the volume comes back
    await eventually(lambda: stack.hash != first)
    assert stack.results() == [("file_watch", "ok")]


async def test_rule_file_moved_to_another_folder_is_watched_there(
    tmp_path: Path,
    volumes: tuple[KubeletVolume, KubeletVolume],
    stack_factory: Callable[[Path], Awaitable[Stack]],
    running: Callable[[Any], asyncio.Task[None]],
) -> None:
    config, _ = volumes
    other = KubeletVolume(tmp_path / "etc" / "waf2", {"rules.waf.yaml": waf_yaml("one")})
    stack = await stack_factory(config.folder / "proxy.yaml")
    running(dir_watcher(stack.manager))
    await asyncio.sleep(0.1)
    config.update({"proxy.yaml": PROXY_YAML.replace("../waf/", "../waf2/")})
    await eventually(lambda: stack.holder.runtime.bundle.waf.rules[0].id == "block-one")
    other.update({"rules.waf.yaml": waf_yaml("two")})
    await eventually(lambda: stack.holder.runtime.bundle.waf.rules[0].id == "block-two")


async def test_request_in_flight_finishes_on_the_config_it_started_with(
    tmp_path: Path,
    stack_factory: Callable[[Path], Awaitable[Stack]],
    running: Callable[[Any], asyncio.Task[None]],
) -> None:
    """A slow request through the real public server while the watcher swaps the upstream."""
    from openflare.app import create_public_server

    def answer(name: str, delay: float) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            await asyncio.sleep(delay)
            return web.Response(text=name)

        return handle

    origins: list[TestServer] = []
    for name in ("A", "B"):
        app = web.Application()
        app.router.add_get("/slow", answer(name, 2.5))
        app.router.add_get("/fast", answer(name, 0.0))
        origins.append(TestServer(app, host="127.0.0.1"))
        await origins[-1].start_server()
    config_for = {
        origin: PROXY_YAML.replace("http://127.0.0.1:9", f"http://127.0.0.1:{server.port}")
        for origin, server in zip("AB", origins, strict=True)
    }
    volume = KubeletVolume(tmp_path / "config", {"proxy.yaml": config_for["A"]})
    KubeletVolume(tmp_path / "waf", {"rules.waf.yaml": waf_yaml("alpha")})
    stack = await stack_factory(volume.folder / "proxy.yaml")
    runner = web.ServerRunner(create_public_server(stack.holder, stack.deps.metrics))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    running(dir_watcher(stack.manager))
    await asyncio.sleep(0.1)
    try:
        async with ClientSession() as client:
            base = f"http://127.0.0.1:{port}"
            slow = asyncio.create_task(client.get(base + "/slow"))
            await asyncio.sleep(0.3)  # the request is at origin A now
            volume.update({"proxy.yaml": config_for["B"]})
            await eventually(lambda: stack.results() == [("file_watch", "ok")])
            async with client.get(base + "/fast") as after:
                assert await after.text() == "B"  # new requests see the new config
            assert not slow.done()
            async with await slow as response:
                assert response.status == 200
                assert await response.text() == "A"  # the old one finished on its own config
    finally:
        await runner.cleanup()
        for server in origins:
            await server.close()


# --- configuration of the watchers --------------------------------------------------------------


class StaticManager:
    def __init__(self, main_path: str = "/etc/openflare/config/proxy.yaml") -> None:
        self.main_path = main_path
        self.calls: list[str] = []

    async def reload(self, source: str) -> Any:
        self.calls.append(source)
        return None

    def status(self) -> dict[str, Any]:
        return {"main_path": self.main_path, "sources": [{"file": self.main_path}]}


def test_build_watcher_modes(tmp_path: Path) -> None:
    log = RecordingLog()
    assert build_watcher(StaticManager(), {}, log) is None
    assert build_watcher(StaticManager(), {"OPENFLARE_WATCH": "off"}, log) is None
    watcher = build_watcher(
        StaticManager(), {"OPENFLARE_WATCH": "dir", "OPENFLARE_WATCH_INTERVAL_MS": "250"}, log
    )
    assert isinstance(watcher, DirectoryWatcher)
    mirror = tmp_path / "mirror"
    k8s_env = {
        "OPENFLARE_WATCH": "k8s",
        "OPENFLARE_K8S_CONFIGMAPS": "of-config=config, of-waf=waf",
        "OPENFLARE_K8S_MIRROR_DIR": str(mirror),
        "OPENFLARE_K8S_NAMESPACE": "edge",
    }
    importlib.import_module("kubernetes_asyncio")  # the k8s extra is part of the dev install
    manager = StaticManager(str(mirror / "config" / "proxy.yaml"))
    assert isinstance(build_watcher(manager, k8s_env, log), ConfigMapWatcher)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OPENFLARE_WATCH": "inotify"}, "OPENFLARE_WATCH must be one of off, dir, k8s"),
        ({"OPENFLARE_WATCH": "dir", "OPENFLARE_WATCH_INTERVAL_MS": "0"}, "positive number"),
        ({"OPENFLARE_WATCH": "dir", "OPENFLARE_WATCH_DEBOUNCE_MS": "1s"}, "positive number"),
    ],
)
def test_build_watcher_rejects_bad_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_watcher(StaticManager(), env, RecordingLog())


def test_k8s_mode_needs_the_config_inside_the_mirror(tmp_path: Path) -> None:
    importlib.import_module("kubernetes_asyncio")  # the k8s extra is part of the dev install
    env = {
        "OPENFLARE_WATCH": "k8s",
        "OPENFLARE_K8S_CONFIGMAPS": "of-config=config",
        "OPENFLARE_K8S_MIRROR_DIR": str(tmp_path / "mirror"),
        "OPENFLARE_K8S_NAMESPACE": "edge",
    }
    with pytest.raises(ValueError, match="not inside the mirror"):
        build_watcher(StaticManager(), env, RecordingLog())
    with pytest.raises(ValueError, match="NAME=FOLDER"):
        build_watcher(StaticManager(), {**env, "OPENFLARE_K8S_CONFIGMAPS": "x"}, RecordingLog())


async def test_watch_config_logs_a_bad_setting_and_serves_on() -> None:
    log = RecordingLog()
    async with watch_config(StaticManager(), {"OPENFLARE_WATCH": "yes"}, log) as task:
        assert task is None
    assert "OPENFLARE_WATCH must be one of" in log.named("config_watch_disabled")[0]["error"]


async def test_watch_config_runs_and_stops_the_watcher(tmp_path: Path) -> None:
    volume = KubeletVolume(tmp_path / "cfg", {"proxy.yaml": "a"})
    manager = StaticManager(str(volume.folder / "proxy.yaml"))
    env = {"OPENFLARE_WATCH": "dir", "OPENFLARE_WATCH_INTERVAL_MS": "20"}
    env["OPENFLARE_WATCH_DEBOUNCE_MS"] = "20"
    async with watch_config(manager, env, RecordingLog()) as task:
        assert task is not None
        await asyncio.sleep(0.1)
        volume.update({"proxy.yaml": "b"})
        await eventually(lambda: manager.calls == ["file_watch"])
    assert task.done()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=config", (ConfigMapTarget("a", "config"),)),
        (" a = config , b=waf ,", (ConfigMapTarget("a", "config"), ConfigMapTarget("b", "waf"))),
    ],
)
def test_parse_targets(text: str, expected: tuple[ConfigMapTarget, ...]) -> None:
    assert parse_targets(text) == expected


@pytest.mark.parametrize("text", ["", "a", "=x", "a=", "a=../etc", "a=x/y", "a=.hidden"])
def test_parse_targets_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_targets(text)


def test_read_namespace(tmp_path: Path) -> None:
    (tmp_path / "namespace").write_text("edge\n")
    assert read_namespace({}, str(tmp_path / "namespace")) == "edge"
    assert read_namespace({"OPENFLARE_K8S_NAMESPACE": "other"}, str(tmp_path / "x")) == "other"
    with pytest.raises(ValueError, match="no namespace"):
        read_namespace({}, str(tmp_path / "missing"))


def test_write_folder_replaces_removes_and_refuses_escapes(tmp_path: Path) -> None:
    folder = tmp_path / "mirror" / "waf"
    write_folder(folder, {"a.yaml": "1", "b.yaml": "2"})
    write_folder(folder, {"a.yaml": "3", "..evil": "x", ".hidden": "y"})
    assert sorted(p.name for p in folder.iterdir()) == ["a.yaml"]
    assert (folder / "a.yaml").read_text() == "3"


def test_mirror_command_copies_volumes_as_plain_files(
    tmp_path: Path, volumes: tuple[KubeletVolume, KubeletVolume], capsys: Any
) -> None:
    dest = tmp_path / "mirror"
    assert main(["mirror", str(tmp_path / "etc"), str(dest)]) == 0
    assert "2 files" in capsys.readouterr().out
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == [
        "config",
        "config/proxy.yaml",
        "waf",
        "waf/rules.waf.yaml",
    ]
    assert not (dest / "waf" / "rules.waf.yaml").is_symlink()
    assert load_bundle(dest / "config" / "proxy.yaml", ENV).waf.rules[0].id == "block-alpha"
    assert main(["mirror", str(tmp_path / "nowhere"), str(dest)]) == 1
    assert mirror_tree(tmp_path / "etc" / "waf", tmp_path / "flat")  # a single volume works too


# --- the Kubernetes API watcher against a recorded watch stream ----------------------------------


def configmap(name: str, version: str, data: dict[str, str], **annotations: str) -> dict[str, Any]:
    return {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": "edge",
            "uid": "5c1e2f1e-0d7b-4d53-9a57-2f6f0c1b9d11",
            "resourceVersion": version,
            "creationTimestamp": "2025-11-29T12:00:00Z",
            "labels": {"app.kubernetes.io/name": "openflare"},
            "annotations": annotations,
        },
        "data": data,
    }


def recorded_stream(name: str, key: str) -> list[dict[str, Any]]:
    """What `GET .../configmaps?watch=true&fieldSelector=metadata.name=NAME` sent while someone
    ran `kubectl edit` twice and `kubectl annotate` once (trimmed of managedFields)."""
    return [
        {"type": "BOOKMARK", "object": {"kind": "ConfigMap", "apiVersion": "v1",
                                        "metadata": {"resourceVersion": "1003"}}},
        {"type": "MODIFIED", "object": configmap(name, "1004", {key: waf_yaml("beta")})},
        {"type": "MODIFIED", "object": configmap(name, "1005", {key: waf_yaml("beta")}, a="b")},
        {"type": "MODIFIED", "object": configmap(name, "1006", {key: waf_yaml("gamma")})},
    ]  # fmt: skip


@dataclass
class FakeApiServer:
    """Serves list and watch of ConfigMaps like the API server, from scripted answers."""

    lists: list[tuple[int, dict[str, Any]]]  # (status, body) per list call; the last repeats
    watches: list[list[dict[str, Any]]]  # events per watch call; after the last: hang
    requests: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        query["path"] = request.path
        self.requests.append(query)
        if query.get("watch", "").lower() != "true":  # the client sends "True"
            status, body = self.lists[0] if len(self.lists) == 1 else self.lists.pop(0)
            return web.json_response(body, status=status)
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        if not self.watches:
            await asyncio.sleep(3600)  # a quiet watch: nothing changes until the test ends
        for event in self.watches.pop(0):
            await response.write(json.dumps(event).encode() + b"\n")
        await response.write_eof()
        return response

    def of(self, kind: str) -> list[dict[str, str]]:
        return [
            r for r in self.requests if (r.get("watch", "").lower() == "true") == (kind == "watch")
        ]


@pytest.fixture
async def api_server() -> AsyncIterator[Callable[..., Awaitable[tuple[FakeApiServer, Any]]]]:
    """The fake API server and a factory of real kubernetes_asyncio clients pointed at it."""
    k8s_client: Any = importlib.import_module("kubernetes_asyncio.client")  # the k8s extra
    servers: list[TestServer] = []

    async def start(fake: FakeApiServer) -> tuple[FakeApiServer, Any]:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{ns}/configmaps", fake.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        configuration = k8s_client.Configuration(host=f"http://127.0.0.1:{server.port}")
        return fake, lambda: k8s_client.ApiClient(configuration=configuration)

    yield start
    for server in servers:
        await server.close()


def listing(items: list[dict[str, Any]], version: str) -> tuple[int, dict[str, Any]]:
    return 200, {
        "kind": "ConfigMapList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": version},
        "items": items,
    }


async def test_api_watch_writes_the_mirror_and_reloads_from_it(
    tmp_path: Path,
    api_server: Callable[..., Awaitable[tuple[FakeApiServer, Any]]],
    stack_factory: Callable[[Path], Awaitable[Stack]],
    running: Callable[[Any], asyncio.Task[None]],
) -> None:
    # the init container's seed: the volumes copied to plain files in the mirror
    KubeletVolume(tmp_path / "etc" / "config", {"proxy.yaml": PROXY_YAML})
    KubeletVolume(tmp_path / "etc" / "waf", {"rules.waf.yaml": waf_yaml("alpha")})
    mirror = tmp_path / "mirror"
    assert main(["mirror", str(tmp_path / "etc"), str(mirror)]) == 0
    stack = await stack_factory(mirror / "config" / "proxy.yaml")
    first = stack.hash

    waf_cm = configmap("of-waf", "1002", {"rules.waf.yaml": waf_yaml("alpha")})
    fake, factory = await api_server(
        FakeApiServer(
            lists=[listing([waf_cm], "1002")],
            watches=[recorded_stream("of-waf", "rules.waf.yaml")],
        )
    )
    log = RecordingLog()
    watcher = ConfigMapWatcher(
        stack.manager,
        log,
        targets=[ConfigMapTarget("of-waf", "waf")],
        namespace="edge",
        mirror=mirror,
        api_client_factory=factory,
        debounce=0.05,
    )
    running(watcher)
    await eventually(lambda: stack.holder.runtime.bundle.waf.rules[0].id == "block-gamma")
    await asyncio.sleep(0.2)

    # the list matched the seed (no write); 1004 and 1006 were written, 1005 (annotation) not
    written = [e["sha256"] for e in log.named("config_watch_update")]
    assert watcher.applied == 2, (written, fake.requests)
    assert (mirror / "waf" / "rules.waf.yaml").read_text() == waf_yaml("gamma")
    assert stack.hash != first
    assert all(source == "k8s_watch" for source, _ in stack.results())
    assert stack.results()[-1] == ("k8s_watch", "ok")
    assert written == [data_hash({"rules.waf.yaml": waf_yaml(w)})[:12] for w in ("beta", "gamma")]
    # requests as the RBAC Role (resourceNames) allows them, resumed from the last version
    assert {r["fieldSelector"] for r in fake.requests} == {"metadata.name=of-waf"}
    assert {r["path"] for r in fake.requests} == {"/api/v1/namespaces/edge/configmaps"}
    watches = fake.of("watch")
    assert [w["resourceVersion"] for w in watches] == ["1002", "1006"]
    assert (
        watches[0]["allowWatchBookmarks"].lower() == "true"
        and watches[0]["timeoutSeconds"] == "300"
    )


async def test_api_watch_relists_after_410_gone(
    tmp_path: Path,
    api_server: Callable[..., Awaitable[tuple[FakeApiServer, Any]]],
    running: Callable[[Any], asyncio.Task[None]],
) -> None:
    gone = {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": "too old resource version: 1002 (1500)",
            "reason": "Expired",
            "code": 410,
        },
    }
    fresh = configmap("of-waf", "1501", {"rules.waf.yaml": waf_yaml("after-gap")})
    fake, factory = await api_server(
        FakeApiServer(
            lists=[
                listing([configmap("of-waf", "1002", {"rules.waf.yaml": "x"})], "1002"),
                listing([fresh], "1501"),
            ],
            watches=[[gone]],
        )
    )
    manager = StaticManager(str(tmp_path / "mirror" / "waf" / "proxy.yaml"))
    watcher = ConfigMapWatcher(
        manager,
        RecordingLog(),
        targets=[ConfigMapTarget("of-waf", "waf")],
        namespace="edge",
        mirror=tmp_path / "mirror",
        api_client_factory=factory,
        debounce=0.02,
    )
    running(watcher)
    await eventually(
        lambda: (
            (tmp_path / "mirror" / "waf" / "rules.waf.yaml").exists()
            and "after-gap" in (tmp_path / "mirror" / "waf" / "rules.waf.yaml").read_text()
        )
    )
    assert len(fake.of("list")) == 2
    await eventually(lambda: manager.calls[-1:] == ["k8s_watch"])


async def test_api_errors_are_logged_once_and_retried(
    tmp_path: Path,
    api_server: Callable[..., Awaitable[tuple[FakeApiServer, Any]]],
    running: Callable[[Any], asyncio.Task[None]],
) -> None:
    forbidden = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": 'configmaps "of-waf" is forbidden: User "system:serviceaccount:edge:of" '
        'cannot list resource "configmaps" in API group "" in the namespace "edge"',
        "reason": "Forbidden",
        "code": 403,
    }
    fake, factory = await api_server(
        FakeApiServer(
            lists=[(403, forbidden)] * 3
            + [listing([configmap("of-waf", "7", {"rules.waf.yaml": "ok"})], "7")],
            watches=[],
        )
    )
    log = RecordingLog()
    manager = StaticManager()
    watcher = ConfigMapWatcher(
        manager,
        log,
        targets=[ConfigMapTarget("of-waf", "waf")],
        namespace="edge",
        mirror=tmp_path / "mirror",
        api_client_factory=factory,
        debounce=0.02,
        max_backoff=0.05,
    )
    task = running(watcher)
    await eventually(lambda: manager.calls == ["k8s_watch"], within=10)
    assert len(fake.of("list")) == 4 and not task.done()
    errors = log.named("config_watch_error")
    assert len(errors) == 1 and "Forbidden" in errors[0]["error"]


async def test_deleted_configmap_keeps_the_files(
    tmp_path: Path,
    api_server: Callable[..., Awaitable[tuple[FakeApiServer, Any]]],
    running: Callable[[Any], asyncio.Task[None]],
) -> None:
    cm = configmap("of-waf", "5", {"rules.waf.yaml": "kept"})
    fake, factory = await api_server(
        FakeApiServer(
            lists=[listing([cm], "5")],
            watches=[[{"type": "DELETED", "object": configmap("of-waf", "6", {})}]],
        )
    )
    log = RecordingLog()
    watcher = ConfigMapWatcher(
        StaticManager(),
        log,
        targets=[ConfigMapTarget("of-waf", "waf")],
        namespace="edge",
        mirror=tmp_path / "mirror",
        api_client_factory=factory,
        debounce=0.02,
    )
    running(watcher)
    await eventually(lambda: bool(log.named("config_watch_deleted")))
    assert (tmp_path / "mirror" / "waf" / "rules.waf.yaml").read_text() == "kept"
    await eventually(lambda: len(fake.of("watch")) == 2)  # and it goes on watching


# --- the secret files (OPENFLARE_ADMIN_TOKEN_FILE, OPENFLARE_REDIS_URL_FILE) ----------------------
#
# A Secret volume is updated exactly like a ConfigMap volume, so KubeletVolume stands for it: the
# chart mounts the token's Secret as a folder with one key, `token`, and points the variable at
# the visible `token` symlink.

OLD_TOKEN = "old-admin-token-" + "a" * 24
NEW_TOKEN = "new-admin-token-" + "b" * 24
OLD_REDIS = "redis://:old-password@redis-a.internal:6379/0"
NEW_REDIS = "rediss://:new-password@redis-b.internal:6380/0"


def runbook_fingerprint(value: str) -> str:
    """07-runbook.md: `printf %s "$NEW" | sha256sum | cut -c1-12`."""
    return hashlib.sha256(value.encode()).hexdigest()[:12]


@dataclass
class Secrets:
    token: KubeletVolume
    redis: KubeletVolume

    @property
    def env(self) -> dict[str, str]:
        return {
            "OPENFLARE_ADMIN_TOKEN_FILE": str(self.token.folder / "token"),
            "OPENFLARE_REDIS_URL_FILE": str(self.redis.folder / "url"),
        }


@pytest.fixture
def secret_volumes(tmp_path: Path) -> Secrets:
    root = tmp_path / "var" / "run" / "secrets" / "openflare"
    return Secrets(
        KubeletVolume(root / "admin-token", {"token": OLD_TOKEN + "\n"}),
        KubeletVolume(root / "redis", {"url": OLD_REDIS}),
    )


def secret_watcher(manager: Any, env: dict[str, str], log: RecordingLog) -> DirectoryWatcher:
    return dir_watcher(manager, log, secrets=secret_files(env))


def test_secret_fingerprint_is_the_runbooks_and_follows_the_swap(secret_volumes: Secrets) -> None:
    path = Path(secret_volumes.env["OPENFLARE_ADMIN_TOKEN_FILE"])
    assert path.is_symlink()  # token -> ..data/token -> ..<timestamp>/token
    first = secret_fingerprint(path)
    assert first is not None and first[:12] == runbook_fingerprint(OLD_TOKEN)
    secret_volumes.token.update({"token": OLD_TOKEN})  # the same value without its newline
    assert secret_fingerprint(path) == first
    secret_volumes.token.update({"token": NEW_TOKEN})
    assert secret_fingerprint(path) == hashlib.sha256(NEW_TOKEN.encode()).hexdigest()
    assert secret_fingerprint(path.parent / "absent") is None
    # the variables a reload reads, as the loader reads them (unset or empty: not watched)
    env = {**secret_volumes.env, "OPENFLARE_REDIS_URL_FILE": "", "OPENFLARE_WATCH": "dir"}
    assert secret_files(env) == {"OPENFLARE_ADMIN_TOKEN_FILE": path}


async def test_rotated_token_secret_is_applied_by_the_watcher(
    volumes: tuple[KubeletVolume, KubeletVolume],
    secret_volumes: Secrets,
    stack_factory: Callable[..., Awaitable[Stack]],
    running: Callable[[Any], asyncio.Task[None]],
) -> None:
    config, _ = volumes
    env = secret_volumes.env
    stack = await stack_factory(config.folder / "proxy.yaml", env)
    first = stack.hash
    assert stack.holder.runtime.bundle.admin_token == OLD_TOKEN
    log = RecordingLog()
    watcher = secret_watcher(stack.manager, env, log)
    running(watcher)
    await eventually(lambda: watcher.looks >= 2)

    secret_volumes.token.update({"token": NEW_TOKEN + "\n"})
    await eventually(lambda: stack.holder.runtime.bundle.admin_token == NEW_TOKEN)
    assert stack.results() == [("secret_watch", "ok")]
    assert stack.hash == first  # the secrets are not part of the hash
    assert log.named("secret_watch_update") == [
        {
            "variable": "OPENFLARE_ADMIN_TOKEN_FILE",
            "file": env["OPENFLARE_ADMIN_TOKEN_FILE"],
            "sha256": runbook_fingerprint(NEW_TOKEN),
        }
    ]
    started = log.named("config_watch_started")[0]
    assert started["mode"] == "dir" and started["secrets"] == env
    text = repr(log.events)
    assert OLD_TOKEN not in text and NEW_TOKEN not in text and "password" not in text

    secret_volumes.redis.update({"url": NEW_REDIS})
    await eventually(lambda: stack.holder.runtime.bundle.proxy.cache.redis_url == NEW_REDIS)
    assert stack.results() == [("secret_watch", "ok"), ("secret_watch", "ok")]
    assert [e["variable"] for e in log.named("secret_watch_update")] == [
        "OPENFLARE_ADMIN_TOKEN_FILE",
        "OPENFLARE_REDIS_URL_FILE",
    ]
    assert "password" not in repr(log.events)


async def test_rejected_secret_keeps_the_running_token_and_the_next_change_applies(
    volumes: tuple[KubeletVolume, KubeletVolume],
    secret_volumes: Secrets,
    stack_factory: Callable[..., Awaitable[Stack]],
    running: Callable[[Any], asyncio.Task[None]],
) -> None:
    config, _ = volumes
    env = {"OPENFLARE_ADMIN_TOKEN_FILE": secret_volumes.env["OPENFLARE_ADMIN_TOKEN_FILE"]}
    stack = await stack_factory(config.folder / "proxy.yaml", env)
    watcher = secret_watcher(stack.manager, env, RecordingLog())
    running(watcher)
    await eventually(lambda: watcher.looks >= 2)

    secret_volumes.token.update({"token": ""})  # an empty value, e.g. a half-done rotation
    await eventually(lambda: stack.results() == [("secret_watch", "error")])
    assert stack.holder.runtime.bundle.admin_token == OLD_TOKEN  # still guarded by the old one
    errors = stack.manager.status()["last_error"]["errors"]
    assert any("OPENFLARE_ADMIN_TOKEN_FILE" in e and "empty" in e for e in errors), errors
    secret_volumes.token.update({"token": "short"})  # refused outside dev_mode
    await eventually(lambda: len(stack.results()) == 2)
    assert stack.results()[-1] == ("secret_watch", "error")
    assert stack.holder.runtime.bundle.admin_token == OLD_TOKEN

    secret_volumes.token.update({"token": NEW_TOKEN})  # the fix is a change: reloaded again
    await eventually(lambda: stack.holder.runtime.bundle.admin_token == NEW_TOKEN)
    assert stack.results()[-1] == ("secret_watch", "ok") and watcher.reloads == 3


async def test_unchanged_secret_or_config_change_does_not_say_secret_watch(
    volumes: tuple[KubeletVolume, KubeletVolume],
    secret_volumes: Secrets,
    stack_factory: Callable[..., Awaitable[Stack]],
    running: Callable[[Any], asyncio.Task[None]],
) -> None:
    config, waf = volumes
    env = secret_volumes.env
    stack = await stack_factory(config.folder / "proxy.yaml", env)
    log = RecordingLog()
    watcher = secret_watcher(stack.manager, env, log)
    running(watcher)
    await eventually(lambda: watcher.looks >= 2)
    for value in (OLD_TOKEN, OLD_TOKEN + "\n", OLD_TOKEN + "\r\n"):  # the kubelet's resync
        secret_volumes.token.update({"token": value})
        looks = watcher.looks
        await eventually(lambda looks=looks: watcher.looks >= looks + 2)
    # a config change after them is the first reload, and it is a file_watch one
    waf.update({"rules.waf.yaml": waf_yaml("beta")})
    await eventually(lambda: stack.holder.runtime.bundle.waf.rules[0].id == "block-beta")
    assert stack.results() == [("file_watch", "ok")] and watcher.reloads == 1
    assert log.named("secret_watch_update") == []


async def test_missing_secret_file_is_reported_once_and_waited_for(
    volumes: tuple[KubeletVolume, KubeletVolume],
    secret_volumes: Secrets,
    stack_factory: Callable[..., Awaitable[Stack]],
    running: Callable[[Any], asyncio.Task[None]],
) -> None:
    config, _ = volumes
    env = secret_volumes.env
    stack = await stack_factory(config.folder / "proxy.yaml", env)
    log = RecordingLog()
    watcher = secret_watcher(stack.manager, env, log)
    task = running(watcher)
    await eventually(lambda: watcher.looks >= 2)

    shutil.rmtree(secret_volumes.token.folder)  # the volume is gone (or the key was removed)
    await eventually(lambda: bool(log.named("secret_watch_missing")))
    looks = watcher.looks
    await eventually(lambda: watcher.looks >= looks + 5)
    assert not task.done() and stack.results() == []  # no reload that could only fail
    assert log.named("secret_watch_missing") == [
        {
            "variable": "OPENFLARE_ADMIN_TOKEN_FILE",
            "file": env["OPENFLARE_ADMIN_TOKEN_FILE"],
            "message": "a watched secret file is unreadable; keeping the loaded config",
        }
    ]
    KubeletVolume(secret_volumes.token.folder, {"token": NEW_TOKEN})  # back, with a new value
    await eventually(lambda: stack.holder.runtime.bundle.admin_token == NEW_TOKEN)
    assert stack.results() == [("secret_watch", "ok")]
    assert len(log.named("secret_watch_missing")) == 1


def test_build_watcher_watches_the_secret_files_in_both_modes(
    tmp_path: Path, secret_volumes: Secrets
) -> None:
    log = RecordingLog()
    env = {**secret_volumes.env, "OPENFLARE_WATCH_INTERVAL_MS": "250"}
    assert build_watcher(StaticManager(), {**env, "OPENFLARE_WATCH": "off"}, log) is None
    watcher = build_watcher(StaticManager(), {**env, "OPENFLARE_WATCH": "dir"}, log)
    assert isinstance(watcher, DirectoryWatcher)
    assert watcher._secrets == secret_files(env) and len(watcher._secrets) == 2
    importlib.import_module("kubernetes_asyncio")  # the k8s extra is part of the dev install
    k8s_env = {
        **env,
        "OPENFLARE_WATCH": "k8s",
        "OPENFLARE_K8S_CONFIGMAPS": "of-config=config",
        "OPENFLARE_K8S_MIRROR_DIR": str(tmp_path / "mirror"),
        "OPENFLARE_K8S_NAMESPACE": "edge",
    }
    manager = StaticManager(str(tmp_path / "mirror" / "config" / "proxy.yaml"))
    api = build_watcher(manager, k8s_env, log)
    assert isinstance(api, ConfigMapWatcher) and api.secret_watcher is not None
    assert api.secret_watcher._secrets == secret_files(env)
    assert api.secret_watcher._interval == 0.25
    without = {k: v for k, v in k8s_env.items() if not k.endswith("_FILE")}
    api = build_watcher(manager, without, log)
    assert isinstance(api, ConfigMapWatcher) and api.secret_watcher is None


async def test_watch_config_dir_mode_reloads_on_a_rotated_secret(
    tmp_path: Path, secret_volumes: Secrets
) -> None:
    """The server's path: OPENFLARE_WATCH=dir and the token file, nothing else."""
    volume = KubeletVolume(tmp_path / "cfg", {"proxy.yaml": "a"})
    manager = StaticManager(str(volume.folder / "proxy.yaml"))
    env = {
        "OPENFLARE_WATCH": "dir",
        "OPENFLARE_WATCH_INTERVAL_MS": "20",
        "OPENFLARE_WATCH_DEBOUNCE_MS": "20",
        "OPENFLARE_ADMIN_TOKEN_FILE": secret_volumes.env["OPENFLARE_ADMIN_TOKEN_FILE"],
    }
    log = RecordingLog()
    async with watch_config(manager, env, log) as task:
        assert task is not None
        await eventually(lambda: bool(log.named("config_watch_started")))
        secret_volumes.token.update({"token": NEW_TOKEN})
        await eventually(lambda: manager.calls == ["secret_watch"])
    assert task.done()
    assert [e["variable"] for e in log.named("secret_watch_update")] == [
        "OPENFLARE_ADMIN_TOKEN_FILE"
    ]


async def test_api_watch_mode_polls_the_secret_files_beside_the_configmaps(
    tmp_path: Path,
    secret_volumes: Secrets,
    api_server: Callable[..., Awaitable[tuple[FakeApiServer, Any]]],
    running: Callable[[Any], asyncio.Task[None]],
) -> None:
    cm = configmap("of-waf", "5", {"rules.waf.yaml": "x"})
    _, factory = await api_server(FakeApiServer(lists=[listing([cm], "5")], watches=[]))
    manager = StaticManager(str(tmp_path / "mirror" / "waf" / "proxy.yaml"))
    log = RecordingLog()
    secrets = DirectoryWatcher(
        manager,
        log,
        interval=0.02,
        debounce=0.05,
        folders=list,
        source="secret_watch",
        secrets=secret_files(secret_volumes.env),
        mode="secrets",
    )
    watcher = ConfigMapWatcher(
        manager,
        log,
        targets=[ConfigMapTarget("of-waf", "waf")],
        namespace="edge",
        mirror=tmp_path / "mirror",
        api_client_factory=factory,
        debounce=0.02,
        secret_watcher=secrets,
    )
    running(watcher)
    await eventually(lambda: manager.calls == ["k8s_watch"] and secrets.looks >= 2)
    secret_volumes.redis.update({"url": NEW_REDIS})
    await eventually(lambda: manager.calls == ["k8s_watch", "secret_watch"])
    assert [e["variable"] for e in log.named("secret_watch_update")] == ["OPENFLARE_REDIS_URL_FILE"]
    assert {e["mode"] for e in log.named("config_watch_started")} == {"k8s", "secrets"}
