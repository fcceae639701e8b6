"""Transforms: one table per transform, every encoding the pack relies on, and linear time."""

from __future__ import annotations

import base64
import time

import pytest

from openflare.waf.transforms import TRANSFORMS, apply_chain

STD = ("decode", "base64_decode", "decode", "remove_nulls", "unicode_normalize", "lowercase")


@pytest.mark.parametrize(
    ("name", "given", "expected"),
    [
        # url_decode: %HH, %uHHHH, repeated until stable, invalid escapes kept, + untouched
        ("url_decode", "%3Cscript%3E", "<script>"),
        ("url_decode", "%253Cscript%253E", "<script>"),
        ("url_decode", "%25253Cx", "<x"),
        ("url_decode", "%u003cimg%u003E", "<img>"),
        ("url_decode", "100% sure %zz %", "100% sure %zz %"),
        ("url_decode", "a+b%20c", "a+b c"),
        ("url_decode", "%c0%ae%c0%ae%c0%af", "../"),
        ("url_decode", "%E2%82%AC", "€"),
        ("url_decode", "plain", "plain"),
        # plus_to_space
        ("plus_to_space", "union+select", "union select"),
        # html_entity_decode: named, numeric, hex, no semicolon, leading zeros
        ("html_entity_decode", "&lt;script&gt;", "<script>"),
        ("html_entity_decode", "&#60;&#x3C;&#X3c;", "<<<"),
        ("html_entity_decode", "&#0000060;", "<"),
        ("html_entity_decode", "&#x3c&#62", "<>"),
        ("html_entity_decode", "javascript&colon;alert&lpar;1&rpar;", "javascript:alert(1)"),
        ("html_entity_decode", "&lt", "<"),
        ("html_entity_decode", "AT&T &unknown; &", "AT&T &unknown; &"),
        ("html_entity_decode", "&#99999999999;", "\ufffd"),
        # js_decode: \u, \u{}, \x, octal, \n \r \t, \\; other backslashes kept
        ("js_decode", r"\u003cscript\u003e", "<script>"),
        ("js_decode", r"\u{3c}b\u{003E}", "<b>"),
        ("js_decode", r"\x3cimg\x3e", "<img>"),
        ("js_decode", r"\047 or 1=1", "' or 1=1"),
        ("js_decode", r"a\r\nBcc:", "a\r\nBcc:"),
        ("js_decode", r"a\\nb", r"a\nb"),
        ("js_decode", r"..\..\windows\win.ini", r"..\..\windows\win.ini"),
        ("js_decode", r"C:\boot.ini", r"C:\boot.ini"),
        ("js_decode", "trailing\\", "trailing\\"),
        # base64_decode: whole values, URL-safe, no padding, tokens; junk and words untouched
        ("base64_decode", "PHNjcmlwdD4=", "PHNjcmlwdD4=\n<script>"),
        ("base64_decode", "PHNjcmlwdD4", "PHNjcmlwdD4\n<script>"),
        ("base64_decode", "Jy0tIG9yIDE9MQ", "Jy0tIG9yIDE9MQ\n'-- or 1=1"),
        (
            "base64_decode",
            "Basic YWxlcnQoZG9jdW1lbnQuY29va2llKQ==",
            "Basic YWxlcnQoZG9jdW1lbnQuY29va2llKQ==\nalert(document.cookie)",
        ),
        ("base64_decode", "x.eyJ1c2VyIjoiamFuZSJ9.y", 'x.eyJ1c2VyIjoiamFuZSJ9.y\n{"user":"jane"}'),
        ("base64_decode", "/products/JyBPUiAnMSc9JzE=", "/products/JyBPUiAnMSc9JzE=\n' OR '1'='1"),
        ("base64_decode", "password", "password"),
        ("base64_decode", "e3b0c44298fc1c149afbf4c8996fb924", "e3b0c44298fc1c149afbf4c8996fb924"),
        ("base64_decode", "short", "short"),
        ("base64_decode", "////++++////", "////++++////"),
        # hex_decode
        ("hex_decode", "0x3c7363726970743e", "0x3c7363726970743e\n<script>"),
        ("hex_decode", "deadbeefcafe", "deadbeefcafe"),
        # lowercase, whitespace
        ("lowercase", "SeLeCt", "select"),
        ("compress_whitespace", "union \t\x0b select", "union select"),
        ("compress_whitespace", "a  b \n  c", "a b\nc"),
        ("remove_whitespace", "u n\ti o n", "union"),
        # comments
        ("remove_comments", "union/**/select", "union select"),
        ("remove_comments", "/*!50000union*/ select", " union  select"),
        ("remove_comments", "1 /* open", "1  "),
        ("remove_comments", "a*/b", "a*/b"),
        ("remove_comments", "x /* a\nunion select */", "x  \nunion select */"),
        # nulls, paths, unicode, shell
        ("remove_nulls", "un\x00ion", "union"),
        ("normalize_path", "..\\..\\/./etc//passwd", "../..//etc/passwd".replace("//", "/")),
        ("unicode_normalize", "＜ｓｃｒｉｐｔ＞", "<script>"),
        ("unicode_normalize", "①②⑦.⓪.⓪.①", "127.0.0.1"),
        ("cmdline", "c'a't /e\"t\"c/pa\\ss^wd", "cat /etc/passwd"),
        ("cmdline", ";${IFS}cat$IFS/etc/passwd", "; cat /etc/passwd"),
        ("cmdline", "{cat,/etc/passwd}", " cat /etc/passwd "),
        ("cmdline", "a;b|c&d\ne", "a;b|c&d\ne"),
        # decode: URL + HTML + JS in any order until stable
        ("decode", "%26lt%3Bscript%26gt%3B", "<script>"),
        ("decode", "\\u0025\\u0033\\u0043", "<"),
        ("decode", "&#x25;3Cimg", "<img"),
        ("decode", "%5Cu003c", "<"),
    ],
)
def test_transform_table(name: str, given: str, expected: str) -> None:
    assert TRANSFORMS[name](given) == expected


@pytest.mark.parametrize(
    ("encoded", "contains"),
    [
        ("' OR '1'='1", "' or '1'='1"),
        ("%27%20OR%20%271%27%3D%271", "' or '1'='1"),
        ("%2527%2520OR%2520%25271", "' or '1"),
        (base64.b64encode(b"<script>alert(1)</script>").decode(), "<script>alert(1)</script>"),
        ("\\u003cscript\\u003ealert(1)", "<script>alert(1)"),
        ("\\x3cscript\\x3e", "<script>"),
        ("&lt;ScRiPt&gt;", "<script>"),
        ("%u003Cscript%u003E", "<script>"),
        ("＜script＞", "<script>"),
        ("un\x00ion sel\x00ect", "union select"),
        (base64.b64encode(b"%3Cscript%3E").decode(), "<script>"),
    ],
)
def test_standard_chain_decodes_every_encoding(encoded: str, contains: str) -> None:
    assert contains in apply_chain(encoded, STD)


def _timed(function: object, value: str) -> float:
    """Best of three, in CPU time of this process (a busy machine adds no noise)."""
    assert callable(function)
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        function(value)
        best = min(best, time.process_time() - started)
    return best


PATHOLOGICAL = [
    "%" * 100_000,
    "%25" * 100_000,
    "&#" * 100_000,
    "&#x" + "0" * 300_000,
    "\\u" * 100_000,
    "\\" * 300_000,
    "/*" * 100_000,
    "A" * 300_000,
    "QUJD" * 75_000 + "=",
    "a b " * 75_000,
    "%u" * 100_000,
]


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transforms_are_linear_on_pathological_input(name: str) -> None:
    """Each transform on 300 KB of its worst characters, then three times that: the time grows
    about linearly (generous bound for noisy machines) and stays small in absolute terms."""
    function = TRANSFORMS[name]
    for sample in PATHOLOGICAL:
        small = _timed(function, sample)
        large = _timed(function, sample * 3)
        assert large < max(small * 12, 0.2), (name, sample[:8], small, large)
        assert large < 3.0, (name, sample[:8], large)


LINE_SAMPLES = [
    "plain words",
    "%27%20OR%201%3D1",
    "PHNjcmlwdD4=",
    "a /* open",
    "close */ b",
    "\\u003c\\",
    "&lt;&",
    "0x3c7363726970743e",
    "cookie.eyJ1c2VyIjoiamFuZSJ9.sig",
    "un\x00ion  \t select",
    "ＡＢＣ",
    "c'a't${IFS}/etc",
]


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transforms_work_line_by_line(name: str) -> None:
    """The engine runs a chain once over a view's values joined by newlines (for the RE2 set)
    and per value only to verify a hit; every line of the per-value results must be in the
    joined result, or the set could miss what the verification would find."""
    function = TRANSFORMS[name]
    joined_lines = set(function("\n".join(LINE_SAMPLES)).split("\n"))
    for sample in LINE_SAMPLES:
        for line in function(sample).split("\n"):
            assert line in joined_lines, (name, sample, line)
