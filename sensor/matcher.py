"""The query table: IP datagrams and a clock in, DNS transaction records out.

This is the sans-I/O core. It never reads a socket or a file: the capture
edge feeds it each IP datagram with its capture time, and it returns the
records that datagram completed. Time is only ever packet time (or an
explicit `tick` from a live capture that has gone quiet), so replaying a
pcap gives exactly the records that live capture gave.

A record is a dict keyed by `constants.Field` numbers, ready for the spool
codec. Everything that is not a record is counted in `counters` by reason;
no input makes `feed` raise.

The table is keyed by the 6-tuple (query ip, response ip, query port,
response port, DNS id); the question is kept in the entry and compared
byte-exactly, so a response pairs on the full 9-tuple. A rare second
query with the same 6-tuple but another question goes in under the
9-tuple key. A response without a question pairs on the 6-tuple alone
when its rcode says the server could not echo one (FORMERR, SERVFAIL,
NOTIMP, REFUSED). The OrderedDict keeps arrival order, so both the oldest
query (eviction when full) and the next one to time out are at its head.
"""

from __future__ import annotations

import dataclasses
import struct
from collections import OrderedDict
from collections.abc import Iterable

from . import fragments
from .bpf import Vantage
from .checksum import verify_udp
from .config import Config
from .constants import (
    DNS_HEADER_LEN,
    DNS_PORTS,
    IPPROTO_FRAGMENT,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    RCODES_WITHOUT_QUESTION,
    Field,
    RecordType,
    UdpChecksum,
)
from .dns import in_any_zone, parse_question

Record = dict

_IPV4 = struct.Struct("!2xHHHxB2x4s4s")  # total length, id, flags+offset, proto, src, dst
_IPV6 = struct.Struct("!4xHB")  # payload length, next header
_IPV6_FRAGMENT = struct.Struct("!BxHI")  # next header, offset+flags, id
_UDP = struct.Struct("!HHH")  # source port, destination port, length
_PORTS = struct.Struct("!HH")
_DNS = struct.Struct("!HHH")  # id, flags, qdcount

_IPV6_SKIPPABLE = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options
_ICMP_ERRORS = {IPPROTO_ICMP: frozenset((3, 4, 5, 11, 12)), IPPROTO_ICMPV6: frozenset((1, 2, 3, 4))}
_NOTHING: tuple = ()

QR = 0x8000
RD = 0x0100


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the matcher needs from the configuration, and nothing else."""

    vantage: Vantage = dataclasses.field(default_factory=Vantage)
    zero_resolver_address: bool = False
    table_max: int = 131072
    query_timeout: int = 60
    capture_rd: int | None = None
    capture_qr: int | None = None
    qnames_include: frozenset[bytes] = frozenset()
    qnames_exclude: frozenset[bytes] = frozenset()
    fragment_bytes: int = fragments.DEFAULT_MAX_BYTES
    fragment_timeout: int = fragments.DEFAULT_TIMEOUT

    @classmethod
    def from_config(cls, config: Config) -> Settings:
        return cls(
            vantage=Vantage(config.res_addrs, config.auth_addrs),
            zero_resolver_address=config.zero_resolver_address,
            table_max=config.state_table_max,
            query_timeout=config.query_timeout,
            capture_rd=config.capture_rd,
            capture_qr=config.capture_qr,
            qnames_include=frozenset(config.qnames_include),
            qnames_exclude=frozenset(config.qnames_exclude),
        )


class _Query:
    """An outstanding query: what a response must echo, and its packets."""

    __slots__ = ("key", "qname", "qtype", "qclass", "flags", "packets", "secs", "nsecs")

    def __init__(self, key, qname, qtype, qclass, flags, packets, secs, nsecs) -> None:
        self.key = key  # (query ip, response ip, query port, response port, id)
        self.qname = qname
        self.qtype = qtype
        self.qclass = qclass
        self.flags = flags
        self.packets = packets
        self.secs = secs
        self.nsecs = nsecs


class Matcher:
    """Pairs queries with responses. Feed datagrams in capture order."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings = settings or Settings()
        self.vantage = settings.vantage
        self.table: OrderedDict[tuple, _Query] = OrderedDict()
        self.counters: dict[str, int] = {}
        self.reassembler = fragments.Reassembler(
            self.counters, max_bytes=settings.fragment_bytes, timeout=settings.fragment_timeout
        )
        self.now_sec = 0
        self.now_nsec = 0
        self._filtering = (
            settings.capture_rd is not None
            or bool(settings.qnames_include)
            or bool(settings.qnames_exclude)
        )

    # ------------------------------------------------------------ public
    def feed(self, packet: bytes, sec: int, nsec: int) -> list[Record] | tuple:
        """Records completed by this IP datagram (often none)."""
        out: list[Record] = []
        if sec > self.now_sec:
            self.now_sec, self.now_nsec = sec, nsec
            if self.table:
                self._expire(out)
        elif sec == self.now_sec and nsec > self.now_nsec:
            self.now_nsec = nsec
        try:
            self._datagram(packet, sec, nsec, out)
        except (IndexError, struct.error, ValueError):
            # Every length is checked before use; this is the last line of
            # defence that keeps hostile bytes from stopping the sensor.
            self._count("malformed_other")
        return out or _NOTHING

    def tick(self, sec: int, nsec: int = 0) -> list[Record]:
        """Advance the clock without a packet (a quiet live capture)."""
        out: list[Record] = []
        if (sec, nsec) > (self.now_sec, self.now_nsec):
            self.now_sec, self.now_nsec = sec, nsec
        self._expire(out)
        self.reassembler.expire(self.now_sec)
        return out

    def flush(self) -> list[Record]:
        """Every outstanding query, as unanswered (shutdown or end of file)."""
        out: list[Record] = []
        while self.table:
            _, query = self.table.popitem(last=False)
            self._leftover(query, out)
        return out

    def feed_all(self, packets: Iterable[tuple[bytes, int, int]]) -> list[Record]:
        """Convenience for tests and tools: feed many, then flush."""
        out: list[Record] = []
        for packet, sec, nsec in packets:
            out.extend(self.feed(packet, sec, nsec))
        out.extend(self.flush())
        return out

    # ----------------------------------------------------- network layer
    def _datagram(self, packet: bytes, sec: int, nsec: int, out: list) -> None:
        if not packet:
            self._count("malformed_ip")
            return
        version = packet[0] >> 4
        if version == 4:
            self._ipv4(packet, sec, nsec, out)
        elif version == 6:
            self._ipv6(packet, sec, nsec, out)
        else:
            self._count("not_ip")

    def _ipv4(self, packet: bytes, sec: int, nsec: int, out: list) -> None:
        header_len = (packet[0] & 0x0F) * 4
        if len(packet) < 20 or header_len < 20:
            self._count("malformed_ip")
            return
        total, ident, frag, proto, src, dst = _IPV4.unpack_from(packet, 0)
        if total > len(packet):
            self._count("incomplete")
            return
        if total < header_len:
            self._count("malformed_ip")
            return
        if total < len(packet):
            packet = packet[:total]  # link-layer padding is not the datagram's
        if frag & 0x3FFF:
            done = self.reassembler.add(
                (src, dst, proto, ident),
                (frag & 0x1FFF) * 8,
                bool(frag & 0x2000),
                packet[header_len:],
                packet,
                sec,
                nsec,
            )
            if done is not None:
                payload, frags = done
                self._transport(proto, src, dst, payload, 0, tuple(frags), out)
            return
        self._transport(proto, src, dst, packet, header_len, ((packet, sec, nsec),), out)

    def _ipv6(self, packet: bytes, sec: int, nsec: int, out: list) -> None:
        if len(packet) < 40:
            self._count("malformed_ip")
            return
        length, proto = _IPV6.unpack_from(packet, 0)
        if 40 + length > len(packet):
            self._count("incomplete")
            return
        if length == 0:
            self._count("malformed_ip")  # jumbograms do not carry DNS
            return
        if 40 + length < len(packet):
            packet = packet[: 40 + length]
        src = packet[8:24]
        dst = packet[24:40]
        proto, offset = _skip_extensions(packet, proto, 40)
        if offset < 0:
            self._count("malformed_ip")
            return
        if proto == IPPROTO_FRAGMENT:
            if offset + 8 > len(packet):
                self._count("malformed_ip")
                return
            proto, frag, ident = _IPV6_FRAGMENT.unpack_from(packet, offset)
            done = self.reassembler.add(
                (src, dst, ident), frag & 0xFFF8, bool(frag & 1), packet[offset + 8 :], packet, sec, nsec
            )
            if done is not None:
                payload, frags = done
                proto, start = _skip_extensions(payload, proto, 0)
                if start < 0:
                    self._count("malformed_ip")
                    return
                self._transport(proto, src, dst, payload, start, tuple(frags), out)
            return
        self._transport(proto, src, dst, packet, offset, ((packet, sec, nsec),), out)

    # --------------------------------------------------- transport layer
    def _transport(self, proto, src, dst, buf, start, packets, out) -> None:
        if proto == IPPROTO_UDP:
            self._udp(src, dst, buf, start, packets, out)
        elif proto == IPPROTO_TCP:
            self._tcp(src, dst, buf, start, packets, out)
        elif proto in _ICMP_ERRORS:
            self._icmp(proto, dst, buf, start, packets, out)
        else:
            self._count("not_dns")

    def _udp(self, src, dst, buf, start, packets, out) -> None:
        if start + 8 > len(buf):
            self._count("malformed_udp")
            return
        sport, dport, length = _UDP.unpack_from(buf, start)
        if sport not in DNS_PORTS and dport not in DNS_PORTS:
            self._count("not_dns")
            return
        end = start + length
        if length < 8 or end > len(buf):
            self._count("malformed_udp")
            return
        msg = start + 8
        if end - msg < DNS_HEADER_LEN:
            self._count("malformed_dns")
            return
        ident, flags, qdcount = _DNS.unpack_from(buf, msg)
        question = None
        if qdcount:
            question = parse_question(buf, msg, end)
            if question is None:
                self._count("malformed_dns")
                return
        if flags & QR:
            self._response(src, dst, sport, dport, ident, flags, question, buf, start, end, packets, out)
        else:
            self._query(src, dst, sport, dport, ident, flags, question, packets, out)

    def _query(self, src, dst, sport, dport, ident, flags, question, packets, out) -> None:
        if not self.vantage.wants_query(src, dst):
            self._count("not_ours")
            return
        capture_qr = self.settings.capture_qr
        if capture_qr is not None:
            if capture_qr == 0:
                record = self._base(RecordType.UDP_QUERY_ONLY, src, dst, sport, dport, ident, question)
                _add_packets(record, Field.QUERY_PACKET, packets)
                self._emit(record, question, flags, out)
            else:
                self._count("query_ignored")
            return
        if question is None:
            qname = qtype = qclass = None
        else:
            qname, qtype, qclass = question
        key = (src, dst, sport, dport, ident)
        query = _Query(
            key, qname, qtype, qclass, flags,
            [p[0] for p in packets], [p[1] for p in packets], [p[2] for p in packets],
        )
        table = self.table
        held = table.get(key)
        if held is not None and (held.qname, held.qtype, held.qclass) != (qname, qtype, qclass):
            key = key + (qname, qtype, qclass)
            held = table.get(key)
        if held is not None:
            # Same 9-tuple while the first is outstanding: the first can no
            # longer be told apart, so it leaves now as unanswered.
            del table[key]
            self._count("query_superseded")
            self._leftover(held, out)
        elif len(table) >= self.settings.table_max:
            _, oldest = table.popitem(last=False)
            self._count("query_evicted")
            self._leftover(oldest, out)
        table[key] = query

    def _response(self, src, dst, sport, dport, ident, flags, question, buf, start, end, packets, out) -> None:
        if not self.vantage.wants_response(src, dst):
            self._count("not_ours")
            return
        capture_qr = self.settings.capture_qr
        if capture_qr == 0:
            self._count("response_ignored")
            return
        query = None
        if capture_qr == 1:
            kind = RecordType.UDP_RESPONSE_ONLY
        else:
            query = self._take_query((dst, src, dport, sport, ident), question, flags)
            kind = RecordType.UDP_UNSOLICITED_RESPONSE if query is None else RecordType.UDP_QUERY_RESPONSE
        if query is not None and question is None and query.qname is not None:
            question = (query.qname, query.qtype, query.qclass)
        record = self._base(kind, dst, src, dport, sport, ident, question)
        if query is not None:
            record[Field.QUERY_PACKET] = query.packets
            record[Field.QUERY_TIME_SEC] = query.secs
            record[Field.QUERY_TIME_NSEC] = query.nsecs
        record[Field.RCODE] = flags & 0x0F
        _add_packets(record, Field.RESPONSE_PACKET, packets)
        record[Field.UDP_CHECKSUM] = verify_udp(src, dst, buf[start:end])
        # the RD filter looks at the query's flags when there is a query
        self._emit(record, question, flags if query is None else query.flags, out)

    def _take_query(self, key, question, flags) -> _Query | None:
        """Remove and return the query this response answers, if any."""
        table = self.table
        if question is None:
            if flags & 0x0F in RCODES_WITHOUT_QUESTION:
                return table.pop(key, None)
            return None
        held = table.get(key)
        if held is not None and held.qname == question[0] and held.qtype == question[1] and held.qclass == question[2]:
            del table[key]
            return held
        return table.pop(key + question, None)

    def _tcp(self, src, dst, buf, start, packets, out) -> None:
        if len(packets) > 1:
            self._count("tcp_fragmented")
            return
        if start + 20 > len(buf):
            self._count("malformed_tcp")
            return
        sport, dport = _PORTS.unpack_from(buf, start)
        if sport != 53 and dport != 53:
            self._count("not_dns")
            return
        if not self.vantage.wants_tcp(src, dst, sport, dport):
            self._count("not_ours")
            return
        packet = packets[0][0]
        if dport == 53:
            record = self._base(RecordType.TCP, src, dst, sport, dport, None, None)
            _add_packets(record, None, packets, Field.QUERY_TIME_SEC, Field.QUERY_TIME_NSEC)
        else:
            record = self._base(RecordType.TCP, dst, src, dport, sport, None, None)
            _add_packets(record, None, packets, Field.RESPONSE_TIME_SEC, Field.RESPONSE_TIME_NSEC)
        record[Field.PROTO] = IPPROTO_TCP
        record[Field.TCP] = packet
        self._emit(record, None, 0, out, filterable=False)

    def _icmp(self, proto, dst, buf, start, packets, out) -> None:
        """An ICMP error that quotes a DNS datagram the watched host sent."""
        if len(packets) > 1 or start + 8 > len(buf) or buf[start] not in _ICMP_ERRORS[proto]:
            self._count("not_dns")
            return
        quoted = _quoted_ports(buf, start + 8)
        if quoted is None:
            self._count("not_dns")
            return
        qsrc, qdst, qproto, qsport, qdport, dns = quoted
        if qproto == IPPROTO_UDP:
            is_dns = qsport in DNS_PORTS or qdport in DNS_PORTS
        else:
            is_dns = qproto == IPPROTO_TCP and 53 in (qsport, qdport)
        if not is_dns:
            self._count("not_dns")
            return
        if not self.vantage.wants_icmp(dst, qsrc, qdst, qsport, qdport):
            self._count("not_ours")
            return
        ident = _DNS.unpack_from(dns)[0] if qproto == IPPROTO_UDP and len(dns) >= 6 else None
        if qdport in DNS_PORTS or qdport == 53:
            record = self._base(RecordType.ICMP, qsrc, qdst, qsport, qdport, ident, None)
        else:
            record = self._base(RecordType.ICMP, qdst, qsrc, qdport, qsport, ident, None)
        record[Field.PROTO] = proto
        _add_packets(record, None, packets, Field.RESPONSE_TIME_SEC, Field.RESPONSE_TIME_NSEC)
        record[Field.ICMP] = packets[0][0]
        self._emit(record, None, 0, out, filterable=False)

    # ------------------------------------------------------------ records
    @staticmethod
    def _base(kind, query_ip, response_ip, query_port, response_port, ident, question) -> Record:
        record = {
            Field.TYPE: kind,
            Field.QUERY_IP: query_ip,
            Field.RESPONSE_IP: response_ip,
            Field.PROTO: IPPROTO_UDP,
            Field.QUERY_PORT: query_port,
            Field.RESPONSE_PORT: response_port,
        }
        if ident is not None:
            record[Field.ID] = ident
        if question is not None:
            record[Field.QNAME], record[Field.QTYPE], record[Field.QCLASS] = question
        return record

    def _leftover(self, query: _Query, out: list) -> None:
        """A query that will get no response: emit it as unanswered."""
        src, dst, sport, dport, ident = query.key
        question = (query.qname, query.qtype, query.qclass) if query.qname is not None else None
        record = self._base(RecordType.UDP_UNANSWERED_QUERY, src, dst, sport, dport, ident, question)
        record[Field.QUERY_PACKET] = query.packets
        record[Field.QUERY_TIME_SEC] = query.secs
        record[Field.QUERY_TIME_NSEC] = query.nsecs
        waited = (self.now_sec - query.secs[0]) + (self.now_nsec - query.nsecs[0]) / 1e9
        record[Field.TIMEOUT] = max(waited, 0.0)
        self._emit(record, question, query.flags, out)

    def _emit(self, record: Record, question, flags: int, out: list, filterable: bool = True) -> None:
        """Apply the RD and qname filters (UDP only), zero if asked, and keep."""
        if filterable and self._filtering and self._filtered_out(question, flags):
            self._count("filtered")
            return
        if self.settings.zero_resolver_address:
            _zero_record(record)
        out.append(record)

    def _filtered_out(self, question, flags: int) -> bool:
        settings = self.settings
        if settings.capture_rd is not None and bool(flags & RD) != bool(settings.capture_rd):
            return True
        if question is None:
            return False
        qname = question[0].lower()
        if settings.qnames_include and not in_any_zone(qname, settings.qnames_include):
            return True
        return bool(settings.qnames_exclude) and in_any_zone(qname, settings.qnames_exclude)

    def _expire(self, out: list) -> None:
        """Emit queries older than the timeout, judged by packet time."""
        table = self.table
        limit = self.now_sec - self.settings.query_timeout
        while table:
            query = next(iter(table.values()))
            if query.secs[0] >= limit:
                return
            table.popitem(last=False)
            self._leftover(query, out)

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1


# ------------------------------------------------------------------ helpers
def _skip_extensions(buf: bytes, proto: int, offset: int) -> tuple[int, int]:
    """Step over IPv6 extension headers; offset -1 when they run off the end."""
    hops = 0
    while proto in _IPV6_SKIPPABLE:
        if offset + 8 > len(buf) or hops == 8:
            return proto, -1
        proto, length = buf[offset], (buf[offset + 1] + 1) * 8
        offset += length
        hops += 1
    return proto, offset


def _quoted_ports(buf: bytes, start: int):
    """(src, dst, proto, sport, dport, dns bytes) of the datagram an ICMP error quotes."""
    if start >= len(buf):
        return None
    version = buf[start] >> 4
    if version == 4:
        header_len = (buf[start] & 0x0F) * 4
        if header_len < 20 or start + header_len + 4 > len(buf):
            return None
        proto = buf[start + 9]
        src, dst = buf[start + 12 : start + 16], buf[start + 16 : start + 20]
        transport = start + header_len
    elif version == 6:
        if start + 44 > len(buf):
            return None
        proto = buf[start + 6]
        src, dst = buf[start + 8 : start + 24], buf[start + 24 : start + 40]
        transport = start + 40
    else:
        return None
    sport, dport = _PORTS.unpack_from(buf, transport)
    return src, dst, proto, sport, dport, buf[transport + 8 :]


def _add_packets(record: Record, packet_field, packets, sec_field=None, nsec_field=None) -> None:
    if packet_field is not None:
        record[packet_field] = [p[0] for p in packets]
        sec_field = packet_field + 1
        nsec_field = packet_field + 2
    record[sec_field] = [p[1] for p in packets]
    record[nsec_field] = [p[2] for p in packets]


def _zero_address(packet: bytes, address: bytes) -> bytes:
    """The datagram with every header field that holds `address` zeroed.

    Covers the IP header and, for ICMP errors, the header they quote.
    """
    data = bytearray(packet)
    size = len(address)
    blank = bytes(size)
    starts = [0]
    if packet[0] >> 4 == 4 and packet[9] == IPPROTO_ICMP:
        starts.append((packet[0] & 0x0F) * 4 + 8)
    elif packet[0] >> 4 == 6 and packet[6] == IPPROTO_ICMPV6:
        starts.append(48)
    for start in starts:
        if start >= len(data):
            continue
        src, dst = (start + 12, start + 16) if data[start] >> 4 == 4 else (start + 8, start + 24)
        for at in (src, dst):
            if data[at : at + size] == address:
                data[at : at + size] = blank
    return bytes(data)


_PACKET_FIELDS = (Field.QUERY_PACKET, Field.RESPONSE_PACKET)


def _zero_record(record: Record) -> None:
    """Remove the resolver's address (the query side) from the whole record."""
    address = record[Field.QUERY_IP]
    for field in _PACKET_FIELDS:
        if field in record:
            record[field] = [_zero_address(p, address) for p in record[field]]
    for field in (Field.TCP, Field.ICMP):
        if field in record:
            record[field] = _zero_address(record[field], address)
    record[Field.QUERY_IP] = bytes(len(address))
    if Field.UDP_CHECKSUM in record:
        record[Field.UDP_CHECKSUM] = UdpChecksum.ERROR  # the pseudo-header is gone
    record[Field.RESOLVER_ADDRESS_ZEROED] = True
