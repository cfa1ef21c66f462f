"""The collector's ingest chain on records built in code: decomposition,
bailiwick, de-duplication, and the embedded store that receives them."""

from __future__ import annotations

import ipaddress

import dns.name
import pytest

from collector import bailiwick, names, roothints
from collector.chain import Chain
from collector.sqlite_store import SqliteStore
from collector.store import Fences
from sensor.records.record import Field, RecordType, UdpChecksum
from tests.collectorkit import (
    ROOT_HINTS,
    STRANGER,
    TLD,
    ZONE,
    message,
    resolution,
    response_record,
)


def wire(text: str) -> bytes:
    return dns.name.from_text(text).to_wire().lower()


@pytest.fixture
def hints(tmp_path):
    path = tmp_path / "root.hints"
    path.write_text(ROOT_HINTS)
    return roothints.read(str(path))


def chain_with(hints) -> Chain:
    directory = bailiwick.MemoryDirectory()
    roothints.seed(directory, hints)
    return Chain(directory)


def entries(chain: Chain) -> dict:
    rrsets, _ = chain.drain()
    return {(owner, rrtype, zone): (datas, first, last, count)
            for (owner, rrtype, zone, datas), first, last, count in rrsets}


def test_a_resolution_from_the_root_gives_each_rrset_its_zone(hints):
    chain = chain_with(hints)
    for record in resolution("www.example.test", "example.test", "203.0.113.80", 1000):
        chain.feed(record)
    got = entries(chain)
    assert got[(wire("test."), 2, wire("."))][0] == (wire("ns1.nic.test."),)
    assert got[(wire("ns1.nic.test."), 1, wire("."))][0] == (bytes([198, 51, 100, 2]),)
    assert (wire("example.test."), 2, wire("test.")) in got  # the referral's NS: the parent's
    assert (wire("example.test."), 2, wire("example.test.")) in got  # the zone's own NS
    assert got[(wire("www.example.test."), 1, wire("example.test."))][0] == (bytes([203, 0, 113, 80]),)
    assert chain.counts["responses"] == 3
    assert chain.counts["rrsets"] == len(got) == 6


def test_repeats_are_one_entry_with_first_last_and_count(hints):
    chain = chain_with(hints)
    for when in (1000, 1300, 900):
        for record in resolution("www.example.test", "example.test", "203.0.113.80", when):
            chain.feed(record)
    got = entries(chain)
    assert got[(wire("www.example.test."), 1, wire("example.test."))][1:] == (900, 1300, 3)


def test_a_server_cannot_speak_for_a_zone_it_does_not_serve(hints):
    chain = chain_with(hints)
    for record in resolution("www.example.test", "example.test", "203.0.113.80", 1000):
        chain.feed(record)
    poison = message(
        "www.example.test",
        answer=[("www.example.test.", "A", ["203.0.113.80"]), ("www.victim.test.", "A", ["192.0.2.66"])],
        authority=[("test.", "NS", ["ns.evil.example.test."])],
        additional=[("ns1.nic.test.", "A", ["192.0.2.66"])],
    )
    chain.feed(response_record(ZONE, poison, 1001))
    got = entries(chain)
    assert chain.counts["out_of_bailiwick"] == 3
    assert not any(owner in (wire("www.victim.test."),) for owner, _, _ in got)
    assert (wire("test."), 2, wire("example.test.")) not in got
    assert got[(wire("ns1.nic.test."), 1, wire("."))][0] == (bytes([198, 51, 100, 2]),)


def test_an_unknown_server_is_dropped_and_counted(hints):
    chain = chain_with(hints)
    chain.feed(response_record(STRANGER, message("www.example.test", answer=[("www.example.test.", "A",
                                                                               ["192.0.2.66"])]), 1000))
    assert chain.counts["unknown_server"] == 1
    assert entries(chain) == {}


def test_what_is_learned_from_a_message_counts_from_the_next_one(hints):
    chain = chain_with(hints)
    for record in resolution("www.example.test", "example.test", "203.0.113.80", 1000):
        chain.feed(record)
    # the zone's server delegates sub.example.test to itself and answers for a name there
    delegating = message(
        "www.sub.example.test", answer=[("www.sub.example.test.", "A", ["203.0.113.90"])],
        authority=[("sub.example.test.", "NS", ["ns.sub.example.test."])],
        additional=[("ns.sub.example.test.", "A", [ZONE])])
    chain.feed(response_record(ZONE, delegating, 1001))
    chain.feed(response_record(ZONE, delegating, 1002))
    got = entries(chain)
    www = wire("www.sub.example.test.")
    assert got[(www, 1, wire("example.test."))][1:] == (1001, 1001, 1)  # judged before the lesson
    assert got[(www, 1, wire("sub.example.test."))][1:] == (1002, 1002, 1)


@pytest.mark.parametrize("change, reason", [
    ({"checksum": UdpChecksum.INCORRECT}, "checksum_incorrect"),
    ({"kind": RecordType.UDP_UNANSWERED_QUERY}, "record_type_2"),
    ({"kind": RecordType.UDP_UNSOLICITED_RESPONSE}, "record_type_3"),
])
def test_records_that_do_not_feed_the_database(hints, change, reason):
    chain = chain_with(hints)
    root_referral = message("x.test", authority=[("test.", "NS", ["ns1.nic.test."])],
                            additional=[("ns1.nic.test.", "A", [TLD])])
    chain.feed(response_record("198.51.100.1", root_referral, 1000, **change))
    assert chain.counts[reason] == 1
    assert entries(chain) == {}


def test_truncated_and_undecodable_responses_are_counted(hints):
    chain = chain_with(hints)
    truncated = message("x.test", authority=[("test.", "NS", ["ns1.nic.test."])])
    truncated.flags |= dns.flags.TC
    chain.feed(response_record("198.51.100.1", truncated, 1000))
    record = response_record("198.51.100.1", message("x.test"), 1000)
    record[Field.RESPONSE_PACKET] = [record[Field.RESPONSE_PACKET][0][:-3]]  # the question cut short
    chain.feed(record)
    assert chain.counts["truncated"] == 1
    assert chain.counts["undecodable"] + chain.counts["no_message"] == 1
    assert entries(chain) == {}


def test_the_embedded_store_merges_batches_and_answers_lookups(tmp_path, hints):
    store = SqliteStore(str(tmp_path / "pdns.sqlite"))
    roothints.seed(store.directory, hints)
    chain = Chain(store.directory)
    for when in (1000, 2000):
        for record in resolution("www.example.test", "example.test", "203.0.113.80", when):
            chain.feed(record)
        for record in resolution("mail.example.test", "example.test", "203.0.113.25", when + 5):
            chain.feed(record)
        store.merge(*chain.drain())
        store.commit([("sensor-a", f"file-{when}", 1, "")])
    www = list(store.rrsets(wire("www.example.test.")))
    assert [(e.rrtype, e.bailiwick, e.rdata, e.time_first, e.time_last, e.count) for e in www] == [
        (1, wire("example.test."), (bytes([203, 0, 113, 80]),), 1000, 2000, 2)]
    under = list(store.rrsets(wire("example.test."), under=True))
    assert {names.text_of_key(names.key(e.rrname)) for e in under} == {
        "example.test.", "www.example.test.", "mail.example.test.", "ns1.example.test."}
    assert [e.rrname for e in store.rdata_ip(ipaddress.ip_network("203.0.113.0/24"))] == [
        wire("mail.example.test."), wire("www.example.test.")]
    assert [e.rrname for e in store.rdata_name(wire("ns1.example.test."))] == [wire("example.test.")] * 1
    assert list(store.rrsets(wire("www.example.test."), fences=Fences(first_after=1500))) == []
    assert len(list(store.rrsets(wire("example.test."), under=True, limit=2))) == 2
    assert store.outcome("sensor-a", "file-1000") == "" and store.outcome("sensor-a", "file-3000") is None
    store.close()


def test_a_rolled_back_batch_leaves_nothing_learned(tmp_path, hints):
    store = SqliteStore(str(tmp_path / "pdns.sqlite"))
    roothints.seed(store.directory, hints)
    store.commit([])
    chain = Chain(store.directory)
    for record in resolution("www.example.test", "example.test", "203.0.113.80", 1000):
        chain.feed(record)
    assert store.directory.zones_of(bytes([198, 51, 100, 3]))
    store.rollback()
    assert store.directory.zones_of(bytes([198, 51, 100, 3])) == frozenset()
    assert store.directory.zones_of(bytes([198, 51, 100, 1])) == frozenset({b"\x00"})
    store.close()
