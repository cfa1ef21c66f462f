"""The C reader of UDP and DNS headers (`_udpdns`) against its rules in Python.

`rules` below is the Python the matcher ran before the reader moved to C
(its question read is dns.parse_question, still the sensor's own); every
datagram here, crafted or random, must read the same both ways.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor import _udpdns
from sensor.dns import parse_question
from sensor.wire import DNS_HEADER_LEN, DNS_PORTS
from tests import packets as P


def rules(buf: bytes, start: int):
    """What `_udpdns.read` must return: (sport, dport, end, ident, flags,
    question) or the counter's name."""
    sport, dport, length = struct.unpack_from("!HHH", buf, start)
    if sport not in DNS_PORTS and dport not in DNS_PORTS:
        return "not_dns"
    end = start + length
    if length < 8 or end > len(buf):
        return "malformed_udp"
    msg = start + 8
    if end - msg < DNS_HEADER_LEN:
        return "malformed_dns"
    ident, flags, qdcount = struct.unpack_from("!HHH", buf, msg)
    if qdcount == 1 and end > msg + DNS_HEADER_LEN:
        question = parse_question(buf, msg, end)
        if question is None:
            return "malformed_dns"
    else:
        question = None
    return sport, dport, end, ident, flags, question


def same(buf: bytes, start: int) -> None:
    try:
        expected = rules(buf, start)
    except struct.error:  # a header past the end: the matcher counts it as malformed_other
        with pytest.raises(ValueError):
            _udpdns.read(buf, start)
        return
    assert _udpdns.read(buf, start) == expected
    assert _udpdns.read(bytearray(buf), start) == expected  # any buffer, bytes out


def udp(sport: int, dport: int, dns: bytes, length: int | None = None) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(dns) if length is None else length, 0) + dns


def test_the_c_constants_are_the_wire_facts():
    assert {_udpdns.DNS_PORT, _udpdns.MDNS_PORT} == DNS_PORTS
    assert _udpdns.DNS_HEADER_LEN == DNS_HEADER_LEN


def test_real_queries_and_responses_read_alike():
    for datagram in (P.query(), P.response(), P.query(src=P.RESOLVER6, dst=P.AUTHORITY6), P.query(qname=None),
                     P.response(qname=None, rcode=5, answers=()), P.big_response(3000), *P.seed_datagrams()):
        start = 20 if datagram[0] >> 4 == 4 else 40
        same(datagram, start)
    assert _udpdns.read(P.query(), 20)[5] == parse_question(P.query(), 28, len(P.query()))


HEADER = struct.pack("!HHHHHH", 0x1234, 0x8180, 1, 0, 0, 0)
NAME = b"\x03www\x07example\x03com\x00"


@pytest.mark.parametrize(
    "segment",
    [
        udp(1234, 80, HEADER + NAME + b"\x00\x01\x00\x01"),  # not DNS ports
        udp(53, 80, HEADER + NAME + b"\x00\x01\x00\x01"), udp(80, 5353, HEADER + NAME + b"\x00\x01\x00\x01"),
        udp(53, 53, HEADER + NAME + b"\x00\x01\x00\x01", length=7),  # UDP length below its header
        udp(53, 53, HEADER + NAME + b"\x00\x01\x00\x01", length=500),  # past the end
        udp(53, 53, HEADER + NAME + b"\x00\x01\x00\x01", length=19),  # DNS header cut
        udp(53, 53, HEADER + NAME + b"\x00\x01\x00\x01", length=20),  # header only: no question read
        udp(53, 53, HEADER + NAME + b"\x00\x01\x00"),  # type/class cut
        udp(53, 53, HEADER + b"\xc0\x0c\x00\x01\x00\x01"),  # pointer ends the name
        udp(53, 53, HEADER + b"\x05ab"),  # label past the end
        udp(53, 53, HEADER + b"\x00\x00\x01\x00\x01"),  # the root
        udp(53, 53, struct.pack("!HHHHHH", 1, 0, 2, 0, 0, 0) + NAME + b"\x00\x01\x00\x01"),  # two questions
        udp(53, 53, struct.pack("!HHHHHH", 1, 0, 0, 0, 0, 0) + NAME + b"\x00\x01\x00\x01"),  # none
        udp(53, 53, HEADER + NAME + b"\x00\x01\x00\x01" + b"trailing bytes"),
        udp(53, 53, HEADER + NAME + b"\x00\x01\x00\x01", length=8 + 12 + len(NAME) + 4 - 1),  # end before class
        udp(53, 53, b""), b"\x00\x35\x00\x35\x00",  # no room for a DNS header; a cut UDP header
        b"\x00\x35\x00\x35\x00\x06", b"\x00\x35\x00\x35\x00\x07\x00",  # ports and length, no checksum
    ],
)
def test_crafted_segments_read_alike(segment):
    for prefix in (b"", bytes(20)):
        same(prefix + segment, len(prefix))


def test_a_start_past_the_end_is_a_value_error_not_a_crash():
    for start in (-1, 0, 3, 100, 2**40, 2**63 - 6, 2**63 - 1, 2**63):  # no sum of start and a length overflows
        with pytest.raises((ValueError, OverflowError)):
            _udpdns.read(b"\x00\x35\x00\x35\x00", start)


@settings(max_examples=3000, deadline=None)
@given(
    ports=st.tuples(st.sampled_from([53, 5353, 1, 40000]), st.sampled_from([53, 5353, 80, 65535])),
    length=st.one_of(st.none(), st.integers(0, 70)),
    header=st.tuples(st.integers(0, 65535), st.integers(0, 65535), st.sampled_from([0, 1, 2, 65535])),
    body=st.one_of(st.binary(max_size=40), st.lists(st.binary(max_size=12), max_size=5).map(
        lambda labels: b"".join(bytes([len(x)]) + x for x in labels) + b"\x00\x00\x01\x00\x01")),
    prefix=st.binary(max_size=3),
)
def test_random_segments_read_alike(ports, length, header, body, prefix):
    dns = struct.pack("!HHH6x", *header) + body
    same(prefix + udp(*ports, dns, length), len(prefix))
