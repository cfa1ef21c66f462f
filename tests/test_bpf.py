"""The capture filter compiles, and selects exactly the resolver's side."""

from __future__ import annotations

import dpkt
import pcapy
import pytest

from sensor.matching.bpf import build_filter, parse_networks
from tests import packets as P


def _matches(expression: str, datagram: bytes) -> bool:
    program = pcapy.compile(pcapy.DLT_EN10MB, 65535, expression, 1, 0)
    return program.filter(P.ethernet(datagram)) != 0


RES = build_filter(parse_networks(f"{P.RESOLVER},{P.RESOLVER6}"))


@pytest.mark.parametrize("capture_qr", [None, 0, 1])
@pytest.mark.parametrize("addrs", ["192.0.2.53", "192.0.2.0/24,2001:db8::/32", "2001:db8::53"])
def test_every_variant_compiles(addrs, capture_qr):
    nets = parse_networks(addrs)
    for expression in (build_filter(nets, (), capture_qr), build_filter((), nets, capture_qr)):
        pcapy.compile(pcapy.DLT_EN10MB, 65535, expression, 1, 0)


def test_resolver_queries_and_their_answers_pass():
    assert _matches(RES, P.query())
    assert _matches(RES, P.response())
    assert _matches(RES, P.tcp(P.RESOLVER, P.AUTHORITY, 40000, 53))
    assert _matches(RES, P.icmp_unreachable(P.AUTHORITY, P.RESOLVER, P.query()))


def test_later_fragments_to_the_resolver_pass():
    fragments = P.fragment_ipv4(P.big_response(3000), 1200)
    assert all(_matches(RES, f) for f in fragments)


def test_end_users_and_unrelated_traffic_do_not_pass():
    user = "203.0.113.9"
    assert not _matches(RES, P.query(src=user, dst=P.RESOLVER))
    assert not _matches(RES, P.response(src=P.RESOLVER, dst=user, dport=5000))
    assert not _matches(RES, P.query(src="198.51.100.7", dst=P.AUTHORITY))
    assert not _matches(RES, P.udp(P.RESOLVER, P.AUTHORITY, 40000, 123, b"ntp"))


def test_query_only_and_response_only_variants():
    nets = parse_networks(P.RESOLVER)
    queries = build_filter(nets, (), 0)
    responses = build_filter(nets, (), 1)
    assert _matches(queries, P.query()) and not _matches(queries, P.response())
    assert _matches(responses, P.response()) and not _matches(responses, P.query())


def test_authority_filter_is_the_mirror_image():
    auth = build_filter((), parse_networks(P.AUTHORITY))
    assert _matches(auth, P.query(src="203.0.113.9"))
    assert _matches(auth, P.response(dst="203.0.113.9"))
    assert not _matches(auth, P.query(src=P.AUTHORITY, dst="198.51.100.99"))


def test_ipv6_passes_the_kernel_for_user_space_checks():
    assert _matches(RES, P.query(src=P.RESOLVER6, dst=P.AUTHORITY6, qtype=dpkt.dns.DNS_AAAA))
    assert _matches(RES, P.query(src="2001:db8:9::9", dst=P.RESOLVER6))  # re-checked by Vantage
