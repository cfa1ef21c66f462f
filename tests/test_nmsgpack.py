"""The C packer of NMSG payloads (`_nmsgpack`) against the Python encoders.

`nmsg.Container.add_records` packs pairs and unanswered queries in C and
hands every other record to `add_message(dnsqr.encode(...))`. Here the
same records go both ways, one record at a time through Python, and the
two containers must hold the same bytes, count and size estimate, and
fill up at the same record. test_nmsg.py holds `dnsqr.encode` to the
protobuf library.
"""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import traffic
from sensor.edges.linklayer import ethernet
from sensor.matching.matcher import Matcher, Settings
from sensor.records.record import FIELD_NAMES, Field, RecordType, record_time
from sensor.spool import _nmsgpack, dnsqr, nmsg
from tests.test_nmsg import SHAPES, DnsQR

TRAILERS = [b"", nmsg.payload_trailer(0x19721976, None, None), nmsg.payload_trailer(1, 2**32 - 1, 70000)]
PAIR = next(r for r in SHAPES if r[Field.TYPE] == RecordType.UDP_QUERY_RESPONSE and len(r) == 18)
UNANSWERED = next(r for r in SHAPES if r[Field.TYPE] == RecordType.UDP_UNANSWERED_QUERY)


def python_containers(records: list[dict], trailer: bytes, size: int = nmsg.CONTAINER_SIZE) -> list[tuple]:
    """Containers filled one record at a time by the Python encoders."""
    out, container = [], nmsg.Container(size)
    for record in records:
        message = dnsqr.encode(record)
        if not container.add_message(message, *record_time(record), trailer):
            out.append(container)
            container = nmsg.Container(size)
            assert container.add_message(message, *record_time(record), trailer)
    return [_state(c) for c in [*out, container]]


def packed_containers(records: list[dict], trailer: bytes, size: int = nmsg.CONTAINER_SIZE) -> list[tuple]:
    """Containers filled as the spool fills them (`add_records`)."""
    out, container = [], nmsg.Container(size)
    start, full = container.add_records(records, 0, trailer)
    while full:
        out.append(container)
        container = nmsg.Container(size)
        start, full = container.add_records(records, start, trailer)
    assert start == len(records)
    return [_state(c) for c in [*out, container]]


def _state(container: nmsg.Container) -> tuple:
    return bytes(container.entries), bytes(container.crcs), container.count, container.estimate


def _packs(record: dict) -> bool:
    """True when the C packer takes the record itself (status not ODD)."""
    container = nmsg.Container()
    return _nmsgpack.pack([record], 0, container.entries, container.crcs, b"", 0, container.estimate,
                          container.size)[3] == _nmsgpack.DONE


@pytest.mark.parametrize("trailer", TRAILERS)
def test_every_record_shape_packs_as_python_encodes_it(trailer):
    assert packed_containers(SHAPES, trailer) == python_containers(SHAPES, trailer)


def test_the_packer_takes_pairs_and_unanswered_queries_and_leaves_the_rest():
    taken = {RecordType(r[Field.TYPE]) for r in SHAPES if _packs(r)}
    assert taken == {RecordType.UDP_QUERY_RESPONSE, RecordType.UDP_UNANSWERED_QUERY}
    assert _packs(PAIR) and _packs(UNANSWERED)
    # IPv4 and IPv6 pairs; fragmented and zeroed ones have more fields and go to Python
    assert sum(_packs(r) for r in SHAPES if r[Field.TYPE] == RecordType.UDP_QUERY_RESPONSE) == 2


def test_containers_fill_up_at_the_same_record():
    records = [PAIR, UNANSWERED, *SHAPES] * 400
    for size in (2000, 5000, 70000, nmsg.CONTAINER_SIZE):
        packed = packed_containers(records, TRAILERS[1], size)
        assert packed == python_containers(records, TRAILERS[1], size)
        assert len(packed) > 1 or size == nmsg.CONTAINER_SIZE


def test_every_container_size_fills_at_the_same_record():
    """Sizes a byte apart, so some payload meets the limit exactly."""
    records = [PAIR, UNANSWERED] * 6
    for size in range(400, 1400):
        assert packed_containers(records, b"", size) == python_containers(records, b"", size), size


@pytest.mark.parametrize("length", [100, 8100, 8200, 16300, 16400, 65535])
def test_payloads_of_every_varint_length_are_sized_alike(length):
    """The size estimate counts a payload's length prefix: 1 to 3 octets."""
    big = {**PAIR, Field.QUERY_PACKET: [bytes(length)]}
    records = [big, UNANSWERED, big, big]
    assert _packs(big) == (length < 65536)
    for size in (length + 500, 3 * length, nmsg.CONTAINER_SIZE):
        assert packed_containers(records, b"", size) == python_containers(records, b"", size)


@pytest.mark.parametrize(
    "field, value",
    [
        (Field.QUERY_TIME_NSEC, [2**31 - 1]), (Field.QUERY_TIME_NSEC, [2**31]), (Field.QUERY_TIME_NSEC, [-1]),
        (Field.RESPONSE_TIME_NSEC, [2**31]), (Field.RESPONSE_TIME_NSEC, [-5]),
        (Field.QUERY_TIME_SEC, [-1]), (Field.QUERY_TIME_SEC, [2**63 - 1]), (Field.QUERY_TIME_SEC, [2**63]),
        (Field.QUERY_TIME_SEC, [2**64 + 3]), (Field.RESPONSE_TIME_SEC, [-(2**63)]),
        (Field.QUERY_PORT, 65535), (Field.QUERY_PORT, 65536), (Field.QUERY_PORT, -1), (Field.ID, True),
        (Field.QUERY_PACKET, [bytearray(b"xy")]), (Field.QUERY_PACKET, [memoryview(b"xy")]),
        (Field.QUERY_PACKET, [b"x" * 65536]), (Field.RESPONSE_PACKET, [bytes(300_000)]), (Field.QNAME, b""),
        (Field.TIMEOUT, 1), (Field.TIMEOUT, -0.0),
        (Field.TYPE, RecordType.TCP), (Field.UDP_CHECKSUM, 70000),
    ],
)
def test_edge_values_pack_as_python_encodes_them_or_fail_the_same_way(field, value):
    for base in (PAIR, UNANSWERED):
        _same_either_way({**base, field: value}, TRAILERS[2])


def test_the_benchmarks_records_pack_as_python_encodes_them():
    """20,000 packets of the benchmark's traffic, IPv4 and IPv6, every rcode it has."""
    matcher = Matcher(Settings(strict=True))
    records = []
    for stamp, frame in traffic.packets(20000):
        records += matcher.feed(frame[ethernet(frame, 0, len(frame)):], int(stamp), int(stamp % 1 * 1e9))
    records += matcher.flush()
    assert len(records) > 9000
    assert packed_containers(records, b"") == python_containers(records, b"")


def test_a_packed_payload_is_read_back_by_protobuf_and_by_the_reader():
    container = nmsg.Container()
    container.add_records([PAIR, UNANSWERED], 0, TRAILERS[1])
    payloads = list(nmsg.payloads(io.BytesIO(container.serialize(compress=False))))
    assert [DnsQR.FromString(p.data).id for p in payloads] == [PAIR[Field.ID], UNANSWERED[Field.ID]]
    assert [dnsqr.decode(p.data) for p in payloads] == [PAIR, UNANSWERED]
    assert payloads[0].source == 0x19721976


_ints = st.one_of(st.integers(-(2**64), 2**65), st.sampled_from([0, 1, 127, 128, 65535, 65536, 2**31 - 1, 2**31,
                                                                 2**63 - 1, 2**63, -1]))
_blobs = st.one_of(st.binary(max_size=40), st.binary(min_size=65530, max_size=65540))


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from([PAIR, UNANSWERED]),
    changes=st.dictionaries(
        st.sampled_from(sorted(FIELD_NAMES)),
        st.one_of(_ints, _blobs, st.booleans(), st.floats(allow_nan=False), st.builds(bytearray, _blobs),
                  st.lists(_ints, min_size=0, max_size=2), st.lists(_blobs, min_size=0, max_size=2)),
        max_size=2,
    ),
    dropped=st.lists(st.sampled_from(sorted(FIELD_NAMES)), max_size=1),
    trailer=st.sampled_from(TRAILERS),
)
def test_odd_values_pack_as_python_encodes_them_or_fail_the_same_way(base, changes, dropped, trailer):
    """Any value the packer does not take goes to Python, which encodes it or
    raises as it always did; the packer never writes other bytes."""
    record = {**base, **changes}
    for key in dropped:
        record.pop(key, None)
    _same_either_way(record, trailer)


def _same_either_way(record: dict, trailer: bytes) -> None:
    try:
        expected = python_containers([record, PAIR], trailer)
    except Exception as error:  # what Python does with a value no encoder takes
        with pytest.raises(type(error)):
            packed_containers([record, PAIR], trailer)
        return
    assert packed_containers([record, PAIR], trailer) == expected


def test_a_full_container_is_not_touched_by_the_record_that_does_not_fit():
    container = nmsg.Container(600)
    start, full = container.add_records([PAIR] * 10, 0, b"")
    assert full and 0 < start < 10 and container.count == start
    before = _state(container)
    assert container.add_records([PAIR], 0, b"") == (0, True)
    assert _state(container) == before


def test_records_as_large_as_the_fields_allow_pack_as_python_encodes_them():
    """The message must fit the packer's buffer whatever the blobs' sizes:
    larger ones go to Python."""
    blob = bytes(65535)
    huge = {**PAIR, Field.QUERY_IP: blob, Field.RESPONSE_IP: blob, Field.QNAME: blob, Field.QUERY_PACKET: [blob],
            Field.RESPONSE_PACKET: [blob]}
    assert not _packs(huge)
    big = {**UNANSWERED, Field.QNAME: blob, Field.QUERY_PACKET: [blob]}
    assert _packs(big)
    for record in (huge, big):
        _same_either_way(record, TRAILERS[2])


class _Collides:
    """A dict key that collides with Field.TYPE and, once armed, cannot be compared."""

    armed = False

    def __hash__(self) -> int:
        return hash(Field.TYPE)

    def __eq__(self, other) -> bool:
        if self.armed:
            raise RuntimeError("hostile key")
        return False


def test_an_error_leaves_the_container_as_it_was():
    container = nmsg.Container()
    container.add_records([PAIR], 0, b"")
    before = _state(container)
    key = _Collides()
    hostile = {key: 0, **PAIR}
    key.armed = True
    with pytest.raises(RuntimeError, match="hostile key"):
        container.add_records([PAIR, UNANSWERED, hostile], 0, b"")
    assert _state(container) == before
    with pytest.raises(ValueError, match="negative"):
        container.add_records([PAIR], -1, b"")
    assert _state(container) == before
