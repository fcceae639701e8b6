"""Properties of path normalization (pipeline/normalize.py), for any input hypothesis finds:
it never raises anything but PathRejected, is idempotent, never leaves a `..` segment (also
not one hiding behind a `;parameter` or an escape), and keeps `%2F` from becoming a separator.
"""

from __future__ import annotations

from urllib.parse import unquote

from hypothesis import example, given, settings
from hypothesis import strategies as st

from openflare.config.models import NormalizationConfig
from openflare.pipeline.normalize import HOST_RE, PathRejected, framing_problem, normalize_path

OPTIONS = [
    NormalizationConfig(),
    NormalizationConfig(merge_slashes=False, reject_encoded_slash=False, reject_backslash=False),
]
# the pieces path confusion is made of, weighted towards the dangerous ones
PIECES = st.sampled_from(
    [
        "/",
        "//",
        ".",
        "..",
        "%2e",
        "%2E",
        "%2e%2e",
        ".%2e",
        "%2F",
        "%2f",
        "%5C",
        "\\",
        ";",
        ";x",
        "%3B",
        "%00",
        "%",
        "%4",
        "%41",
        "%7e",
        "%7E",
        "%c3%a9",
        "a",
        "b",
        "admin",
        "é",
        "~",
        "-",
        "_",
        "%25",
        "%252e",
        "?",
        "#",
        " ",
        "\t",
        "%20",
        "+",
        "*",
    ]
)
RAW_PATHS = st.lists(PIECES, max_size=14).map(lambda parts: "/" + "".join(parts))
OPTION = st.sampled_from(OPTIONS)


def _segments(path: str) -> list[str]:
    return path.split("/")


@settings(max_examples=800, deadline=None)
@given(raw=RAW_PATHS | st.text(max_size=40).map(lambda t: "/" + t), options=OPTION)
@example(raw="/..;/admin", options=OPTIONS[0])
@example(raw="/a/.%2e/%2e./b", options=OPTIONS[0])
def test_normalization_is_idempotent_and_leaves_no_dot_segments(
    raw: str, options: NormalizationConfig
) -> None:
    try:
        path = normalize_path(raw, options)
    except PathRejected:
        return
    assert path.startswith("/")
    assert normalize_path(path, options) == path  # idempotent
    for segment in _segments(path):
        assert segment not in (".", "..")
        assert segment.partition(";")[0] not in (".", "..")
        # an escape never hides a dot segment either: decoding once more finds none
        assert unquote(segment) not in (".", "..")
    if options.merge_slashes:
        assert "//" not in path


@settings(max_examples=400, deadline=None)
@given(raw=RAW_PATHS, options=OPTION)
def test_encoded_slash_never_becomes_a_separator(raw: str, options: NormalizationConfig) -> None:
    try:
        path = normalize_path(raw, options)
    except PathRejected:
        return
    # every separator in the result was a separator in the input
    assert path.count("/") <= raw.count("/")


@settings(max_examples=300, deadline=None)
@given(raw=RAW_PATHS)
def test_escapes_come_out_canonical(raw: str) -> None:
    try:
        path = normalize_path(raw, OPTIONS[0])
    except PathRejected:
        return
    index = path.find("%")
    while index >= 0:
        pair = path[index + 1 : index + 3]
        assert len(pair) == 2 and pair == pair.upper()
        assert (
            chr(int(pair, 16))
            not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
        )
        index = path.find("%", index + 3)


def test_dot_segment_with_a_parameter_is_refused() -> None:
    for raw in ("/..;/admin", "/a/.;x/b", "/%2e%2e;/admin", "/a/..;jsessionid=1/b"):
        try:
            normalize_path(raw, OPTIONS[0])
        except PathRejected as exc:
            assert exc.reason == "dot_segment_parameter"
        else:
            raise AssertionError(f"{raw} was accepted")
    assert normalize_path("/a;b/c;d=1", OPTIONS[0]) == "/a;b/c;d=1"  # ordinary parameters pass


# --- Host and framing checks never raise ------------------------------------------------------


class _Headers:
    """The MultiMapping surface framing_problem uses."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def getall(self, name: str, default: tuple[str, ...] = ()) -> list[str] | tuple[str, ...]:
        found = [v for k, v in self._pairs if k.lower() == name.lower()]
        return found or default


@settings(max_examples=400, deadline=None)
@given(
    version=st.tuples(st.integers(0, 3), st.integers(0, 9)),
    pairs=st.lists(
        st.tuples(st.sampled_from(["Host", "Transfer-Encoding", "X"]), st.text(max_size=30)),
        max_size=4,
    ),
)
def test_framing_problem_never_raises(
    version: tuple[int, int], pairs: list[tuple[str, str]]
) -> None:
    result = framing_problem(version, _Headers(pairs))  # type: ignore[arg-type]
    if result is None:
        hosts = [v for k, v in pairs if k == "Host"]
        assert len(hosts) <= 1
        assert not hosts or not hosts[0] or HOST_RE.fullmatch(hosts[0])
        assert version[0] == 1
    else:
        assert result[0] in (400, 501, 505)


@settings(max_examples=500)
@given(st.text(alphabet="ab1.:[]@/?#\\ \t\r\n\x00%-_~!$&'()*+,;=é", max_size=30))
def test_an_accepted_host_has_no_delimiters(host: str) -> None:
    if HOST_RE.fullmatch(host) is None:
        return
    for bad in "/?#@ \t\r\n\x00\\é":
        assert bad not in host
