"""Property-based tests: hostile bytes never escape, memory stays bounded.

`python -m bench.fuzz_soak` runs the same targets coverage-guided (atheris)
for millions of inputs.
"""

from __future__ import annotations

import contextlib
import struct

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensor.matching.bpf import Vantage, parse_networks
from sensor.matching.matcher import Matcher, Settings
from sensor.records.record import Field
from sensor.service import config as configuration
from sensor.spool.cbor import encode_record
from tests import packets as P

T0 = 1_700_000_000
SEEDS = P.seed_datagrams()
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fresh(**kw) -> Matcher:
    """A strict matcher: anything the last-resort guard would catch raises."""
    kw.setdefault("vantage", Vantage(parse_networks(f"{P.RESOLVER},{P.RESOLVER6}")))
    return Matcher(Settings(strict=True, **kw))


def assert_bounded(m: Matcher) -> None:
    assert len(m.table) <= m.settings.table_max
    assert m.reassembler.held_bytes <= m.settings.fragment_bytes
    assert len(m.reassembler.pending) <= m.reassembler.max_datagrams
    assert m.reassembler.held_bytes == sum(e.size for e in m.reassembler.pending.values())


@FUZZ
@given(st.lists(st.binary(max_size=120), max_size=30))
def test_random_bytes_never_escape(blobs):
    m = fresh(table_max=50)
    for i, blob in enumerate(blobs):
        m.feed(blob, T0 + i, 0)
    assert_bounded(m)
    m.flush()


mutation = st.tuples(st.integers(min_value=0, max_value=4000), st.integers(min_value=0, max_value=255))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(SEEDS), st.lists(mutation, max_size=6), st.integers(0, 4000)), max_size=20))
def test_mutated_real_packets_never_escape(cases):
    m = fresh(table_max=20, fragment_bytes=20_000)
    for i, (seed, changes, cut) in enumerate(cases):
        packet = bytearray(seed)
        for at, value in changes:
            packet[at % len(packet)] = value
        m.feed(bytes(packet[: max(1, cut)]), T0, i)
        assert_bounded(m)
    for record in m.flush():
        encode_record(record)


fragment = st.fixed_dictionaries(
    {
        "ident": st.integers(0, 3),
        "offset": st.one_of(st.integers(0, 400), st.just(8191), st.integers(0, 8191)),
        "more": st.booleans(),
        "size": st.integers(0, 600),
        "fill": st.integers(0, 255),
        "v6": st.booleans(),
    }
)


def _fragment(spec) -> bytes:
    payload = bytes([spec["fill"]]) * spec["size"]
    if spec["v6"]:
        head = struct.pack("!IHBB", 0x60000000, 8 + len(payload), 44, 64)
        head += bytes(16 * 2)
        frag = struct.pack("!BxHI", 17, (spec["offset"] * 8) & 0xFFF8 | int(spec["more"]), spec["ident"])
        return head + frag + payload
    flags = (0x2000 if spec["more"] else 0) | spec["offset"]
    return (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(payload),
            spec["ident"],
            flags,
            64,
            17,
            0,
            bytes(4),
            bytes([192, 0, 2, 53]),
        )
        + payload
    )


@FUZZ
@given(st.lists(fragment, max_size=60), st.integers(0, 100))
def test_fragment_streams_with_overlaps_gaps_and_huge_offsets_stay_bounded(specs, step):
    m = Matcher(Settings(fragment_bytes=8_000, strict=True))
    m.reassembler.max_datagrams = 3
    for i, spec in enumerate(specs):
        m.feed(_fragment(spec), T0 + (i * step) // 10, 0)
        assert_bounded(m)
    m.tick(T0 + 10_000)
    assert m.reassembler.held_bytes == 0 and not m.reassembler.pending


# A name is built from parts: a label (any length byte below 0xC0, which
# wdns skips by length) or a compression pointer, which ends the name.
name_part = st.one_of(
    st.binary(min_size=1, max_size=70).map(lambda x: ("label", bytes([len(x)]) + x)),
    st.sampled_from([b"\xc0\x0c", b"\xc0\x00", b"\xff\xff"]).map(lambda x: ("pointer", x)),
)


def _expected_qname(parts) -> bytes:
    """The name as the reference delimits it: up to a pointer, or the end."""
    name = b""
    for kind, raw in parts:
        name += raw
        if kind == "pointer":
            return name
    return name + b"\x00"


@FUZZ
@given(st.lists(name_part, max_size=8), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.booleans())
def test_names_with_pointers_loops_and_lying_label_lengths(parts, qdcount, length_lie, response):
    name = b"".join(raw for _, raw in parts) + b"\x00"
    flags = 0x8180 if response else 0x0000
    message = struct.pack("!HHHHHH", 7, flags, qdcount, 0, 0, 0) + name + b"\x00\x01\x00\x01"
    datagram = bytearray(
        P.udp(
            P.AUTHORITY if response else P.RESOLVER,
            P.RESOLVER if response else P.AUTHORITY,
            53 if response else 4000,
            4000 if response else 53,
            message,
        )
    )
    m = fresh()
    made = m.feed(bytes(datagram), T0, 0) if response else (m.feed(bytes(datagram), T0, 0) or m.flush())
    (record,) = made  # unsolicited response, or the query flushed as unanswered
    if qdcount == 1:
        qname = _expected_qname(parts)
        assert record[Field.QNAME] == qname
        tail = message[12 + len(qname) : 12 + len(qname) + 4]  # after a pointer: what follows it
        assert (record[Field.QTYPE], record[Field.QCLASS]) == struct.unpack("!HH", tail)
    else:
        assert Field.QNAME not in record  # the reference reads a question only when QDCOUNT is 1
    struct.pack_into("!H", datagram, 24, length_lie)  # the UDP length lies
    m.feed(bytes(datagram), T0, 1)
    struct.pack_into("!H", datagram, 2, length_lie)  # the IP length lies
    m.feed(bytes(datagram), T0, 2)
    m.flush()
    assert "malformed_other" not in m.counters


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_config_text_gives_a_config_or_a_config_error(text):
    with contextlib.suppress(configuration.ConfigError):
        configuration.build(configuration.parse_lines(text, "fuzz"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(SEEDS[:4]), st.integers(0, 3)), min_size=1, max_size=10))
def test_every_record_the_matcher_makes_round_trips(cases):
    m = fresh(zero_resolver_address=True)
    records = []
    for i, (packet, gap) in enumerate(cases):
        records += m.feed(packet, T0 + gap, i)
    records += m.flush()
    for record in records:
        assert cbor2.loads(encode_record(record)) == record
