"""Which packets the sensor looks at: the kernel filter and its user-space twin.

Only traffic between the resolver and authoritative servers matters, and
end users' queries to the resolver must never be recorded. The filter is
therefore built from the resolver's own addresses (DNSQR_RES_ADDRS): what
the resolver sends to port 53 and what comes back from port 53, plus IPv4
fragments addressed to it (later fragments carry no ports) and ICMP errors
addressed to it. With DNSQR_AUTH_ADDRS the sensor watches an authority
instead, and everything is the mirror image.

A BPF program cannot follow IPv6 extension headers, so for IPv6 any packet
from or to the addresses passes the kernel and `Vantage` decides in user
space; `Vantage` applies to IPv4 too, so a reassembled datagram and a
replayed capture are judged exactly as live traffic is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from sensor.records.wire import DNS_PORT, DNS_PORTS, TCP_DNS_PORT, IPNetwork

IPV4_FRAGMENT = "(ip[6:2] & 0x3fff != 0)"
QR_QUERY = "(udp[10] & 0x80 = 0)"
QR_RESPONSE = "(udp[10] & 0x80 != 0)"



def _side(direction: str, nets: Iterable[IPNetwork]) -> str:
    terms = []
    for net in nets:
        if net.prefixlen == net.max_prefixlen:
            terms.append(f"{direction} host {net.network_address}")
        else:
            terms.append(f"{direction} net {net}")
    return "(" + " or ".join(terms) + ")"


def _v4_expression(client: str, server: str, capture_qr: int | None, responses_to: str) -> str:
    """client: the side that sends queries; responses_to: where fragments go."""
    queries = f"({client} and udp dst port {DNS_PORT} and {QR_QUERY})"
    responses = f"({server} and udp src port {DNS_PORT} and {QR_RESPONSE})"
    fragments = f"({responses_to} and {IPV4_FRAGMENT})"
    if capture_qr == 0:
        return queries
    if capture_qr == 1:
        return f"({responses} or {fragments})"
    return (
        f"(({client} and (udp or tcp) and dst port {DNS_PORT}) or "
        f"({server} and (udp or tcp) and src port {DNS_PORT}) or "
        f"{fragments} or ({responses_to} and icmp))"
    )


def build_filter(
    res_addrs: Iterable[IPNetwork],
    auth_addrs: Iterable[IPNetwork] = (),
    capture_qr: int | None = None,
) -> str:
    """The pcap filter expression for these addresses (empty: capture all)."""
    parts = []
    for addrs, mode in ((res_addrs, "res"), (auth_addrs, "auth")):
        v4 = [n for n in addrs if n.version == 4]
        v6 = [n for n in addrs if n.version == 6]
        if v4:
            src, dst = _side("src", v4), _side("dst", v4)
            if mode == "res":
                # the resolver is the client: it sends queries, receives answers
                parts.append(_v4_expression(src, dst, capture_qr, dst))
            else:
                # the authority is the server: queries come to it
                parts.append(_v4_expression(dst, src, capture_qr, src))
        if v6:
            parts.append(f"({_side('src', v6)} or {_side('dst', v6)})")
    return " or ".join(parts)


def with_vlans(expression: str) -> str:
    """The expression, also for frames with one or two 802.1Q/802.1ad tags.

    libpcap's `vlan` shifts every offset after it for the rest of the
    expression, so the tagged cases must nest rather than sit side by side.
    Only meaningful on Ethernet; other link types reject `vlan`.
    """
    if not expression:
        return expression
    return f"({expression}) or (vlan and (({expression}) or (vlan and ({expression}))))"


class _AddressSet:
    """Fast membership of packed addresses in a list of prefixes."""

    def __init__(self, nets: Iterable[IPNetwork]) -> None:
        nets = list(nets)
        self.exact = frozenset(
            n.network_address.packed for n in nets if n.prefixlen == n.max_prefixlen
        )
        self.prefixes = [
            (len(n.network_address.packed), int(n.network_address), int(n.netmask))
            for n in nets
            if n.prefixlen != n.max_prefixlen
        ]
        self.empty = not nets

    def __contains__(self, packed: bytes) -> bool:
        if packed in self.exact:
            return True
        if self.prefixes:
            value = int.from_bytes(packed, "big")
            size = len(packed)
            for length, network, mask in self.prefixes:
                if length == size and value & mask == network:
                    return True
        return False


class Vantage:
    """Where the sensor stands: whose traffic it may record.

    With no addresses at all it accepts everything (unit tests, and
    `read`-side tools); the capture itself refuses to start that way.
    """

    def __init__(self, res_addrs: Iterable[IPNetwork] = (), auth_addrs: Iterable[IPNetwork] = ()) -> None:
        self.res = _AddressSet(res_addrs)
        self.auth = _AddressSet(auth_addrs)
        self.open = self.res.empty and self.auth.empty
        # plain addresses only (the usual case): the matcher checks the two
        # sets inline, without a call per packet
        self.exact_only = not self.res.prefixes and not self.auth.prefixes
        self.res_exact = self.res.exact
        self.auth_exact = self.auth.exact

    def wants(self, client: bytes, server: bytes) -> bool:
        """A DNS exchange between client (query side) and server, either way."""
        return self.open or client in self.res or server in self.auth

    def wants_tcp(self, src: bytes, dst: bytes, sport: int, dport: int) -> bool:
        """A TCP segment on port 53, in either direction."""
        if self.open:
            return True
        if dport == TCP_DNS_PORT and self.wants(src, dst):
            return True
        return sport == TCP_DNS_PORT and self.wants(dst, src)

    def wants_icmp(
        self, target: bytes, quoted_src: bytes, quoted_dst: bytes, quoted_sport: int, quoted_dport: int
    ) -> bool:
        """An ICMP error sent to `target` about a datagram it had sent."""
        if self.open:
            return True
        if target in self.res:
            return quoted_src == target and quoted_dport in DNS_PORTS
        if target in self.auth:
            return quoted_src == target and quoted_sport in DNS_PORTS
        return False


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """Comma-separated addresses/prefixes (for tests and tools)."""
    return tuple(ipaddress.ip_network(p.strip()) for p in text.split(",") if p.strip())
