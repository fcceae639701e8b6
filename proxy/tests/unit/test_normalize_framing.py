"""Requests RFC 9112 says must not be processed (pipeline/normalize.py framing_problem): a table
per rule, and the refusals the stage makes for targets."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from openflare.config.models import NormalizationConfig
from openflare.pipeline.normalize import PathRejected, framing_problem, normalize_path


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


@pytest.mark.parametrize(
    ("version", "pairs", "expected"),
    [
        ((1, 1), [("Host", "a")], None),
        ((1, 0), [], None),
        ((0, 9), [], (400, "http_version")),
        ((2, 0), [("Host", "a")], (505, "http_version")),
        ((1, 1), [("Host", "a"), ("Transfer-Encoding", "chunked")], None),
        ((1, 1), [("Host", "a"), ("Transfer-Encoding", "Chunked")], None),
        ((1, 1), [("Host", "a"), ("Transfer-Encoding", " chunked ")], None),
        ((1, 0), [("Transfer-Encoding", "chunked")], (400, "transfer_encoding_http10")),
        ((1, 1), [("Host", "a"), ("Transfer-Encoding", "gzip, chunked")], (501, "transfer_coding")),
        (
            (1, 1),
            [("Host", "a"), ("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
            (501, "transfer_coding"),
        ),
        ((1, 1), [("Host", "a"), ("Host", "a")], (400, "duplicate_host")),
        ((1, 1), [("Host", "a b")], (400, "invalid_host")),
        ((1, 1), [("Host", "a/b")], (400, "invalid_host")),
        ((1, 1), [("Host", "u@a")], (400, "invalid_host")),
        ((1, 1), [("Host", "a:x")], (400, "invalid_host")),
        ((1, 1), [("Host", "a:123456")], (400, "invalid_host")),
        ((1, 1), [("Host", "[::1")], (400, "invalid_host")),
        ((1, 1), [("Host", "[::1]:8080")], None),
        ((1, 1), [("Host", "Example.COM:")], None),
        ((1, 1), [("Host", "")], None),  # empty: the stage's missing-host check answers it
    ],
)
def test_framing_problem(
    version: tuple[int, int], pairs: list[tuple[str, str]], expected: tuple[int, str] | None
) -> None:
    assert framing_problem(version, headers(*pairs)) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("/caf\u00e9", "non_ascii"),
        ("/..;/admin", "dot_segment_parameter"),
        ("/a/.;x/b", "dot_segment_parameter"),
        ("/%2e%2e;/x", "dot_segment_parameter"),
    ],
)
def test_paths_refused(raw: str, reason: str) -> None:
    with pytest.raises(PathRejected) as info:
        normalize_path(raw, NormalizationConfig())
    assert info.value.reason == reason
