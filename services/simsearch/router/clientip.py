"""Who the client is: the peer address, or `X-Forwarded-For` when the peer is a trusted proxy.

`X-Forwarded-For` is honoured only when the TCP peer is in `SIMSEARCH_TRUSTED_PROXIES`
(CIDRs): anybody can send the header, so trusting it from anywhere would let a client pick
its own rate-limit bucket. Each proxy appends the address it saw, so the list is read from
the right, skipping trusted proxies; the first address that is not one is the client (an
address left of it was written by the client and proves nothing). When every hop is
trusted, the left-most is taken.

Rate limits bucket IPv6 clients by their /64: one host usually owns a whole /64 and could
otherwise take a fresh bucket per address.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

__all__ = ["TrustedProxies", "bucket_of", "is_loopback"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_CACHE_LIMIT = 4096
UNKNOWN = "unknown"  # no peer address (a Unix socket, a test transport without one)


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address, also from `[v6]:port`, `v4:port` or an IPv4-mapped IPv6 form; else None."""
    value = text.strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The configured proxy networks and the client-address rule that uses them."""

    def __init__(self, networks: tuple[Network, ...] = ()) -> None:
        self.networks = networks
        self._trusted: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        """Comma-separated CIDRs (a bare address is a /32 or /128); ValueError naming the bad
        entry."""
        networks: list[Network] = []
        for item in text.split(","):
            if not item.strip():
                continue
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"{item.strip()!r} is not a CIDR or an IP address (e.g. 10.0.0.0/8)"
                ) from None
        return cls(tuple(networks))

    def trusts(self, address: str) -> bool:
        """Whether `address` is a trusted proxy (cached: peers are a few proxies and pods)."""
        known = self._trusted.get(address)
        if known is not None:
            return known
        ip = _parse_ip(address)
        trusted = ip is not None and any(ip in net for net in self.networks)
        if len(self._trusted) >= _CACHE_LIMIT:
            self._trusted.clear()
        self._trusted[address] = trusted
        return trusted

    def client_address(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address for limits and the loopback rule (see the module docstring)."""
        peer = peer or UNKNOWN
        if not self.networks or not forwarded_for or not self.trusts(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else peer


@lru_cache(maxsize=_CACHE_LIMIT)
def _v6_bucket(address: str) -> str:
    ip = _parse_ip(address)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip) if ip is not None else address


def bucket_of(address: str) -> str:
    """The rate-limit identity of an address: itself for IPv4, its /64 for IPv6."""
    return _v6_bucket(address) if ":" in address else address


def is_loopback(address: str) -> bool:
    """127.0.0.0/8 or ::1 (what `kubectl port-forward` and the local host connect from)."""
    ip = _parse_ip(address)
    return ip is not None and ip.is_loopback
