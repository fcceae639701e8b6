"""The one client-IP resolver used by logs, forwarding headers, the WAF and rate limits.

The TCP peer is the client unless the peer is a trusted proxy; then `X-Forwarded-For` is walked
from the right, skipping trusted hops, and the first untrusted address is the client. A client
that is not behind a trusted proxy cannot choose its identity by sending the header.
`trust_x_forwarded_for: true` (the original's switch) means "every peer is trusted".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalize_ip(text: str) -> str | None:
    """Canonical text of an IP (IPv6 compressed, IPv4-mapped IPv6 as IPv4), or None."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[::1]:443" from some proxies
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "1.2.3.4:5678"
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


class ClientIpResolver:
    __slots__ = ("_networks", "_trust_all", "_cache")

    def __init__(self, trusted_cidrs: Iterable[str] = (), *, trust_all: bool = False) -> None:
        self._networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in trusted_cidrs
        )
        self._trust_all = trust_all
        self._cache: dict[str, bool] = {}

    @property
    def trusts_anyone(self) -> bool:
        return self._trust_all or bool(self._networks)

    def is_trusted(self, ip: str) -> bool:
        if self._trust_all:
            return True
        if not self._networks:
            return False
        known = self._cache.get(ip)
        if known is not None:
            return known
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        trusted = any(address in net for net in self._networks)
        if len(self._cache) < 4096:  # peers are few (proxies); never grow without bound
            self._cache[ip] = trusted
        return trusted

    def resolve(self, peer: str, forwarded_for: str | None) -> str:
        """The client address for a connection from `peer` carrying `forwarded_for`."""
        if not forwarded_for or not self.is_trusted(peer):
            return peer
        hops = forwarded_for.split(",")
        client = peer
        for hop in reversed(hops):
            address = normalize_ip(hop)
            if address is None:
                return client  # garbage to the left of a trusted hop is not an identity
            client = address
            if not self.is_trusted(address):
                return address
        return client
