"""read's output rules, each as nmsgtool 1.3.3 applies it."""

from __future__ import annotations

import json

import pytest

from sensor import dnsjson, render
from sensor.constants import Field, RecordType
from sensor.dns import text_to_wire, wire_to_text
from sensor.rrnames import rcode_name, type_name
from tests import packets as P

T0 = 1_700_000_000


@pytest.mark.parametrize(
    "number, name",
    [(1, "A"), (10, "NULL"), (11, "WKS"), (30, "NXT"), (32, "NIMLOC"), (38, "A6"), (108, "EUI48"),
     (109, "EUI64"), (23, "NSAP-PTR"), (32768, "TA"), (32769, "DLV"), (53, "TYPE53"), (63, "TYPE63"),
     (65534, "TYPE65534")],
)
def test_type_names_are_wdns_names(number, name):
    assert type_name(number) == name


@pytest.mark.parametrize("number, name", [(0, "NOERROR"), (5, "REFUSED"), (10, "NOTZONE"), (11, "11"), (15, "15")])
def test_rcodes_without_a_name_are_numbers_in_strings(number, name):
    assert rcode_name(number) == name


@pytest.mark.parametrize(
    "wire, text",
    [
        (b"\x00", "."),
        (b"\x05a b.c\x00", "a\\032b\\.c."),  # space as \DDD, dot escaped
        (b"\x01\\\x00", "\\\\."),
        (b"\x08\"$();:<>\x00", "\"$();:<>."),  # every byte from ! to ~ as itself
        (b"\x03\x7f\x80\xff\x00", "\\127\\128\\255."),
    ],
)
def test_names_are_escaped_as_wdns_escapes_them(wire, text):
    assert wire_to_text(wire) == text
    assert text_to_wire(text) == wire


def pair(query_nsec: int, response_times: list[tuple[int, int]]) -> dict:
    return {
        Field.TYPE: RecordType.UDP_QUERY_RESPONSE,
        Field.QUERY_TIME_SEC: [T0], Field.QUERY_TIME_NSEC: [query_nsec],
        Field.RESPONSE_TIME_SEC: [s for s, _ in response_times],
        Field.RESPONSE_TIME_NSEC: [n for _, n in response_times],
    }


def test_delay_borrows_a_second_as_nmsg_does_so_no_float_noise_shows():
    record = pair(989_834_000, [(T0 + 1, 0)])
    assert json.dumps(render.delay(record)) == "0.010166"


def test_delay_of_a_fragmented_response_is_to_its_last_fragment():
    record = pair(0, [(T0, 5_000), (T0, 9_000), (T0, 7_000)])
    assert render.delay(record) == pytest.approx(9e-6)


def test_doubles_print_as_nmsg_prints_them():
    assert render.as_nmsg_double(30.247056000000001) == 30.247056
    assert json.dumps(render.as_nmsg_double(0.1 + 0.2)) == "0.30000000000000004"


def test_an_unanswered_query_prints_empty_response_arrays():
    m = render.message({Field.TYPE: RecordType.UDP_UNANSWERED_QUERY, Field.QUERY_IP: b"\xc0\x00\x02\x35",
                        Field.RESPONSE_IP: b"\xc6\x33\x64\x01", Field.QUERY_PACKET: [P.query()],
                        Field.QUERY_TIME_SEC: [T0], Field.QUERY_TIME_NSEC: [0], Field.TIMEOUT: 60.5})
    assert m["response_packet"] == [] and m["response_time_sec"] == [] and m["response_time_nsec"] == []
    assert m["timeout"] == 60.5 and "delay" not in m and "udp_checksum" not in m
    assert m["query_json"]["question"] == [{"qname": "www.example.com.", "qclass": "IN", "qtype": "A"}]


def test_an_undecodable_dns_message_is_null_never_an_error():
    broken = P.udp(P.RESOLVER, P.AUTHORITY, 4000, 53, b"\x12\x34\x01\x00\x00\x05junk")
    decoded = dnsjson.decoded_messages({Field.QUERY_IP: b"\xc0\x00\x02\x35", Field.QUERY_PACKET: [broken]})
    assert decoded["query_json"] is None and decoded["query"]


def test_edns_options_print_as_dig_does():
    assert dnsjson._option_text(10, bytes.fromhex("ca22a0c869d91081")) == 'OPT=10: ca 22 a0 c8 69 d9 10 81 ("."..i...")'
    assert dnsjson._option_text(8, bytes.fromhex("00011800c00002")) == "CLIENT-SUBNET: 192.0.2.0/24/0"
    assert dnsjson._option_text(15, b"\x00\x12hi") == "EDE: 18 (Prohibited): (hi)"
