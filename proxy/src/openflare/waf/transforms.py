"""Transforms: pure `str -> str` functions applied to a value before rules match it.

Every transform works line by line (it never joins or splits across a line break), so
applying it to one value or to a view's values joined by newlines gives the same result; the
engine relies on that to run each chain once per view on the joined text.

Every transform runs in linear time and bounded memory whatever the input: decoders make one
pass (split on the escape character, then handle each piece), repeated decoding stops when the
value is stable or after `MAX_DECODE_ROUNDS`, and Python's `re` is never used (the few token
scans use RE2). Each transform first checks, with one C-level scan, whether it has anything to
do, so ordinary values cost a few hundred nanoseconds for a whole chain.

The engine applies a rule's chain once per request per target and shares the result between
every rule that uses the same chain (and every chain that starts with it).
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from collections.abc import Callable
from html.entities import html5

import re2

Transform = Callable[[str], str]

MAX_DECODE_ROUNDS = 4
MIN_BASE64_CHARS = 8
MIN_BASE64_TOKEN = 16
MAX_BASE64_TOKENS = 32
HEX_DIGITS = "0123456789abcdefABCDEF"
DEC_DIGITS = "0123456789"
BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_"
_HEX_PAIRS: dict[bytes, int] = {
    f"{a}{b}".encode(): int(f"{a}{b}", 16) for a in HEX_DIGITS for b in HEX_DIGITS
}
# Overlong UTF-8 forms of "." "/" "\" that old decoders accepted (%c0%ae%c0%ae%c0%af).
_OVERLONG = (
    (b"\xc0\xae", b"."),
    (b"\xe0\x80\xae", b"."),
    (b"\xc0\xaf", b"/"),
    (b"\xe0\x80\xaf", b"/"),
    (b"\xc1\x9c", b"\\"),
    (b"\xc1\x81", b"A"),
)
# Every byte that cannot be part of a Base64 token becomes a space.
_NOT_BASE64 = bytes(c if c < 128 and chr(c) in BASE64_ALPHABET else 32 for c in range(256))
# Legacy entities a browser decodes without the trailing semicolon.
_BARE_ENTITIES = sorted((name for name in html5 if not name.endswith(";")), key=len, reverse=True)
_BARE_BY_FIRST: dict[str, tuple[str, ...]] = {}
for _name in _BARE_ENTITIES:
    _BARE_BY_FIRST[_name[0]] = (*_BARE_BY_FIRST.get(_name[0], ()), _name)
# Only the escapes attackers use to hide line breaks; `\b`, `\f`, `\v` stay as written so
# Windows paths (`C:\boot.ini`, `..\windows`) keep their backslashes.
_JS_SIMPLE = {"n": "\n", "t": "\t", "r": "\r"}


def _chr(code: int) -> str:
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return "\ufffd"
    return chr(code)


def _url_decode_once(value: str) -> str:
    raw = value.encode("utf-8", "surrogatepass")
    parts = raw.split(b"%")
    out = bytearray(parts[0])
    pairs = _HEX_PAIRS
    for part in parts[1:]:
        byte = pairs.get(part[:2])
        if byte is not None:
            out.append(byte)
            out += part[2:]
        elif part[:1] in (b"u", b"U") and all(c in b"0123456789abcdefABCDEF" for c in part[1:5]):
            if len(part) >= 5:
                out += _chr(int(part[1:5], 16)).encode("utf-8", "surrogatepass")
                out += part[5:]
            else:
                out += b"%" + part
        else:
            out += b"%" + part
    if b"\xc0" in out or b"\xc1" in out or b"\xe0\x80" in out:
        for bad, good in _OVERLONG:
            out = out.replace(bad, good)
    return out.decode("utf-8", "replace")


def url_decode(value: str) -> str:
    """`%HH` and `%uHHHH`, repeated until the value stops changing (at most 4 rounds).
    Invalid escapes stay as they are; `+` is left alone (see plus_to_space)."""
    for _ in range(MAX_DECODE_ROUNDS):
        if "%" not in value:
            return value
        decoded = _url_decode_once(value)
        if decoded == value:
            return value
        value = decoded
    return value


def plus_to_space(value: str) -> str:
    return value.replace("+", " ") if "+" in value else value


def _numeric_entity(part: str) -> tuple[str, str] | None:
    """`#60;rest` / `#x3c rest` → ("<", "rest")."""
    hex_mode = part[1:2] in ("x", "X")
    start = 2 if hex_mode else 1
    digits = HEX_DIGITS if hex_mode else DEC_DIGITS
    end = start
    size = len(part)
    while end < size and part[end] in digits:
        end += 1
    if end == start:
        return None
    number = part[start:end].lstrip("0") or "0"
    code = int(number, 16 if hex_mode else 10) if len(number) <= 8 else 0x110000
    rest = part[end + 1 :] if part[end : end + 1] == ";" else part[end:]
    return _chr(code), rest


def html_entity_decode(value: str) -> str:
    """Named (`&lt;`, `&colon;`, legacy `&lt` without `;`) and numeric (`&#60;`, `&#x3c`,
    leading zeros allowed) character references."""
    if "&" not in value:
        return value
    parts = value.split("&")
    out = [parts[0]]
    for part in parts[1:]:
        if part[:1] == "#":
            found = _numeric_entity(part)
            if found is not None:
                out.append(found[0])
                out.append(found[1])
                continue
        elif part:
            semi = part.find(";", 0, 40)
            if semi > 0:
                named = html5.get(part[: semi + 1])
                if named is not None:
                    out.append(named)
                    out.append(part[semi + 1 :])
                    continue
            for name in _BARE_BY_FIRST.get(part[0], ()):
                if part.startswith(name):
                    out.append(html5[name])
                    out.append(part[len(name) :])
                    break
            else:
                out.append("&" + part)
            continue
        out.append("&" + part)
    return "".join(out)


def _js_escape(part: str) -> str:
    """`part` follows a backslash; returns its decoded text."""
    head = part[0]
    if head in ("u", "U"):
        if part[1:2] == "{":
            close = part.find("}", 2, 11)
            body = part[2:close] if close > 2 else ""
            if body and all(c in HEX_DIGITS for c in body):
                return _chr(int(body, 16)) + part[close + 1 :]
        elif len(part) >= 5 and all(c in HEX_DIGITS for c in part[1:5]):
            return _chr(int(part[1:5], 16)) + part[5:]
    elif head in ("x", "X"):
        if len(part) >= 3 and all(c in HEX_DIGITS for c in part[1:3]):
            return chr(int(part[1:3], 16)) + part[3:]
    elif head in "0123" and len(part) >= 3 and all(c in "01234567" for c in part[1:3]):
        return chr(int(part[:3], 8)) + part[3:]
    simple = _JS_SIMPLE.get(head)
    if simple is not None:
        return simple + part[1:]
    return "\\" + part  # anything else keeps its backslash (`..\windows`, `\'`)


def js_decode(value: str) -> str:
    """JavaScript/JSON/C escapes: `\\uXXXX`, `\\u{X…}`, `\\xHH`, three-digit octal,
    `\\n` `\\r` `\\t` and `\\\\`; any other backslash is kept as written (so Windows paths
    survive). `%uXXXX` is handled by url_decode."""
    if "\\" not in value:
        return value
    parts = value.split("\\")
    out = [parts[0]]
    index, count = 1, len(parts)
    while index < count:
        part = parts[index]
        if part == "":
            if index + 1 < count:  # an escaped backslash: the next piece is literal
                out.append("\\")
                out.append(parts[index + 1])
                index += 2
                continue
            out.append("\\")  # trailing backslash
            index += 1
            continue
        out.append(_js_escape(part))
        index += 1
    return "".join(out)


def _printable(text: str) -> bool:
    if text.isprintable():
        return True
    return text.replace("\n", "").replace("\r", "").replace("\t", "").isprintable()


def _decode_base64_token(token: str) -> str | None:
    """The text a Base64 token stands for, or None. No exception on the common path: most
    tokens fail the character, case or length checks, and undecodable bytes are recognised
    by the replacement character."""
    if len(token) < MIN_BASE64_CHARS or token.strip(BASE64_ALPHABET):
        return None
    if token.islower() or token.isupper():
        return None  # real Base64 mixes cases; words and hex digests do not
    body = token.rstrip("=")
    if "=" in body or len(body) % 4 == 1:
        return None
    padded = body + "=" * (-len(body) % 4)
    urlsafe = "-" in padded or "_" in padded
    if urlsafe and ("+" in padded or "/" in padded):
        return None
    try:
        data = base64.urlsafe_b64decode(padded) if urlsafe else base64.b64decode(padded)
    except (binascii.Error, ValueError):  # pragma: no cover - excluded by the checks above
        return None
    text = data.decode("utf-8", "replace")
    if "\ufffd" in text or len(text) < 4 or not _printable(text) or text.isdigit():
        return None
    return text


def _base64_tokens(value: str) -> list[str]:
    """Runs of Base64 characters at least MIN_BASE64_TOKEN long (one C-level byte translate:
    every other byte becomes a space)."""
    pieces = value.encode("utf-8", "surrogatepass").translate(_NOT_BASE64).split()
    return [p.decode("ascii", "replace") for p in pieces if len(p) >= MIN_BASE64_TOKEN][
        :MAX_BASE64_TOKENS
    ]


def _base64_line(line: str) -> list[str]:
    """What one line hides: the whole line, or Base64 tokens in a line without spaces (a path,
    a cookie, a dotted token), or the last word of a line with spaces (`Basic dXNlcjpw…`)."""
    candidate = line.strip()
    if len(candidate) < MIN_BASE64_CHARS:
        return []
    if " " in candidate:
        if not candidate.strip(BASE64_ALPHABET + " "):
            whole = _decode_base64_token(candidate.replace(" ", "+"))  # `+` that became space
            if whole is not None:
                return [whole]
        last = candidate.rsplit(None, 1)[-1]
        decoded = _decode_base64_token(last)
        return [decoded] if decoded is not None else []
    whole = _decode_base64_token(candidate)
    if whole is not None:
        return [whole]
    if len(candidate) < MIN_BASE64_TOKEN:
        return []
    found: list[str] = []
    for token in _base64_tokens(candidate):
        decoded = _decode_base64_token(token)
        if decoded is None and "/" in token:
            found.extend(
                text
                for part in token.split("/")
                if len(part) >= MIN_BASE64_CHARS
                and (text := _decode_base64_token(part)) is not None
            )
        elif decoded is not None:
            found.append(decoded)
    return found


# The lines `_base64_line` can find something in, whatever else they hold: every token it
# decodes is at least MIN_BASE64_CHARS characters of the Base64 alphabet (a space standing for
# `+` in a line of alphabet and spaces), taken from the line, that mixes cases or has no letter
# (`_decode_base64_token`). So the line holds an upper- and a lower-case ASCII letter, or eight
# characters in a row from the letterless part of the alphabet (and space). One RE2 pass over a
# view's joined text picks those lines; the Python check runs on them alone.
_BASE64_CANDIDATE_LINE = re2.compile(
    f"(?m)^.*(?:[A-Z].*[a-z]|[a-z].*[A-Z]|[0-9+/=_\\- ]{{{MIN_BASE64_CHARS}}}).*$"
)
_BASE64_CANDIDATE_MATCH = _BASE64_CANDIDATE_LINE._regexp.Match
_UNANCHORED = re2._Anchor.UNANCHORED


def _base64_candidate_lines(text: str) -> list[str]:
    """The lines of `text` (in order) that may hide Base64, by one RE2 scan."""
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no RE2 here, every line is a candidate
        return text.split("\n")
    lines: list[str] = []
    match = _BASE64_CANDIDATE_MATCH
    position, size = 0, len(encoded)
    while position < size:
        start, end = match(_UNANCHORED, encoded, position, size)[0]
        if start < 0:
            break
        lines.append(encoded[start:end].decode("utf-8"))
        position = end + 1  # past the line break ending the line (a match is never empty)
    return lines


def base64_decode(value: str) -> str:
    """Values that look like Base64 (standard or URL-safe, padding optional) and decode to
    printable UTF-8 text: the decoded text is appended after a newline, so a rule sees both
    the original and what it hides. Works line by line (a value, or a view's values joined by
    newlines, give the same findings); tokens inside a line are tried too."""
    if len(value) < MIN_BASE64_CHARS:
        return value
    if "\n" not in value:
        found = _base64_line(value)
    else:
        found = []
        for line in _base64_candidate_lines(value):
            if len(line) >= MIN_BASE64_CHARS:
                found.extend(_base64_line(line))
    return value + "\n" + "\n".join(found) if found else value


def _hex_line(line: str) -> str | None:
    text = line.strip()
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    if len(text) < 8 or len(text) % 2 or text.strip(HEX_DIGITS):
        return None
    try:
        decoded = bytes.fromhex(text).decode("utf-8")
    except ValueError:
        return None
    return decoded if _printable(decoded) else None


def hex_decode(value: str) -> str:
    """A line that is hexadecimal (`0x` prefix optional, even length ≥ 8) and decodes to
    printable text: the text is appended after a newline."""
    lines = value.split("\n") if "\n" in value else (value,)
    found = [text for line in lines if len(line) >= 8 and (text := _hex_line(line)) is not None]
    return value + "\n" + "\n".join(found) if found else value


def lowercase(value: str) -> str:
    return value.lower()


def compress_whitespace(value: str) -> str:
    """Runs of whitespace (any Unicode space, also vertical tab and NBSP) become one space;
    line breaks stay (each line is compressed on its own)."""
    if value.isalnum():
        return value
    if "\n" not in value:
        return " ".join(value.split())
    if "  " not in value and value.replace("\n", " ").isprintable():
        # The only whitespace is single spaces (every other kind is not printable): what
        # changes is a space at the start or end of a line (`*/*` after remove_comments).
        if " \n" in value:
            value = value.replace(" \n", "\n")
        if "\n " in value:
            value = value.replace("\n ", "\n")
        return value.strip(" ")
    return "\n".join([" ".join(line.split()) for line in value.split("\n")])


def remove_whitespace(value: str) -> str:
    """All whitespace but line breaks removed."""
    if value.isalnum():
        return value
    if "\n" not in value:
        return "".join(value.split())
    return "\n".join(["".join(line.split()) for line in value.split("\n")])


def remove_comments(value: str) -> str:
    """SQL/C block comments `/* … */` become one space (an unterminated one runs to the end of
    its line); MySQL's executable `/*! … */` keeps its content. Line comments stay visible.
    A comment never spans lines, so one argument cannot comment out the next."""
    if "/*" not in value:
        return value
    if "\n" not in value:
        return _remove_comments_line(value)
    out: list[str] = []  # only the lines holding "/*" change; the text between is copied
    done = 0
    size = len(value)
    while (at := value.find("/*", done)) >= 0:
        start = value.rfind("\n", done, at) + 1 or done
        end = value.find("\n", at)
        if end < 0:
            end = size
        out.append(value[done:start])
        out.append(_remove_comments_line(value[start:end]))
        done = end
    out.append(value[done:])
    return "".join(out)


def _remove_comments_line(value: str) -> str:
    if "/*" not in value:
        return value
    parts = value.split("/*")
    out = [parts[0]]
    open_comment = False
    for part in parts[1:]:
        if open_comment:
            close = part.find("*/")
            if close < 0:
                continue
            part = part[close + 2 :]
            open_comment = False
            out.append(" " + part)
            continue
        if part.startswith("!"):
            inner = part[1:].lstrip(DEC_DIGITS)
            out.append(" " + inner.replace("*/", " ", 1))
            continue
        close = part.find("*/")
        if close < 0:
            open_comment = True
            out.append(" ")
            continue
        out.append(" " + part[close + 2 :])
    return "".join(out)


def remove_nulls(value: str) -> str:
    return value.replace("\x00", "") if "\x00" in value else value


def normalize_path(value: str) -> str:
    """Backslashes become slashes; `//` and `/./` collapse. `..` is kept: it is what
    traversal rules look for."""
    if "\\" in value:
        value = value.replace("\\", "/")
    if "//" in value or "/./" in value:
        while "//" in value:
            value = value.replace("//", "/")
        while "/./" in value:
            value = value.replace("/./", "/")
    return value


def unicode_normalize(value: str) -> str:
    """NFKC: full-width and other compatibility forms (`＜ｓｃｒｉｐｔ＞`) become ASCII."""
    return value if value.isascii() else unicodedata.normalize("NFKC", value)


def cmdline(value: str) -> str:
    """Shell evasion undone: lower-cased; `\\ " ' ^` deleted (`c'a't`, `w\\hoami`);
    `${IFS}`, `$IFS` become spaces and `$@` disappears; `,` `{` `}` become spaces
    (`{cat,/etc/passwd}`). Separators (`;` `|` `&` newline) are kept: rules look for them."""
    value = value.lower()
    if "$" in value:
        value = value.replace("${ifs}", " ").replace("$ifs", " ").replace("$@", "")
    for char in _CMDLINE_DELETE:
        if char in value:
            value = value.replace(char, "")
    for char in _CMDLINE_SPACE:
        if char in value:
            value = value.replace(char, " ")
    return value


_CMDLINE_DELETE = ("\\", '"', "'", "^")
_CMDLINE_SPACE = (",", "{", "}")


def decode(value: str) -> str:
    """URL, HTML-entity and JS decoding, applied together until the value is stable (at most
    4 rounds), so layered encodings (`%26lt%3B`, `\\u0025…`) come apart in any order."""
    for _ in range(MAX_DECODE_ROUNDS):
        if "%" not in value and "&" not in value and "\\" not in value:
            return value
        decoded = js_decode(html_entity_decode(_url_decode_once(value) if "%" in value else value))
        if decoded == value:
            return value
        value = decoded
    return value


TRANSFORMS: dict[str, Transform] = {
    "url_decode": url_decode,
    "plus_to_space": plus_to_space,
    "html_entity_decode": html_entity_decode,
    "js_decode": js_decode,
    "base64_decode": base64_decode,
    "hex_decode": hex_decode,
    "lowercase": lowercase,
    "compress_whitespace": compress_whitespace,
    "remove_whitespace": remove_whitespace,
    "remove_comments": remove_comments,
    "remove_nulls": remove_nulls,
    "normalize_path": normalize_path,
    "unicode_normalize": unicode_normalize,
    "cmdline": cmdline,
    "decode": decode,
}
TRANSFORM_NAMES = tuple(TRANSFORMS)


def apply_chain(value: str, chain: tuple[str, ...]) -> str:
    """For tests and tools; the engine applies chains step by step and caches each step."""
    for name in chain:
        value = TRANSFORMS[name](value)
    return value
