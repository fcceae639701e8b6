import pytest

from openflare.config.models import RouteConfig, RoutingConfig
from openflare.routing import Router


def router(default: str | None = None) -> Router:
    return Router(
        RoutingConfig(
            default_upstream=default,
            routes=(
                RouteConfig(id="api", path_prefix="/api/", upstream="a"),
                RouteConfig(id="api-v2", path_prefix="/api/v2/", upstream="b"),
                RouteConfig(id="docs", host="docs.example.com", path_prefix="/", upstream="c"),
                RouteConfig(
                    id="docs-api", host="docs.example.com", path_prefix="/api/", upstream="d"
                ),
                RouteConfig(id="wild", host="*.example.com", path_prefix="/", upstream="e"),
            ),
        )
    )


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("x.test", "/api/users", "api"),
        ("x.test", "/api/v2/users", "api-v2"),  # longest prefix wins
        ("docs.example.com", "/guide", "docs"),
        ("DOCS.example.com:8080", "/guide", "docs"),  # case and port ignored
        ("docs.example.com", "/api/x", "docs-api"),
        ("shop.example.com", "/", "wild"),
        ("example.com", "/api/x", "api"),  # the wildcard needs a subdomain
        ("x.test", "/other", None),
    ],
)
def test_select(host: str, path: str, expected: str | None) -> None:
    found = router().select(host, path)
    assert (found.id if found else None) == expected


def test_default_upstream_catches_the_rest() -> None:
    found = router(default="origin").select("x.test", "/other")
    assert found is not None and found.id == "default" and found.upstream == "origin"
