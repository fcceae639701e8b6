import re

import pytest

from openflare.clientip import ClientIpResolver, normalize_ip
from openflare.pipeline.request_id import is_safe_request_id, new_request_id

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_new_request_id_is_uuid4_and_unique() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(UUID4.match(i) for i in ids)


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ("abc-123_X.y", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        ("has space", False),
        ("new\nline", False),
        ("semi;colon", False),
        ("ünïcode", False),
        ("<script>", False),
    ],
)
def test_is_safe_request_id(value: str, safe: bool) -> None:
    assert is_safe_request_id(value) is safe


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("1.2.3.4:8080", "1.2.3.4"),
        ("2001:DB8::0:1", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("fe80::1%eth0", "fe80::1"),
        ("unknown", None),
        ("", None),
    ],
)
def test_normalize_ip(text: str, expected: str | None) -> None:
    assert normalize_ip(text) == expected


@pytest.mark.parametrize(
    ("trusted", "trust_all", "peer", "xff", "expected"),
    [
        ((), False, "9.9.9.9", "1.1.1.1", "9.9.9.9"),  # untrusted peer cannot choose identity
        (("10.0.0.0/8",), False, "10.0.0.5", "1.1.1.1", "1.1.1.1"),
        (("10.0.0.0/8",), False, "10.0.0.5", "6.6.6.6, 1.1.1.1", "1.1.1.1"),  # spoofed left
        (("10.0.0.0/8",), False, "10.0.0.5", "1.1.1.1, 10.0.0.7", "1.1.1.1"),  # skip trusted
        (("10.0.0.0/8",), False, "10.0.0.5", "10.0.0.8, 10.0.0.7", "10.0.0.8"),
        (("10.0.0.0/8",), False, "10.0.0.5", "garbage, 10.0.0.7", "10.0.0.7"),
        (("10.0.0.0/8",), False, "10.0.0.5", None, "10.0.0.5"),
        (("10.0.0.0/8",), False, "11.0.0.5", "1.1.1.1", "11.0.0.5"),
        ((), True, "9.9.9.9", "1.1.1.1, 2.2.2.2", "1.1.1.1"),  # the original's trust-all switch
        (("2001:db8::/32",), False, "2001:db8::1", "2001:0DB8:0:0::9", "2001:db8::9"),
    ],
)
def test_client_ip_resolver(
    trusted: tuple[str, ...], trust_all: bool, peer: str, xff: str | None, expected: str
) -> None:
    assert ClientIpResolver(trusted, trust_all=trust_all).resolve(peer, xff) == expected
