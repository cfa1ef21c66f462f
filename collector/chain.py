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

from sensor.record import Field, RecordType, UdpChecksum
from sensor.render import response_message

from . import bailiwick, decompose
from .dedup import FrontTable

_PAIR, _TCP = RecordType.UDP_QUERY_RESPONSE, RecordType.TCP
_INCORRECT = UdpChecksum.INCORRECT
_TCP_PROTO = 6


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
    else:
        return f"record_type_{int(kind) if isinstance(kind, int) else 'unknown'}"
    if message is None:
        return "no_message"
    times = record.get(Field.RESPONSE_TIME_SEC)
    if not times:
        return "no_time"
    return record[Field.RESPONSE_IP], times[0], message


class Chain:
    """The stages of ingest over one Directory (the bailiwick knowledge)."""

    def __init__(self, directory: bailiwick.Directory, max_entries: int = 1_000_000) -> None:
        self.directory = directory
        self.rrsets = FrontTable(max_entries)
        self.rdata = FrontTable(max_entries)
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
        self.accept(server, when, sets)

    def accept(self, server: bytes, when: int, sets: dict[tuple[bytes, int], tuple[bytes, ...]]) -> None:
        """Judge each RRset on what was known before this message, keep the
        ones in bailiwick, then learn from them."""
        zones = self.directory.zones_of(server)
        kept = []
        for (owner, rrtype), rdatas in sets.items():
            verdict = bailiwick.judge(zones, owner)
            if isinstance(verdict, str):
                self.counts[verdict] += 1
                continue
            kept.append((owner, rrtype, rdatas))
            self.rrsets.add((owner, rrtype, verdict, rdatas), when)
            for rdata in rdatas:
                self.rdata.add((rdata, rrtype, owner), when)
        self.counts["rrsets"] += len(kept)
        for owner, rrtype, rdatas in kept:
            bailiwick.learn(self.directory, owner, rrtype, rdatas)

    def full(self) -> bool:
        return self.rrsets.full() or self.rdata.full()

    def drain(self) -> tuple[list, list]:
        """(rrset aggregates, inverse-index aggregates) held so far."""
        return self.rrsets.drain(), self.rdata.drain()
