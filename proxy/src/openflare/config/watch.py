"""Reload triggers for a mounted config: a directory watcher and a Kubernetes ConfigMap watcher.

Both only decide *when* to reload; `ConfigManager.reload` does the rest (load and validate the
whole bundle, build a new runtime, swap; a bad edit keeps the old config and is counted and
shown at `GET /admin/config`). Chosen by environment variables, which the Helm chart sets:

  OPENFLARE_WATCH              off (default) | dir | k8s
  OPENFLARE_WATCH_INTERVAL_MS  how often the folders (dir) and the secret files (dir and k8s)
                               are looked at (default 1000)
  OPENFLARE_WATCH_DEBOUNCE_MS  how long a change must hold still before the reload (default 500)
  OPENFLARE_K8S_CONFIGMAPS     k8s: NAME=FOLDER[,NAME=FOLDER...]: the ConfigMaps to watch and the
                               folder of the mirror each one is written to
  OPENFLARE_K8S_MIRROR_DIR     k8s: the writable mirror that `--config` points into
                               (default /tmp/openflare/config)
  OPENFLARE_K8S_NAMESPACE      k8s: default: the namespace of the pod's service account

`dir`: a ConfigMap volume is updated by the kubelet writing a new timestamped folder and
renaming a `..data` symlink over the old one; the visible files are symlinks through `..data`.
So the watcher polls the *folders* of the loaded files (never inotify on a file, whose inode is
replaced), hashes the content of their visible files, waits until the hash holds still for the
debounce time and reloads only when the content changed. A missing folder is reported once and
waited for; nothing here raises into the server.

`k8s`: the kubelet syncs a changed ConfigMap into the volume after up to a minute or more. With
API watch on, the proxy watches its ConfigMaps itself (kubernetes_asyncio, in-cluster
credentials; RBAC get/list/watch on those names only), writes each new version into the mirror
(a folder under /tmp that an init container seeded from the volumes, `python -m
openflare.config.watch mirror SRC DEST`) and reloads from it, usually within a second.

Secrets, in both modes: the files named by `OPENFLARE_ADMIN_TOKEN_FILE` and
`OPENFLARE_REDIS_URL_FILE` (mounted Secrets, which the kubelet swaps like a ConfigMap volume)
are read by every reload but are not config files, so they are watched too: their content is
hashed at every interval (the path opened anew, so the `..data` swap is followed), and a change
that holds still for the debounce time reloads with source `secret_watch` after a
`secret_watch_update` line naming the variable and the runbook's fingerprint of the new value
(the first 12 hex digits of the sha256 of the value, never the value). In `dir` mode the
directory watcher does this in the same loop as the folders; in `k8s` mode a second directory
watcher with no folders runs next to the API watch. `off` watches nothing, secrets included:
SIGHUP and `POST /admin/config/reload` are then the only triggers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import json
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from openflare.config.loader import REDIS_URL_FILE_ENV, TOKEN_FILE_ENV

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
DEFAULT_MIRROR_DIR = "/tmp/openflare/config"
MODES = ("off", "dir", "k8s")
SECRET_FILE_VARS = (TOKEN_FILE_ENV, REDIS_URL_FILE_ENV)  # the files every reload reads again


class Reloader(Protocol):
    """What the watchers need from `openflare.config.reload.ConfigManager`."""

    async def reload(self, source: str) -> Any: ...

    def status(self) -> dict[str, Any]: ...


class EventLog(Protocol):
    def event(self, level: str, event: str, **fields: Any) -> None: ...


# --- the directory watcher ---------------------------------------------------------------------


def visible_files(folder: Path) -> list[Path]:
    """The files a ConfigMap volume shows: everything not starting with a dot (`..data` and
    the timestamped folders are the kubelet's), symlinks followed."""
    return sorted(
        entry for entry in folder.iterdir() if not entry.name.startswith(".") and entry.is_file()
    )


def fingerprint(folders: Iterable[Path]) -> str | None:
    """A hash of the names and contents of the visible files; None when a folder is missing."""
    digest = hashlib.sha256()
    for folder in sorted(set(folders)):
        try:
            files = visible_files(folder)
            digest.update(f"\0dir {folder}\n".encode())
            for file in files:
                digest.update(f"\0file {file.name}\n".encode())
                digest.update(file.read_bytes())
        except OSError:
            return None  # the folder (or a file, mid-swap) went away or is unreadable: later
    return digest.hexdigest()


def source_folders(manager: Reloader) -> list[Path]:
    """The folders of the files the running config was loaded from (main file and rule files)."""
    sources = manager.status().get("sources", [])
    return sorted({Path(item["file"]).parent for item in sources})


def secret_files(env: Mapping[str, str]) -> dict[str, Path]:
    """The secret files a reload reads (`OPENFLARE_ADMIN_TOKEN_FILE`, `OPENFLARE_REDIS_URL_FILE`):
    variable → path, for the variables that are set (as `loader.read_secret_file` reads them)."""
    return {name: Path(env[name]) for name in SECRET_FILE_VARS if env.get(name)}


def secret_fingerprint(path: Path) -> str | None:
    """The sha256 (hex) of the value a reload would read from a secret file: its bytes without
    the trailing CR/LF, so its first 12 digits are the runbook's fingerprint (`printf %s "$NEW" |
    sha256sum`). The path is opened anew, following the symlinks through `..data` the kubelet
    swaps. None when the file cannot be read (missing, or a dangling symlink mid-swap)."""
    try:
        return hashlib.sha256(path.read_bytes().rstrip(b"\r\n")).hexdigest()
    except OSError:
        return None


@dataclass(frozen=True)
class Snapshot:
    """What the directory watcher compares from one look to the next."""

    config: str | None  # `fingerprint` of the config folders; None while one is missing
    secrets: tuple[tuple[str, str | None], ...] = ()  # (variable, `secret_fingerprint`)

    def missing(self) -> list[str]:
        """What cannot be read: `config` (a config folder), and the variables of the secret files
        that are unreadable."""
        missing = ["config"] if self.config is None else []
        return missing + [name for name, digest in self.secrets if digest is None]

    def changed_secrets(self, before: Snapshot) -> list[tuple[str, str]]:
        """(variable, new fingerprint) of the secret files whose value differs from `before`."""
        old = dict(before.secrets)
        return [(n, d) for n, d in self.secrets if d is not None and old.get(n) != d]


class DirectoryWatcher:
    """Polls the folders of the loaded config files, and the secret files the reload reads, and
    reloads when their content changed (source `file_watch`, or `secret_watch` when a secret
    file changed)."""

    def __init__(
        self,
        manager: Reloader,
        log: EventLog,
        *,
        interval: float = 1.0,
        debounce: float = 0.5,
        folders: Callable[[], list[Path]] | None = None,
        source: str = "file_watch",
        secrets: Mapping[str, Path] | None = None,
        mode: str = "dir",
    ) -> None:
        self._manager = manager
        self._log = log
        self._interval = interval
        self._debounce = debounce
        self._folders = folders or (lambda: source_folders(manager))
        self._source = source
        self._secrets = dict(sorted((secrets or {}).items()))
        self._mode = mode  # for the start line: "dir", or "secrets" next to the API watch
        self.reloads = 0  # reloads this watcher asked for (for tests and debugging)
        self.looks = 0  # snapshots taken (tests wait for more looks instead of for time)

    def _look(self, folders: list[Path]) -> Snapshot:
        self.looks += 1
        return Snapshot(
            fingerprint(folders),
            tuple((name, secret_fingerprint(path)) for name, path in self._secrets.items()),
        )

    async def _snapshot(self, folders: list[Path]) -> Snapshot:
        return await asyncio.to_thread(self._look, folders)

    def _report_missing(self, missing: list[str], folders: list[Path]) -> None:
        for name in missing:
            if name == "config":
                self._log.event(
                    "warning",
                    "config_watch_missing",
                    folders=[str(f) for f in folders],
                    message="a watched config folder is missing; keeping the loaded config",
                )
            else:
                self._log.event(
                    "warning",
                    "secret_watch_missing",
                    variable=name,
                    file=str(self._secrets[name]),
                    message="a watched secret file is unreadable; keeping the loaded config",
                )

    async def run(self) -> None:
        folders = self._folders()
        last = await self._snapshot(folders)
        reported: list[str] = []  # what is missing and was logged (once, not every poll)
        self._log.event(
            "info",
            "config_watch_started",
            mode=self._mode,
            folders=[str(f) for f in folders],
            secrets={name: str(path) for name, path in self._secrets.items()},
            interval_s=self._interval,
            debounce_s=self._debounce,
        )
        while True:
            await asyncio.sleep(self._interval)
            current = await self._snapshot(folders)
            missing = current.missing()
            self._report_missing([name for name in missing if name not in reported], folders)
            reported = missing
            if missing or current == last:
                continue
            # Debounce: reload once the content has held still for `debounce` seconds (an
            # editor's several writes, or several ConfigMaps updated one after the other).
            while True:
                await asyncio.sleep(self._debounce)
                settled = await self._snapshot(folders)
                if settled == current:
                    break
                current = settled
            if current.missing() or current == last:
                continue  # reported on the next look
            changed = current.changed_secrets(last)
            for name, digest in changed:  # the variable, never the value
                self._log.event(
                    "info",
                    "secret_watch_update",
                    variable=name,
                    file=str(self._secrets[name]),
                    sha256=digest[:12],
                )
            self.reloads += 1
            # A rejected reload (e.g. an empty file) keeps the running config; the next change
            # of the content is a change against this look, so it is reloaded again.
            await self._manager.reload("secret_watch" if changed else self._source)
            last = current
            new_folders = self._folders()  # rule_files may now name other folders
            if new_folders != folders:
                # A file there may have changed since the reload read it: look once more (a
                # reload of unchanged content is cheap and swaps nothing).
                folders, last = new_folders, Snapshot("", last.secrets)


# --- the Kubernetes API watcher ----------------------------------------------------------------


@dataclass(frozen=True)
class ConfigMapTarget:
    name: str
    folder: str  # a folder name inside the mirror


def parse_targets(text: str) -> tuple[ConfigMapTarget, ...]:
    """`openflare-config=config,openflare-waf=waf` → targets; ValueError with the reason."""
    targets: list[ConfigMapTarget] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, folder = item.partition("=")
        name, folder = name.strip(), folder.strip()
        if not sep or not name or not folder:
            raise ValueError(f"expected NAME=FOLDER, got {item!r}")
        if "/" in folder or folder.startswith("."):
            raise ValueError(f"folder {folder!r} must be a plain folder name")
        targets.append(ConfigMapTarget(name, folder))
    if not targets:
        raise ValueError("no ConfigMaps named")
    return tuple(targets)


def data_hash(data: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(data), sort_keys=True).encode()).hexdigest()


def write_folder(folder: Path, data: Mapping[str, str]) -> None:
    """Make `folder` hold exactly the files in `data`: each file replaced atomically, files that
    are no longer keys removed. Keys that could escape the folder are skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {key for key in data if key and "/" not in key and not key.startswith(".")}
    for key in sorted(wanted):
        tmp = folder / f".{key}.tmp"
        tmp.write_text(data[key], encoding="utf-8")
        os.replace(tmp, folder / key)
    for entry in folder.iterdir():
        if not entry.name.startswith(".") and entry.name not in wanted and entry.is_file():
            entry.unlink()


def describe(exc: BaseException) -> str:
    """One line for the log: `403 Forbidden: <the API server's message>` for an API error (its
    str() holds the response headers, Date included, so it differs on every retry)."""
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status > 0:
        message = ""
        body = getattr(exc, "body", None)
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            message = str(json.loads(body or "{}").get("message", ""))
        return f"{status} {getattr(exc, 'reason', '')}: {message}".strip().rstrip(":")
    return f"{type(exc).__name__}: {exc}".strip()


def is_gone(exc: BaseException) -> bool:
    """410 Gone: the resourceVersion is too old; list again."""
    return getattr(exc, "status", None) == 410


def incluster_api_client() -> Any:
    """An ApiClient with the pod's service-account credentials (imported lazily: optional)."""
    k8s_config = importlib.import_module("kubernetes_asyncio.config")
    k8s_client = importlib.import_module("kubernetes_asyncio.client")
    k8s_config.load_incluster_config()
    return k8s_client.ApiClient()


def read_namespace(env: Mapping[str, str], path: str = SERVICE_ACCOUNT_NAMESPACE) -> str:
    namespace = env.get("OPENFLARE_K8S_NAMESPACE", "").strip()
    if namespace:
        return namespace
    try:
        return Path(path).read_text().strip()
    except OSError:
        raise ValueError(
            f"no namespace: set OPENFLARE_K8S_NAMESPACE or run in a pod ({path} is not readable)"
        ) from None


class ConfigMapWatcher:
    """Watches ConfigMaps through the API; writes each new version into the mirror; reloads.

    One list+watch per ConfigMap, with `fieldSelector=metadata.name=NAME` so that a Role
    restricted to these `resourceNames` allows it. A watch that ends is resumed from the last
    resourceVersion; 410 Gone lists again; any other error is logged (once per kind of error
    in a row) and retried with backoff (1 s doubling to 30 s). Changes are coalesced for the
    debounce time, so a `helm upgrade` that changes several ConfigMaps reloads once.
    """

    def __init__(
        self,
        manager: Reloader,
        log: EventLog,
        *,
        targets: Sequence[ConfigMapTarget],
        namespace: str,
        mirror: Path,
        api_client_factory: Callable[[], Any] = incluster_api_client,
        debounce: float = 0.5,
        watch_timeout_s: int = 300,
        max_backoff: float = 30.0,
        secret_watcher: DirectoryWatcher | None = None,
    ) -> None:
        self._manager = manager
        self._log = log
        self._targets = tuple(targets)
        self._namespace = namespace
        self._mirror = mirror
        self._factory = api_client_factory
        self._debounce = debounce
        self._watch_timeout_s = watch_timeout_s
        self._max_backoff = max_backoff
        self._hashes: dict[str, str] = {}
        self._dirty = asyncio.Event()
        # The Secrets are volumes, not ConfigMaps: their files are polled next to the API watch.
        self.secret_watcher = secret_watcher
        self.reloads = 0
        self.applied = 0  # ConfigMap versions written to the mirror

    async def run(self) -> None:
        for target in self._targets:  # what the init container seeded
            folder = self._mirror / target.folder
            with contextlib.suppress(OSError):
                self._hashes[target.name] = data_hash(
                    {f.name: f.read_text(encoding="utf-8") for f in visible_files(folder)}
                )
        self._log.event(
            "info",
            "config_watch_started",
            mode="k8s",
            namespace=self._namespace,
            configmaps=[t.name for t in self._targets],
            mirror=str(self._mirror),
        )
        async with asyncio.TaskGroup() as group:
            group.create_task(self._reload_loop())
            if self.secret_watcher is not None:
                group.create_task(self.secret_watcher.run())
            for target in self._targets:
                group.create_task(self._follow(target))

    async def _reload_loop(self) -> None:
        while True:
            await self._dirty.wait()
            while self._dirty.is_set():  # coalesce: wait until changes stop for `debounce`
                self._dirty.clear()
                await asyncio.sleep(self._debounce)
            self.reloads += 1
            await self._manager.reload("k8s_watch")

    async def _apply(self, target: ConfigMapTarget, data: Mapping[str, str] | None) -> None:
        data = dict(data or {})
        digest = data_hash(data)
        if self._hashes.get(target.name) == digest:
            return  # same content: nothing to do (the kubelet's resync, a label edit, ...)
        await asyncio.to_thread(write_folder, self._mirror / target.folder, data)
        self._hashes[target.name] = digest
        self.applied += 1
        self._log.event(
            "info",
            "config_watch_update",
            configmap=target.name,
            keys=sorted(data),
            sha256=digest[:12],
        )
        self._dirty.set()

    async def _follow(self, target: ConfigMapTarget) -> None:
        backoff = 1.0
        last_error = ""
        while True:
            try:
                async with self._factory() as api:
                    await self._list_and_watch(api, target)
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_gone(exc):
                    continue  # list again from now
                text = describe(exc)
                if text != last_error:  # one line per kind of failure, not one per retry
                    self._log.event(
                        "error",
                        "config_watch_error",
                        configmap=target.name,
                        namespace=self._namespace,
                        error=text[:500],
                        retry_s=backoff,
                    )
                    last_error = text
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
            else:
                last_error = ""

    async def _list_and_watch(self, api: Any, target: ConfigMapTarget) -> None:
        k8s_client = importlib.import_module("kubernetes_asyncio.client")
        k8s_watch = importlib.import_module("kubernetes_asyncio.watch")
        core = k8s_client.CoreV1Api(api)
        selector = f"metadata.name={target.name}"
        listing = await core.list_namespaced_config_map(self._namespace, field_selector=selector)
        if listing.items:
            await self._apply(target, listing.items[0].data)
        else:
            self._log.event(
                "warning", "config_watch_not_found", configmap=target.name, ns=self._namespace
            )
        version = listing.metadata.resource_version
        while True:
            watch = k8s_watch.Watch()
            async with watch.stream(
                core.list_namespaced_config_map,
                self._namespace,
                field_selector=selector,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=self._watch_timeout_s,
            ) as stream:
                async for event in stream:
                    kind = event["type"]
                    raw = event.get("raw_object") or {}
                    if kind in ("ADDED", "MODIFIED"):
                        await self._apply(target, raw.get("data"))
                    elif kind == "DELETED":
                        self._log.event(
                            "warning",
                            "config_watch_deleted",
                            configmap=target.name,
                            message="ConfigMap deleted; keeping the loaded config",
                        )
            version = watch.resource_version or version  # the server closed it: resume


# --- wiring ------------------------------------------------------------------------------------


def _millis(env: Mapping[str, str], name: str, default: int) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default / 1000
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"{name} must be a positive number of milliseconds, got {text!r}")
    return int(text) / 1000


def build_watcher(
    manager: Reloader, env: Mapping[str, str], log: EventLog
) -> DirectoryWatcher | ConfigMapWatcher | None:
    """The watcher the environment asks for, or None; ValueError says what is wrong. Either mode
    also watches the secret files (`secret_files`); `off` watches nothing."""
    mode = env.get("OPENFLARE_WATCH", "off").strip().lower() or "off"
    if mode not in MODES:
        raise ValueError(f"OPENFLARE_WATCH must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return None
    debounce = _millis(env, "OPENFLARE_WATCH_DEBOUNCE_MS", 500)
    interval = _millis(env, "OPENFLARE_WATCH_INTERVAL_MS", 1000)
    secrets = secret_files(env)
    if mode == "dir":
        return DirectoryWatcher(manager, log, interval=interval, debounce=debounce, secrets=secrets)
    try:
        importlib.import_module("kubernetes_asyncio")
    except ImportError:
        raise ValueError(
            "OPENFLARE_WATCH=k8s needs kubernetes_asyncio (pip install 'openflare[k8s]')"
        ) from None
    targets = parse_targets(env.get("OPENFLARE_K8S_CONFIGMAPS", ""))
    mirror = Path(env.get("OPENFLARE_K8S_MIRROR_DIR", "").strip() or DEFAULT_MIRROR_DIR)
    main_path = Path(str(manager.status().get("main_path", ""))).resolve()
    if mirror.resolve() not in main_path.parents:
        raise ValueError(
            f"OPENFLARE_WATCH=k8s: the config file {main_path} is not inside the mirror "
            f"{mirror}; run with --config {mirror}/<folder>/<file>"
        )
    secret_watcher = None
    if secrets:
        secret_watcher = DirectoryWatcher(
            manager,
            log,
            interval=interval,
            debounce=debounce,
            folders=list,  # no folders: the ConfigMaps come through the API
            source="secret_watch",
            secrets=secrets,
            mode="secrets",
        )
    return ConfigMapWatcher(
        manager,
        log,
        targets=targets,
        namespace=read_namespace(env),
        mirror=mirror,
        debounce=debounce,
        secret_watcher=secret_watcher,
    )


@contextlib.asynccontextmanager
async def watch_config(
    manager: Reloader, env: Mapping[str, str], log: EventLog
) -> AsyncIterator[asyncio.Task[None] | None]:
    """Runs the configured watcher for the life of the block (the server's serving phase).

    A watcher never takes the proxy down: a bad setting is logged once and nothing is
    watched; an unexpected failure inside a watcher is logged and the watcher stops.
    """
    try:
        watcher = build_watcher(manager, env, log)
    except ValueError as exc:
        log.event("error", "config_watch_disabled", error=str(exc))
        watcher = None
    task: asyncio.Task[None] | None = None
    if watcher is not None:

        async def guarded(run: Callable[[], Any]) -> None:
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # e.g. an ExceptionGroup out of the TaskGroup
                log.event("error", "config_watch_stopped", error=f"{type(exc).__name__}: {exc}")

        task = asyncio.get_running_loop().create_task(guarded(watcher.run), name="config-watch")
    try:
        yield task
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- `python -m openflare.config.watch mirror SRC DEST` (the chart's init container) -----------


def mirror_tree(source: Path, dest: Path) -> list[Path]:
    """Copy the visible files of SRC and of each visible folder of SRC into DEST (symlinks
    followed, so a ConfigMap volume becomes plain files). Returns the files written."""
    written: list[Path] = []
    for entry in sorted(source.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            target = dest / entry.name
            target.mkdir(parents=True, exist_ok=True)
            for file in visible_files(entry):
                shutil.copyfile(file, target / file.name)
                written.append(target / file.name)
        elif entry.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(entry, dest / entry.name)
            written.append(dest / entry.name)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m openflare.config.watch",
        description="Seed the writable config mirror for OPENFLARE_WATCH=k8s.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    mirror = commands.add_parser("mirror", help="copy mounted ConfigMap folders to a mirror")
    mirror.add_argument("source", type=Path)
    mirror.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        written = mirror_tree(args.source, args.dest)
    except OSError as exc:
        print(f"mirror: {exc}", file=sys.stderr)
        return 1
    elapsed_ms = (time.monotonic() - started) * 1000
    print(f"mirror: {len(written)} files from {args.source} to {args.dest} in {elapsed_ms:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
