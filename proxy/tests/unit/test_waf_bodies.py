"""Body parsers: formats, bounds, and XML parsed safely (entities flagged, never expanded)."""

from __future__ import annotations

import json
import time

import pytest

from openflare.waf.bodies import BodyData, header_params, parse_body, parse_urlencoded


def parse(content_type: str, raw: bytes, **limits: int) -> BodyData:
    options = {"max_depth": 64, "max_values": 10_000, "max_parts": 1_000}
    options.update(limits)
    return parse_body(content_type, raw, truncated=False, **options)


def test_urlencoded() -> None:
    assert parse_urlencoded("a=1&b=%27x%27&c=d+e&&flag&%5B%24ne%5D=1", 100) == [
        ("a", "1"),
        ("b", "'x'"),
        ("c", "d e"),
        ("flag", ""),
        ("[$ne]", "1"),
    ]


def test_header_params_are_quote_aware() -> None:
    assert header_params('form-data; name="a;b"; filename="x\\"y.txt"') == {
        "name": "a;b",
        "filename": 'x"y.txt',
    }


def test_multipart_fields_filenames_and_files() -> None:
    raw = (
        b'--XyZ\r\nContent-Disposition: form-data; name="comment"\r\n\r\nhello\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="doc"; filename="../../a.php"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n<?php x ?>\r\n"
        b"--XyZ\r\nContent-Disposition: form-data; name=\"u\"; filename*=UTF-8''r%C3%A9.txt"
        b"\r\n\r\nz\r\n--XyZ--\r\n"
    )
    data = parse("multipart/form-data; boundary=XyZ", raw)
    assert data.kind == "multipart"
    assert ("multipart", "comment", "hello") in data.values
    assert ("filename", "doc", "../../a.php") in data.values
    assert ("filename", "u", "ré.txt") in data.values
    assert ("doc", "<?php x ?>") in data.files
    assert not data.flags


def test_multipart_truncated_inside_a_part_keeps_what_was_read() -> None:
    raw = (
        b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\nfirst\r\n--B\r\n'
        b'Content-Disposition: form-data; name="b"\r\n\r\nsecond-but-cut'
    )
    data = parse("multipart/form-data; boundary=B", raw)
    assert [v for _, _, v in data.values] == ["first", "second-but-cut"]


def test_multipart_part_limit() -> None:
    part = b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n'
    data = parse("multipart/form-data; boundary=B", part * 50 + b"--B--", max_parts=10)
    assert len(data.values) == 10 and "multipart_too_many_parts" in data.flags


def test_json_keys_and_string_values_at_any_depth() -> None:
    document = {"a": {"b": [{"c": "deep"}, 5, True, None]}, "$where": "x", "n": 1.5}
    data = parse("application/json", json.dumps(document).encode())
    assert ("json", "c", "deep") in data.values
    assert ("json", "b", "5") in data.values
    assert {n for _, n in data.names} == {"a", "b", "c", "$where", "n"}


def test_json_depth_and_value_bounds() -> None:
    deep = "[" * 200 + '"x"' + "]" * 200
    data = parse("application/json", deep.encode(), max_depth=10)
    assert "json_too_deep" in data.flags and not data.values
    many = json.dumps([str(i) for i in range(1000)]).encode()
    assert len(parse("application/json", many, max_values=50).values) == 50


def test_invalid_json_is_flagged_and_inspected_as_text() -> None:
    data = parse("application/json", b'{"a": "<script>"')
    assert "json_invalid" in data.flags
    assert ("text", "", '{"a": "<script>"') in data.values


def test_graphql_query_text() -> None:
    data = parse("application/json", b'{"query": "{ user { id } }", "variables": {}}')
    assert data.graphql == ["{ user { id } }"]
    data = parse("application/graphql", b"mutation { x }")
    assert data.graphql == ["mutation { x }"]


def test_xml_text_and_attributes() -> None:
    data = parse("application/xml", b'<a x="1"><b>two</b> tail<c y="3"/></a>')
    assert ("xml", "x", "1") in data.values and ("xml", "b", "two") in data.values
    assert ("xml", "y", "3") in data.values


@pytest.mark.parametrize(
    ("raw", "flags"),
    [
        (
            b'<!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><a>&e;</a>',
            {"xml_dtd", "xml_entity", "xml_external_entity"},
        ),
        (b'<!DOCTYPE a [<!ENTITY e "internal">]><a>&e;</a>', {"xml_dtd", "xml_entity"}),
        (b'<!DOCTYPE a SYSTEM "http://evil.example/x.dtd"><a/>', {"xml_dtd"}),
        (b"<a><b></a>", {"xml_invalid"}),
    ],
)
def test_xml_entities_are_detected_never_expanded(raw: bytes, flags: set[str]) -> None:
    data = parse("text/xml", raw)
    assert flags <= data.flags
    assert not any("root:" in v for _, _, v in data.values)


def test_billion_laughs_is_refused_quickly() -> None:
    lol = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + b"".join(
            b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
            for i in range(1, 10)
        )
        + b"]><lolz>&lol9;</lolz>"
    )
    started = time.perf_counter()
    data = parse("application/xml", lol)
    assert time.perf_counter() - started < 0.5
    assert "xml_entity" in data.flags


@pytest.mark.parametrize(
    ("content_type", "raw", "kind"),
    [
        ("", b'{"a": "b"}', "json"),
        ("text/plain", b"<a>b</a>", "xml"),
        ("application/octet-stream", b"just text", "text"),
        ("", b"a=1&b=2", "text"),
    ],
)
def test_sniffing_when_the_type_is_missing_or_generic(
    content_type: str, raw: bytes, kind: str
) -> None:
    data = parse(content_type, raw)
    assert data.kind == kind
    if raw == b"a=1&b=2":
        assert ("form", "b", "2") in data.values
