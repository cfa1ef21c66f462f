"""DNS datagrams built with dpkt, for tests, the example and the benchmark.

Everything returns raw IP datagrams (bytes), exactly what the matcher is
fed; `write_pcap` wraps them in Ethernet (or another link) for capture
tests. Addresses are from the documentation ranges only.
"""

from __future__ import annotations

import socket
import struct

import dpkt

RESOLVER = "192.0.2.53"
AUTHORITY = "198.51.100.1"
RESOLVER6 = "2001:db8::53"
AUTHORITY6 = "2001:db8:1::1"


def _packed(address: str) -> bytes:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return socket.inet_pton(family, address)


def dns_message(
    ident: int,
    qname: str | None,
    qtype: int = dpkt.dns.DNS_A,
    response: bool = False,
    rcode: int = 0,
    rd: bool = False,
    answers: list[tuple[int, bytes]] = (),
) -> bytes:
    """A DNS message; `answers` are (type, rdata) records owned by qname."""
    msg = dpkt.dns.DNS(id=ident)
    msg.op = dpkt.dns.DNS_RD if rd else 0
    msg.qr = dpkt.dns.DNS_R if response else dpkt.dns.DNS_Q
    msg.rcode = rcode
    msg.qd = []
    if qname is not None:
        msg.qd.append(dpkt.dns.DNS.Q(name=qname, type=qtype, cls=dpkt.dns.DNS_IN))
    msg.an = []
    for rtype, rdata in answers:
        rr = dpkt.dns.DNS.RR(name=qname, type=rtype, cls=dpkt.dns.DNS_IN, ttl=300)
        rr.rdata = rdata
        rr.rlen = len(rdata)
        msg.an.append(rr)
    msg.ns = []
    msg.ar = []
    return bytes(msg)


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes, ip_id: int = 1) -> bytes:
    """A UDP datagram over IPv4 or IPv6 (by address), checksums correct."""
    segment = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    segment.ulen = len(segment)
    if ":" in src:
        ip = dpkt.ip6.IP6(src=_packed(src), dst=_packed(dst), nxt=dpkt.ip.IP_PROTO_UDP, hlim=64)
        ip.data = segment
        ip.plen = len(segment)
        return bytes(ip)
    ip = dpkt.ip.IP(src=_packed(src), dst=_packed(dst), p=dpkt.ip.IP_PROTO_UDP, id=ip_id, ttl=64)
    ip.data = segment
    ip.len = len(ip)
    return bytes(ip)


def query(
    ident: int = 0x1234,
    qname: str | None = "www.example.com",
    qtype: int = dpkt.dns.DNS_A,
    src: str = RESOLVER,
    dst: str = AUTHORITY,
    sport: int = 40000,
    dport: int = 53,
    rd: bool = False,
) -> bytes:
    return udp(src, dst, sport, dport, dns_message(ident, qname, qtype, rd=rd))


def response(
    ident: int = 0x1234,
    qname: str | None = "www.example.com",
    qtype: int = dpkt.dns.DNS_A,
    src: str = AUTHORITY,
    dst: str = RESOLVER,
    sport: int = 53,
    dport: int = 40000,
    rcode: int = 0,
    rd: bool = False,
    answers: list[tuple[int, bytes]] = ((dpkt.dns.DNS_A, bytes([203, 0, 113, 7])),),
) -> bytes:
    return udp(src, dst, sport, dport, dns_message(ident, qname, qtype, True, rcode, rd, list(answers)))


def big_response(size: int, **kwargs) -> bytes:
    """A response of about `size` bytes of TXT data (large enough to fragment)."""
    chunks = []
    remaining = size
    while remaining > 0:
        piece = min(255, remaining)
        chunks.append(bytes([piece]) + b"x" * piece)
        remaining -= piece
    answers = [(dpkt.dns.DNS_TXT, chunk) for chunk in chunks]
    return response(qtype=dpkt.dns.DNS_TXT, answers=answers, **kwargs)


def fragment_ipv4(datagram: bytes, payload_per_fragment: int) -> list[bytes]:
    """Split an IPv4 datagram into fragments (offsets in 8-byte units)."""
    header_len = (datagram[0] & 0x0F) * 4
    header, payload = bytearray(datagram[:header_len]), datagram[header_len:]
    step = payload_per_fragment - payload_per_fragment % 8
    pieces = []
    for offset in range(0, len(payload), step):
        chunk = payload[offset : offset + step]
        more = offset + step < len(payload)
        head = bytearray(header)
        struct.pack_into("!H", head, 2, header_len + len(chunk))
        struct.pack_into("!H", head, 6, (0x2000 if more else 0) | offset // 8)
        struct.pack_into("!H", head, 10, 0)
        struct.pack_into("!H", head, 10, _ip_checksum(bytes(head)))
        pieces.append(bytes(head) + chunk)
    return pieces


def fragment_ipv6(datagram: bytes, payload_per_fragment: int, ident: int = 0xBEEF) -> list[bytes]:
    """Split an IPv6 datagram (no extension headers) with fragment headers."""
    header, payload = bytearray(datagram[:40]), datagram[40:]
    next_header = header[6]
    step = payload_per_fragment - payload_per_fragment % 8
    pieces = []
    for offset in range(0, len(payload), step):
        chunk = payload[offset : offset + step]
        more = offset + step < len(payload)
        head = bytearray(header)
        head[6] = 44
        struct.pack_into("!H", head, 4, 8 + len(chunk))
        frag = struct.pack("!BxHI", next_header, offset | (1 if more else 0), ident)
        pieces.append(bytes(head) + frag + chunk)
    return pieces


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"", flags: int = dpkt.tcp.TH_ACK) -> bytes:
    """A TCP segment over IPv4 or IPv6 (by address)."""
    segment = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, seq=1, ack=1, data=payload)
    if ":" in src:
        ip = dpkt.ip6.IP6(src=_packed(src), dst=_packed(dst), nxt=dpkt.ip.IP_PROTO_TCP, hlim=64)
        ip.data = segment
        ip.plen = len(segment)
        return bytes(ip)
    ip = dpkt.ip.IP(src=_packed(src), dst=_packed(dst), p=dpkt.ip.IP_PROTO_TCP, ttl=64)
    ip.data = segment
    ip.len = len(ip)
    return bytes(ip)


def icmp_unreachable(src: str, dst: str, quoted: bytes) -> bytes:
    """An ICMP port-unreachable from src to dst quoting a datagram dst sent."""
    message = dpkt.icmp.ICMP(type=3, code=3, data=dpkt.icmp.ICMP.Unreach(data=quoted[:128]))
    ip = dpkt.ip.IP(src=_packed(src), dst=_packed(dst), p=dpkt.ip.IP_PROTO_ICMP, ttl=64)
    ip.data = message
    ip.len = len(ip)
    return bytes(ip)


# RFC 4443's error messages: type -> (code, the message body dpkt builds)
ICMP6_ERRORS = {
    1: (4, dpkt.icmp6.ICMP6.Unreach),  # destination unreachable: port unreachable
    2: (0, dpkt.icmp6.ICMP6.TooBig),  # packet too big
    3: (0, dpkt.icmp6.ICMP6.TimeExceed),  # time exceeded: hop limit
    4: (1, dpkt.icmp6.ICMP6.ParamProb),  # parameter problem: unknown next header
}


def icmp6_error(src: str, dst: str, quoted: bytes, kind: int = 1) -> bytes:
    """An ICMPv6 error of `kind` from src to dst quoting a datagram dst
    sent: as much of it as fits the IPv6 minimum MTU (RFC 4443 2.4)."""
    code, body = ICMP6_ERRORS[kind]
    message = dpkt.icmp6.ICMP6(type=kind, code=code, data=body(data=quoted[: 1280 - 40 - 8]))
    ip = dpkt.ip6.IP6(src=_packed(src), dst=_packed(dst), nxt=dpkt.ip.IP_PROTO_ICMP6, hlim=64)
    ip.data = message
    ip.plen = len(message)
    return bytes(ip)


def seed_datagrams() -> list[bytes]:
    """One datagram of each kind the sensor handles: seeds for fuzzing."""
    return [
        query(),
        response(),
        query(src=RESOLVER6, dst=AUTHORITY6),
        response(src=AUTHORITY6, dst=RESOLVER6),
        *fragment_ipv4(big_response(2000), 600),
        *fragment_ipv6(big_response(2000, src=AUTHORITY6, dst=RESOLVER6), 600),
        tcp(RESOLVER, AUTHORITY, 40000, 53, b"\x00\x10" + b"x" * 16),
        icmp_unreachable(AUTHORITY, RESOLVER, query()),
        icmp6_error(AUTHORITY6, RESOLVER6, query(src=RESOLVER6, dst=AUTHORITY6)),
    ]


def ethernet(datagram: bytes, vlan: int | None = None) -> bytes:
    ethertype = 0x86DD if datagram[0] >> 4 == 6 else 0x0800
    head = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01"
    if vlan is not None:
        head += struct.pack("!HH", 0x8100, vlan)
    return head + struct.pack("!H", ethertype) + datagram


def write_pcap(path: str, frames: list[tuple[bytes, float]], linktype: int = dpkt.pcap.DLT_EN10MB) -> None:
    """A classic pcap file of (frame, timestamp) pairs."""
    with open(path, "wb") as handle:
        writer = dpkt.pcap.Writer(handle, linktype=linktype, snaplen=65535)
        for frame, ts in frames:
            writer.writepkt(frame, ts=ts)
