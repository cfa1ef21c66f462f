"""A datagram's UDP and DNS headers and question: the C reader (`_udpdns`)
against its rules in Python (`udpdns.read_in_python`, also the matcher's
fallback where the C module is not built).

Every datagram here, crafted or random, must read the same both ways, in
a bytes object and in any other buffer: an exact-sized one too (ctypes,
whose memory ends where the datagram does), so that a read past the end
shows under the sanitizer build (tests/test_sanitizers.py).
"""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.matching import _udpdns, matcher, udpdns
from sensor.matching.matcher import Matcher
from sensor.records.dns import parse_question
from sensor.records.wire import DNS_HEADER_LEN, DNS_PORTS
from tests import packets as P

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
rules = udpdns.read_in_python


def exact(buf: bytes) -> memoryview:
    """`buf` in memory of its own size: nothing after its last byte (a
    bytes object keeps a NUL there, which hides a one-byte over-read)."""
    return memoryview((ctypes.c_char * len(buf)).from_buffer_copy(buf)) if buf else memoryview(b"")


def same(buf: bytes, start: int) -> None:
    try:
        expected = rules(buf, start)
    except ValueError:  # a header past the end: the matcher counts it as malformed_other
        for view in (buf, bytearray(buf), exact(buf)):
            with pytest.raises(ValueError):
                _udpdns.read(view, start)
        return
    assert _udpdns.read(buf, start) == expected
    assert _udpdns.read(bytearray(buf), start) == expected  # any buffer, bytes out
    assert _udpdns.read(exact(buf), start) == expected


def udp(sport: int, dport: int, dns: bytes, length: int | None = None) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(dns) if length is None else length, 0) + dns


def test_the_c_constants_are_the_wire_facts():
    assert {_udpdns.DNS_PORT, _udpdns.MDNS_PORT} == DNS_PORTS
    assert _udpdns.DNS_HEADER_LEN == DNS_HEADER_LEN
    assert udpdns.COMPILED and udpdns.read is _udpdns.read  # built here: the matcher reads in C


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
        udp(53, 53, HEADER + b"\x03www\x07example"),  # labels up to the last byte, no root label
        udp(53, 53, HEADER + b"\x03www\x07example\xc0"),  # a pointer's first byte last
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
        for read in (_udpdns.read, rules):
            with pytest.raises((ValueError, OverflowError)):
                read(b"\x00\x35\x00\x35\x00", start)


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


def _traffic() -> list[bytes]:
    """Pairs, unanswered queries, fragments, TCP, ICMP and junk, each
    UDP one also cut short and with its UDP length off by one."""
    datagrams = [*P.seed_datagrams(), P.query(ident=7), P.response(ident=7), P.query(qname=None, ident=8),
                 P.response(qname=None, rcode=2, answers=(), ident=8), P.response(ident=9)]
    for datagram in list(datagrams):
        datagrams += [datagram[:-1], datagram[:30], datagram[:24] + struct.pack("!H", len(datagram) - 19)
                      + datagram[26:]]
    return datagrams


def test_the_matcher_makes_the_same_records_with_either_reader(monkeypatch):
    compiled = Matcher()
    records = [r for d in _traffic() for r in compiled.feed(d, 1_700_000_000, 0)] + compiled.flush()
    monkeypatch.setattr(matcher, "_read_udp_dns", rules)
    python = Matcher()
    assert [r for d in _traffic() for r in python.feed(d, 1_700_000_000, 0)] + python.flush() == records
    assert python.counters == compiled.counters and len(records) > 5


_WITHOUT_C = """
import sys
class NoCompiledReader:
    def find_spec(self, name, path=None, target=None):
        if name == "sensor.matching._udpdns":
            raise ImportError("not built")
sys.meta_path.insert(0, NoCompiledReader())
from sensor.matching import udpdns
from sensor.matching.matcher import Matcher
from tests import packets as P
m = Matcher()
m.feed(P.query(), 1_700_000_000, 0)
(pair,) = m.feed(P.response(), 1_700_000_000, 1000)
print(udpdns.COMPILED, udpdns.read is udpdns.read_in_python, pair[1])
"""


def test_without_the_c_module_the_matcher_reads_in_python():
    """As where the sensor is installed without a C compiler."""
    result = subprocess.run([sys.executable, "-c", _WITHOUT_C], capture_output=True, text=True, cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "1"]  # a UDP_QUERY_RESPONSE
