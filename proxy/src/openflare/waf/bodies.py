"""Request-body parsers for the WAF: urlencoded forms, multipart, JSON, XML and GraphQL.

Every parser is linear in the body size and bounded by `WafBody` (values, depth, parts): JSON is
parsed by orjson and walked without recursion; XML by expat through defusedxml, with entity
declarations and external references refused (detected and flagged, never expanded); multipart
with `bytes.find` from one boundary to the next. A body that does not parse is still inspected
as text, so sending the wrong Content-Type hides nothing. Only the inspection window is parsed:
the origin always receives the intact body from the forward stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import orjson
from defusedxml import DefusedXmlException, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import fromstring as xml_fromstring

from openflare.waf.transforms import _url_decode_once

FORM = "form"
MULTIPART = "multipart"
JSON = "json"
XML = "xml"
GRAPHQL = "graphql"
TEXT = "text"
FILENAME = "filename"

BINARY = "binary"
JSON_TYPES = ("application/json", "text/json", "application/csp-report")
XML_TYPES = ("application/xml", "text/xml", "application/soap+xml")
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(slots=True)
class BodyData:
    """What a body holds, by source (`form`, `multipart`, `json`, `xml`, `graphql`, `text`,
    `filename`): values as (source, name, value), names as (source, name)."""

    kind: str = ""
    values: list[tuple[str, str, str]] = field(default_factory=list)
    names: list[tuple[str, str]] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)
    graphql: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    text: str = ""


def _is_text(raw: bytes) -> bool:
    if b"\x00" in raw:
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(raw) - 4  # only a character cut by the inspection window
    return True


def media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def header_params(value: str) -> dict[str, str]:
    """`form-data; name="a;b"; filename=x` → {"name": "a;b", "filename": "x"} (one pass,
    quote-aware)."""
    params: dict[str, str] = {}
    items: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            current.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    for item in items[1:]:
        key, sep, val = item.partition("=")
        if sep:
            params[key.strip().lower()] = val.strip()
    return params


def parse_urlencoded(text: str, limit: int) -> list[tuple[str, str]]:
    """`a=1&b=%27` → [("a", "1"), ("b", "'")]: `+` is a space, escapes decoded once."""
    pairs: list[tuple[str, str]] = []
    if not text:
        return pairs
    for item in text.split("&", limit)[:limit]:
        if not item:
            continue
        name, _, value = item.partition("=")
        if "+" in item:
            name = name.replace("+", " ")
            value = value.replace("+", " ")
        if "%" in name:
            name = _url_decode_once(name)
        if "%" in value:
            value = _url_decode_once(value)
        pairs.append((name, value))
    return pairs


# Below this depth the JSON walk recurses (fast: string leaves are handled in their parent's
# loop, no tuple per node); deeper (max_depth may be up to 1024) it goes on with an explicit
# stack, which visits in the same order, so Python's recursion limit is never near.
JSON_RECURSION_DEPTH = 48


def _walk_json(document: Any, data: BodyData, max_depth: int, max_values: int) -> None:
    """Keys (as names) and strings and numbers (as values) of a JSON document, depth first:
    a dict's keys all at once, then its values from the last to the first; a list's items in
    order. Stops once `max_values` names and values are taken (a dict's keys count all at
    once); containers at `max_depth` are flagged `json_too_deep` and not entered."""
    if max_values > 0:
        _walk_node("", document, 0, max_values, data, max_depth)


def _walk_node(name: str, node: Any, depth: int, left: int, data: BodyData, max_depth: int) -> int:
    """Walk `node` (`left` > 0 values still to take); returns how many are left."""
    kind = type(node)
    if kind is str:
        data.values.append((JSON, name, node))
        return left - 1
    if kind is dict:
        if depth >= max_depth:
            data.flags.add("json_too_deep")
            return left
        if depth >= JSON_RECURSION_DEPTH:
            return _walk_stack(name, node, depth, left, data, max_depth)
        data.names.extend([(JSON, key) for key in node])
        left -= len(node)
        children: Any = reversed(node.items())
    elif kind is list:
        if depth >= max_depth:
            data.flags.add("json_too_deep")
            return left
        if depth >= JSON_RECURSION_DEPTH:
            return _walk_stack(name, node, depth, left, data, max_depth)
        children = [(name, item) for item in node]
    elif node is None or kind is bool:
        return left
    else:
        data.values.append((JSON, name, str(node)))
        return left - 1
    values = data.values
    for key, value in children:
        if left <= 0:
            break
        kind = type(value)
        if kind is str:
            values.append((JSON, key, value))
            left -= 1
        elif kind is dict or kind is list:
            left = _walk_node(key, value, depth + 1, left, data, max_depth)
        elif value is not None and kind is not bool:
            values.append((JSON, key, str(value)))
            left -= 1
    return left


def _walk_stack(name: str, node: Any, depth: int, left: int, data: BodyData, max_depth: int) -> int:
    """`_walk_node` without recursion, for the deep part of a document."""
    stack: list[tuple[str, Any, int]] = [(name, node, depth)]
    while stack and left > 0:
        name, node, depth = stack.pop()
        if isinstance(node, str):
            data.values.append((JSON, name, node))
            left -= 1
        elif isinstance(node, dict):
            if depth >= max_depth:
                data.flags.add("json_too_deep")
                continue
            for key, value in node.items():
                data.names.append((JSON, key))
                left -= 1
                stack.append((key, value, depth + 1))
        elif isinstance(node, list):
            if depth >= max_depth:
                data.flags.add("json_too_deep")
                continue
            stack.extend((name, item, depth + 1) for item in reversed(node))
        elif node is not None and not isinstance(node, bool):
            data.values.append((JSON, name, str(node)))
            left -= 1
    return left


def parse_json(raw: bytes, data: BodyData, max_depth: int, max_values: int) -> bool:
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    data.kind = JSON
    _walk_json(document, data, max_depth, max_values)
    if isinstance(document, dict):
        query = document.get("query")
        if isinstance(query, str):
            data.graphql.append(query)
    elif isinstance(document, list):
        for item in document[:32]:  # batched GraphQL
            if isinstance(item, dict) and isinstance(item.get("query"), str):
                data.graphql.append(item["query"])
    return True


def _local(tag: str) -> str:
    return tag.rpartition("}")[2] if tag.startswith("{") else tag


def parse_xml(raw: bytes, data: BodyData, max_depth: int, max_values: int) -> bool:
    head = raw[:4096].lower()
    if b"<!doctype" in head:
        data.flags.add("xml_dtd")
    try:
        root = xml_fromstring(raw, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except EntitiesForbidden as exc:
        data.flags.add("xml_entity")
        if exc.sysid or exc.pubid:
            data.flags.add("xml_external_entity")
        return False
    except ExternalReferenceForbidden:
        data.flags.update(("xml_entity", "xml_external_entity"))
        return False
    except (DefusedXmlException, ParseError, ValueError):
        data.flags.add("xml_invalid")
        return False
    data.kind = XML
    budget = max_values
    stack: list[tuple[Element, int]] = [(root, 0)]
    while stack and budget > 0:
        element, depth = stack.pop()
        tag = _local(str(element.tag))
        data.names.append((XML, tag))
        for key, value in element.attrib.items():
            name = _local(key)
            data.names.append((XML, name))
            data.values.append((XML, name, value))
            budget -= 2
        text = element.text
        if text and not text.isspace():
            data.values.append((XML, tag, text))
            budget -= 1
        tail = element.tail
        if tail and not tail.isspace():
            data.values.append((XML, tag, tail))
        if depth >= max_depth:
            data.flags.add("xml_too_deep")
            continue
        stack.extend((child, depth + 1) for child in reversed(list(element)))
    return True


def parse_multipart(raw: bytes, boundary: str, data: BodyData, max_parts: int) -> bool:
    if not boundary or len(boundary) > 200:
        data.flags.add("multipart_invalid")
        return False
    delimiter = b"--" + boundary.encode("latin-1", "replace")
    position = raw.find(delimiter)
    if position < 0:
        data.flags.add("multipart_invalid")
        return False
    data.kind = MULTIPART
    if raw[:position].strip():
        data.flags.add("multipart_preamble")
    parts = 0
    while parts < max_parts:
        start = position + len(delimiter)
        if raw[start : start + 2] == b"--":
            return True
        following = raw.find(b"\r\n" + delimiter, start)
        chunk = raw[start:following] if following >= 0 else raw[start:]
        parts += 1
        _multipart_part(chunk, data)
        if following < 0:
            return True  # the window ended inside this part
        position = following + 2
    data.flags.add("multipart_too_many_parts")
    return True


def _multipart_part(chunk: bytes, data: BodyData) -> None:
    if chunk.startswith(b"\r\n"):
        chunk = chunk[2:]
    else:
        data.flags.add("multipart_invalid")
    head, sep, body = chunk.partition(b"\r\n\r\n")
    if not sep:
        data.flags.add("multipart_invalid")
        head, body = chunk, b""
    name = filename = ""
    has_disposition = False
    for line in head.decode("utf-8", "replace").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-disposition":
            has_disposition = True
            params = header_params(value)
            name = params.get("name", "")
            filename = params.get("filename", "")
            starred = params.get("filename*")
            if starred:
                filename = _url_decode_once(starred.rpartition("'")[2])
    if not has_disposition:
        data.flags.add("multipart_invalid")
    data.names.append((MULTIPART, name))
    text = body.decode("utf-8", "replace")
    if filename or "filename" in head.decode("latin-1").lower():
        data.values.append((FILENAME, name, filename))
        data.files.append((name, text))
    else:
        data.values.append((MULTIPART, name, text))


def parse_body(
    content_type: str,
    raw: bytes,
    *,
    truncated: bool,
    max_depth: int,
    max_values: int,
    max_parts: int,
) -> BodyData:
    data = BodyData(text=raw.decode("utf-8", "replace"))
    if not raw:
        return data
    media = media_type(content_type)
    if media == FORM_TYPE:
        data.kind = FORM
        for name, value in parse_urlencoded(data.text, max_values):
            data.names.append((FORM, name))
            data.values.append((FORM, name, value))
        return data
    if media == "multipart/form-data" or media.startswith("multipart/"):
        boundary = header_params(content_type).get("boundary", "")
        if parse_multipart(raw, boundary, data, max_parts):
            return data
    elif media in JSON_TYPES or media.endswith("+json"):
        if parse_json(raw, data, max_depth, max_values):
            return data
        if not truncated:
            data.flags.add("json_invalid")
    elif media in XML_TYPES or media.endswith("+xml"):
        if parse_xml(raw, data, max_depth, max_values):
            return data
    elif media == "application/graphql":
        data.kind = GRAPHQL
        data.graphql.append(data.text)
        data.values.append((GRAPHQL, "query", data.text))
        return data
    else:
        first = raw.lstrip()[:1]
        if first in (b"{", b"[") and parse_json(raw, data, max_depth, max_values):
            return data
        if first == b"<" and parse_xml(raw, data, max_depth, max_values):
            return data
    # Not parsed (unknown type, or invalid): the text itself is the value, unless it is binary
    # (not UTF-8, or with NUL bytes: images, archives), which only the `body` target sees.
    # Text declared as application/octet-stream is still inspected: a label hides nothing.
    if not _is_text(raw):
        data.kind = data.kind or BINARY
        return data
    data.kind = data.kind or TEXT
    data.values.append((TEXT, "", data.text))
    if "=" in data.text[:256] and "\n" not in data.text[:256]:
        for name, value in parse_urlencoded(data.text, max_values):
            data.names.append((FORM, name))
            data.values.append((FORM, name, value))
    return data
