"""The ingest's fast path held to the Python that states its rules.

- `collector._ingest` (C): `rrsets` against decompose.rrsets (itself on
  sensor.display.dnsmessage, wdns's rules), `response` against record.check of
  dnsqr.decode then chain.response_of, `scan` (through spoolscan.batches)
  against spoolfile.read, and the merge's `name_key` and `pack_rdata`
  against names.key and store.pack_rdata: on crafted input, random input
  (hypothesis) and the benchmark's traffic written by the real sensor;
- `Chain.take` / `accept` (flattened) and `Chain.drain` (the inverse index
  made from the RRsets) against the stages called one by one
  (`StatementChain`), and the whole ingest of the benchmark's traffic
  against that chain on the Python path: the same store, row for row;
- the SQLite directory's caches (kept right when learning, bounded), and
  the ingester's pause of the cyclic garbage collector.
"""

from __future__ import annotations

import gc
import os
import random
import struct
import weakref
import zlib
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import collector_bench, resolutions
from collector import _ingest, bailiwick, chain, decompose, incoming, names, roothints, rowkeys, spoolscan, sqlite_store
from collector.chain import Chain
from collector.dedup import FrontTable
from collector.ingest import Ingester
from collector.sqlite_store import SqliteStore
from collector.store import pack_rdata, rdata_key
from sensor.display import dnsmessage
from sensor.records.record import Field, RecordType, UdpChecksum, check
from sensor.spool import dnsqr, nmsg
from sensor.spool.cbor import SpoolError
from sensor.spool.formats import read
from tests import packets as P
from tests.collectorkit import STRANGER, ZONE, hints_file, message, resolution, response_record, write_spool

# ------------------------------------------------------------ the statements


def statement_rrsets(wire: bytes):
    """What _ingest.rrsets must give: decompose.rrsets as items, or the counter name."""
    try:
        sets = decompose.rrsets(wire)
    except decompose.NotData as why:
        return str(why)
    except decompose.Undecodable:
        return "undecodable"
    return tuple((owner, rrtype, rdatas) for (owner, rrtype), rdatas in sets.items())


def statement_item(record: dict):
    """What the chain takes from a well-formed record."""
    found = chain.response_of(record)
    if isinstance(found, str):
        return found
    server, when, wire = found
    sets = statement_rrsets(wire)
    return sets if isinstance(sets, str) else (server, when, sets)


def python_takes(record: dict) -> bool:
    """The records the C part leaves to Python: TCP, a response in fragments."""
    return record.get(Field.TYPE) == RecordType.TCP or len(record.get(Field.RESPONSE_PACKET) or ()) > 1


def same_response(data: bytes) -> None:
    """_ingest.response(data) is what Python makes of the DnsQR message, or
    None: left to Python (always for what Python refuses, TCP, fragments)."""
    got = _ingest.response(data)
    try:
        record = check(dnsqr.decode(data))
    except ValueError:
        assert got is None  # Python refuses it, and says why
        return
    if python_takes(record):
        assert got is None
    elif got is not None:
        assert got == statement_item(record)


class StatementChain(Chain):
    """The chain as the stages state it, one call each (before it was flattened)."""

    def __init__(self, directory, max_entries: int = 1_000_000) -> None:
        super().__init__(directory, max_entries)
        self.rdata = FrontTable(max_entries)

    def take(self, items: list) -> None:
        for record in items:
            self.feed(record)

    def accept(self, server, when, sets) -> None:
        zones = self.directory.zones_of(server)
        kept = []
        for owner, rrtype, rdatas in sets:
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
        return self.rrsets.drain(), self.rdata.drain()


def python_batches(path: str):
    """spoolfile.read's records, one a batch: what the ingest read before."""
    for record, _ in read(path):
        yield [record]


# ------------------------------------------------------- DNS messages by hand


class Wire:
    """A DNS message built octet by octet: names compressed against every
    earlier one (case-blind, as servers do), or not; anything else raw."""

    def __init__(self, flags: int = 0x8400, ident: int = 0x1234, compress: bool = True) -> None:
        self.out = bytearray(12)
        self.flags, self.ident, self.compress = flags, ident, compress
        self.counts = [0, 0, 0, 0]
        self.table: dict[tuple, int] = {}

    def name(self, text: str) -> None:
        labels = [label for label in text.split(".") if label]
        for i in range(len(labels)):
            suffix = tuple(label.lower() for label in labels[i:])
            if self.compress and suffix in self.table:
                self.out += (0xC000 | self.table[suffix]).to_bytes(2, "big")
                return
            if len(self.out) < 0x3FFF:
                self.table[suffix] = len(self.out)
            self.out += bytes([len(labels[i])]) + labels[i].encode()
        self.out.append(0)

    def question(self, qname: str, qtype: int = 1) -> Wire:
        self.name(qname)
        self.out += struct.pack("!HH", qtype, 1)
        self.counts[0] += 1
        return self

    def rr(self, section: int, owner: str, rrtype: int, *parts, rrclass: int = 1) -> Wire:
        """parts: str (a name), bytes (raw)."""
        self.name(owner)
        self.out += struct.pack("!HHIH", rrtype, rrclass, 300, 0)
        start = len(self.out)
        for part in parts:
            if isinstance(part, str):
                self.name(part)
            else:
                self.out += part
        struct.pack_into("!H", self.out, start - 2, len(self.out) - start)
        self.counts[section] += 1
        return self

    def bytes(self) -> bytes:
        struct.pack_into("!6H", self.out, 0, self.ident, self.flags, *self.counts)
        return bytes(self.out)


def text(*strings: bytes) -> bytes:
    return b"".join(bytes([len(s)]) + s for s in strings)


ANSWER, AUTHORITY, ADDITIONAL = 1, 2, 3
NAME_DATA = {  # the record data of every NAME_FIELDS type, mixed case, compressed against the owner
    2: ("NS1.Example.TEST.",), 3: ("Md.EXAMPLE.test.",), 4: ("mf.Example.Test.",), 5: ("Target.EXAMPLE.test.",),
    6: ("NS1.Example.TEST.", "Host-Master.EXAMPLE.test.", struct.pack("!5I", 1, 2, 3, 4, 5)),
    7: ("MB.example.TEST.",), 8: ("Mg.Example.test.",), 9: ("MR.EXAMPLE.TEST.",), 12: ("Ptr.Example.test.",),
    14: ("RMail.Example.TEST.", "EMail.example.Test."), 15: (b"\x00\x0a", "Mail.EXAMPLE.test."),
    17: ("Mbox.Example.TEST.", "Txt.EXAMPLE.test."), 18: (b"\x00\x01", "Afs.Example.TEST."),
    21: (b"\x00\x02", "Rt.EXAMPLE.Test."), 26: (b"\x00\x03", "Map822.Example.TEST.", "MapX400.EXAMPLE.test."),
    36: (b"\x00\x04", "Kx.Example.TEST."), 33: (b"\x00\x01\x00\x02\x00\x35", "Srv.EXAMPLE.test."),
    39: ("Other.Example.TEST.",),
    35: (b"\x00\x0a\x00\x14", text(b"U", b"E2U+SIP", b"!^.*$!sip:X@Y!"), "Next.EXAMPLE.test."),
}
assert set(NAME_DATA) == set(decompose.NAME_FIELDS)


def every_name_type() -> bytes:
    w = Wire().question("www.Example.TEST", 255)
    for rrtype, parts in NAME_DATA.items():
        w.rr(ANSWER, "WWW.example.TEST.", rrtype, *parts)
    w.rr(AUTHORITY, "Example.TEST.", 2, "ns2.EXAMPLE.test.").rr(AUTHORITY, "example.test.", 2, "NS1.example.test.")
    w.rr(ADDITIONAL, "ns1.example.TEST.", 1, bytes([192, 0, 2, 1])).rr(ADDITIONAL, "NS1.EXAMPLE.TEST.", 1,
                                                                       bytes([192, 0, 2, 1]))
    return w.bytes()


def crafted_messages() -> list[bytes]:
    out = [every_name_type()]
    base = Wire().question("x.test").rr(ANSWER, "x.test.", 1, bytes([192, 0, 2, 7]))
    out.append(base.bytes())
    w = Wire().question("x.test")  # duplicates, one RRset in two sections, other classes, meta types, OPT
    w.rr(ANSWER, "x.test.", 1, bytes([192, 0, 2, 9])).rr(ANSWER, "X.TEST.", 1, bytes([192, 0, 2, 7]))
    w.rr(ANSWER, "x.test.", 1, bytes([192, 0, 2, 9])).rr(ANSWER, "x.test.", 16, text(b"Mixed Case", b""))
    w.rr(ANSWER, "x.test.", 16, text(b"a")).rr(ANSWER, "x.test.", 0, b"zero").rr(ANSWER, "x.test.", 250, b"tsig")
    w.rr(ANSWER, "x.test.", 1, bytes([1, 2, 3]), rrclass=3).rr(ANSWER, "x.test.", 5, "Y.test.", rrclass=3)
    w.rr(AUTHORITY, "test.", 6, "a.test.", "b.test.", b"\x00" * 20).rr(ADDITIONAL, "x.test.", 1, bytes([192, 0, 2, 7]))
    w.rr(ADDITIONAL, "", 41, b"").rr(ADDITIONAL, "", 41, b"\x00\x0a\x00\x00").rr(ADDITIONAL, "x.test.", 65280, b"?")
    w.rr(ADDITIONAL, "x.test.", 28, bytes(range(16))).rr(ADDITIONAL, "x.test.", 200, b"query-only type")
    out.append(w.bytes())
    for flags in (0x0400, 0x8600, 0x9400, 0xA400, 0x8403):  # not a response, TC, opcode 2, opcode 4, NXDOMAIN
        out.append(Wire(flags).question("x.test").rr(ANSWER, "x.test.", 1, bytes(4)).bytes())
    described = [  # types wdns reads field by field: well-formed and not
        (47, "next.test.", b"\x00\x01\x40"), (47, "next.test.", b"\x00\x00"),
        (47, "next.test.", b"\x00\x21" + b"\x00" * 33),
        (65, b"\x00\x01", "svc.test.", b"\x00\x01\x00\x03\x02h2"), (65, b"\x00\x01", "svc.test.", b"\x00\x01\x00\x00"),
        (64, b"\x00\x01", "svc.test.", b"\x00\x03\x00\x02\x01\xbb\x00\x04\x00\x04\x01\x02\x03\x04"),
        (64, b"\x00\x01", "svc.test.", b"\xff\xff\x00\x00"), (38, b"\x40" + bytes(8), "a6.test."), (38, b"\x81"),
        (50, b"\x01\x00\x00\x0a\x02\xab\xcd\x02\x12\x34\x00\x01\x40"), (51, b"\x01\x00\x00\x0a\x03ab"),
        (1, bytes(3)), (28, bytes(17)), (15, b"\x00\x0a"), (2, b""), (6, "a.test.", "b.test."),
        (13, text(b"cpu", b"os")),
        (16, b"\x05ab"), (257, b"\x00\x05issue", b"ca.test"), (99, text(b"spf")), (62, bytes(6) + b"\x00\x01\x40"),
        (29, b"\x00" * 16), (108, bytes(6)), (109, bytes(7)),
        (46, b"\x00\x01\x08\x02" + bytes(12), "Signer.TEST.", b"sig"),
    ]
    for rrtype, *parts in described:
        out.append(Wire().question("x.test").rr(ANSWER, "x.test.", rrtype, *parts).bytes())
    out.append(Wire().bytes())  # the header alone
    counted = bytearray(Wire().question("x.test").rr(ANSWER, "x.test.", 1, bytes(4)).bytes())
    counted[7] = 5  # five answers promised, one sent: complete where an RR would start
    out.append(bytes(counted))
    one_answer = b"\x12\x34\x84\x00\x00\x00\x00\x01\x00\x00\x00\x00"
    bad = [
        one_answer + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + bytes(4),  # a pointer to itself
        one_answer + b"\xc0\x20" + struct.pack("!HHIH", 1, 1, 0, 4) + bytes(4),  # a pointer forward
        one_answer + b"\x41" + b"a" * 65 + b"\x00" + struct.pack("!HHIH", 1, 1, 0, 0),  # a length octet over 63
        one_answer + (b"\x3f" + b"a" * 63) * 4 + b"\x00" + struct.pack("!HHIH", 1, 1, 0, 0),  # a name over 255
        one_answer + b"\x01a\x00" + struct.pack("!HHIH", 1, 1, 0, 9) + bytes(4),  # data past the end
        one_answer + b"\x01a\x00" + struct.pack("!HHIH", 2, 1, 0, 2) + b"\xc0\x1b",  # a name in data pointing on
        b"\x12\x34\x84\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x01a",
        b"\x12\x34\x84",
    ]
    out.extend(bad)
    whole = every_name_type()
    out.extend(whole[:cut] for cut in range(0, len(whole), 7))  # cut short anywhere
    return out


def test_the_c_tables_are_wdns_descriptors_and_the_name_layouts():
    assert _ingest.DESCRIPTORS == dnsmessage.DESCRIPTORS
    assert _ingest.NAME_FIELDS == decompose.NAME_FIELDS


def test_crafted_messages_decompose_alike():
    messages = crafted_messages()
    for wire in messages:
        assert _ingest.rrsets(wire) == statement_rrsets(wire), wire.hex()
        assert _ingest.rrsets(bytearray(wire)) == statement_rrsets(wire)
    got = {_ingest.rrsets(wire) if isinstance(_ingest.rrsets(wire), str) else "rrsets" for wire in messages}
    assert got == {"rrsets", "undecodable", "not_a_response", "truncated", "not_a_query_response"}
    names_in_data = dict(((owner, rrtype), datas) for owner, rrtype, datas in _ingest.rrsets(every_name_type()))
    assert names_in_data[(b"\x03www\x07example\x04test\x00", 15)] == (b"\x00\x0a\x04mail\x07example\x04test\x00",)


RR_TYPES = st.sampled_from([*decompose.NAME_FIELDS, 1, 16, 28, 41, 0, 250, 47, 64, 65, 46, 29, 65280])
LABEL = st.text("abcXYZ-09", min_size=1, max_size=6)
NAME = st.lists(LABEL, max_size=4).map(lambda labels: ".".join([*labels, "Test", ""]))
PART = st.one_of(NAME, st.binary(max_size=12))
RR = st.tuples(st.sampled_from([ANSWER, AUTHORITY, ADDITIONAL]), NAME, RR_TYPES, st.lists(PART, max_size=3),
               st.sampled_from([1, 1, 1, 3]))


@st.composite
def messages(draw) -> bytes:
    w = Wire(draw(st.sampled_from([0x8400, 0x8000, 0x8180, 0x0000, 0x8600])), compress=draw(st.booleans()))
    w.question(draw(NAME))
    for section, owner, rrtype, parts, rrclass in sorted(draw(st.lists(RR, max_size=8)), key=lambda r: r[0]):
        w.rr(section, owner, rrtype, *parts, rrclass=rrclass)
    wire = bytearray(w.bytes())
    for _ in range(draw(st.integers(0, 2))):  # damage some
        if wire:
            wire[draw(st.integers(0, len(wire) - 1))] = draw(st.integers(0, 255))
    return bytes(wire[: draw(st.integers(0, len(wire)))] if draw(st.booleans()) else wire)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_random_messages_decompose_alike(wire):
    assert _ingest.rrsets(wire) == statement_rrsets(wire)


@settings(max_examples=1500, deadline=None)
@given(st.binary(min_size=12, max_size=300).map(lambda b: b[:2] + bytes([b[2] | 0x80]) + b[3:4] + b"\x00" + b[5:]))
def test_random_bytes_decompose_alike(wire):
    assert _ingest.rrsets(wire) == statement_rrsets(wire)


# ---------------------------------------------------------------- records


def pair(server: str = ZONE, wire: bytes | None = None, change: dict | None = None) -> dict:
    """A response record (its DNS message `wire`), fields changed (None: removed)."""
    record = response_record(server, message("x.test", answer=[("x.test.", "A", ["192.0.2.7"])]), 1_700_000_000)
    if wire is not None:
        record[Field.RESPONSE_PACKET] = [P.udp(server, P.RESOLVER, 53, 40000, wire)]
    record.update(change or {})
    return {k: v for k, v in record.items() if v is not None}


def crafted_records() -> list[dict]:
    wire = every_name_type()
    v6 = pair("2001:db8:1::1", wire)
    v6[Field.QUERY_IP] = P._packed(P.RESOLVER6)
    ipv4_fragment = bytearray(pair(wire=wire)[Field.RESPONSE_PACKET][0])
    ipv4_fragment[6] |= 0x20
    odd_udp = bytearray(pair(wire=wire)[Field.RESPONSE_PACKET][0])
    odd_udp[24:26] = (5).to_bytes(2, "big")  # a UDP length under its header's
    long_udp = bytearray(pair(wire=wire)[Field.RESPONSE_PACKET][0])
    long_udp[24:26] = (4000).to_bytes(2, "big")
    with_extension = bytearray(v6[Field.RESPONSE_PACKET][0])
    with_extension = with_extension[:6] + b"\x00" + with_extension[7:40] + b"\x11\x00" + bytes(6) + with_extension[40:]
    with_extension[4:6] = (int.from_bytes(with_extension[4:6], "big") + 8).to_bytes(2, "big")
    long_extension = bytearray(with_extension)
    long_extension[41] = 1  # 8 * (1 << 8 + 1) octets as nmsg reads its length (ntohs of one octet)
    big = P.big_response(3000)
    return [
        pair(), pair(wire=wire), v6, pair(wire=crafted_messages()[2]), pair(wire=b"\x00" * 5),
        pair(change={Field.UDP_CHECKSUM: UdpChecksum.INCORRECT}), pair(change={Field.UDP_CHECKSUM: UdpChecksum.ABSENT}),
        pair(change={Field.UDP_CHECKSUM: None}), pair(change={Field.TYPE: RecordType.UDP_UNANSWERED_QUERY}),
        pair(change={Field.TYPE: RecordType.UDP_UNSOLICITED_RESPONSE}), pair(change={Field.TYPE: 99}),
        pair(change={Field.TYPE: RecordType.TCP}), pair(change={Field.RESPONSE_PACKET: [], Field.RESPONSE_TIME_SEC: [],
                                                     Field.RESPONSE_TIME_NSEC: []}),
        pair(change={Field.RESPONSE_PACKET: None, Field.RESPONSE_TIME_SEC: [], Field.RESPONSE_TIME_NSEC: []}),
        pair(change={Field.RESPONSE_PACKET: [bytes(ipv4_fragment)]}),
        pair(change={Field.RESPONSE_PACKET: [bytes(odd_udp)]}), pair(change={Field.RESPONSE_PACKET: [bytes(long_udp)]}),
        pair(change={Field.RESPONSE_PACKET: [b"\x45" + bytes(10)]}),
        {**v6, Field.RESPONSE_PACKET: [bytes(with_extension)]}, {**v6, Field.RESPONSE_PACKET: [bytes(long_extension)]},
        {**v6, Field.RESPONSE_IP: b"\x01\x02"},
        pair(change={Field.RESPONSE_PACKET: P.fragment_ipv4(big, 1200), Field.RESPONSE_TIME_SEC: [1, 1, 1],
                Field.RESPONSE_TIME_NSEC: [0, 0, 0]}),
        pair(change={Field.RESPONSE_TIME_SEC: [-5], Field.QUERY_TIME_SEC: [-5]}),
        pair(change={Field.RESPONSE_TIME_SEC: [(1 << 63) - 1]}),  # past SQLite's integers, once the batch's end
        pair(change={Field.RESPONSE_TIME_SEC: [1 << 32]}),  # past ClickHouse's UInt32
        pair(change={Field.RESPONSE_TIME_SEC: [(1 << 32) - 1]}),  # the last time kept
        pair(change={Field.TYPE: 7}), pair(change={Field.TYPE: 8}),  # the last of nmsg's types; one past
        pair(change={Field.TYPE: (1 << 32) + 8}),  # an enum's 32 bits: 8
    ]


def test_crafted_records_are_read_as_python_reads_them():
    records = crafted_records()
    for record in records:
        same_response(dnsqr.encode(record))
    taken = [_ingest.response(dnsqr.encode(r)) for r in records]
    assert sum(item is None for item in taken) == 2  # TCP and the fragments: Python's
    assert Counter(type(item).__name__ for item in taken)["tuple"] >= 5
    assert taken[19] == "no_message"  # the long extension header
    # a time a store cannot keep stopped the ingester at each restart; a counter a type grew without end
    assert taken[-7:-4] == ["bad_time"] * 3 and isinstance(taken[-4], tuple)
    assert taken[-3:] == ["record_type_7", "record_type_other", "record_type_other"]


def test_damaged_dnsqr_messages_are_left_to_python():
    data = dnsqr.encode(pair())
    tag = dnsqr.tag
    cases = [
        data[:-3], data + b"\x07", data + tag(21, 2) + b"\x00", data + tag(3, 0) + b"\x01",
        data + tag(17, 5) + bytes(4), data + tag(16, 0) + b"\x05" + tag(17, 5) + bytes(4),  # times and packets apart
        data + tag(30, 0) + b"\x80" * 9 + b"\x7f",  # an unknown field's varint past 64 bits
        data + tag(99, 1) + bytes(8) + tag(100, 5) + bytes(4) + tag(101, 2) + b"\x01x",  # unknown fields: skipped
        tag(1, 0) + b"\x01", b"",
        data + tag(1, 0) + b"\x81\x80\x80\x80\x10",  # the type again, past 32 bits: its low 32 are 1
        data + b"".join(tag(13, 0) + b"\x01" + tag(14, 5) + bytes(4) for _ in range(1024)),  # a list past MAX_LIST
        data + b"".join(tag(12, 2) + b"\x00" + tag(13, 0) + b"\x01" + tag(14, 5) + bytes(4) for _ in range(1024)),
    ]
    for case in cases:
        same_response(case)


@settings(max_examples=1500, deadline=None)
@given(st.integers(0, len(crafted_records()) - 1), st.data())
def test_random_damage_to_records_reads_alike(index, data):
    record = crafted_records()[index]
    encoded = bytearray(dnsqr.encode(record))
    for _ in range(data.draw(st.integers(1, 3))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    same_response(bytes(encoded[: data.draw(st.integers(0, len(encoded)))]))


# --------------------------------------------------------------- NMSG files


def items(batches_of) -> tuple[list, str | None]:
    """Every item of a file's batches as the statement gives it, and the error at the end."""
    out, error = [], None
    try:
        for batch in batches_of:
            out.extend(statement_item(item) if isinstance(item, dict) else item for item in batch)
    except SpoolError as exc:
        error = str(exc)
    return out, error


def same_file(path: str) -> tuple[list, str | None]:
    fast = items(spoolscan.batches(path))
    assert fast == items(python_batches(path))
    return fast


def records_of_every_kind() -> list[dict]:
    out = []
    for n in range(40):
        out += resolution(f"w{n}.example.test", "example.test", f"203.0.113.{n}", 1000 + n)
    return out + crafted_records()


def test_files_read_alike_and_fast(tmp_path):
    records = records_of_every_kind()
    for compress in (True, False):
        path = str(tmp_path / f"f-{compress}.nmsg")
        write_spool(path, records, compress)
        got, error = same_file(path)
        assert error is None and len(got) == len(records)
    taken = [item for batch in spoolscan.batches(path) for item in batch]
    assert sum(isinstance(item, dict) for item in taken) == 2  # TCP and the fragments only


def container(payloads: list[bytes], crcs: list[int] | None = None, compress: bool = False) -> bytes:
    body = b"".join(dnsqr.tag(1, 2) + dnsqr.varint(len(p)) + p for p in payloads)
    body += b"".join(dnsqr.tag(2, 0) + dnsqr.varint(c) for c in crcs or [])
    if compress:
        deflated = zlib.compress(body)
        return nmsg.HEADER.pack(nmsg.MAGIC, nmsg.FLAG_ZLIB, nmsg.VERSION, 4 + len(deflated)) + \
            struct.pack(">I", len(body)) + deflated
    return nmsg.HEADER.pack(nmsg.MAGIC, 0, nmsg.VERSION, len(body)) + body


def payload(message: bytes, vid: int = 1, msgtype: int = 9) -> bytes:
    """An NmsgPayload around a DnsQR message, of vendor `vid` and type `msgtype`."""
    head = dnsqr.tag(1, 0) + dnsqr.varint(vid) + dnsqr.tag(2, 0) + dnsqr.varint(msgtype) + dnsqr.tag(3, 0)
    return nmsg.wrap(message, 1_700_000_000, 0, b"").replace(nmsg._PAYLOAD_HEAD, head, 1)


def damaged_files() -> list[bytes]:
    good = [dnsqr.encode(r) for r in resolution("www.example.test", "example.test", "203.0.113.80", 1000)]
    crcs = [nmsg.payload_crc(m) for m in good]
    bad_record = dnsqr.encode(pair()) + dnsqr.tag(17, 5) + bytes(4)
    whole = container([payload(m) for m in good], crcs)
    fragments = b""
    body = whole[nmsg.HEADER.size :]
    for index, piece in enumerate((body[:50], body[50:])):
        fragment = (dnsqr.tag(1, 0) + dnsqr.varint(7) + dnsqr.tag(2, 0) + dnsqr.varint(index) + dnsqr.tag(3, 0)
                    + dnsqr.varint(1) + dnsqr.tag(4, 2) + dnsqr.varint(len(piece)) + piece)
        fragments += nmsg.HEADER.pack(nmsg.MAGIC, nmsg.FLAG_FRAGMENT, nmsg.VERSION, len(fragment)) + fragment
    bomb_body = bytes(nmsg.MAX_INFLATED)
    bomb = zlib.compress(bomb_body, 9)
    return [
        whole, container([payload(m) for m in good], crcs, compress=True), fragments, fragments[:60],
        whole + container([payload(m) for m in good], [c ^ 1 for c in crcs]),  # a CRC that does not match
        whole + container([payload(m) for m in good], crcs[:2]),  # a CRC missing
        whole + container([payload(m) for m in good]),  # no CRCs at all: nothing to check
        whole + container([payload(good[0]), payload(good[1], vid=2), payload(good[2])]),  # another payload type
        whole + container([payload(good[0]), payload(bad_record), payload(good[2])]),  # a record Python refuses
        whole + container([payload(good[0]), payload(good[1])[:-8]]),  # a payload without its data
        whole + container([payload(good[0]), payload(good[1]) + dnsqr.tag(4, 0) + b"\x01"]),  # a field of another wire
        whole + container([payload(good[0])]) + b"NMSG\x00\x02" + b"\xff" * 40,
        whole + container([payload(good[0])])[:-5], whole[:7],
        whole + nmsg.HEADER.pack(nmsg.MAGIC, nmsg.FLAG_ZLIB, nmsg.VERSION, 4 + len(bomb))
        + struct.pack(">I", len(bomb_body)) + bomb,
        whole + container([payload(good[0])], compress=True)[:-6] + b"\x00" * 6,  # a damaged zlib stream
        whole + container([payload(good[0]) + dnsqr.tag(3, 1) + bytes(8)]),
        b"NMSX" + whole[4:],
        whole + filler(bytes(2 * 100_000) + dnsqr.tag(3, 0) + b"\x80" * 9 + b"\x7f"),  # field 0, then a bad varint
        whole + filler((dnsqr.tag(5, 0) + b"\x00") * 5000 + dnsqr.tag(1, 2) + b"\x00"),  # a field no container has
        whole + filler((dnsqr.tag(3, 0) + b"\x00") * 5000),  # its sequence, over and over
    ]


def filler(body: bytes) -> bytes:
    """A compressed container of `body`: fields that are not payloads, which the Python read
    crawled through one by one (64 MiB of them: minutes)."""
    deflated = zlib.compress(body, 9)
    return nmsg.HEADER.pack(nmsg.MAGIC, nmsg.FLAG_ZLIB, nmsg.VERSION, 4 + len(deflated)) + \
        struct.pack(">I", len(body)) + deflated


def test_damaged_files_give_the_same_records_then_the_same_error(tmp_path):
    errors = set()
    for number, data in enumerate(damaged_files()):
        path = tmp_path / f"{number}.nmsg"
        path.write_bytes(data)
        _, error = same_file(str(path))
        errors.add(error)
    assert len(errors) > 8  # each damage its own message (the file, container, payload and byte)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_damage_to_files_reads_alike(tmp_path, data):
    if not hasattr(test_random_damage_to_files_reads_alike, "files"):
        records = records_of_every_kind()
        files = []
        for compress in (False, True):
            path = tmp_path / "source.nmsg"
            write_spool(str(path), records[:60], compress)
            files.append(path.read_bytes())
        test_random_damage_to_files_reads_alike.files = files
    damaged = bytearray(data.draw(st.sampled_from(test_random_damage_to_files_reads_alike.files)))
    for _ in range(data.draw(st.integers(1, 4))):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / "damaged.nmsg"
    path.write_bytes(bytes(damaged[: data.draw(st.integers(1, len(damaged)))]))
    same_file(str(path))


def test_a_cbor_file_is_read_by_the_spool_reader(tmp_path):
    from sensor.spool.formats import CborFormat

    def cbor_file(name: str, records: list[dict]) -> str:
        path = str(tmp_path / name)
        with open(path, "wb") as handle:
            stream = CborFormat().open(handle, "sensor", "ch202", 0, 0)
            stream.write(records)
            stream.finish()
        return path

    # NMSG's varint enum is cut to 32 bits as protobuf does; CBOR carries the integer as it is,
    # and record.check refuses one wider than its field (sensor read died on a bignum)
    kinds = [record for record in records_of_every_kind() if record.get(Field.TYPE, 0) <= 0xFFFFFFFF]
    got, error = same_file(cbor_file("f.cbor.gz", kinds))
    assert error is None and len(got) == len(kinds) == len(records_of_every_kind()) - 1
    got, error = same_file(cbor_file("wide.cbor.gz", [*kinds[:3], pair(change={Field.TYPE: (1 << 32) + 8})]))
    assert len(got) == 3 and "record 4 at byte" in error and "field 1 is not an integer of 0 to 2**32-1" in error


# ----------------------------------------------------------------- the chain


def test_take_and_drain_are_the_stages_one_call_each(tmp_path):
    rng = random.Random(7)
    records = []
    for _ in range(300):
        zone = f"z{rng.randrange(30)}.test"
        address = f"203.0.113.{rng.randrange(256)}"
        records += resolution(f"h{rng.randrange(5)}.{zone}", zone, address, 1000 + rng.randrange(50))
    records += [response_record(STRANGER, message("x.test", answer=[("x.test.", "A", ["192.0.2.1"])]), 1000),
                response_record(ZONE, message("x.test", answer=[("www.victim.test.", "A", ["192.0.2.66"])],
                                              authority=[("test.", "NS", ["ns.evil.test."]),
                                                         (".", "NS", ["ns.evil.test."])]), 1001)]
    # one datum in two RRsets, one's times around the other's
    for when, addresses in ((1005, ["192.0.2.1"]), (1000, ["192.0.2.1", "192.0.2.2"]),
                            (1010, ["192.0.2.1", "192.0.2.2"])):
        records += resolution("www.z1.test", "z1.test", "203.0.113.1", when)
        records.append(response_record(ZONE, message("www.z1.test", answer=[("www.z1.test.", "A", addresses)]), when))
    records += crafted_records()
    path = str(tmp_path / "f.nmsg")
    write_spool(path, records)
    hints = roothints.read(hints_file(tmp_path))
    fast, slow = bailiwick.MemoryDirectory(), bailiwick.MemoryDirectory()
    roothints.seed(fast, hints)
    roothints.seed(slow, hints)
    taken, stated = Chain(fast, max_entries=40), StatementChain(slow, max_entries=40)
    fast_rows, slow_rows = [], []
    for batch in spoolscan.batches(path):
        taken.take(batch)
        if taken.full():
            fast_rows.append(taken.drain())
    for batch in python_batches(path):
        stated.take(batch)
        if stated.full():
            slow_rows.append(stated.drain())
    fast_rows.append(taken.drain())
    slow_rows.append(stated.drain())
    assert taken.counts == stated.counts
    assert taken.counts["out_of_bailiwick"] and taken.counts["unknown_server"] and taken.counts["rrsets"] > 1000
    assert (fast.served, fast.addresses, fast.zones) == (slow.served, slow.addresses, slow.zones)
    assert merged(fast_rows) == merged(slow_rows)  # flushed at other moments: the same aggregates
    one_flush = Chain(bailiwick.MemoryDirectory())
    roothints.seed(one_flush.directory, hints)
    reference = StatementChain(bailiwick.MemoryDirectory())
    roothints.seed(reference.directory, hints)
    for batch in spoolscan.batches(path):
        one_flush.take(batch)
    for batch in python_batches(path):
        reference.take(batch)
    assert one_flush.drain() == reference.drain()  # and in one flush, the same rows in the same order


def merged(flushes: list) -> tuple[dict, dict]:
    out: tuple[dict, dict] = ({}, {})
    for rows in flushes:
        for table, part in zip(out, rows, strict=True):
            for key, first, last, count in part:
                old = table.get(key, (first, last, 0))
                table[key] = (min(first, old[0]), max(last, old[1]), count + old[2])
    return out


# --------------------------------------------------------- the merge's values


@settings(max_examples=2000, deadline=None)
@given(st.one_of(NAME.map(lambda t: b"".join(bytes([len(x)]) + x.encode() for x in t.split(".") if x) + b"\x00"),
                 st.binary(max_size=40)))
def test_name_keys_are_names_key(wire):
    try:
        expected = names.key(wire)
    except (IndexError, ValueError):
        expected = None
    try:
        got = _ingest.name_key(wire)
    except ValueError:
        got = None
    if got is not None:
        assert got == expected
        keys = rowkeys.NameKeys()
        assert keys[wire] == expected and keys.forward[wire] == rowkeys.forward_key(expected)
    elif expected is not None:
        keys = rowkeys.NameKeys()  # the C part refuses it: the Python's key and forward key
        assert keys[wire] == expected and keys.forward[wire] == rowkeys.forward_key(expected)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=5).map(tuple))
def test_packed_data_is_pack_rdata(datas):
    assert _ingest.pack_rdata(datas) == pack_rdata(datas) == rowkeys.packed(datas)


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from([*decompose.NAME_FIELDS, 1, 16, 28, 65280]), st.one_of(
    st.binary(max_size=30), st.tuples(st.binary(max_size=6), NAME).map(
        lambda p: p[0] + b"".join(bytes([len(x)]) + x.encode() for x in p[1].split(".") if x) + b"\x00")))
def test_data_targets_are_rdata_names(rrtype, datum):
    try:
        expected = decompose.rdata_names(rrtype, datum)
    except decompose.Undecodable:
        with pytest.raises(ValueError):
            _ingest.rdata_target(rrtype, datum)
        return
    assert _ingest.rdata_target(rrtype, datum) == expected
    keys = rowkeys.NameKeys()
    key, target = rowkeys.index_key(keys, rrtype, datum)
    assert key == rdata_key(rrtype, datum) == sqlite_store._rdata_row(keys, datum, rrtype, b"\x01a\x00", 1, 2, 3)[0]
    assert target == (None if key == datum else decompose.rdata_names(rrtype, datum))


def test_packed_data_past_its_length_field_goes_to_python():
    with pytest.raises(ValueError):
        _ingest.pack_rdata((bytes(70000),))
    with pytest.raises(OverflowError):
        rowkeys.packed((bytes(70000),))


# ------------------------------------------------------------- the directory


def test_the_zones_cache_keeps_what_is_learned_instead_of_reading_it_again(tmp_path):
    store = SqliteStore(str(tmp_path / "pdns.sqlite"))
    directory = store.directory
    address = bytes([198, 51, 100, 3])
    directory.learn_address(b"\x02ns\x01a\x04test\x00", address)
    directory.learn_delegation(b"\x01a\x04test\x00", b"\x02ns\x01a\x04test\x00")
    assert directory.zones_of(address) == {b"\x01a\x04test\x00"}
    statements = []
    store.db.set_trace_callback(statements.append)
    for n in range(50):  # a shared address: zone after zone learned for it
        zone = b"\x02z" + bytes([48 + n % 10]) + b"\x04test\x00"
        directory.learn_delegation(zone, b"\x02ns\x01a\x04test\x00")
        assert zone in directory.zones_of(address)
    store.db.set_trace_callback(None)
    assert not [s for s in statements if s.startswith("SELECT zone FROM zone_server")]
    assert directory.zones_of(address) == {zone for (zone,) in store.db.execute(
        "SELECT zone FROM zone_server WHERE address = ?", (address,))}
    store.close()


def test_a_shared_address_learning_zone_after_zone_keeps_the_cache_to_its_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "_CACHED_ZONES", 10)
    store = SqliteStore(str(tmp_path / "pdns.sqlite"))
    directory = store.directory
    shared, other = bytes([198, 51, 100, 3]), bytes([198, 51, 100, 4])
    directory.learn_address(b"\x02ns\x01a\x04test\x00", shared)
    directory.zones_of(other)
    directory.zones_of(shared)
    for n in range(50):
        directory.learn_delegation(b"\x02z" + bytes([48 + n // 10, 48 + n % 10]) + b"\x00", b"\x02ns\x01a\x04test\x00")
        assert directory.cached_zones <= 10 or len(directory.cache) == 1
    assert len(directory.zones_of(shared)) == 50
    store.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from("dax"), st.integers(0, 12), st.integers(0, 12)), max_size=150))
def test_bounded_caches_answer_as_the_tables_do(tmp_path, monkeypatch, steps):
    monkeypatch.setattr(sqlite_store, "_CACHED_ZONES", 6)
    monkeypatch.setattr(sqlite_store, "_KNOWN_FACTS", 4)
    path = tmp_path / "bounded.sqlite"
    for tail in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{tail}"):
            os.remove(f"{path}{tail}")
    store = SqliteStore(str(path))
    memory = bailiwick.MemoryDirectory()
    zone = [b"\x01" + bytes([97 + n]) + b"\x00" for n in range(13)]
    host = [b"\x02n" + bytes([97 + n]) + b"\x00" for n in range(13)]
    address = [bytes([192, 0, 2, n]) for n in range(13)]
    for action, a, b in steps:
        for directory in (store.directory, memory):
            if action == "d":
                directory.learn_delegation(zone[a], host[b])
            elif action == "a":
                directory.learn_address(host[a], address[b])
        for asked in (address[a], address[b]):  # b: the address just taught, when it was one
            assert store.directory.zones_of(asked) == memory.zones_of(asked)
        cached = store.directory
        assert cached.cached_zones == sum(map(len, cached.cache.values()))
        assert cached.cached_zones <= 6 or len(cached.cache) == 1
        assert len(cached.known) <= 4 and len(cached.known_before) <= 4
    store.close()


def test_a_fact_from_the_last_generation_is_still_known(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "_KNOWN_FACTS", 8)
    store = SqliteStore(str(tmp_path / "pdns.sqlite"))
    directory = store.directory
    hosts = [b"\x02h" + bytes([97 + n]) + b"\x00" for n in range(12)]
    for name in hosts:
        directory.learn_address(name, bytes(4))
    statements = []
    store.db.set_trace_callback(statements.append)
    directory.learn_address(hosts[2], bytes(4))  # in the generation before the one being filled
    store.db.set_trace_callback(None)
    assert statements == []
    store.close()


# -------------------------------------------------------------- the ingester


def one_upload(tmp_path) -> tuple[str, SqliteStore]:
    """A collector root with one resolution uploaded, and its store seeded with the root hints."""
    from tests.collectorkit import upload

    root = str(tmp_path / "collector")
    incoming.make_folders(root)
    upload(root, "sensor-a", "h.1000.000000.nmsg", resolution("www.example.test", "example.test", "203.0.113.80", 1000))
    store = SqliteStore(os.path.join(root, "pdns.sqlite"))
    roothints.seed(store.directory, roothints.read(hints_file(tmp_path)))
    store.commit([])
    return root, store


def test_the_cyclic_collector_is_paused_while_a_file_is_fed(tmp_path):
    root, store = one_upload(tmp_path)
    seen = []

    class Watched(Chain):
        def take(self, items: list) -> None:
            seen.append(gc.isenabled())
            super().take(items)

    ingester = Ingester(root, store, Watched(store.directory))
    assert gc.isenabled()
    assert ingester.step() == 1
    assert seen == [False] and gc.isenabled()
    assert [e.count for e in store.rrsets(b"\x03www\x07example\x04test\x00")] == [1]
    store.close()


def test_what_a_file_left_is_walked_by_no_collection_until_the_commit_collects_it(tmp_path):
    root, store = one_upload(tmp_path)
    made = []

    class Cyclic:
        """A reference cycle made while the file is fed: only the cyclic collector frees it."""

    class Leaving(Chain):
        def take(self, items: list) -> None:
            cycle = Cyclic()
            cycle.itself = cycle
            made.append(weakref.ref(cycle))
            super().take(items)

    ingester = Ingester(root, store, Leaving(store.directory), window=3600)
    gc.collect()
    ingester.ingest(incoming.claim(root, *incoming.waiting(root)[0]))
    young = sum(gc.get_count())  # what the next collection walks: not the file's objects, frozen
    assert gc.get_freeze_count() > 0 and young < 100
    assert made[0]() is not None
    ingester.commit()
    assert gc.get_freeze_count() == 0 and made[0]() is None
    store.close()


# ------------------------------------------------------- the benchmark's traffic


@pytest.fixture(scope="module")
def bench_files(tmp_path_factory):
    """(NMSG files the real sensor wrote of bench/resolutions.py's resolver, its root hints)."""
    work = tmp_path_factory.mktemp("resolutions")
    pcap, hints = str(work / "r.pcap"), str(work / "r.hints")
    resolutions.write(pcap, hints, 3000, seed=9, zones=300)
    spool = work / "spool"
    spool.mkdir()
    written, _ = collector_bench.run_sensor(pcap, 1, str(spool))
    return [os.path.join(written, name) for name in sorted(os.listdir(written))], hints


def test_the_benchmarks_records_read_alike(bench_files):
    files, _ = bench_files
    count = 0
    for path in files:
        for record, _ in read(path):
            same_response(dnsqr.encode(record))
            wire = chain.response_of(record)[2]
            assert _ingest.rrsets(wire) == statement_rrsets(wire)
            count += 1
        _, error = same_file(path)
        assert error is None and not any(isinstance(item, dict) for batch in spoolscan.batches(path) for item in batch)
    assert count >= 3000


def _ingest_all(root: str, files: list[str], hints: str, chain_type, max_entries: int, feed) -> list:
    """Every file through an Ingester (its chain `chain_type`, reading files with `feed`); the store's rows."""
    incoming.make_folders(root)
    up = os.path.join(root, incoming.INCOMING, "sensor-a", incoming.UP, collector_bench.CHANNEL)
    os.makedirs(up)
    for path in files:
        os.link(path, os.path.join(up, os.path.basename(path)))
    store = SqliteStore(os.path.join(root, "pdns.sqlite"))
    roothints.seed(store.directory, roothints.read(hints))
    store.commit([])
    ingester = Ingester(root, store, chain_type(store.directory, max_entries=max_entries), window=3600)
    feed(ingester)
    rows = [ingester.counts, ingester.totals.records]
    for table in ("rrset", "rdata", *sqlite_store.KNOWLEDGE_TABLES, "name_forward", "ingested"):
        rows.append(store.db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall())
    store.close()
    return rows


def test_the_benchmarks_traffic_makes_the_store_the_python_path_makes(bench_files, tmp_path, monkeypatch):
    files, hints = bench_files

    def steps(ingester):
        while ingester.step(most=4):
            pass

    fast = _ingest_all(str(tmp_path / "fast"), files, hints, Chain, 500, steps)
    with monkeypatch.context() as m:
        m.setattr("collector.ingest.batches", python_batches)
        slow = _ingest_all(str(tmp_path / "slow"), files, hints, StatementChain, 1_000_000, steps)
    assert fast[0]["responses"] == 3000 and len(fast[2]) > 1000
    assert fast == slow
