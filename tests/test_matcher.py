"""The matcher, driven with datagrams built in code: no libpcap, no files."""

from __future__ import annotations

import random
import struct

import dpkt
import pytest

from sensor.matching.bpf import Vantage, parse_networks
from sensor.matching.matcher import Matcher, Settings
from sensor.records.dns import text_to_wire
from sensor.records.record import Field, RecordType, UdpChecksum
from tests import packets as P

T0 = 1_700_000_000


def matcher(**changes) -> Matcher:
    """A strict matcher: a bug behind the last-resort guard raises here."""
    changes.setdefault("vantage", Vantage(parse_networks(f"{P.RESOLVER},{P.RESOLVER6}")))
    changes.setdefault("strict", True)
    return Matcher(Settings(**changes))


def types(records) -> list[RecordType]:
    return [RecordType(r[Field.TYPE]) for r in records]


# ------------------------------------------------------------------ pairing
def test_query_and_response_make_one_pair_with_every_field():
    m = matcher()
    q, r = P.query(), P.response()
    assert m.feed(q, T0, 100) == []
    (rec,) = m.feed(r, T0, 5_000_100)
    assert rec[Field.TYPE] == RecordType.UDP_QUERY_RESPONSE
    assert rec[Field.QUERY_IP] == bytes([192, 0, 2, 53])
    assert rec[Field.RESPONSE_IP] == bytes([198, 51, 100, 1])
    assert (rec[Field.PROTO], rec[Field.QUERY_PORT], rec[Field.RESPONSE_PORT]) == (17, 40000, 53)
    assert rec[Field.ID] == 0x1234
    assert rec[Field.QNAME] == text_to_wire("www.example.com")
    assert (rec[Field.QTYPE], rec[Field.QCLASS], rec[Field.RCODE]) == (1, 1, 0)
    assert rec[Field.QUERY_PACKET] == [q] and rec[Field.RESPONSE_PACKET] == [r]
    assert rec[Field.QUERY_TIME_SEC] == [T0] and rec[Field.QUERY_TIME_NSEC] == [100]
    assert rec[Field.RESPONSE_TIME_NSEC] == [5_000_100]
    assert rec[Field.UDP_CHECKSUM] == UdpChecksum.CORRECT
    assert m.flush() == [] and not m.table


def test_ipv6_pair():
    m = matcher()
    q = P.query(src=P.RESOLVER6, dst=P.AUTHORITY6)
    r = P.response(src=P.AUTHORITY6, dst=P.RESOLVER6)
    m.feed(q, T0, 0)
    (rec,) = m.feed(r, T0, 1)
    assert rec[Field.TYPE] == RecordType.UDP_QUERY_RESPONSE
    assert len(rec[Field.QUERY_IP]) == 16
    assert rec[Field.UDP_CHECKSUM] == UdpChecksum.CORRECT


@pytest.mark.parametrize(
    "change",
    [
        {"ident": 0x4321},
        {"qname": "www.EXAMPLE.com"},  # byte-exact: 0x20 case differs
        {"qtype": dpkt.dns.DNS_AAAA},
        {"sport": 5353},
        {"dport": 40001},
        {"src": "198.51.100.2"},
    ],
)
def test_response_differing_in_any_tuple_member_is_unsolicited(change):
    m = matcher()
    m.feed(P.query(), T0, 0)
    (rec,) = m.feed(P.response(**change), T0, 1)
    assert rec[Field.TYPE] == RecordType.UDP_UNSOLICITED_RESPONSE
    assert types(m.flush()) == [RecordType.UDP_UNANSWERED_QUERY]


@pytest.mark.parametrize("rcode", [1, 2, 4, 5])
def test_question_less_error_response_matches_on_six_tuple(rcode):
    m = matcher()
    m.feed(P.query(), T0, 0)
    (rec,) = m.feed(P.response(qname=None, rcode=rcode, answers=()), T0, 1)
    assert rec[Field.TYPE] == RecordType.UDP_QUERY_RESPONSE
    assert rec[Field.RCODE] == rcode
    assert rec[Field.QNAME] == text_to_wire("www.example.com")  # taken from the query


@pytest.mark.parametrize("rcode", [0, 3])
def test_question_less_response_with_other_rcode_does_not_match(rcode):
    m = matcher()
    m.feed(P.query(), T0, 0)
    (rec,) = m.feed(P.response(qname=None, rcode=rcode, answers=()), T0, 1)
    assert rec[Field.TYPE] == RecordType.UDP_UNSOLICITED_RESPONSE
    assert Field.QNAME not in rec
    assert len(m.table) == 1


def test_two_outstanding_queries_sharing_six_tuple_pair_by_question():
    m = matcher()
    m.feed(P.query(qname="a.example"), T0, 0)
    m.feed(P.query(qname="b.example"), T0, 1)
    (second,) = m.feed(P.response(qname="b.example"), T0, 2)
    (first,) = m.feed(P.response(qname="a.example"), T0, 3)
    assert types([first, second]) == [RecordType.UDP_QUERY_RESPONSE] * 2
    assert first[Field.QNAME] == text_to_wire("a.example")
    assert second[Field.QUERY_TIME_NSEC] == [1]


def test_repeated_identical_queries_both_stay_and_pair_oldest_first():
    """A retransmission (or one packet seen twice) keeps both, as the reference."""
    m = matcher()
    assert m.feed(P.query(), T0, 0) == []
    assert m.feed(P.query(), T0 + 1, 0) == []
    assert len(m.table) == 2
    (first,) = m.feed(P.response(), T0 + 1, 5)
    (second,) = m.feed(P.response(), T0 + 1, 6)
    assert types([first, second]) == [RecordType.UDP_QUERY_RESPONSE] * 2
    assert first[Field.QUERY_TIME_SEC] == [T0] and second[Field.QUERY_TIME_SEC] == [T0 + 1]
    assert first[Field.RESPONSE_TIME_NSEC] == [5] and second[Field.RESPONSE_TIME_NSEC] == [6]
    (third,) = m.feed(P.response(), T0 + 1, 7)
    assert third[Field.TYPE] == RecordType.UDP_UNSOLICITED_RESPONSE
    assert not m.table and not m.shared


def test_shared_six_tuple_pairs_by_question_then_age():
    m = matcher()
    m.feed(P.query(qname="a.example"), T0, 0)
    m.feed(P.query(qname="b.example"), T0, 1)
    m.feed(P.query(qname="a.example"), T0, 2)
    (b,) = m.feed(P.response(qname="b.example"), T0, 3)
    (a1,) = m.feed(P.response(qname="a.example"), T0, 4)
    (a2,) = m.feed(P.response(qname="a.example"), T0, 5)
    assert b[Field.QUERY_TIME_NSEC] == [1]
    assert (a1[Field.QUERY_TIME_NSEC], a2[Field.QUERY_TIME_NSEC]) == ([0], [2])
    assert not m.table and not m.shared


def test_duplicates_time_out_and_are_evicted_like_any_query():
    m = matcher(table_max=3, query_timeout=10)
    for nsec in range(3):
        m.feed(P.query(), T0, nsec)
    (evicted,) = m.feed(P.query(ident=9, sport=40009), T0, 3)  # the table bound is unchanged
    assert evicted[Field.TYPE] == RecordType.UDP_UNANSWERED_QUERY
    assert evicted[Field.QUERY_TIME_NSEC] == [0]
    assert len(m.table) == 3
    late = m.tick(T0 + 11)
    assert types(late) == [RecordType.UDP_UNANSWERED_QUERY] * 3
    assert not m.table and not m.shared
    assert m.feed(P.response(), T0 + 11, 0)[0][Field.TYPE] == RecordType.UDP_UNSOLICITED_RESPONSE


def _with_qdcount(datagram: bytes, qdcount: int) -> bytes:
    """The IPv4/UDP datagram with its DNS QDCOUNT rewritten (checksum zeroed)."""
    data = bytearray(datagram)
    data[26:28] = b"\0\0"  # UDP checksum: absent
    data[32:34] = struct.pack("!H", qdcount)
    return bytes(data)


@pytest.mark.parametrize("qdcount", [0, 2, 816, 64259])
def test_question_count_other_than_one_records_no_question(qdcount):
    m = matcher()
    m.feed(_with_qdcount(P.query(), qdcount), T0, 0)
    (unsolicited,) = m.feed(_with_qdcount(P.response(), qdcount), T0, 1)  # NOERROR: no 6-tuple pairing
    assert unsolicited[Field.TYPE] == RecordType.UDP_UNSOLICITED_RESPONSE
    assert Field.QNAME not in unsolicited and Field.QTYPE not in unsolicited
    (unanswered,) = m.flush()
    assert Field.QNAME not in unanswered and Field.QCLASS not in unanswered
    m.feed(_with_qdcount(P.query(), qdcount), T0, 2)
    (pair,) = m.feed(_with_qdcount(P.response(rcode=2), qdcount), T0, 3)  # SERVFAIL: 6-tuple
    assert pair[Field.TYPE] == RecordType.UDP_QUERY_RESPONSE and Field.QNAME not in pair


def test_question_less_query_pairs_with_refused_response_and_takes_its_question():
    m = matcher()
    m.feed(_with_qdcount(P.query(), 0), T0, 0)
    (pair,) = m.feed(P.response(rcode=5), T0, 1)
    assert pair[Field.TYPE] == RecordType.UDP_QUERY_RESPONSE
    assert pair[Field.QNAME] == text_to_wire("www.example.com")


def test_header_only_message_with_one_question_is_kept_without_it():
    m = matcher()
    query = P.udp(P.RESOLVER, P.AUTHORITY, 40000, 53, struct.pack("!HHHHHH", 7, 0, 1, 0, 0, 0))
    assert m.feed(query, T0, 0) == []
    (rec,) = m.flush()
    assert rec[Field.TYPE] == RecordType.UDP_UNANSWERED_QUERY and Field.QNAME not in rec


@pytest.mark.parametrize(
    "name, qname",
    [
        (b"\x03www\xc0\x0c", b"\x03www\xc0\x0c"),  # a pointer ends the name, both octets kept
        (b"\x45" + b"x" * 0x45 + b"\x00", b"\x45" + b"x" * 0x45 + b"\x00"),  # label over 63: skipped by length
        (b"\xc0\x0c", b"\xc0\x0c"),
    ],
)
def test_question_name_is_delimited_as_the_reference_does(name, qname):
    m = matcher()
    payload = struct.pack("!HHHHHH", 7, 0, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1)
    m.feed(P.udp(P.RESOLVER, P.AUTHORITY, 40000, 53, payload), T0, 0)
    (rec,) = m.flush()
    assert rec[Field.QNAME] == qname and (rec[Field.QTYPE], rec[Field.QCLASS]) == (1, 1)


def test_question_that_runs_off_the_end_drops_the_datagram():
    m = matcher()
    payload = struct.pack("!HHHHHH", 7, 0, 1, 0, 0, 0) + b"\x03www\x00\x00\x01"  # no class
    assert m.feed(P.udp(P.RESOLVER, P.AUTHORITY, 40000, 53, payload), T0, 0) == []
    assert m.counters == {"malformed_dns": 1} and not m.table


def test_mdns_port_5353_is_dns_too():
    m = matcher()
    m.feed(P.query(dport=5353), T0, 0)
    (rec,) = m.feed(P.response(sport=5353), T0, 1)
    assert rec[Field.RESPONSE_PORT] == 5353


# ------------------------------------------------------ timeouts and table
def test_query_times_out_by_packet_time_not_wall_time():
    m = matcher(query_timeout=60)
    m.feed(P.query(), T0, 500)
    assert m.feed(P.query(ident=2, sport=40002), T0 + 60, 0) == []  # 60 s: not yet
    (rec,) = m.feed(P.query(ident=3, sport=40003), T0 + 61, 600)
    assert rec[Field.TYPE] == RecordType.UDP_UNANSWERED_QUERY
    assert rec[Field.TIMEOUT] == pytest.approx(61.0000001)
    assert rec[Field.ID] == 0x1234 and rec[Field.QUERY_PORT] == 40000
    assert Field.RESPONSE_PACKET not in rec


def test_response_after_timeout_is_unsolicited():
    m = matcher(query_timeout=5)
    m.feed(P.query(), T0, 0)
    out = m.feed(P.response(), T0 + 10, 0)
    assert types(out) == [RecordType.UDP_UNANSWERED_QUERY, RecordType.UDP_UNSOLICITED_RESPONSE]


def test_full_table_evicts_the_oldest_query():
    m = matcher(table_max=3)
    for i in range(3):
        assert m.feed(P.query(ident=i, sport=41000 + i), T0, i) == []
    (evicted,) = m.feed(P.query(ident=3, sport=41003), T0, 3)
    assert evicted[Field.TYPE] == RecordType.UDP_UNANSWERED_QUERY
    assert evicted[Field.ID] == 0
    assert len(m.table) == 3
    assert m.counters["query_evicted"] == 1


def test_flush_emits_every_outstanding_query_oldest_first():
    m = matcher()
    for i in range(5):
        m.feed(P.query(ident=i, sport=42000 + i), T0, i)
    out = m.flush()
    assert types(out) == [RecordType.UDP_UNANSWERED_QUERY] * 5
    assert [r[Field.ID] for r in out] == [0, 1, 2, 3, 4]
    assert not m.table


def test_tick_expires_without_packets():
    m = matcher(query_timeout=2)
    m.feed(P.query(), T0, 0)
    assert m.tick(T0 + 2) == []
    assert types(m.tick(T0 + 3)) == [RecordType.UDP_UNANSWERED_QUERY]


# ------------------------------------------------------------- fragments
def _fragmented_exchange(version: int = 4):
    if version == 4:
        q = P.query(qtype=dpkt.dns.DNS_TXT)
        r = P.big_response(3000)
        return q, r, P.fragment_ipv4(r, 1200)
    q = P.query(qtype=dpkt.dns.DNS_TXT, src=P.RESOLVER6, dst=P.AUTHORITY6)
    r = P.big_response(3000, src=P.AUTHORITY6, dst=P.RESOLVER6)
    return q, r, P.fragment_ipv6(r, 1200)


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("order", ["in", "reversed", "shuffled"])
def test_fragmented_response_is_reassembled_and_keeps_every_fragment(version, order):
    q, _, frags = _fragmented_exchange(version)
    sent = list(frags)
    if order == "reversed":
        sent.reverse()
    elif order == "shuffled":
        random.Random(7).shuffle(sent)
    m = matcher()
    m.feed(q, T0, 0)
    out = []
    for i, frag in enumerate(sent):
        out += m.feed(frag, T0, 10 + i)
    (rec,) = out
    assert len(frags) == 3
    assert rec[Field.TYPE] == RecordType.UDP_QUERY_RESPONSE
    assert rec[Field.RESPONSE_PACKET] == sent
    assert rec[Field.RESPONSE_TIME_NSEC] == [10, 11, 12]
    assert rec[Field.UDP_CHECKSUM] == UdpChecksum.CORRECT
    assert not m.reassembler.pending


def test_fragments_overlapping_with_the_same_bytes_are_accepted():
    q, r, frags = _fragmented_exchange()
    overlap = P.fragment_ipv4(r, 800)[1]  # covers bytes 800..1600, same content
    m = matcher()
    m.feed(q, T0, 0)
    out = m.feed(frags[0], T0, 1) + m.feed(overlap, T0, 2) + m.feed(frags[1], T0, 3) + m.feed(frags[2], T0, 4)
    (rec,) = out
    assert len(rec[Field.RESPONSE_PACKET]) == 4
    assert rec[Field.UDP_CHECKSUM] == UdpChecksum.CORRECT


def test_fragments_overlapping_with_different_bytes_poison_the_datagram():
    q, r, frags = _fragmented_exchange()
    forged = bytearray(P.fragment_ipv4(r, 800)[1])
    forged[-1] ^= 0xFF
    m = matcher()
    m.feed(q, T0, 0)
    out = []
    for frag in (frags[0], bytes(forged), frags[1], frags[2]):
        out += m.feed(frag, T0, 1)
    assert out == []
    assert m.counters["fragment_overlap"] == 1
    assert types(m.flush()) == [RecordType.UDP_UNANSWERED_QUERY]


def test_never_completed_fragments_expire_and_free_memory():
    q, _, frags = _fragmented_exchange()
    m = matcher()
    m.feed(q, T0, 0)
    m.feed(frags[0], T0, 1)
    m.feed(frags[2], T0, 2)
    assert m.reassembler.held_bytes > 0
    m.feed(P.query(ident=9, sport=40009), T0 + 31, 0)
    m.tick(T0 + 31)
    assert m.reassembler.held_bytes == 0 and not m.reassembler.pending
    assert m.counters["fragment_timeout"] == 1


def test_fragment_memory_is_bounded():
    m = Matcher(Settings(fragment_bytes=50_000))
    for i in range(200):
        first = bytearray(P.fragment_ipv4(P.big_response(3000), 1200)[0])
        struct.pack_into("!H", first, 4, i)  # a distinct IP id: a distinct datagram
        m.feed(bytes(first), T0, i)
        assert m.reassembler.held_bytes <= 50_000
    assert m.counters["fragment_evicted"] > 100


def test_fragment_beyond_64k_is_refused():
    frag = bytearray(P.fragment_ipv4(P.big_response(3000), 1200)[1])
    struct.pack_into("!H", frag, 6, 0x2000 | 0x1FFF)
    m = matcher()
    assert m.feed(bytes(frag), T0, 0) == []
    assert m.counters["fragment_malformed"] == 1


# ---------------------------------------------------------- checksums
def test_corrupted_response_payload_is_checksum_incorrect():
    m = matcher()
    m.feed(P.query(), T0, 0)
    r = bytearray(P.response())
    r[-1] ^= 0x01  # last byte of the A record's address
    (rec,) = m.feed(bytes(r), T0, 1)
    assert rec[Field.UDP_CHECKSUM] == UdpChecksum.INCORRECT


def test_zero_udp_checksum_is_absent():
    m = matcher()
    m.feed(P.query(), T0, 0)
    r = bytearray(P.response())
    r[26:28] = b"\x00\x00"
    (rec,) = m.feed(bytes(r), T0, 1)
    assert rec[Field.UDP_CHECKSUM] == UdpChecksum.ABSENT


# -------------------------------------------------------------- zeroing
def test_zeroing_removes_resolver_address_everywhere():
    m = matcher(zero_resolver_address=True)
    m.feed(P.query(), T0, 0)
    (rec,) = m.feed(P.response(), T0, 1)
    assert rec[Field.QUERY_IP] == bytes(4)
    assert rec[Field.QUERY_PACKET][0][12:16] == bytes(4)
    assert rec[Field.QUERY_PACKET][0][16:20] == bytes([198, 51, 100, 1])
    assert rec[Field.RESPONSE_PACKET][0][16:20] == bytes(4)
    assert rec[Field.RESPONSE_PACKET][0][12:16] == bytes([198, 51, 100, 1])
    assert rec[Field.RESOLVER_ADDRESS_ZEROED] is True
    assert rec[Field.UDP_CHECKSUM] == UdpChecksum.ERROR
    resolver = bytes([192, 0, 2, 53])
    assert all(resolver not in p for p in rec[Field.QUERY_PACKET] + rec[Field.RESPONSE_PACKET])


def test_zeroing_applies_to_unanswered_and_ipv6():
    m = matcher(zero_resolver_address=True)
    m.feed(P.query(src=P.RESOLVER6, dst=P.AUTHORITY6), T0, 0)
    (rec,) = m.flush()
    assert rec[Field.QUERY_IP] == bytes(16)
    assert rec[Field.QUERY_PACKET][0][8:24] == bytes(16)


# -------------------------------------------------------------- filters
def test_rd_filter_keeps_only_matching_queries_for_pairs_and_leftovers():
    m = matcher(capture_rd=0)
    m.feed(P.query(rd=True), T0, 0)
    assert m.feed(P.response(rd=True), T0, 1) == []
    m.feed(P.query(ident=5, sport=40005, rd=False), T0, 2)
    assert types(m.feed(P.response(ident=5, dport=40005), T0, 3)) == [RecordType.UDP_QUERY_RESPONSE]
    m.feed(P.query(ident=6, sport=40006, rd=True), T0, 4)
    assert m.flush() == []
    assert types(m.feed(P.response(ident=7, rd=False), T0, 5)) == [RecordType.UDP_UNSOLICITED_RESPONSE]
    assert m.feed(P.response(ident=8, rd=True), T0, 6) == []
    assert m.counters["filtered"] == 3


@pytest.mark.parametrize(
    "name, kept",
    [
        ("example.com", True),
        ("www.Example.COM", True),
        ("a.b.example.com", True),
        ("badexample.com", False),
        ("com", False),
        ("example.org", False),
    ],
)
def test_include_filter_keeps_names_at_and_below(name, kept):
    m = matcher(qnames_include=frozenset({text_to_wire("example.com")}))
    m.feed(P.query(qname=name), T0, 0)
    out = m.feed(P.response(qname=name), T0, 1)
    assert bool(out) is kept
    assert bool(m.feed(P.response(ident=99, qname=name), T0, 2)) is kept  # unsolicited too


@pytest.mark.parametrize(
    "name, kept",
    [("example.com", False), ("x.EXAMPLE.com", False), ("example.net", True), ("notexample.com", True)],
)
def test_exclude_filter_drops_names_at_and_below(name, kept):
    m = matcher(qnames_exclude=frozenset({text_to_wire("example.com")}))
    m.feed(P.query(qname=name), T0, 0)
    assert bool(m.flush()) is kept


# ------------------------------------------------------ capture modes
def test_capture_qr_0_records_queries_only():
    m = matcher(capture_qr=0)
    (rec,) = m.feed(P.query(), T0, 0)
    assert rec[Field.TYPE] == RecordType.UDP_QUERY_ONLY
    assert m.feed(P.response(), T0, 1) == []
    assert not m.table


def test_capture_qr_1_records_responses_only():
    m = matcher(capture_qr=1)
    assert m.feed(P.query(), T0, 0) == []
    (rec,) = m.feed(P.response(rcode=3), T0, 1)
    assert rec[Field.TYPE] == RecordType.UDP_RESPONSE_ONLY
    assert rec[Field.RCODE] == 3
    assert rec[Field.UDP_CHECKSUM] == UdpChecksum.CORRECT


# ------------------------------------------------------------ TCP, ICMP
def test_tcp_segments_on_port_53_become_tcp_records():
    m = matcher()
    syn = P.tcp(P.RESOLVER, P.AUTHORITY, 40100, 53, flags=dpkt.tcp.TH_SYN)
    data = P.tcp(P.AUTHORITY, P.RESOLVER, 53, 40100, b"\x00\x1d" + P.dns_message(1, "a.example", response=True))
    (a,) = m.feed(syn, T0, 0)
    (b,) = m.feed(data, T0, 1)
    assert types([a, b]) == [RecordType.TCP] * 2
    assert a[Field.PROTO] == 6 and a[Field.TCP] == syn and a[Field.QUERY_TIME_SEC] == [T0]
    assert b[Field.QUERY_IP] == bytes([192, 0, 2, 53]) and b[Field.RESPONSE_TIME_NSEC] == [1]
    assert m.feed(P.tcp(P.RESOLVER, P.AUTHORITY, 40100, 443), T0, 2) == []


def test_icmp_error_quoting_a_query_becomes_icmp_record():
    m = matcher()
    q = P.query()
    icmp = P.icmp_unreachable(P.AUTHORITY, P.RESOLVER, q)
    (rec,) = m.feed(icmp, T0, 0)
    assert rec[Field.TYPE] == RecordType.ICMP and rec[Field.PROTO] == 1
    assert rec[Field.ICMP] == icmp
    assert rec[Field.ID] == 0x1234 and rec[Field.QUERY_PORT] == 40000
    other = P.icmp_unreachable(P.AUTHORITY, P.RESOLVER, P.udp(P.RESOLVER, P.AUTHORITY, 1000, 123, b"ntp"))
    assert m.feed(other, T0, 1) == []


# ---------------------------------------------------------- privacy
def test_end_user_traffic_to_the_resolver_is_never_recorded():
    m = matcher()
    user_query = P.query(src="203.0.113.9", dst=P.RESOLVER, sport=5000)
    resolver_answer = P.response(src=P.RESOLVER, dst="203.0.113.9", dport=5000)
    assert m.feed(user_query, T0, 0) == []
    assert m.feed(resolver_answer, T0, 1) == []
    assert m.flush() == []
    assert m.counters["not_ours"] == 2


def test_authority_vantage_is_the_mirror_image():
    m = Matcher(Settings(vantage=Vantage((), parse_networks(P.AUTHORITY))))
    m.feed(P.query(src="203.0.113.77"), T0, 0)
    (rec,) = m.feed(P.response(dst="203.0.113.77"), T0, 1)
    assert rec[Field.TYPE] == RecordType.UDP_QUERY_RESPONSE
    assert m.feed(P.query(src=P.AUTHORITY, dst="203.0.113.1"), T0, 2) == []


# ------------------------------------------------------------- bad input
def test_captured_shorter_than_sent_is_not_counted_as_complete():
    m = matcher()
    q = P.query()
    assert m.feed(q[:-3], T0, 0) == []
    assert m.counters["incomplete"] == 1


def test_link_padding_is_trimmed_from_stored_packets():
    m = matcher()
    q = P.query()
    m.feed(q + b"\x00" * 6, T0, 0)
    (rec,) = m.flush()
    assert rec[Field.QUERY_PACKET] == [q]


def _with_dns(dns: bytes) -> bytes:
    return P.udp(P.RESOLVER, P.AUTHORITY, 40000, 53, dns)


@pytest.mark.parametrize(
    "packet, reason",
    [
        (b"", "malformed_ip"),
        (b"\x45", "malformed_ip"),
        (b"\x00" * 40, "not_ip"),
        (b"\x4f" + b"\x00" * 10, "malformed_ip"),
        (_with_dns(b"\x12\x34\x01"), "malformed_dns"),
        # label length running past the end
        (_with_dns(b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3f\x61"), "malformed_dns"),
        # name without type and class
        (_with_dns(b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00"), "malformed_dns"),
    ],
)
def test_malformed_input_is_counted_by_reason(packet, reason):
    m = matcher()
    assert m.feed(packet, T0, 0) == []
    assert m.counters[reason] == 1


def test_udp_length_that_lies_is_counted():
    q = bytearray(P.query())
    struct.pack_into("!H", q, 24, 4000)
    m = matcher()
    assert m.feed(bytes(q), T0, 0) == []
    assert m.counters["malformed_udp"] == 1


def test_random_bytes_and_mutations_never_raise():
    rng = random.Random(2026)
    m = matcher()
    seeds = [
        P.query(),
        P.response(),
        *P.fragment_ipv4(P.big_response(3000), 1200),
        P.query(src=P.RESOLVER6, dst=P.AUTHORITY6),
    ]
    for _ in range(5000):
        base = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            base[rng.randrange(len(base))] = rng.randrange(256)
        if rng.random() < 0.3:
            base = base[: rng.randrange(len(base) + 1)]
        m.feed(bytes(base), T0 + rng.randrange(3), 0)
        m.feed(rng.randbytes(rng.randrange(80)), T0, 0)
    m.flush()
    assert "malformed_other" not in m.counters  # every bad input has a named reason


# ------------------------------------------------------- one record builder
def test_every_path_builds_its_records_in_field_order():
    """One builder for pairs, one-sided and unanswered UDP, fragments, TCP,
    ICMP, zeroed and dnstap records: keys ascend, so the general CBOR
    encoder writes a record's fields in the order the C encoder does."""
    from sensor.edges.dnstap import DnstapMatcher
    from sensor.edges.dnstap_schema import SocketProtocol
    from tests.test_dnstap import pair, run
    from tests.test_nmsg import SHAPES

    over_tcp, _ = run(pair(protocol=SocketProtocol.TCP), DnstapMatcher(Settings(zero_resolver_address=True)))
    records = [*SHAPES, *over_tcp, *run(pair())[0]]
    assert {RecordType(r[Field.TYPE]) for r in records} == set(RecordType) - {RecordType.UDP_INVALID}
    for record in records:
        assert list(record) == sorted(record), record
