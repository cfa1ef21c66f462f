"""ICMPv6 errors that quote DNS: the matcher's quote path, built in code.

An ICMPv6 error (RFC 4443: destination unreachable, packet too big, time
exceeded, parameter problem) sent to a watched host about a DNS datagram
it sent becomes an ICMP record; the quote is read at fixed offsets
(IPv6 header, then the UDP or TCP ports, then the DNS id), so a wrong
offset or a bound one byte short shows here. Each test runs with the
matcher's C reader of UDP datagrams and with its Python fallback (the
traffic around an error is read by it), and the records go through both
spool formats, whose compiled encoders hand ICMP records to Python.
"""

from __future__ import annotations

import struct

import pytest

from sensor.matching import matcher, udpdns
from sensor.matching.bpf import Vantage, parse_networks
from sensor.matching.matcher import Matcher, Settings
from sensor.records.record import Field, RecordType
from sensor.records.wire import IPPROTO_ICMPV6
from sensor.spool import formats as spoolfile
from tests import packets as P

T0 = 1_700_000_000
RESOLVER6 = P._packed(P.RESOLVER6)
AUTHORITY6 = P._packed(P.AUTHORITY6)
QUOTE_AT = 40 + 8  # the quoted datagram starts after the IPv6 and ICMPv6 headers


@pytest.fixture(params=["c", "python"])
def reader(request, monkeypatch):
    """The matcher's reader of UDP datagrams: the C module or its Python rules."""
    if request.param == "python":
        monkeypatch.setattr(matcher, "_read_udp_dns", udpdns.read_in_python)
    return request.param


def resolver_matcher(**changes) -> Matcher:
    return Matcher(Settings(vantage=Vantage(parse_networks(P.RESOLVER6)), strict=True, **changes))


def query6(**changes) -> bytes:
    return P.query(src=P.RESOLVER6, dst=P.AUTHORITY6, **changes)


@pytest.mark.parametrize("kind", sorted(P.ICMP6_ERRORS))
def test_an_icmpv6_error_about_a_query_is_an_icmp_record(reader, kind):
    m = resolver_matcher()
    assert m.feed(query6(ident=0x4242, sport=40001), T0, 0) == []
    error = P.icmp6_error(P.AUTHORITY6, P.RESOLVER6, query6(ident=0x4242, sport=40001), kind)
    (record,) = m.feed(error, T0, 500)
    assert record == {
        Field.TYPE: RecordType.ICMP, Field.QUERY_IP: RESOLVER6, Field.RESPONSE_IP: AUTHORITY6,
        Field.PROTO: IPPROTO_ICMPV6, Field.QUERY_PORT: 40001, Field.RESPONSE_PORT: 53, Field.ID: 0x4242,
        Field.RESPONSE_TIME_SEC: [T0], Field.RESPONSE_TIME_NSEC: [500], Field.ICMP: error,
    }
    (unanswered,) = m.flush()  # the query itself waits for its response still
    assert unanswered[Field.TYPE] == RecordType.UDP_UNANSWERED_QUERY and unanswered[Field.ID] == 0x4242


def test_an_error_about_a_tcp_query_has_no_dns_id(reader):
    segment = P.tcp(P.RESOLVER6, P.AUTHORITY6, 40002, 53, b"\x00\x10" + b"x" * 16)
    (record,) = resolver_matcher().feed(P.icmp6_error(P.AUTHORITY6, P.RESOLVER6, segment), T0, 0)
    assert record[Field.TYPE] == RecordType.ICMP and record[Field.ID] == 0
    assert (record[Field.QUERY_PORT], record[Field.RESPONSE_PORT]) == (40002, 53)


def test_an_error_about_a_response_an_authority_sent_names_the_resolver_as_querier(reader):
    m = Matcher(Settings(vantage=Vantage((), parse_networks(P.AUTHORITY6)), strict=True))
    response = P.response(src=P.AUTHORITY6, dst=P.RESOLVER6, dport=40003, ident=0x77)
    (record,) = m.feed(P.icmp6_error(P.RESOLVER6, P.AUTHORITY6, response), T0, 0)
    assert (record[Field.QUERY_IP], record[Field.RESPONSE_IP]) == (RESOLVER6, AUTHORITY6)
    assert (record[Field.QUERY_PORT], record[Field.RESPONSE_PORT], record[Field.ID]) == (40003, 53, 0x77)


@pytest.mark.parametrize(
    "error",
    [
        P.icmp6_error(P.AUTHORITY6, P.RESOLVER6, P.udp(P.RESOLVER6, P.AUTHORITY6, 40004, 123, b"ntp")),  # not DNS
        P.icmp6_error(P.AUTHORITY6, P.RESOLVER6, P.query(src=P.AUTHORITY6, dst=P.RESOLVER6)),  # not the target's
        P.icmp6_error(P.AUTHORITY6, P.RESOLVER6, P.query(src=P.RESOLVER, dst=P.AUTHORITY)),  # quotes IPv4
    ],
    ids=["ntp", "someone else's", "ipv4 quoted"],
)
def test_errors_about_other_datagrams_make_no_record(reader, error):
    m = resolver_matcher()
    assert m.feed(error, T0, 0) == []
    assert sum(m.counters.values()) == 1 and set(m.counters) <= {"not_dns", "not_ours"}


@pytest.mark.parametrize("kind", [128, 129, 133, 135, 0, 5, 127])  # echo, neighbour discovery, unassigned
def test_icmpv6_messages_that_are_not_errors_make_no_record(reader, kind):
    error = bytearray(P.icmp6_error(P.AUTHORITY6, P.RESOLVER6, query6()))
    error[40] = kind
    m = resolver_matcher()
    assert m.feed(bytes(error), T0, 0) == [] and m.counters == {"not_dns": 1}


def _cut(error: bytes, length: int) -> bytes:
    """The error cut to `length` bytes, its IPv6 payload length saying so."""
    cut = bytearray(error[:length])
    struct.pack_into("!H", cut, 4, length - 40)
    return bytes(cut)


def test_a_quote_cut_anywhere_is_counted_never_read_past_its_end(reader):
    """Strict: an index or a struct read past the end raises here instead of
    being counted as malformed_other."""
    error = P.icmp6_error(P.AUTHORITY6, P.RESOLVER6, query6())
    for length in range(41, len(error) + 1):
        m = resolver_matcher()
        records = m.feed(_cut(error, length), T0, 0)
        quoted = length - QUOTE_AT
        if quoted < 40 + 4:  # no whole IPv6 header and ports to read
            assert records == [] and m.counters == {"not_dns": 1}, length
        else:
            (record,) = records
            assert record[Field.QUERY_PORT] == 40000 and record[Field.RESPONSE_PORT] == 53, length
            assert record[Field.ID] == (0x1234 if quoted >= 40 + 8 + 6 else 0), length  # read with flags, qdcount


def test_zeroing_removes_the_resolver_from_the_error_and_from_its_quote(reader):
    error = P.icmp6_error(P.AUTHORITY6, P.RESOLVER6, query6())
    (record,) = resolver_matcher(zero_resolver_address=True).feed(error, T0, 0)
    zeroed = record[Field.ICMP]
    assert record[Field.QUERY_IP] == bytes(16) and record[Field.RESOLVER_ADDRESS_ZEROED] is True
    assert zeroed[8:24] == AUTHORITY6 and zeroed[24:40] == bytes(16)  # the error's destination
    assert zeroed[QUOTE_AT + 8 : QUOTE_AT + 24] == bytes(16)  # the quoted query's source
    assert zeroed[QUOTE_AT + 24 : QUOTE_AT + 40] == AUTHORITY6
    assert zeroed.replace(bytes(16), RESOLVER6, 2) == error  # nothing else changed
    assert RESOLVER6 not in zeroed


def _records(zero: bool) -> list[dict]:
    m = resolver_matcher(zero_resolver_address=zero)
    errors = [P.icmp6_error(P.AUTHORITY6, P.RESOLVER6, query6(ident=i), kind) for i, kind in enumerate(P.ICMP6_ERRORS)]
    return [r for i, error in enumerate(errors) for r in m.feed(error, T0 + i, i)]


@pytest.mark.parametrize("spool_format", [spoolfile.NmsgFormat(), spoolfile.CborFormat()], ids=["nmsg", "cbor"])
@pytest.mark.parametrize("zero", [False, True], ids=["as captured", "zeroed"])
def test_icmpv6_records_round_trip_through_both_spool_formats(tmp_path, reader, spool_format, zero):
    """The compiled encoders' entry points take them and hand them to Python."""
    records = _records(zero)
    assert len(records) == len(P.ICMP6_ERRORS)
    path = tmp_path / "f"
    with open(path, "wb") as sink:
        stream = spool_format.open(sink, "h", "ch202", T0, 0)
        stream.write([dict(r) for r in records])
        stream.finish()
    assert spoolfile.records(str(path)) == records
