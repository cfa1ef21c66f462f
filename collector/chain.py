"""The ingest chain, sans I/O: records in, aggregates out.

    record --responses--> (server, time, message)
           --decompose--> RRsets
           --bailiwick--> RRsets with their zone (the rest counted, dropped)
           --dedup------> entries (rrset) and inverse-index rows (rdata)

Fed one record at a time by the ingester, which reads files and writes
what `drain` returns into the store; nothing here opens a file or a
database, so every stage is tested with records built in code.
"""

from __future__ import annotations

from collections import Counter

from sensor.display.render import response_message
from sensor.records.record import Field, RecordType, UdpChecksum

from . import bailiwick, decompose
from .bailiwick import OUT_OF_BAILIWICK, UNKNOWN_SERVER
from .dedup import MAX_ENTRIES, FrontTable, inverse_index

_PAIR, _TCP = RecordType.UDP_QUERY_RESPONSE, RecordType.TCP
_KIND_MAX = max(RecordType)  # above: one counter, record_type_other
TIME_MAX = 0xFFFFFFFF  # the last response time the stores keep (ClickHouse's UInt32; SQLite stops at 2**63)
_INCORRECT = UdpChecksum.INCORRECT
_TCP_PROTO = 6
_TEACHING = frozenset((decompose.TYPE_NS, decompose.TYPE_A, decompose.TYPE_AAAA))  # what bailiwick.learn reads


def tcp_response_message(record: dict) -> bytes | None:
    """The DNS message of a TCP pair's response (one segment carrying the
    whole message after its two-octet length, as dnstap pairs are built)."""
    packets = record.get(Field.RESPONSE_PACKET) or ()
    if len(packets) != 1:
        return None
    packet = packets[0]
    if len(packet) < 20:
        return None
    if packet[0] >> 4 == 4:
        start = (packet[0] & 0x0F) * 4
        proto = packet[9]
    elif packet[0] >> 4 == 6 and len(packet) >= 40:
        start, proto = 40, packet[6]
    else:
        return None
    if proto != _TCP_PROTO or len(packet) < start + 20:
        return None
    payload = packet[start + (packet[start + 12] >> 4) * 4 :]
    if len(payload) < 2 or int.from_bytes(payload[:2], "big") != len(payload) - 2:
        return None
    return payload[2:]


def response_of(record: dict) -> tuple[bytes, int, bytes] | str:
    """(server address, response time in seconds, DNS message) of a record
    that feeds the database, else the counter name of why it does not."""
    kind = record.get(Field.TYPE)
    if kind == _PAIR:
        if record.get(Field.UDP_CHECKSUM) == _INCORRECT:
            return "checksum_incorrect"
        message = response_message(record)
    elif kind == _TCP and record.get(Field.RESPONSE_PACKET) and record.get(Field.QUERY_PACKET):
        message = tcp_response_message(record)
    elif not isinstance(kind, int):
        return "record_type_unknown"
    else:  # one counter for the types nmsg does not have: a counter a type, and the state file, grew
        return f"record_type_{kind}" if 0 <= kind <= _KIND_MAX else "record_type_other"
    if message is None:
        return "no_message"
    times = record.get(Field.RESPONSE_TIME_SEC)
    if not times:
        return "no_time"
    if not 0 <= times[0] <= TIME_MAX:  # past it, a store refused the batch (SQLite: 2**63; ClickHouse: UInt32)
        return "bad_time"
    return record[Field.RESPONSE_IP], times[0], message


RRsets = tuple[tuple[bytes, int, tuple[bytes, ...]], ...]  # ((owner, type, rdatas), ...): decompose's, as items


class Chain:
    """The stages of ingest over one Directory (the bailiwick knowledge)."""

    def __init__(self, directory: bailiwick.Directory, max_entries: int = MAX_ENTRIES) -> None:
        """`max_entries`: the front table's bound (bench/RESULTS.md,
        "Ingest": its memory, and what a smaller one costs)."""
        self.directory = directory
        self.rrsets = FrontTable(max_entries)
        self.counts: Counter[str] = Counter()

    def feed(self, record: dict) -> None:
        """Take one spool record through every stage."""
        found = response_of(record)
        if isinstance(found, str):
            self.counts[found] += 1
            return
        server, when, message = found
        try:
            sets = decompose.rrsets(message)
        except decompose.NotData as why:
            self.counts[str(why)] += 1
            return
        except decompose.Undecodable:
            self.counts["undecodable"] += 1
            return
        self.counts["responses"] += 1
        self.accept(server, when, tuple((owner, rrtype, rdatas) for (owner, rrtype), rdatas in sets.items()))

    def take(self, items: list) -> None:
        """Take a list of records as `spoolscan` reads them: each already
        through `response_of` and `decompose` ((server, time, RRsets), or
        the counter it goes to) or a record dict for `feed`."""
        accept, counts = self.accept, self.counts
        responses = 0
        for item in items:
            kind = type(item)
            if kind is tuple:
                responses += 1
                accept(*item)
            elif kind is str:
                counts[item] += 1
            else:
                self.feed(item)
        if responses:
            counts["responses"] += responses

    def accept(self, server: bytes, when: int, sets: RRsets) -> None:
        """Judge each RRset on what was known before this message, keep the
        ones in bailiwick, then learn from them.

        The stages' rules are bailiwick.judge, FrontTable.add and
        bailiwick.learn; they are written out here, flattened (this runs
        for every RRset, two million of them on the benchmark's million
        responses: 4.8-5.5 µs a response against 9.1-9.8 with the calls
        and the inverse index's own table, bench/RESULTS.md, "The collector"),
        and tests/test_collector_fast.py holds the two to each other. An
        RRset already in the front table is not learned from again: it
        taught what it teaches when it came first (learning is idempotent)."""
        zones = self.directory.zones_of(server)
        counts = self.counts
        rrsets = self.rrsets.entries
        kept = 0
        lessons = None
        for rrset in sets:
            owner, rrtype, rdatas = rrset
            if not zones:
                counts[UNKNOWN_SERVER] += 1
                continue
            pos = 0  # bailiwick.judge: the deepest zone of the server's above the owner
            while True:
                zone = owner[pos:]
                if zone in zones:
                    break
                if not owner[pos]:
                    zone = None
                    break
                pos += owner[pos] + 1
            if zone is None:
                counts[OUT_OF_BAILIWICK] += 1
                continue
            kept += 1
            key = (owner, rrtype, zone, rdatas)  # FrontTable.add
            entry = rrsets.get(key)
            if entry is None:
                rrsets[key] = [when, when, 1]
                if rrtype in _TEACHING:
                    if lessons is None:
                        lessons = []
                    lessons.append(rrset)
            else:
                if when < entry[0]:
                    entry[0] = when
                elif when > entry[1]:
                    entry[1] = when
                entry[2] += 1
        counts["rrsets"] += kept
        if lessons:
            directory = self.directory
            for owner, rrtype, rdatas in lessons:
                bailiwick.learn(directory, owner, rrtype, rdatas)

    def full(self) -> bool:
        return self.rrsets.full()

    def drain(self) -> tuple[list, list]:
        """(rrset aggregates, inverse-index aggregates) held so far. The
        index's are made from the RRsets' (the same min / max / sum, so the
        same rows as a table of their own kept beside; half the memory
        and the work of accept, bench/RESULTS.md, "The collector")."""
        rrsets = self.rrsets.drain()
        return rrsets, inverse_index(rrsets)
