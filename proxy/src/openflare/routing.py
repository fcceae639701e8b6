"""Route table: (host, path prefix) → upstream, compiled once per runtime.

Routes for a specific host (exact, then `*.suffix`) are tried before host-less routes; within
each, the longest path prefix wins. `routing.default_upstream` is the route `default` that
matches anything left over; with no default, an unmatched request gets 404."""

from __future__ import annotations

from dataclasses import dataclass

from openflare.config.models import RoutingConfig

DEFAULT_ROUTE_ID = "default"


@dataclass(frozen=True, slots=True)
class Route:
    id: str
    upstream: str
    path_prefix: str = "/"
    server_timing: bool = False  # add Server-Timing to this route's responses


def _host_only(host: str) -> str:
    host = host.lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _longest_prefix_first(routes: list[Route]) -> list[Route]:
    return sorted(routes, key=lambda r: len(r.path_prefix), reverse=True)


class Router:
    __slots__ = ("_exact", "_wildcard", "_any", "_default")

    def __init__(self, config: RoutingConfig) -> None:
        self._exact: dict[str, list[Route]] = {}
        self._wildcard: list[tuple[str, list[Route]]] = []
        wildcard: dict[str, list[Route]] = {}
        self._any: list[Route] = []
        for rc in config.routes:
            route = Route(rc.id, rc.upstream, rc.path_prefix, rc.server_timing)
            if rc.host is None:
                self._any.append(route)
            elif rc.host.startswith("*."):
                wildcard.setdefault(rc.host[1:], []).append(route)  # ".example.com"
            else:
                self._exact.setdefault(rc.host, []).append(route)
        self._exact = {h: _longest_prefix_first(rs) for h, rs in self._exact.items()}
        self._wildcard = sorted(
            ((suffix, _longest_prefix_first(rs)) for suffix, rs in wildcard.items()),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        self._any = _longest_prefix_first(self._any)
        self._default = (
            Route(
                DEFAULT_ROUTE_ID,
                config.default_upstream,
                server_timing=config.default_server_timing,
            )
            if config.default_upstream is not None
            else None
        )

    @staticmethod
    def _first(routes: list[Route], path: str) -> Route | None:
        for route in routes:
            if path.startswith(route.path_prefix):
                return route
        return None

    def select(self, host: str, path: str) -> Route | None:
        if self._exact or self._wildcard:
            name = host.lower()
            candidates = self._exact.get(name) or self._exact.get(_host_only(name))
            if candidates:
                found = self._first(candidates, path)
                if found is not None:
                    return found
            bare = _host_only(name)
            for suffix, routes in self._wildcard:
                if name.endswith(suffix) or bare.endswith(suffix):  # "*.x.com:8080" keeps a port
                    found = self._first(routes, path)
                    if found is not None:
                        return found
        return self._first(self._any, path) or self._default
