"""Conformance on captures from public projects (../shared/corpus).

Skipped where the corpus is not beside the repository; never copied in.
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter

import pytest
from click.testing import CliRunner

from sensor.cli import main
from sensor.display import render
from sensor.edges.libpcap import Capture
from sensor.matching.matcher import Matcher
from sensor.records.record import Field, RecordType, UdpChecksum
from sensor.spool import spooldir

CORPUS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus")
pytestmark = pytest.mark.skipif(not os.path.isdir(CORPUS), reason="../shared/corpus is not here")

NMSG_FIELDS = [
    "type",
    "query_ip",
    "response_ip",
    "proto",
    "query_port",
    "response_port",
    "id",
    "qname",
    "qclass",
    "qtype",
    "rcode",
    "query_packet",
    "query_time_sec",
    "query_time_nsec",
    "response_packet",
    "response_time_sec",
    "response_time_nsec",
    "delay",
    "udp_checksum",
]


def corpus(*parts: str) -> str:
    return os.path.join(CORPUS, *parts)


def test_nmsg_reference_records_are_reproduced(tmp_path, monkeypatch):
    """test1-dnsqr.pcap through `run --pcap` and `read --format json`."""
    monkeypatch.setenv("DNSQR_RES_ADDRS", "203.0.113.195")
    runner = CliRunner()
    spool = tmp_path / "spool"
    result = runner.invoke(
        main, ["run", "-c", os.devnull, "--pcap", corpus("nmsg", "test1-dnsqr.pcap"), "--spooldir", str(spool)]
    )
    assert result.exit_code == 0, result.output
    files = sorted(glob.glob(os.path.join(spooldir.folder(spool, spooldir.WAITING, "*"), "*")))
    assert len(files) == 1
    result = runner.invoke(main, ["read", "--format", "json", *files])
    assert result.exit_code == 0, result.output
    ours = [json.loads(line)["message"] for line in result.output.splitlines()]
    with open(corpus("nmsg", "test1-dnsqr.json")) as handle:
        theirs = [json.loads(line)["message"] for line in handle]
    assert len(ours) == len(theirs) == 5
    for mine, reference in zip(ours, theirs, strict=True):
        for field in NMSG_FIELDS:
            if field == "delay":
                assert mine[field] == pytest.approx(reference[field], abs=1e-9), field
            else:
                assert mine[field] == reference[field], field


def replay(path: str) -> tuple[list[dict], dict, int]:
    capture = Capture.open_file(path, "")
    matcher = Matcher()
    records = []
    count = 0
    while (batch := capture.read_batch()) is not None:
        for packet, sec, nsec in batch:
            count += 1
            records += matcher.feed(packet, sec, nsec)
    records += matcher.flush()
    return records, matcher.counters, count


# TCP records carry addresses, ports and the segment's time in the sensor;
# the reference leaves them empty (README: "Where we differ from nmsg on
# purpose"). Everything else must be equal.
TCP_FILLED_IN = {
    "query_ip", "response_ip", "query_port", "response_port", "id",
    "query_time_sec", "query_time_nsec", "response_time_sec", "response_time_nsec",
}
REFERENCE_CAPTURES = sorted(
    glob.glob(os.path.join(CORPUS, "reference", "*__*.json"))
)


@pytest.mark.parametrize("reference", REFERENCE_CAPTURES, ids=os.path.basename)
def test_every_reference_capture_gives_the_references_records(reference):
    """Replayed with no address filter, as the reference made its .json."""
    folder, name = os.path.basename(reference)[: -len(".json")].split("__")
    records, counters, _ = replay(corpus(folder, name + ".pcap"))
    assert "malformed_other" not in counters
    with open(reference) as handle:
        theirs = [json.loads(line)["message"] for line in handle]
    ours = [render.message(record) for record in records]
    assert [m["type"] for m in ours] == [m["type"] for m in theirs]
    for index, (mine, expected) in enumerate(zip(ours, theirs, strict=True)):
        skip = TCP_FILLED_IN if expected["type"] == "TCP" else set()
        for field in sorted((set(mine) | set(expected)) - skip):
            where = f"record {index} ({expected['type']}) field {field}"
            if field in ("delay", "timeout"):
                assert mine[field] == pytest.approx(expected[field], abs=1e-9), where
            else:
                assert mine.get(field) == expected.get(field), where


def kinds(records) -> Counter:
    return Counter(RecordType(r[Field.TYPE]).name for r in records)


@pytest.mark.parametrize("name", ["dnsdump_ip4_fragmented+udp.pcap", "dnsdump_ip6_fragmented+udp.pcap"])
def test_fragmented_answers_pair_with_every_fragment(name):
    (record,), _, count = replay(corpus("go-dnscollector", name))
    assert record[Field.TYPE] == RecordType.UDP_QUERY_RESPONSE
    assert len(record[Field.QUERY_PACKET]) == 1
    assert len(record[Field.RESPONSE_PACKET]) == count - 1 == 2
    assert record[Field.UDP_CHECKSUM] == UdpChecksum.CORRECT


def test_fragmented_queries_are_reassembled():
    records, _, _ = replay(corpus("go-dnscollector", "dnsdump_ip4_fragmented_query.pcap"))
    assert kinds(records) == {"UDP_UNANSWERED_QUERY": 2}
    assert all(len(r[Field.QUERY_PACKET]) == 2 for r in records)
    assert all(len(r[Field.QNAME]) > 60 for r in records)
    (record,), _, _ = replay(corpus("go-dnscollector", "dnsdump_ip6_fragmented_query.pcap"))
    assert len(record[Field.QUERY_PACKET]) == 2 and len(record[Field.QUERY_IP]) == 16


@pytest.mark.parametrize(
    "name, expected",
    [
        ("dnsdump_tcp.pcap", {"TCP": 50}),
        ("dnsdump_tcp_fastopen.pcap", {"TCP": 32}),
        ("dnsdump_udp+tcp.pcap", {"UDP_QUERY_RESPONSE": 1, "TCP": 10}),
        ("dnsdump_udp_truncated+tcp_fragmented.pcap", {"UDP_QUERY_RESPONSE": 1, "TCP": 28}),
        ("dnsdump_udp.pcap", {"UDP_QUERY_RESPONSE": 16, "UDP_UNANSWERED_QUERY": 1}),
    ],
)
def test_udp_and_tcp_captures(name, expected):
    records, _, _ = replay(corpus("go-dnscollector", name))
    assert kinds(records) == expected
    for record in records:
        if record[Field.TYPE] == RecordType.TCP:
            assert record[Field.RESPONSE_PORT] == 53 and record[Field.PROTO] == 6
            assert render.to_json(record)


def test_pings_are_not_dns_but_the_lookups_are():
    records, counters, _ = replay(corpus("dpkt", "dns_icmp.pcap"))
    assert kinds(records) == {"UDP_QUERY_RESPONSE": 5}
    assert counters["not_dns"] == 22


@pytest.mark.parametrize("name", ["truncated_dns.pcap", "truncated_dns_2.pcap"])
def test_truncated_captures_produce_nothing_and_do_not_fail(name):
    records, _, _ = replay(corpus("dpkt", name))
    assert records == []
