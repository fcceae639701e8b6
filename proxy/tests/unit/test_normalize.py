import pytest

from openflare.config.models import NormalizationConfig
from openflare.pipeline.normalize import (
    PathRejected,
    normalize_path,
    remove_dot_segments,
)

DEFAULT = NormalizationConfig()
LENIENT = NormalizationConfig(
    merge_slashes=False, reject_encoded_slash=False, reject_backslash=False
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/a/%2e%2e/b", "/b"),
        ("/a/%2E%2e/%2e/b", "/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("//a///b//", "/a/b/"),
        ("/%7Euser", "/~user"),
        ("/%41%42c", "/ABc"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%20b", "/a%20b"),
        ("/a/.hidden", "/a/.hidden"),
        ("/a/..b/c", "/a/..b/c"),
    ],
)
def test_normalize_path(raw: str, expected: str) -> None:
    assert normalize_path(raw, DEFAULT) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("/a%2Fb", "encoded_slash"),
        ("/a%2fb", "encoded_slash"),
        ("/a%5Cb", "encoded_slash"),
        ("/a%00b", "encoded_nul"),
        ("/a%zzb", "invalid_percent_encoding"),
        ("/a%4", "invalid_percent_encoding"),
        ("/a%", "invalid_percent_encoding"),
        ("/a\\b", "backslash"),
        ("/a\x00b", "control_character"),
        ("/a\x7fb", "control_character"),
        ("/a b", "control_character"),
        ("a/b", "not_origin_form"),
        ("http://evil/a", "not_origin_form"),
    ],
)
def test_normalize_path_rejects(raw: str, reason: str) -> None:
    with pytest.raises(PathRejected) as caught:
        normalize_path(raw, DEFAULT)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/a%2Fb/../c", "/c"),  # %2F is not a separator: "a%2Fb" is one segment
        ("/a%2fb", "/a%2Fb"),
        ("//a//b", "//a//b"),
        ("/a\\b", "/a\\b"),
    ],
)
def test_normalize_path_lenient(raw: str, expected: str) -> None:
    assert normalize_path(raw, LENIENT) == expected


@pytest.mark.parametrize(
    "raw", ["/a/b/../../../c", "/%2e%2e/%2E/x//y/", "/a/./b/../c/%7e", "/x/.././../y/.."]
)
def test_normalize_is_idempotent_and_leaves_no_dot_segments(raw: str) -> None:
    once = normalize_path(raw, DEFAULT)
    assert normalize_path(once, DEFAULT) == once
    assert "/../" not in once + "/" and "/./" not in once + "/"


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/a/b/c/./../../g", "/a/g"), ("/mid/content=5/../6", "/mid/6"), ("/..", "/")],
)
def test_remove_dot_segments_rfc3986_examples(path: str, expected: str) -> None:
    assert remove_dot_segments(path) == expected
