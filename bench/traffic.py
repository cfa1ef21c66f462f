"""Deterministic resolver <-> authoritative traffic, written as a pcap.

Used by the benchmark (a million packets) and by the bundled example (a
few thousand). The mix: A/AAAA/MX/TXT/NS questions over a skewed set of
names, about 90% answered (after 1-80 ms), some NXDOMAIN and SERVFAIL,
10% of queries over IPv6. DNS messages are built once per distinct
question with dpkt and reused with a fresh id; IP/UDP headers are packed
per packet (dpkt per packet would make a million-packet file slow to
make), with correct checksums.
"""

from __future__ import annotations

import heapq
import random
import socket
import struct

import click
import dpkt

RESOLVER4 = "192.0.2.53"
RESOLVER6 = "2001:db8::53"
TLDS = ["com", "net", "org", "example", "test", "io", "de", "uk", "info", "arpa"]
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "mail",
    "www",
    "api",
    "cdn",
    "static",
    "img",
    "shop",
    "blog",
    "news",
    "login",
    "portal",
    "cloud",
    "edge",
    "ns1",
    "ns2",
    "mx",
    "smtp",
    "imap",
]

QTYPES = [
    (dpkt.dns.DNS_A, 50),
    (dpkt.dns.DNS_AAAA, 25),
    (dpkt.dns.DNS_NS, 10),
    (dpkt.dns.DNS_MX, 8),
    (dpkt.dns.DNS_TXT, 7),
]

ETH_V4 = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
ETH_V6 = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x86\xdd"


def _checksum_fold(data: bytes) -> int:
    if len(data) & 1:
        data += b"\x00"
    total = int.from_bytes(data, "big") % 0xFFFF
    return (~total & 0xFFFF) or 0xFFFF


def _ipv4_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, ident: int) -> bytes:
    length = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, length)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    udp = udp[:6] + struct.pack("!H", _checksum_fold(pseudo + udp)) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, ident, 0x4000, 64, 17, 0, src, dst)
    header = header[:10] + struct.pack("!H", _checksum_fold(header)) + header[12:]
    return header + udp


def _ipv6_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    length = 8 + len(payload)
    pseudo = src + dst + struct.pack("!I3xB", length, 17)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    udp = udp[:6] + struct.pack("!H", _checksum_fold(pseudo + udp)) + udp[8:]
    return struct.pack("!IHBB", 0x60000000, length, 17, 64) + src + dst + udp


class _Messages:
    """DNS message templates per question, built once with dpkt."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.cache: dict[tuple, tuple[bytes, bytes]] = {}

    def pair(self, qname: str, qtype: int, rcode: int) -> tuple[bytes, bytes]:
        key = (qname, qtype, rcode)
        if key not in self.cache:
            self.cache[key] = (self._query(qname, qtype), self._response(qname, qtype, rcode))
        return self.cache[key]

    @staticmethod
    def _query(qname: str, qtype: int) -> bytes:
        msg = dpkt.dns.DNS(id=0, op=0, qd=[dpkt.dns.DNS.Q(name=qname, type=qtype)], an=[], ns=[], ar=[])
        return bytes(msg)

    def _response(self, qname: str, qtype: int, rcode: int) -> bytes:
        rng = self.rng
        msg = dpkt.dns.DNS(id=0, qd=[dpkt.dns.DNS.Q(name=qname, type=qtype)], an=[], ns=[], ar=[])
        msg.op = dpkt.dns.DNS_AA  # op is the whole flags word: set it before qr and rcode
        msg.qr = dpkt.dns.DNS_R
        msg.rcode = rcode
        zone = qname.split(".", 1)[-1]
        if rcode == dpkt.dns.DNS_RCODE_NXDOMAIN:
            soa = dpkt.dns.DNS.RR(name=zone, type=dpkt.dns.DNS_SOA, ttl=900)
            soa.mname, soa.rname = f"ns1.{zone}", f"hostmaster.{zone}"
            soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum = 2026112201, 7200, 900, 1209600, 900
            msg.ns.append(soa)
        elif rcode == dpkt.dns.DNS_RCODE_NOERR:
            for _ in range(rng.randint(1, 3)):
                rr = dpkt.dns.DNS.RR(name=qname, type=qtype, ttl=rng.choice([60, 300, 3600, 86400]))
                if qtype == dpkt.dns.DNS_A:
                    rr.ip = bytes([203, 0, 113, rng.randrange(256)])
                elif qtype == dpkt.dns.DNS_AAAA:
                    rr.ip6 = socket.inet_pton(
                        socket.AF_INET6, f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(65536):x}"
                    )
                elif qtype == dpkt.dns.DNS_MX:
                    rr.preference, rr.mxname = rng.choice([10, 20, 30]), f"mx{rng.randrange(9)}.{zone}"
                elif qtype == dpkt.dns.DNS_TXT:
                    rr.text = [f"v=spf1 include:_spf.{zone} ~all id={rng.randrange(10**6)}".encode()]
                else:
                    rr.nsname = f"ns{rng.randrange(1, 5)}.{zone}"
                msg.an.append(rr)
        return bytes(msg)


def _names(rng: random.Random, count: int) -> list[str]:
    names = []
    for _ in range(count):
        domain = f"{rng.choice(WORDS)}{rng.randrange(5000)}.{rng.choice(TLDS)}"
        names.append(f"{rng.choice(WORDS)}.{domain}" if rng.random() < 0.7 else domain)
    return names


def packets(count: int, seed: int = 1, rate: float = 20000.0):
    """Yield (timestamp, frame) in time order, `count` frames in all."""
    rng = random.Random(seed)
    names = _names(rng, 50000)
    weights = [1.0 / (i + 1) ** 0.8 for i in range(len(names))]
    cumulative = []
    total = 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    messages = _Messages(rng)
    qtypes = [q for q, _ in QTYPES]
    qweights = [w for _, w in QTYPES]
    resolver4 = socket.inet_pton(socket.AF_INET, RESOLVER4)
    resolver6 = socket.inet_pton(socket.AF_INET6, RESOLVER6)
    auths4 = [bytes([198, 51, 100, i]) for i in range(1, 200)] + [bytes([203, 0, 113, i]) for i in range(1, 56)]
    auths6 = [socket.inet_pton(socket.AF_INET6, f"2001:db8:{i:x}::1") for i in range(1, 64)]
    pending: list[tuple[float, int, bytes]] = []
    now = 1_790_000_000.0
    made = 0
    serial = 0
    ip_ident = 0
    while made < count:
        now += rng.expovariate(rate / 1.9)
        while pending and pending[0][0] <= now and made < count:
            ts, _, frame = heapq.heappop(pending)
            yield ts, frame
            made += 1
        if made >= count:
            break
        name = names[_pick(cumulative, rng.random() * total)]
        qtype = rng.choices(qtypes, qweights)[0]
        roll = rng.random()
        rcode = dpkt.dns.DNS_RCODE_NXDOMAIN if roll < 0.12 else dpkt.dns.DNS_RCODE_SERVFAIL if roll < 0.16 else 0
        query_msg, response_msg = messages.pair(name, qtype, rcode)
        ident = rng.randrange(65536)
        query_msg = struct.pack("!H", ident) + query_msg[2:]
        response_msg = struct.pack("!H", ident) + response_msg[2:]
        port = rng.randrange(1024, 65536)
        ip_ident = (ip_ident + 1) & 0xFFFF
        if rng.random() < 0.1:
            auth = rng.choice(auths6)
            query = ETH_V6 + _ipv6_udp(resolver6, auth, port, 53, query_msg)
            answer = ETH_V6 + _ipv6_udp(auth, resolver6, 53, port, response_msg)
        else:
            auth = rng.choice(auths4)
            query = ETH_V4 + _ipv4_udp(resolver4, auth, port, 53, query_msg, ip_ident)
            answer = ETH_V4 + _ipv4_udp(auth, resolver4, 53, port, response_msg, rng.randrange(65536))
        yield now, query
        made += 1
        if rng.random() < 0.9:
            serial += 1
            heapq.heappush(pending, (now + rng.uniform(0.001, 0.08), serial, answer))
    # whatever is still pending past `count` is simply never sent: unanswered


def _pick(cumulative: list[float], value: float) -> int:
    lo, hi = 0, len(cumulative) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cumulative[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


def write(path: str, count: int, seed: int = 1) -> None:
    """A classic Ethernet pcap of `count` packets."""
    with open(path, "wb") as handle:
        handle.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in packets(count, seed):
            sec = int(ts)
            usec = round((ts - sec) * 1e6)
            if usec == 1_000_000:
                sec, usec = sec + 1, 0
            handle.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)))
            handle.write(frame)


@click.command()
@click.option("--count", default=1_000_000, show_default=True, help="packets to write")
@click.option("--seed", default=1, show_default=True)
@click.argument("path")
def main(count: int, seed: int, path: str) -> None:
    """Write a deterministic capture of resolver traffic to PATH."""
    write(path, count, seed)
    click.echo(f"wrote {count} packets to {path}")


if __name__ == "__main__":
    main()
