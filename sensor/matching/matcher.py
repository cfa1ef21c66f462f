"""The query table: IP datagrams and a clock in, DNS transaction records out.

This is the sans-I/O core. It never reads a socket or a file: the capture
edge feeds it each IP datagram with its capture time, and it returns the
records that datagram completed. Time is only ever packet time (or an
explicit `tick` from a live capture that has gone quiet), so replaying a
pcap gives exactly the records that live capture gave.

A record is a dict keyed by `record.Field` numbers, ready for the spool
codec. Everything that is not a record is counted in `counters` by reason;
no input makes `feed` raise.

The table is keyed by the 6-tuple (query ip, response ip, query port,
response port, DNS id); the question is kept in the entry and compared
byte-exactly, so a response pairs on the full 9-tuple. As in the
reference sensor, a message's question is read only when QDCOUNT is 1;
when the query or the response has none, they pair on the 6-tuple alone
if the response's rcode says the server could not or would not echo one
(FORMERR, SERVFAIL, NOTIMP, REFUSED). Several queries may share a 6-tuple
(retransmissions); responses take the oldest that they answer. The
OrderedDict keeps arrival order, so both the oldest query (eviction when
full) and the next one to time out are at its head.
"""

from __future__ import annotations

import dataclasses
import itertools
import struct
from collections import OrderedDict
from collections.abc import Callable

from sensor.matching import fragments, udpdns
from sensor.matching.bpf import Vantage
from sensor.matching.checksum import verify_udp
from sensor.records import limits
from sensor.records.dns import in_any_zone, parse_question
from sensor.records.record import Field, RecordType, UdpChecksum, elapsed
from sensor.records.wire import (
    DNS_FLAG_QR,
    DNS_FLAG_RD,
    DNS_HEADER_LEN,
    DNS_PORTS,
    DNS_RCODE_MASK,
    IPPROTO_FRAGMENT,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    RCODES_WITHOUT_QUESTION,
    TCP_DNS_PORT,
)

Record = dict

_IPV4 = struct.Struct("!2xHHHxB2x4s4s")  # total length, id, flags+offset, proto, src, dst
_IPV6 = struct.Struct("!4xHB")  # payload length, next header
_IPV6_FRAGMENT = struct.Struct("!BxHI")  # next header, offset+flags, id
_PORTS = struct.Struct("!HH")
_UDP_AND_DNS_HEADERS = 8 + DNS_HEADER_LEN  # where a question's name starts after the UDP header
_read_udp_dns = udpdns.read
_DNS = struct.Struct("!HHH")  # id, flags, qdcount

_IPV6_SKIPPABLE = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options
_ICMP_ERRORS = {IPPROTO_ICMP: frozenset((3, 4, 5, 11, 12)), IPPROTO_ICMPV6: frozenset((1, 2, 3, 4))}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the matcher needs from the configuration, and nothing else."""

    vantage: Vantage = dataclasses.field(default_factory=Vantage)
    zero_resolver_address: bool = False
    table_max: int = limits.STATE_TABLE_MAX
    query_timeout: int = limits.QUERY_TIMEOUT
    capture_rd: int | None = None
    capture_qr: int | None = None
    qnames_include: frozenset[bytes] = frozenset()
    qnames_exclude: frozenset[bytes] = frozenset()
    fragment_bytes: int = limits.FRAGMENT_BYTES
    fragment_timeout: int = limits.FRAGMENT_TIMEOUT
    # Tests set this: a bug that trips the last-resort guard in `feed`
    # then raises instead of hiding in the `malformed_other` counter.
    strict: bool = False



# An outstanding query is a flat tuple (it is the bulk of the sensor's
# memory): (qname, qtype, qclass, flags, packet, sec, nsec, fragments), where
# fragments is None for a single datagram, else every (packet, sec, nsec).
# For a single datagram the qname slot holds where the name starts in the
# packet (an int below 257: one CPython shares) instead of a copy of the
# name, about 60 bytes less for every query held (`_question`). No
# question: qname, qtype and qclass are None.
_QNAME, _QTYPE, _QCLASS, _FLAGS, _PACKET, _SEC, _NSEC, _FRAGMENTS = range(8)

# Record types and Field numbers as module names: `_emit` builds a record
# for most packets, and a module global is read several times faster than
# a class attribute (an enum member: a class attribute lookup each time).
_PAIR = RecordType.UDP_QUERY_RESPONSE
_QUERY_ONLY, _RESPONSE_ONLY = RecordType.UDP_QUERY_ONLY, RecordType.UDP_RESPONSE_ONLY
(_F_TYPE, _F_QUERY_IP, _F_RESPONSE_IP, _F_PROTO, _F_QUERY_PORT, _F_RESPONSE_PORT, _F_ID, _F_QNAME, _F_QTYPE,
 _F_QCLASS, _F_RCODE, _F_QUERY_PACKET, _F_QUERY_TIME_SEC, _F_QUERY_TIME_NSEC, _F_RESPONSE_PACKET,
 _F_RESPONSE_TIME_SEC, _F_RESPONSE_TIME_NSEC, _F_TCP, _F_ICMP, _F_TIMEOUT, _F_UDP_CHECKSUM) = (
    Field.TYPE, Field.QUERY_IP, Field.RESPONSE_IP, Field.PROTO, Field.QUERY_PORT, Field.RESPONSE_PORT, Field.ID,
    Field.QNAME, Field.QTYPE, Field.QCLASS, Field.RCODE, Field.QUERY_PACKET, Field.QUERY_TIME_SEC,
    Field.QUERY_TIME_NSEC, Field.RESPONSE_PACKET, Field.RESPONSE_TIME_SEC, Field.RESPONSE_TIME_NSEC, Field.TCP,
    Field.ICMP, Field.TIMEOUT, Field.UDP_CHECKSUM,
)
_KEY = {4: struct.Struct("!4s4sHHH"), 16: struct.Struct("!16s16sHHH")}
_SEQUENCE = struct.Struct("!Q")
# key length -> length of its 6-tuple part (plain keys and sequenced ones)
_SIX_LENGTH = {
    size.size + extra: size.size for size in _KEY.values() for extra in (0, _SEQUENCE.size)
}


class Matcher:
    """Pairs queries with responses. Feed datagrams in capture order."""

    # How a response's UDP checksum is judged: verified here for captured
    # packets; an edge that builds the datagrams itself (dnstap) knows.
    udp_checksum = staticmethod(verify_udp)

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        # key: packed 6-tuple (query ip, response ip, query port, response
        # port, id); a sequence number is appended for a further query that
        # shares the 6-tuple of an outstanding one (see `_share`).
        self.table: OrderedDict[bytes, tuple] = OrderedDict()
        self.shared: dict[bytes, list[bytes]] = {}
        self._sequence = itertools.count()
        self.counters: dict[str, int] = {}
        self.reassembler = fragments.Reassembler(
            self.counters, max_bytes=settings.fragment_bytes, timeout=settings.fragment_timeout
        )
        self.now_sec = 0
        self.now_nsec = 0
        self.paired = 0  # UDP_QUERY_RESPONSE records kept, after the filters (the stats line's pairs)
        # An edge that frames another transport's DNS messages as UDP
        # datagrams sets this (dnstap.DnstapMatcher: DNS over TCP). Called
        # with a record's datagrams, it returns None when they are plain UDP,
        # else (record type, protocol, query datagrams, response datagrams)
        # as that transport's.
        self.reframe: Callable[[list | None, list | None], tuple | None] | None = None
        self.apply(settings)

    def apply(self, settings: Settings) -> None:
        """Take new settings (a re-read configuration); the table is kept."""
        self.settings = settings
        self.vantage = settings.vantage
        # DNSQR_CAPTURE_QR: each datagram of the wanted side is a record of its own, the other side's none
        self._one_sided_only = settings.capture_qr is not None
        self._ignored = (
            {} if settings.capture_qr is None
            else {_RESPONSE_ONLY: "response_ignored"} if settings.capture_qr == 0
            else {_QUERY_ONLY: "query_ignored"}
        )
        self._filtering = (
            settings.capture_rd is not None
            or settings.capture_qr is not None
            or bool(settings.qnames_include)
            or bool(settings.qnames_exclude)
        )
        self._rd_wanted = None if settings.capture_rd is None else DNS_FLAG_RD if settings.capture_rd else 0
        self._include = settings.qnames_include
        self._exclude = settings.qnames_exclude
        self._by_qname = bool(self._include or self._exclude)
        self._zero = settings.zero_resolver_address

    # ------------------------------------------------------------ public
    def feed(self, packet: bytes, sec: int, nsec: int) -> list[Record]:
        """Records completed by this IP datagram (often none)."""
        out: list[Record] = []
        now = self.now_sec
        if sec != now:
            self._advance(sec, nsec, out)
        else:
            # the clock's own int object: queries waiting in the table then
            # share one per second instead of holding one each (32 bytes a
            # query held)
            sec = now
            if nsec > self.now_nsec:
                self.now_nsec = nsec
        try:
            # IPv4 without options carrying UDP, unfragmented and whole: nearly
            # every datagram a resolver exchanges. Anything else takes the
            # general path below.
            if len(packet) >= 40 and packet[0] == 0x45:
                total, _, frag, proto, src, dst = _IPV4.unpack_from(packet, 0)
                if proto == IPPROTO_UDP and not frag & 0x3FFF and 40 <= total <= len(packet):
                    if total < len(packet):
                        packet = packet[:total]  # link-layer padding is not the datagram's
                    self._udp(src, dst, packet, 20, ((packet, sec, nsec),), out)
                    return out
            self._datagram(packet, sec, nsec, out)
        except (IndexError, struct.error, ValueError):
            # Every length is checked before use; this is the last line of
            # defence that keeps hostile bytes from stopping the sensor.
            if self.settings.strict:
                raise
            self._count("malformed_other")
        return out

    def tick(self, sec: int, nsec: int = 0) -> list[Record]:
        """Advance the clock without a packet (a quiet live capture)."""
        out: list[Record] = []
        self._advance(sec, nsec, out)
        self.reassembler.expire(self.now_sec)
        return out

    def flush(self, limit: int | None = None) -> list[Record]:
        """Outstanding queries as unanswered, oldest first (shutdown, end of
        file); at most `limit` at a time so a full table is not turned into
        records all at once."""
        out: list[Record] = []
        table = self.table
        while table and (limit is None or len(out) < limit):
            key, query = table.popitem(last=False)
            self._leftover(key, query, out)
        return out

    def _advance(self, sec: int, nsec: int, out: list) -> None:
        """Move the clock forward (never back) and expire what is due."""
        if sec > self.now_sec:
            self.now_sec, self.now_nsec = sec, nsec
            if self.table:
                self._expire(out)
        elif sec == self.now_sec and nsec > self.now_nsec:
            self.now_nsec = nsec

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
            packet = packet[:total]
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
            if start + 8 > len(buf):
                self._count("malformed_udp")
                return
            self._udp(src, dst, buf, start, packets, out)
        elif proto == IPPROTO_TCP:
            self._tcp(src, dst, buf, start, packets, out)
        elif proto in _ICMP_ERRORS:
            self._icmp(proto, dst, buf, start, packets, out)
        else:
            self._count("not_dns")

    def _udp(self, src, dst, buf, start, packets, out) -> None:
        """One UDP datagram (buf[start:] is the segment); the hot path.

        `packets` are the (packet, sec, nsec) it arrived in: one (then `buf`
        is that packet), or every fragment. Written flat on purpose: each
        Python call costs about as much as a field decoded, and this runs
        for every packet; the part every datagram shares is here, then one
        call to `_query` or `_response`. The UDP and DNS headers and the
        question are read by `udpdns.read`: in C where it is built, as
        those reads were most of a datagram's time in Python.
        """
        parsed = _read_udp_dns(buf, start)
        if parsed.__class__ is str:
            self._count(parsed)  # not_dns, malformed_udp or malformed_dns
            return
        sport, dport, end, ident, flags, question = parsed
        is_query = not flags & DNS_FLAG_QR
        if is_query:
            client, server, client_port, server_port = src, dst, sport, dport
        else:
            client, server, client_port, server_port = dst, src, dport, sport
        vantage = self.vantage
        if not vantage.open and (
            client not in vantage.res_exact and server not in vantage.auth_exact
            if vantage.exact_only
            else not vantage.wants(client, server)
        ):
            self._count("not_ours")
            return
        if self._one_sided_only:
            kind = _QUERY_ONLY if is_query else _RESPONSE_ONLY
            self._one_sided(kind, client, server, client_port, server_port, ident, flags, question,
                            buf, start, end, packets, out)
            return
        key = _KEY[len(src)].pack(client, server, client_port, server_port, ident)
        if is_query:
            self._query(key, question, start + _UDP_AND_DNS_HEADERS, flags, packets, out)
        else:
            self._response(key, client, server, client_port, server_port, ident, question, flags,
                           src, dst, buf, start, end, packets, out)

    def _query(self, key: bytes, question, name_at: int, flags: int, packets, out: list) -> None:
        """Remember a query until its response, timeout or eviction; `name_at`:
        where its question's name starts in `buf`."""
        table = self.table
        if len(table) >= self.settings.table_max:
            old_key, oldest = table.popitem(last=False)
            self._count("query_evicted")
            self._leftover(old_key, oldest, out)
        packet, sec, nsec = packets[0]
        if question is None:
            query = (None, None, None, flags, packet, sec, nsec, packets if len(packets) > 1 else None)
        elif len(packets) == 1:
            query = (name_at, question[1], question[2], flags, packet, sec, nsec, None)
        else:
            qname, qtype, qclass = question
            query = (qname, qtype, qclass, flags, packet, sec, nsec, packets)
        if key in table or key in self.shared:
            key = self._share(key)
        table[key] = query

    def _response(self, key: bytes, client, server, client_port, server_port, ident, question, flags: int,
                  src, dst, buf, start, end, packets, out) -> None:
        """Pair a response with the oldest outstanding query it answers."""
        table = self.table
        rcode = flags & DNS_RCODE_MASK
        if self.shared and key in self.shared:
            query = self._take_shared(key, question, rcode)
        else:
            query = table.get(key)
            if query is not None:
                held = query[0]
                if question is not None and held is not None:
                    qname, qtype, qclass = question
                    if query[1] != qtype or query[2] != qclass or (
                        not query[4].startswith(qname, held) if query[7] is None else held != qname
                    ):
                        query = None
                elif rcode not in RCODES_WITHOUT_QUESTION:
                    query = None
                if query is not None:
                    del table[key]
        if query is None:
            self._one_sided(RecordType.UDP_UNSOLICITED_RESPONSE, client, server, client_port, server_port,
                            ident, flags, question, buf, start, end, packets, out)
            return
        if question is None and query[0] is not None:
            question = _question(query)  # the record takes the query's
        if query[_FRAGMENTS] is None:
            query_packets, query_secs, query_nsecs = [query[4]], [query[5]], [query[6]]
        else:
            query_packets, query_secs, query_nsecs = _columns(query[_FRAGMENTS])
        if len(packets) == 1:
            packet, sec, nsec = packets[0]
            response_packets, response_secs, response_nsecs = [packet], [sec], [nsec]
        else:
            response_packets, response_secs, response_nsecs = _columns(packets)
        if self._emit(out, _PAIR, query[_FLAGS], client, server, client_port, server_port, ident, question, rcode,
                      query_packets, query_secs, query_nsecs, response_packets, response_secs, response_nsecs,
                      buf[start:end]):
            self.paired += 1

    # ---------------------------------------- queries sharing a 6-tuple
    # Retransmissions (or one packet seen twice on a mirror port) put two
    # queries with the same 6-tuple, even the same question, in the table
    # at once. As the reference does, both stay and responses pair oldest
    # first. The first keeps the plain key; each further one gets the key
    # plus a sequence number, and `shared` lists every key in the table for
    # that 6-tuple in arrival order. It is empty unless this happens, so the
    # common path pays one truth test.
    def _share(self, key: bytes) -> bytes:
        keys = self.shared.get(key)
        if keys is None:
            keys = self.shared[key] = [key]  # the plain key is in the table
        extra = key + _SEQUENCE.pack(next(self._sequence))
        keys.append(extra)
        return extra

    def _take_shared(self, key: bytes, question, rcode: int) -> tuple | None:
        """The oldest query under this 6-tuple that the response answers."""
        for candidate in self.shared[key]:
            held = self.table[candidate]
            if question is not None and held[0] is not None:
                if _question(held) != question:
                    continue
            elif rcode not in RCODES_WITHOUT_QUESTION:
                continue
            del self.table[candidate]
            self._forget(candidate)
            return held
        return None

    def _forget(self, key: bytes) -> None:
        """A query under a shared 6-tuple left the table."""
        six = key[: _SIX_LENGTH[len(key)]]
        keys = self.shared.get(six)
        if keys is not None:
            keys.remove(key)
            if not keys:
                del self.shared[six]

    def _one_sided(self, kind, query_ip, response_ip, query_port, response_port, ident, flags, question,
                   buf, start, end, packets, out) -> None:
        """A record of one datagram: query-only, response-only or unsolicited."""
        datagrams, secs, nsecs = _columns(packets)
        if kind == _QUERY_ONLY:
            self._emit(out, kind, flags, query_ip, response_ip, query_port, response_port, ident, question, None,
                       datagrams, secs, nsecs, None, None, None, None)
        else:
            self._emit(out, kind, flags, query_ip, response_ip, query_port, response_port, ident, question,
                       flags & DNS_RCODE_MASK, None, None, None, datagrams, secs, nsecs, buf[start:end])

    def _tcp(self, src, dst, buf, start, packets, out) -> None:
        if len(packets) > 1:
            self._count("tcp_fragmented")
            return
        if start + 20 > len(buf):
            self._count("malformed_tcp")
            return
        sport, dport = _PORTS.unpack_from(buf, start)
        if TCP_DNS_PORT not in (sport, dport):
            self._count("not_dns")
            return
        if not self.vantage.wants_tcp(src, dst, sport, dport):
            self._count("not_ours")
            return
        packet, sec, nsec = packets[0]
        # ID 0: required in nmsg's DnsQR, and the reference reads none from a segment
        if dport == TCP_DNS_PORT:
            self._emit(out, RecordType.TCP, None, src, dst, sport, dport, 0, None, None,
                       None, [sec], [nsec], None, None, None, None, IPPROTO_TCP, tcp=packet)
        else:
            self._emit(out, RecordType.TCP, None, dst, src, dport, sport, 0, None, None,
                       None, None, None, None, [sec], [nsec], None, IPPROTO_TCP, tcp=packet)

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
            is_dns = qproto == IPPROTO_TCP and TCP_DNS_PORT in (qsport, qdport)
        if not is_dns:
            self._count("not_dns")
            return
        if not self.vantage.wants_icmp(dst, qsrc, qdst, qsport, qdport):
            self._count("not_ours")
            return
        # ID 0 when the quote holds no DNS header: required in nmsg's DnsQR, as the reference
        ident = _DNS.unpack_from(dns)[0] if qproto == IPPROTO_UDP and len(dns) >= 6 else 0
        packet, sec, nsec = packets[0]
        if qdport in DNS_PORTS:
            client, server, client_port, server_port = qsrc, qdst, qsport, qdport
        else:
            client, server, client_port, server_port = qdst, qsrc, qdport, qsport
        self._emit(out, RecordType.ICMP, None, client, server, client_port, server_port, ident, None, None,
                   None, None, None, None, [sec], [nsec], None, proto, icmp=packet)

    # ------------------------------------------------------------ records
    def _leftover(self, key: bytes, query: tuple, out: list) -> None:
        """A query that will get no response: emit it as unanswered."""
        if self.shared:
            self._forget(key)
        size = 4 if query[_PACKET][0] >> 4 == 4 else 16
        src, dst, sport, dport, ident = _KEY[size].unpack_from(key)
        question = _question(query) if query[_QNAME] is not None else None
        if query[_FRAGMENTS] is None:
            datagrams, secs, nsecs = [query[_PACKET]], [query[_SEC]], [query[_NSEC]]
        else:
            datagrams, secs, nsecs = _columns(query[_FRAGMENTS])
        timeout = max(elapsed(query[_SEC], query[_NSEC], self.now_sec, self.now_nsec), 0.0)
        self._emit(out, RecordType.UDP_UNANSWERED_QUERY, query[_FLAGS], src, dst, sport, dport, ident, question,
                   None, datagrams, secs, nsecs, None, None, None, None, timeout=timeout)

    def _emit(self, out: list, kind: int, flags: int | None, query_ip: bytes, response_ip: bytes, query_port: int,
              response_port: int, ident: int, question, rcode: int | None, query_packets: list | None,
              query_secs: list | None, query_nsecs: list | None, response_packets: list | None,
              response_secs: list | None, response_nsecs: list | None, response_segment: bytes | None,
              proto: int = IPPROTO_UDP, tcp: bytes | None = None, icmp: bytes | None = None,
              timeout: float | None = None) -> bool:
        """The one place a record is made, for every path (pairs, one-sided
        and unanswered UDP, TCP, ICMP, fragments, dnstap): the filters, then
        the record in field order, then zeroing; False when filtered out.

        `flags` are the DNS flags the filters judge (the query's, or a lone
        response's); None for records they never drop (TCP, ICMP). A side
        whose times are None is not in the record; its datagrams may be None
        alone (TCP and ICMP records keep the datagram in `tcp` or `icmp`).
        `response_segment` is the response's UDP segment, whose checksum the
        record carries, verified only for a record that is kept.

        It runs for most packets, so it is written flat: a parameter a
        value rather than a tuple a side, the filters inline, and the two
        common records (the pair, the unanswered query) each one dict
        display rather than a store a field.
        """
        if flags is not None and self._filtering:
            if self._one_sided_only and kind in self._ignored:  # the side DNSQR_CAPTURE_QR does not want
                self._count(self._ignored[kind])
                return False
            if self._rd_wanted is not None and flags & DNS_FLAG_RD != self._rd_wanted:
                self._count("filtered")
                return False
            if question is not None and self._by_qname:
                qname = question[0].lower()
                if (self._include and not in_any_zone(qname, self._include)) or (
                    self._exclude and in_any_zone(qname, self._exclude)
                ):
                    self._count("filtered")
                    return False
        if self.reframe is not None:
            framed = self.reframe(query_packets, response_packets)
            if framed is not None:
                kind, proto, query_packets, response_packets = framed
                response_segment = None  # no UDP checksum: no UDP segment crossed a wire
        if question is not None and response_segment is not None and query_secs is not None:
            qname, qtype, qclass = question
            record = {
                _F_TYPE: kind, _F_QUERY_IP: query_ip, _F_RESPONSE_IP: response_ip, _F_PROTO: proto,
                _F_QUERY_PORT: query_port, _F_RESPONSE_PORT: response_port, _F_ID: ident, _F_QNAME: qname,
                _F_QTYPE: qtype, _F_QCLASS: qclass, _F_RCODE: rcode, _F_QUERY_PACKET: query_packets,
                _F_QUERY_TIME_SEC: query_secs, _F_QUERY_TIME_NSEC: query_nsecs, _F_RESPONSE_PACKET: response_packets,
                _F_RESPONSE_TIME_SEC: response_secs, _F_RESPONSE_TIME_NSEC: response_nsecs,
                _F_UDP_CHECKSUM: self.udp_checksum(response_ip, query_ip, response_segment),
            }
        elif question is not None and timeout is not None and query_packets is not None:
            qname, qtype, qclass = question
            record = {
                _F_TYPE: kind, _F_QUERY_IP: query_ip, _F_RESPONSE_IP: response_ip, _F_PROTO: proto,
                _F_QUERY_PORT: query_port, _F_RESPONSE_PORT: response_port, _F_ID: ident, _F_QNAME: qname,
                _F_QTYPE: qtype, _F_QCLASS: qclass, _F_QUERY_PACKET: query_packets, _F_QUERY_TIME_SEC: query_secs,
                _F_QUERY_TIME_NSEC: query_nsecs, _F_TIMEOUT: timeout,
            }
        else:
            record = {
                _F_TYPE: kind, _F_QUERY_IP: query_ip, _F_RESPONSE_IP: response_ip, _F_PROTO: proto,
                _F_QUERY_PORT: query_port, _F_RESPONSE_PORT: response_port, _F_ID: ident,
            }
            if question is not None:
                record[_F_QNAME], record[_F_QTYPE], record[_F_QCLASS] = question
            if rcode is not None:
                record[_F_RCODE] = rcode
            if query_packets is not None:
                record[_F_QUERY_PACKET] = query_packets
            if query_secs is not None:
                record[_F_QUERY_TIME_SEC], record[_F_QUERY_TIME_NSEC] = query_secs, query_nsecs
            if response_packets is not None:
                record[_F_RESPONSE_PACKET] = response_packets
            if response_secs is not None:
                record[_F_RESPONSE_TIME_SEC], record[_F_RESPONSE_TIME_NSEC] = response_secs, response_nsecs
            if tcp is not None:
                record[_F_TCP] = tcp
            if icmp is not None:
                record[_F_ICMP] = icmp
            if timeout is not None:
                record[_F_TIMEOUT] = timeout
            if response_segment is not None:
                record[_F_UDP_CHECKSUM] = self.udp_checksum(response_ip, query_ip, response_segment)
        if self._zero:
            _zero_record(record)
        out.append(record)
        return True

    def _expire(self, out: list) -> None:
        """Emit queries older than the timeout, judged by packet time."""
        table = self.table
        limit = self.now_sec - self.settings.query_timeout
        while table:
            key = next(iter(table))
            query = table[key]
            if query[_SEC] >= limit:
                return
            del table[key]
            self._leftover(key, query, out)

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1


# ------------------------------------------------------------------ helpers
def _question(query: tuple) -> tuple[bytes, int, int]:
    """(qname, qtype, qclass) of an outstanding query that has a question.

    A single datagram's name is read again from the packet (see the table's
    layout above; the name was checked when the query came, and `startswith`
    in `_response` compares it in place: wire names delimit themselves, so
    equal bytes from the same start are the same name)."""
    held = query[_QNAME]
    if query[_FRAGMENTS] is not None:
        return held, query[_QTYPE], query[_QCLASS]
    packet = query[_PACKET]
    return parse_question(packet, held - DNS_HEADER_LEN, len(packet))


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


def _columns(packets) -> tuple[list, list, list]:
    """[(packet, sec, nsec), ...] -> [packets], [secs], [nsecs]."""
    return [p[0] for p in packets], [p[1] for p in packets], [p[2] for p in packets]


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
