"""Tests for the OpenFlare test origin.

Most endpoints are exercised in-process with Starlette's ``TestClient``; connection-level
behaviour (raw request targets, chunked framing, truncation, resets, disconnects) is checked
against a real uvicorn server on a free port, partly with raw sockets.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from openflare_testsite import create_app
from openflare_testsite.__main__ import parse_args
from openflare_testsite.common import PATTERN, etag_matches, pattern_bytes, pattern_sha256
from openflare_testsite.server import bind_socket, build_config

SRC_DIR = Path(__file__).resolve().parents[1] / "src"


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def app() -> FastAPI:
    return create_app()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@dataclass
class Live:
    host: str
    port: int
    app: FastAPI
    errors: list[logging.LogRecord]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="session")
def live_server() -> Iterator[Live]:
    app = create_app()
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(build_config(app, "127.0.0.1", port, log_level="error"))
    errors: list[logging.LogRecord] = []
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    handler = _Collect(errors)
    logging.getLogger("uvicorn.error").addHandler(handler)
    yield Live("127.0.0.1", port, app, errors)
    logging.getLogger("uvicorn.error").removeHandler(handler)
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def live(live_server: Live, request: pytest.FixtureRequest) -> Iterator[Live]:
    """The shared real server, reset; fails the test if uvicorn logged an error meanwhile."""
    httpx.post(f"{live_server.url}/__reset")
    live_server.errors.clear()
    yield live_server
    if request.node.get_closest_marker("server_errors_expected") is None:
        messages = [record.getMessage() for record in live_server.errors]
        assert messages == [], "uvicorn logged errors"


@pytest.fixture
def http(live: Live) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=10) as http_client:
        yield http_client


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    end: str  # "eof", "reset" or "timeout"
    header_time: float
    end_time: float

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def raw_request(live: Live, request: bytes, timeout: float = 5.0) -> RawResponse:
    """Send ``request`` bytes verbatim and read until EOF / reset / timeout."""
    started = time.monotonic()
    data = b""
    header_time = 0.0
    end = "eof"
    with socket.create_connection((live.host, live.port), timeout=timeout) as sock:
        sock.sendall(request)
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if not header_time and b"\r\n\r\n" in data:
                    header_time = time.monotonic() - started
        except ConnectionResetError:
            end = "reset"
        except TimeoutError:
            end = "timeout"
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    return RawResponse(status, headers, body, end, header_time, time.monotonic() - started)


def get_request(target: str, extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: origin\r\n{extra}Connection: close\r\n\r\n".encode()


def assert_stamped(response: httpx.Response, json_body: bool = True) -> None:
    ts = response.headers["x-origin-time"]
    seq = response.headers["x-origin-seq"]
    assert float(ts) == pytest.approx(time.time(), abs=60)
    assert len(ts.split(".")[1]) == 6
    assert int(seq) > 0
    assert "date" in response.headers
    if json_body:
        body = response.json()
        assert body["ts"] == ts
        assert body["seq"] == int(seq)


# --- cross-cutting ----------------------------------------------------------------------------


def test_stamps_on_json_and_seq_increases(client: TestClient) -> None:
    first = client.get("/api/time")
    second = client.get("/api/time")
    assert_stamped(first)
    assert_stamped(second)
    assert int(second.headers["x-origin-seq"]) > int(first.headers["x-origin-seq"])


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/does-not-exist", 404),
        ("DELETE", "/cache/public-short", 405),
        ("GET", "/cache/max-age/notanint", 422),
        ("GET", "/error/503", 503),
    ],
)
def test_stamps_on_errors(client: TestClient, method: str, path: str, status: int) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    assert_stamped(response)
    assert response.json()["status"] == status


def test_stamps_on_304_and_html(client: TestClient) -> None:
    etag = client.get("/cache/etag").headers["etag"]
    response = client.get("/cache/etag", headers={"if-none-match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert_stamped(response, json_body=False)
    home = client.get("/")
    assert_stamped(home, json_body=False)
    assert f'data-seq="{home.headers["x-origin-seq"]}"' in home.text


def test_unhandled_exception_is_stamped_json_500() -> None:
    app = create_app()

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("kaput")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/boom")
    assert response.status_code == 500
    assert_stamped(response)
    assert "kaput" in response.json()["detail"]


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert client.head("/healthz").status_code == 200


# --- hit counter --------------------------------------------------------------------------------


def test_hits_counting_and_reset(client: TestClient) -> None:
    client.get("/cache/public-short?x=1")
    client.get("/cache/public-short?x=2")
    client.head("/cache/public-short")
    client.get("/api/items")
    client.get("/healthz")
    client.get("/__hits")
    one = client.get("/__hits", params={"path": "/cache/public-short"})
    assert one.status_code == 200
    assert one.json()["path"] == "/cache/public-short"
    assert one.json()["hits"] == 3
    assert_stamped(one)
    assert client.get("/__hits", params={"path": "/never"}).json()["hits"] == 0
    everything = client.get("/__hits").json()
    assert everything["hits"] == {"/cache/public-short": 3, "/api/items": 1}
    assert everything["total"] == 4
    reset = client.post("/__hits/reset")
    assert reset.json()["reset"] is True
    after = client.get("/__hits").json()
    assert after["hits"] == {}
    assert after["total"] == 0


def test_hits_use_raw_path_from_the_wire(live: Live, http: httpx.Client) -> None:
    raw_request(live, get_request("/path-test/a%2Fb?q=1"))
    raw_request(live, get_request("/path-test/a/b"))
    hits = http.get("/__hits").json()["hits"]
    assert hits == {"/path-test/a%2Fb": 1, "/path-test/a/b": 1}
    # httpx encodes "%" as "%25", so the origin looks up the literal "/path-test/a%2Fb"
    assert http.get("/__hits", params={"path": "/path-test/a%2Fb"}).json()["hits"] == 1


def test_hits_are_thread_safe(live: Live) -> None:
    def worker() -> None:
        with httpx.Client(base_url=live.url) as c:
            for _ in range(20):
                c.get("/cache/no-store")

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert httpx.get(f"{live.url}/__hits?path=/cache/no-store").json()["hits"] == 100


# --- site and static ----------------------------------------------------------------------------


def test_home_page(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "public, max-age=30"
    assert "/static/app.js" in response.text and "/static/style.css" in response.text


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("logo.svg", "image/svg+xml"),
    ],
)
def test_static_assets(client: TestClient, name: str, content_type: str) -> None:
    first = client.get(f"/static/{name}")
    second = client.get(f"/static/{name}")
    assert first.status_code == 200
    assert first.headers["content-type"] == content_type
    assert first.headers["cache-control"] == "public, max-age=3600"
    assert first.content == second.content and first.content
    etag = first.headers["etag"]
    assert etag == second.headers["etag"] and etag.startswith('"')
    assert etag == '"' + hashlib.sha256(first.content).hexdigest()[:32] + '"'
    for inm in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        not_modified = client.get(f"/static/{name}", headers={"if-none-match": inm})
        assert not_modified.status_code == 304, inm
        assert not_modified.headers["etag"] == etag
        assert not_modified.headers["cache-control"] == "public, max-age=3600"
    assert client.get(f"/static/{name}", headers={"if-none-match": '"x"'}).status_code == 200


def test_static_unknown_is_404(client: TestClient) -> None:
    assert client.get("/static/missing.js").status_code == 404


# --- cache directives ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "cache_control"),
    [
        ("/cache/public-short", "public, max-age=5"),
        ("/cache/public-long", "public, max-age=3600"),
        ("/cache/max-age/17", "public, max-age=17"),
        ("/cache/s-maxage/42", "public, s-maxage=42, max-age=0"),
        ("/cache/no-store", "no-store"),
        ("/cache/private", "private, max-age=60"),
        ("/cache/no-cache", "no-cache"),
        ("/cache/swr", "public, max-age=1, stale-while-revalidate=30"),
        ("/cache/sie", "public, max-age=1, stale-if-error=60"),
        ("/cache/must-revalidate", "public, max-age=1, must-revalidate"),
        ("/cache/vary-star", "public, max-age=60"),
        ("/cache/set-cookie", "public, max-age=60"),
        ("/cache/tags", "public, max-age=60"),
    ],
)
def test_cache_directives(client: TestClient, path: str, cache_control: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["cache-control"] == cache_control
    assert response.json()["cache_control"] == cache_control
    assert_stamped(response)
    assert client.head(path).status_code == 200


def test_cache_expires(client: TestClient) -> None:
    response = client.get("/cache/expires/120")
    assert response.status_code == 200
    assert "cache-control" not in response.headers
    date = parsedate_to_datetime(response.headers["date"])
    expires = parsedate_to_datetime(response.headers["expires"])
    assert (expires - date).total_seconds() == 120
    assert response.json()["expires"] == response.headers["expires"]


def test_cache_vary(client: TestClient) -> None:
    response = client.get("/cache/vary/Accept-Language", headers={"accept-language": "de-CH"})
    assert response.headers["vary"] == "Accept-Language"
    assert response.json()["value"] == "de-CH"
    assert client.get("/cache/vary/X-Missing").json()["value"] is None
    assert client.get("/cache/vary-star").headers["vary"] == "*"


def test_cache_set_cookie(client: TestClient) -> None:
    response = client.get("/cache/set-cookie")
    cookie = response.headers["set-cookie"]
    assert cookie == f"origin_visit={response.headers['x-origin-seq']}; Path=/"
    assert response.headers["cache-control"] == "public, max-age=60"


def test_cache_tags(client: TestClient) -> None:
    response = client.get("/cache/tags", params={"tags": "a, b,c"})
    assert response.headers["cache-tag"] == "a,b,c"
    assert response.headers["surrogate-key"] == "a b c"
    assert response.json()["tags"] == ["a", "b", "c"]
    assert client.get("/cache/tags").headers["cache-tag"] == "default"


def test_cache_no_headers(client: TestClient) -> None:
    response = client.get("/cache/no-headers")
    assert response.status_code == 200
    for name in ("cache-control", "expires", "etag", "last-modified", "vary", "set-cookie"):
        assert name not in response.headers


def test_cache_custom_sets_every_header(client: TestClient) -> None:
    params: dict[str, str | list[str]] = {
        "cc": "public, max-age=7",
        "status": "203",
        "vary": "Accept",
        "etag": "v9",
        "last_modified": "Tue, 02 Jan 2024 00:00:00 GMT",
        "expires": "Wed, 03 Jan 2024 00:00:00 GMT",
        "cdn_cc": "max-age=99",
        "set_cookie": ["a=1; Path=/", "b=2"],
    }
    response = client.get("/cache/custom", params=params)
    assert response.status_code == 203
    assert response.headers["cache-control"] == "public, max-age=7"
    assert response.headers["vary"] == "Accept"
    assert response.headers["etag"] == '"v9"'
    assert response.headers["last-modified"] == "Tue, 02 Jan 2024 00:00:00 GMT"
    assert response.headers["expires"] == "Wed, 03 Jan 2024 00:00:00 GMT"
    assert response.headers["cdn-cache-control"] == "max-age=99"
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2"]
    body = response.json()
    assert body["status"] == 203 and body["params"]["cdn_cc"] == "max-age=99"
    assert_stamped(response)


def test_cache_custom_body_size_and_conditionals(client: TestClient) -> None:
    text = client.get("/cache/custom", params={"body": "hello", "content_type": "text/x-demo"})
    assert text.content == b"hello"
    assert text.headers["content-type"].startswith("text/x-demo")
    sized = client.get("/cache/custom", params={"size": "1000"})
    assert sized.content == pattern_bytes(1000)
    assert sized.headers["content-length"] == "1000"
    etag = client.get("/cache/custom", params={"etag": '"x1"'}, headers={"if-none-match": 'W/"x1"'})
    assert etag.status_code == 304 and etag.headers["etag"] == '"x1"'
    lm = "Tue, 02 Jan 2024 00:00:00 GMT"
    newer = {"if-modified-since": "Wed, 03 Jan 2024 00:00:00 GMT"}
    assert (
        client.get("/cache/custom", params={"last_modified": lm}, headers=newer).status_code == 304
    )
    older = {"if-modified-since": "Mon, 01 Jan 2024 00:00:00 GMT"}
    assert (
        client.get("/cache/custom", params={"last_modified": lm}, headers=older).status_code == 200
    )
    assert client.get("/cache/custom", params={"status": "204"}).content == b""
    error = client.get("/cache/custom", params={"status": "502", "cc": "no-store"})
    assert error.status_code == 502 and error.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("params", [{"status": "99"}, {"status": "600"}, {"cc": "a\rb"}])
def test_cache_custom_rejects_bad_input(client: TestClient, params: dict[str, str]) -> None:
    assert client.get("/cache/custom", params=params).status_code == 400


def test_fail_switch(client: TestClient) -> None:
    assert client.get("/__fail").json()["mode"] == "off"
    assert client.post("/__fail", params={"mode": "500"}).json()["active"] is True
    for path in ("/cache/sie", "/cache/public-short", "/cache/etag", "/cache/custom"):
        failed = client.get(path)
        assert failed.status_code == 500, path
        assert failed.headers["cache-control"] == "no-store"
        assert_stamped(failed)
    assert client.get("/api/time").status_code == 200  # only /cache/* is affected
    assert client.post("/cache/etag/bump").status_code == 200  # admin helper stays usable
    assert client.post("/__fail", params={"mode": "503"}).json()["mode"] == "503"
    assert client.get("/cache/sie").status_code == 503
    assert client.post("/__fail", params={"mode": "off"}).json()["active"] is False
    assert client.get("/cache/sie").status_code == 200
    hits = client.get("/__hits").json()["hits"]
    assert hits["/cache/sie"] == 3 and not any(path.startswith("/__") for path in hits)
    assert client.post("/__fail", params={"mode": "bogus"}).status_code == 400
    assert client.post("/__fail").status_code == 400


def test_fail_switch_close_mode(live: Live, http: httpx.Client) -> None:
    http.post("/__fail", params={"mode": "close"})
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{live.url}/cache/sie")
    http.post("/__fail", params={"mode": "off"})
    assert http.get("/cache/sie").status_code == 200


# --- validators ---------------------------------------------------------------------------------


def test_etag_revalidation_and_bump(client: TestClient) -> None:
    first = client.get("/cache/etag")
    etag = first.headers["etag"]
    assert first.status_code == 200 and etag == '"etag-v1"'
    assert first.json()["version"] == 1
    assert first.headers["cache-control"] == "public, max-age=0"
    for inm in (etag, f"W/{etag}", f'"a", W/"b", {etag}', "*"):
        response = client.get("/cache/etag", headers={"if-none-match": inm})
        assert response.status_code == 304, inm
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert response.headers["cache-control"] == "public, max-age=0"
    assert client.get("/cache/etag", headers={"if-none-match": '"other"'}).status_code == 200
    bumped = client.post("/cache/etag/bump").json()
    assert bumped["version"] == 2 and bumped["etag"] == '"etag-v2"'
    fresh = client.get("/cache/etag", headers={"if-none-match": etag})
    assert fresh.status_code == 200
    assert fresh.headers["etag"] == '"etag-v2"' and fresh.json()["content"] == "version 2"
    longer = client.get("/cache/etag", params={"max_age": "30"})
    assert longer.headers["cache-control"] == "public, max-age=30"


def test_last_modified_revalidation(client: TestClient) -> None:
    first = client.get("/cache/last-modified")
    lm = first.headers["last-modified"]
    assert lm == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert "etag" not in first.headers
    same = client.get("/cache/last-modified", headers={"if-modified-since": lm})
    assert same.status_code == 304 and same.headers["last-modified"] == lm
    later = {"if-modified-since": "Fri, 01 Mar 2024 00:00:00 GMT"}
    assert client.get("/cache/last-modified", headers=later).status_code == 304
    earlier = {"if-modified-since": "Sun, 31 Dec 2023 23:59:59 GMT"}
    assert client.get("/cache/last-modified", headers=earlier).status_code == 200
    garbage = {"if-modified-since": "yesterday"}
    assert client.get("/cache/last-modified", headers=garbage).status_code == 200
    # If-None-Match takes precedence over If-Modified-Since
    both = {"if-modified-since": lm, "if-none-match": '"x"'}
    assert client.get("/cache/last-modified", headers=both).status_code == 200
    bumped = client.post("/cache/last-modified/bump").json()
    assert bumped["last_modified"] == "Tue, 02 Jan 2024 00:00:00 GMT"
    assert client.get("/cache/last-modified", headers={"if-modified-since": lm}).status_code == 200


@pytest.mark.parametrize(
    ("header", "etag", "expected"),
    [
        ('"a"', '"a"', True),
        ('W/"a"', '"a"', True),
        ('"a"', 'W/"a"', True),
        ('"b", "a"', '"a"', True),
        (' "b" ,W/"a" ', '"a"', True),
        ("*", '"z"', True),
        ('"b"', '"a"', False),
        ('"A"', '"a"', False),
        ('garbage, "a"', '"a"', True),
        ("", '"a"', False),
    ],
)
def test_etag_weak_comparison(header: str, etag: str, expected: bool) -> None:
    assert etag_matches(header, etag) is expected


# --- auth ---------------------------------------------------------------------------------------


def test_login_json_sets_session_cookie(client: TestClient) -> None:
    response = client.post("/auth/login", json={"username": "alice", "password": "pw"})
    assert response.status_code == 200
    token = response.json()["session"]
    assert response.headers["set-cookie"] == f"session={token}; HttpOnly; Path=/"
    assert response.json()["user"] == "alice"
    profile = client.get("/auth/profile")  # the client keeps the cookie
    assert profile.status_code == 200
    assert profile.json()["user"] == "alice" and profile.json()["auth"] == "session"
    private = client.get("/private")
    assert private.status_code == 200 and private.headers["cache-control"] == "private"
    logout = client.post("/auth/logout")
    assert logout.json()["ended_session"] is True
    client.cookies.set("session", token)
    assert client.get("/auth/profile").status_code == 401


def test_login_form_and_multipart(client: TestClient) -> None:
    form = client.post("/auth/login", data={"username": "bob", "password": "x"})
    assert form.status_code == 200 and form.json()["user"] == "bob"
    multipart = client.post(
        "/auth/login", files={"username": (None, "carol"), "password": (None, "y")}
    )
    assert multipart.status_code == 200 and multipart.json()["user"] == "carol"


@pytest.mark.parametrize("payload", [{"username": "", "password": "x"}, {"username": "a"}, {}])
def test_login_rejects_empty(client: TestClient, payload: dict[str, str]) -> None:
    assert client.post("/auth/login", json=payload).status_code == 401


def test_profile_and_private_auth_rules(client: TestClient) -> None:
    for path in ("/auth/profile", "/private"):
        denied = client.get(path)
        assert denied.status_code == 401
        assert "Bearer" in denied.headers["www-authenticate"]
        assert_stamped(denied)
        bearer = client.get(path, headers={"authorization": "Bearer x"})
        assert bearer.status_code == 200 and bearer.json()["auth"] == "bearer"
        creds = base64.b64encode(b"dave:secret").decode()
        basic = client.get(path, headers={"authorization": f"Basic {creds}"})
        assert basic.status_code == 200 and basic.json()["user"] == "dave"
        bad = client.get(path, headers={"authorization": "Basic !!!"})
        assert bad.status_code == 401
        client.cookies.set("session", "unknown")
        assert client.get(path).status_code == 401
        client.cookies.clear()


# --- JSON API -----------------------------------------------------------------------------------


def test_api_time_and_random(client: TestClient) -> None:
    now = client.get("/api/time")
    assert now.headers["cache-control"] == "no-store"
    assert now.json()["epoch"] == pytest.approx(time.time(), abs=60)
    assert now.json()["iso"].endswith("Z")
    first = client.get("/api/random").json()
    second = client.get("/api/random").json()
    assert first["hex"] != second["hex"]
    assert 0 <= first["value"] < 1


def test_api_echo(client: TestClient) -> None:
    got = client.get("/api/echo?a=1&a=2&b=3")
    assert got.json()["method"] == "GET"
    assert got.json()["query"] == {"a": ["1", "2"], "b": "3"}
    assert got.json()["json"] is None
    assert got.headers["cache-control"] == "no-store"
    posted = client.post("/api/echo?x=y", json={"k": [1, 2]})
    assert posted.json()["json"] == {"k": [1, 2]} and posted.json()["method"] == "POST"
    text = client.post("/api/echo", content=b"not json")
    assert text.json()["json"] is None and text.json()["body_text"] == "not json"


def test_api_items_crud(client: TestClient) -> None:
    assert client.get("/api/items").json()["items"] == []
    created = client.post("/api/items", json={"name": "widget", "qty": 1})
    assert created.status_code == 201
    item_id = created.json()["item"]["id"]
    assert created.headers["location"] == f"/api/items/{item_id}"
    assert created.headers["cache-control"] == "no-store"
    assert client.get(f"/api/items/{item_id}").json()["item"]["name"] == "widget"
    replaced = client.put(f"/api/items/{item_id}", json={"name": "gadget"})
    assert replaced.json()["item"] == {"name": "gadget", "id": item_id}
    patched = client.patch(f"/api/items/{item_id}", json={"qty": 5})
    assert patched.json()["item"] == {"name": "gadget", "qty": 5, "id": item_id}
    listing = client.get("/api/items").json()
    assert listing["count"] == 1 and listing["items"][0]["qty"] == 5
    deleted = client.delete(f"/api/items/{item_id}")
    assert deleted.status_code == 200 and deleted.json()["deleted"]["id"] == item_id
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        missing = client.request(method, f"/api/items/{item_id}", json={"a": 1})
        assert missing.status_code == 404, method
        assert missing.headers["cache-control"] == "no-store"
        assert_stamped(missing)
    assert client.post("/api/items", content=b"{broken").status_code == 400
    assert client.post("/api/items", json=[1, 2]).status_code == 400


# --- WAF echo -----------------------------------------------------------------------------------


def test_search_escapes_query(client: TestClient) -> None:
    payload = "<script>alert('x')</script>"
    response = client.get("/search", params={"q": payload})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert payload not in response.text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in response.text


def test_submit_form_json_multipart(client: TestClient) -> None:
    form = client.post("/submit", data={"a": "1", "b": ["2", "3"]}).json()
    assert form["kind"] == "form" and form["fields"] == {"a": "1", "b": ["2", "3"]}
    as_json = client.post("/submit", json={"x": {"y": 1}}).json()
    assert as_json["kind"] == "json" and as_json["fields"] == {"x": {"y": 1}}
    multipart = client.post(
        "/submit", data={"note": "hi"}, files={"file": ("a.txt", b"abc", "text/plain")}
    ).json()
    assert multipart["kind"] == "multipart"
    assert multipart["fields"]["note"] == "hi"
    assert multipart["fields"]["file"] == {
        "filename": "a.txt",
        "content_type": "text/plain",
        "size": 3,
        "sha256": hashlib.sha256(b"abc").hexdigest(),
    }
    raw = client.post("/submit", content=b"plain", headers={"content-type": "text/plain"})
    assert raw.json()["kind"] == "raw" and raw.json()["fields"] == "plain"


def test_echo_query(client: TestClient) -> None:
    response = client.get("/echo/query?a=1&a=2&b=&c=%27or%201%3D1")
    body = response.json()
    assert body["args"] == {"a": ["1", "2"], "b": "", "c": "'or 1=1"}
    assert body["query_string"] == "a=1&a=2&b=&c=%27or%201%3D1"


def test_echo_headers(client: TestClient) -> None:
    response = client.get("/echo/headers", headers={"X-Test": "1", "User-Agent": "sqlmap/1.0"})
    body = response.json()
    assert body["headers"]["x-test"] == "1"
    assert body["headers"]["user-agent"] == "sqlmap/1.0"
    assert ["x-test", "1"] in body["header_list"]


def test_echo_body(client: TestClient) -> None:
    payload = b"A" * 5000
    for method in ("POST", "PUT"):
        response = client.request(
            method, "/echo/body", content=payload, headers={"content-type": "text/plain"}
        )
        body = response.json()
        assert body["length"] == 5000 and body["content_type"] == "text/plain"
        assert body["sha256"] == hashlib.sha256(payload).hexdigest()
        assert body["text"] == "A" * 4096 and body["truncated"] is True


def test_webhooks(client: TestClient) -> None:
    first = client.post("/webhooks/test?src=gh", json={"event": "push"})
    record = first.json()["webhook"]
    assert record["id"] == 1 and record["payload"] == {"event": "push"}
    assert record["query"] == {"src": "gh"}
    client.post("/webhooks/test", content=b"raw", headers={"content-type": "text/plain"})
    listing = client.get("/webhooks/test").json()
    assert listing["count"] == 2
    assert [hook["id"] for hook in listing["webhooks"]] == [1, 2]


def test_path_test(client: TestClient) -> None:
    body = client.get("/path-test/x/y/z.php?a=1").json()
    assert body["path_param"] == "x/y/z.php"
    assert body["path"] == "/path-test/x/y/z.php"
    assert body["raw_path"] == "/path-test/x/y/z.php"
    assert body["query_string"] == "a=1"


def test_path_test_raw_encodings(live: Live) -> None:
    response = raw_request(live, get_request("/path-test/a%2Fb/%2e%2e/%2E%2e/c%20d"))
    assert response.status == 200
    body = json.loads(response.body)
    assert body["raw_path"] == "/path-test/a%2Fb/%2e%2e/%2E%2e/c%20d"
    assert body["path_param"] == "a/b/../../c d"


# --- debug echo ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE", "FOO"]
)
def test_debug_echo_any_method(client: TestClient, method: str) -> None:
    response = client.request(method, "/debug/echo?x=1", content=b"payload")
    assert response.status_code == 200
    body = response.json()
    assert body["method"] == method
    assert body["path"] == "/debug/echo"
    assert body["query_string"] == "x=1"
    assert body["body_bytes"] == 7 and body["body_text"] == "payload"
    assert body["body_sha256"] == hashlib.sha256(b"payload").hexdigest()
    assert response.headers["cache-control"] == "no-store"
    assert_stamped(response)


def test_debug_echo_head(client: TestClient) -> None:
    response = client.head("/debug/echo")
    assert response.status_code == 200 and response.content == b""
    assert int(response.headers["content-length"]) > 0


def test_debug_echo_raw_wire_view(live: Live) -> None:
    body = b"\xff\xfebinary"
    request = (
        b"PURGE /debug/echo/a%2Fb/%2e%2e/x?q=%20a+b&q=2&z HTTP/1.1\r\n"
        b"Host: origin\r\nX-Dup: one\r\nX-Other: 1\r\nX-Dup: two\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )
    response = raw_request(live, request)
    data = json.loads(response.body)
    assert data["method"] == "PURGE"
    assert data["raw_path"] == "/debug/echo/a%2Fb/%2e%2e/x"
    assert data["path"] == "/debug/echo/a/b/../x"
    assert data["query_string"] == "q=%20a+b&q=2&z"
    assert data["headers"] == [
        ["host", "origin"],
        ["x-dup", "one"],
        ["x-other", "1"],
        ["x-dup", "two"],
        ["content-length", str(len(body))],
        ["connection", "close"],
    ]
    host, port = data["client"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert data["http_version"] == "1.1"
    assert data["body_bytes"] == len(body)
    assert data["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert data["body_text"] == body.decode("utf-8", "replace")


def test_debug_echo_client_ignores_forwarded_headers(live: Live, http: httpx.Client) -> None:
    data = http.get("/debug/echo", headers={"x-forwarded-for": "203.0.113.9"}).json()
    assert data["client"].startswith("127.0.0.1:")


def test_debug_echo_http10_and_large_body(live: Live, http: httpx.Client) -> None:
    response = raw_request(live, b"GET /debug/echo HTTP/1.0\r\nHost: o\r\n\r\n")
    assert json.loads(response.body)["http_version"] == "1.0"
    big = b"x" * (100 * 1024)
    data = http.post("/debug/echo", content=big).json()
    assert data["body_bytes"] == len(big) and len(data["body_text"]) == 64 * 1024


def test_debug_headers(client: TestClient) -> None:
    response = client.get("/debug/headers", headers=[("x-a", "1"), ("x-a", "2")])
    assert response.json()["headers"]["x-a"] == "1, 2"


# --- robustness ---------------------------------------------------------------------------------


def test_slow(client: TestClient) -> None:
    started = time.monotonic()
    response = client.get("/slow", params={"delay_ms": 200})
    assert time.monotonic() - started >= 0.19
    assert response.json()["completed"] is True and response.json()["delay_ms"] == 200
    assert client.get("/slow", params={"delay_ms": -1}).status_code == 422


def test_slow_body_sends_headers_first(live: Live) -> None:
    response = raw_request(live, get_request("/slow-body?delay_ms=400"))
    assert response.status == 200
    assert response.header_time < 0.3
    assert response.end_time >= 0.39
    body = json.loads(response.body)
    assert body["body"] == "late" and body["delay_ms"] == 400
    assert body["seq"] == int(response.header("x-origin-seq") or 0)
    assert body["ts"] == response.header("x-origin-time")
    assert response.header("content-length") == str(len(response.body))


@pytest.mark.parametrize("code", [200, 201, 203, 206, 301, 302, 404, 418, 429, 451, 500, 503, 599])
def test_error_codes(client: TestClient, code: int) -> None:
    response = client.get(f"/error/{code}", follow_redirects=False)
    assert response.status_code == code
    assert response.json()["status"] == code
    assert_stamped(response)


@pytest.mark.parametrize("code", [204, 304])
def test_error_codes_without_body(live: Live, code: int) -> None:
    response = raw_request(live, get_request(f"/error/{code}"))
    assert response.status == code
    assert response.body == b""
    assert response.header("x-origin-seq") is not None


@pytest.mark.parametrize("code", [199, 600, 1000])
def test_error_code_out_of_range(client: TestClient, code: int) -> None:
    assert client.get(f"/error/{code}").status_code == 422


def test_large(client: TestClient) -> None:
    response = client.get("/large", params={"size": 1_000_003})
    assert len(response.content) == 1_000_003
    assert response.headers["content-length"] == "1000003"
    assert response.headers["x-body-sha256"] == hashlib.sha256(response.content).hexdigest()
    assert response.content[:64] == PATTERN and response.content[64:128] == PATTERN
    head = client.head("/large", params={"size": 10})
    assert head.headers["content-length"] == "10" and head.content == b""
    assert client.get("/large", params={"size": 256 * 1024 * 1024 + 1}).status_code == 422
    assert client.get("/large", params={"size": 0}).content == b""
    cached = client.get("/large", params={"size": 1, "cc": "public, max-age=60"})
    assert cached.headers["cache-control"] == "public, max-age=60"


def test_large_default_is_one_mib(client: TestClient) -> None:
    response = client.get("/large")
    assert len(response.content) == 1024 * 1024
    assert response.headers["x-body-sha256"] == pattern_sha256(1024 * 1024)


def test_stream_chunked(live: Live) -> None:
    response = raw_request(live, get_request("/stream/chunked?chunks=3&size=10&delay_ms=100"))
    assert response.header("transfer-encoding") == "chunked"
    assert response.header("content-length") is None
    assert response.body == b"a\r\n0123456789\r\na\r\nabcdefghij\r\na\r\nklmnopqrst\r\n0\r\n\r\n"
    assert response.end_time >= 0.19
    with httpx.Client(base_url=live.url) as c:
        streamed = c.get("/stream/chunked", params={"chunks": 40, "size": 1000})
    assert streamed.content == pattern_bytes(40_000)
    assert streamed.headers["x-body-sha256"] == hashlib.sha256(streamed.content).hexdigest()
    assert streamed.headers["x-chunk-count"] == "40"


def test_truncated(live: Live) -> None:
    response = raw_request(live, get_request("/truncated?declared=1000&sent=300"))
    assert response.status == 200
    assert response.header("content-length") == "1000"
    assert response.body == pattern_bytes(300)
    assert response.end == "eof"
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{live.url}/truncated")
    assert httpx.get(f"{live.url}/truncated?declared=5&sent=5").status_code == 400


def test_truncated_needs_real_server(client: TestClient) -> None:
    assert client.get("/truncated").status_code == 501
    assert client.get("/reset-mid-body").status_code == 501


def test_reset_mid_body_sends_rst(live: Live) -> None:
    response = raw_request(live, get_request("/reset-mid-body?size=200000&sent=100000"))
    assert response.status == 200
    assert response.header("content-length") == "200000"
    assert response.end == "reset"
    assert response.body == pattern_bytes(100_000)
    default = raw_request(live, get_request("/reset-mid-body"))
    assert default.end == "reset" and len(default.body) == 32 * 1024


def test_reset_mid_body_fin_mode(live: Live) -> None:
    response = raw_request(live, get_request("/reset-mid-body?size=1000&mode=fin"))
    assert response.status == 200
    assert response.end == "eof"
    assert response.body == pattern_bytes(500)


@pytest.mark.server_errors_expected
def test_reset_mid_body_exception_mode(live: Live) -> None:
    response = raw_request(live, get_request("/reset-mid-body?size=1000&mode=exception"))
    assert response.status == 200
    assert response.end == "eof"  # uvicorn closes with FIN, not RST
    assert response.body == pattern_bytes(500)
    assert any("Exception in ASGI application" in r.getMessage() for r in live.errors)


@pytest.mark.parametrize("path", ["/truncated", "/reset-mid-body", "/reset-mid-body?mode=fin"])
def test_connection_faults_on_head_are_quiet(live: Live, path: str) -> None:
    response = httpx.head(f"{live.url}{path}")
    assert response.status_code == 200 and response.content == b""
    time.sleep(0.2)  # let the server finish its (now pointless) close/reset


def test_upload_streams(live: Live, http: httpx.Client) -> None:
    chunk = os.urandom(64 * 1024)
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for _ in range(32):
            digest.update(chunk)
            yield chunk

    response = http.post("/upload", content=body(), headers={"content-type": "application/x-bin"})
    data = response.json()
    assert data["bytes"] == 32 * len(chunk)
    assert data["sha256"] == digest.hexdigest()
    assert data["content_type"] == "application/x-bin"
    assert data["content_length"] is None  # chunked request
    assert data["chunks"] >= 1
    put = http.put("/upload", content=b"abc").json()
    assert put["bytes"] == 3 and put["content_length"] == "3"
    assert put["sha256"] == hashlib.sha256(b"abc").hexdigest()


def test_headers_set(client: TestClient) -> None:
    response = client.get(
        "/headers/set?Connection=X-Foo&X-Foo=bar&Keep-Alive=timeout%3D5&X-Keep=1"
        "&X-Multi=a&X-Multi=b&Content-Length=3&Bad%20Name=1&Content-Type=text/x-a"
    )
    assert response.headers["connection"] == "X-Foo"
    assert response.headers["x-foo"] == "bar"
    assert response.headers["keep-alive"] == "timeout=5"
    assert response.headers["x-keep"] == "1"
    assert response.headers.get_list("x-multi") == ["a", "b"]
    assert response.headers["content-type"] == "text/x-a"
    body = response.json()
    assert ["Content-Length", "3"] in body["skipped"] and ["Bad Name", "1"] in body["skipped"]
    assert ["X-Foo", "bar"] in body["set"]


def test_fault_hang_times_out_and_is_abandoned(live: Live) -> None:
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{live.url}/fault/hang", timeout=0.3)
    assert time.monotonic() - started < 2
    short = httpx.get(f"{live.url}/fault/hang", params={"seconds": 0.05})
    assert short.status_code == 504 and short.json()["completed"] is True
    assert httpx.get(f"{live.url}/healthz").status_code == 200


def test_slow_returns_early_on_disconnect(live: Live) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{live.url}/slow", params={"delay_ms": 100_000}, timeout=0.2)
    assert httpx.get(f"{live.url}/healthz").status_code == 200


# --- admin / CLI --------------------------------------------------------------------------------


def test_reset_everything(client: TestClient) -> None:
    client.post("/cache/etag/bump")
    client.post("/api/items", json={"a": 1})
    client.post("/__fail", params={"mode": "500"})
    assert client.post("/__reset").json()["reset"] is True
    assert client.get("/cache/etag").json()["version"] == 1
    assert client.get("/api/items").json()["count"] == 0
    assert client.get("/__fail").json()["active"] is False
    assert client.get("/__hits").json()["total"] == 2  # the two GETs above


def test_parse_args(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TESTSITE_PORT", raising=False)
    assert parse_args([]).port == 8000
    assert parse_args(["--host", "0.0.0.0", "--port", "9001"]).port == 9001
    monkeypatch.setenv("TESTSITE_PORT", "9100")
    args = parse_args([])
    assert args.port == 9100 and args.host == "127.0.0.1"


def test_cli_serves(tmp_path: Path) -> None:
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "PYTHONPATH": str(SRC_DIR), "TESTSITE_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "openflare_testsite", "--host", "127.0.0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "CLI server did not come up"
                time.sleep(0.05)
        assert response.json()["status"] == "ok"
        assert response.headers["server"] == "uvicorn"
    finally:
        proc.terminate()
        proc.wait(10)
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert "GET /healthz" not in output  # access log is off
