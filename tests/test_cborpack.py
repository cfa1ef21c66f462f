"""The C encoder of the CBOR spool's common pair (`_cborpack`) against its layout in Python.

`layout` below states the pair's fixed-width encoding (the struct-based
Python encoder this replaced, with the ranges its heads hold); the C
encoder must write exactly that for every pair it takes, and everything
it writes must decode with cbor2 to the record it was given.
"""

from __future__ import annotations

import io
import struct

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import traffic
from sensor.edges.linklayer import ethernet
from sensor.matching.matcher import Matcher, Settings
from sensor.records.record import FIELD_NAMES, PAIR_FIELDS, Field, RecordType
from sensor.spool import cbor as spool
from tests.test_nmsg import SHAPES

PAIR = next(r for r in SHAPES if r[Field.TYPE] == RecordType.UDP_QUERY_RESPONSE and len(r) == len(PAIR_FIELDS))
PAIR6 = next(r for r in SHAPES if r[Field.TYPE] == RecordType.UDP_QUERY_RESPONSE and len(r[Field.QUERY_IP]) == 16)


def layout(r: dict) -> bytes | None:
    """The pair's bytes; None when the record is not a pair these heads can hold."""
    try:
        if sorted(r) != sorted(PAIR_FIELDS) or r[1] != RecordType.UDP_QUERY_RESPONSE:
            return None
        if any(type(r[k]) is not list for k in range(12, 18)):
            return None
        (query,), (response,) = r[12], r[15]
        (query_sec,), (query_nsec,), (response_sec,), (response_nsec,) = r[13], r[14], r[16], r[17]
    except (KeyError, ValueError, TypeError):
        return None
    blobs = (r[2], r[3], r[8], query, response)
    ints = (r[1], r[4], r[5], r[6], r[7], r[9], r[10], r[11], r[21], query_sec, query_nsec, response_sec,
            response_nsec)
    if any(type(b) is not bytes for b in blobs) or any(type(i) is bool or not isinstance(i, int) for i in ints):
        return None
    size = len(r[2])
    if size not in (4, 16) or len(r[3]) != size or len(r[8]) > 255 or max(len(query), len(response)) > 0xFFFF:
        return None
    if max(r[1], r[4], r[11], r[21]) >= 24 or min(ints) < 0 or max(r[5], r[6], r[7], r[9], r[10]) > 0xFFFF:
        return None
    if max(query_sec, query_nsec, response_sec, response_nsec) >= 1 << 32:
        return None
    ip = 0x44 if size == 4 else 0x50
    return b"".join((
        struct.pack(f">BBB BB{size}s BB{size}s BB BBH BBH BBH BBB".replace(" ", ""), 0xB2, 1, r[1], 2, ip, r[2], 3,
                    ip, r[3], 4, r[4], 5, 0x19, r[5], 6, 0x19, r[6], 7, 0x19, r[7], 8, 0x58, len(r[8])),
        r[8],
        struct.pack(">BBH BBH BB BBBH".replace(" ", ""), 9, 0x19, r[9], 10, 0x19, r[10], 11, r[11], 12, 0x81, 0x59,
                    len(query)),
        query,
        struct.pack(">BBBI BBBI BBBH".replace(" ", ""), 13, 0x81, 0x1A, query_sec, 14, 0x81, 0x1A, query_nsec, 15,
                    0x81, 0x59, len(response)),
        response,
        struct.pack(">BBBI BBBI BB".replace(" ", ""), 16, 0x81, 0x1A, response_sec, 17, 0x81, 0x1A, response_nsec,
                    21, r[21]),
    ))


def plain(record: dict) -> dict:
    return {int(k): [plain_value(x) for x in v] if isinstance(v, list | tuple) else plain_value(v)
            for k, v in record.items()}


def plain_value(value):
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else value


def check(record: dict) -> None:
    """The C encoder writes `layout` where it applies, and what cbor2 reads back as the record."""
    encoded = spool.encode_record(record)
    expected = layout(record)
    if expected is not None:
        assert encoded == expected
    else:
        assert encoded == cbor2.dumps(plain(record))  # the general encoder's bytes
    assert cbor2.loads(encoded) == plain(record)


@pytest.mark.parametrize("record", SHAPES, ids=lambda r: RecordType(r[Field.TYPE]).name)
def test_every_record_shape(record):
    check(record)


def test_ipv4_and_ipv6_pairs_take_the_fixed_layout():
    for pair in (PAIR, PAIR6):
        assert layout(pair) is not None and spool.encode_record(pair) == layout(pair)


def test_a_run_of_records_is_their_items_one_after_another():
    records = [*SHAPES, PAIR, PAIR6] * 5
    decoder = cbor2.CBORDecoder(io.BytesIO(spool.encode_records(records)))
    assert [decoder.decode() for _ in records] == [plain(r) for r in records]
    assert spool.encode_records([]) == b""


def test_the_benchmarks_records():
    matcher = Matcher(Settings(strict=True))
    records = []
    for stamp, frame in traffic.packets(5000):
        records += matcher.feed(frame[ethernet(frame, 0, len(frame)):], int(stamp), int(stamp % 1 * 1e9))
    records += matcher.flush()
    assert spool.encode_records(records) == b"".join(layout(r) or cbor2.dumps(plain(r)) for r in records)


@pytest.mark.parametrize(
    "field, value",
    [
        (Field.PROTO, 23), (Field.PROTO, 24), (Field.RCODE, 24), (Field.UDP_CHECKSUM, 255), (Field.TYPE, 24),
        (Field.QUERY_PORT, 65535), (Field.QUERY_PORT, 65536), (Field.ID, -1), (Field.QTYPE, True),
        (Field.QUERY_TIME_SEC, [2**32 - 1]), (Field.QUERY_TIME_SEC, [2**32]), (Field.RESPONSE_TIME_NSEC, [-1]),
        (Field.RESPONSE_TIME_SEC, [2**70]), (Field.QNAME, b"a" * 255), (Field.QNAME, b"a" * 256),
        (Field.QUERY_PACKET, [b"q" * 65535]), (Field.QUERY_PACKET, [b"q" * 65536]),
        (Field.RESPONSE_PACKET, [b"r" * 65536]),
        (Field.QUERY_PACKET, [bytearray(b"q")]), (Field.QUERY_IP, b"\x01" * 16), (Field.RESPONSE_IP, b"\x01" * 5),
        (Field.QUERY_PACKET, []), (Field.RESPONSE_TIME_SEC, (1,)),
    ],
)
def test_edge_values(field, value):
    check({**PAIR, field: value})


@pytest.mark.parametrize("size", [0, 5, 15, 17])
def test_addresses_of_other_sizes_go_to_cbor2(size):
    check({**PAIR, Field.QUERY_IP: b"\x01" * size, Field.RESPONSE_IP: b"\x02" * size})


@settings(max_examples=500, deadline=None)
@given(
    changes=st.dictionaries(
        st.sampled_from(sorted(FIELD_NAMES)),
        st.one_of(st.integers(-(2**40), 2**40), st.sampled_from([0, 23, 24, 255, 65535, 65536, 2**32 - 1, 2**32]),
                  st.binary(max_size=20), st.lists(st.integers(-5, 2**33), max_size=2),
                  st.lists(st.binary(max_size=20), max_size=2), st.floats(allow_nan=False)),
        max_size=2,
    ),
    dropped=st.lists(st.sampled_from(sorted(FIELD_NAMES)), max_size=1),
)
def test_random_changes_to_a_pair(changes, dropped):
    record = {**PAIR, **changes}
    for key in dropped:
        record.pop(key, None)
    check(record)
