"""The collector benchmark's traffic passes every stage of ingest.

A few thousand exchanges of bench/resolutions.py's resolver, written by
the real sensor (`run --pcap`, NMSG) and ingested by the real Ingester
into a SqliteStore seeded from the universe's root hints: no response
may come from a server the bailiwick stage cannot know (each was named by
a referral that reached the collector before it), and the answers land
with their zone as bailiwick.
"""

from __future__ import annotations

import os

import pytest

from bench import collector_bench, resolutions
from collector import incoming, names
from collector.sqlite_store import SqliteStore
from collector.store import unpack_rdata

EXCHANGES = 3000
ANSWER_TYPES = (resolutions.A, resolutions.AAAA, resolutions.MX, resolutions.TXT, resolutions.CNAME)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """(the generator's summary, the ingester's figures, the store's path)."""
    work = tmp_path_factory.mktemp("resolutions")
    pcap, hints = str(work / "r.pcap"), str(work / "r.hints")
    summary = resolutions.write(pcap, hints, EXCHANGES, seed=5, zones=300)
    spool = work / "spool"
    spool.mkdir()
    written, _ = collector_bench.run_sensor(pcap, 1, str(spool))
    root = str(work / "collector")
    incoming.make_folders(root)
    up = os.path.join(root, incoming.INCOMING, "sensor-a", incoming.UP, collector_bench.CHANNEL)
    os.makedirs(up)
    files = sorted(os.listdir(written))
    assert len(files) > 2  # several files: knowledge must carry from one to the next
    for name in files:
        os.rename(os.path.join(written, name), os.path.join(up, name))
    figures = collector_bench.ingest_all("sqlite", root, hints)
    return summary, figures, os.path.join(root, "pdns.sqlite")


def test_the_capture_is_what_was_asked_for(ingested):
    summary, _, _ = ingested
    kinds = summary["kinds"]
    assert summary["responses"] == EXCHANGES
    assert kinds["priming"] >= 1 and kinds["root_referral"] >= 10 and kinds["tld_referral"] > 100
    assert kinds["answer"] > 500 and kinds["nxdomain"] > 0 and kinds["nodata"] > 0 and kinds["cname_out"] > 0
    assert kinds["server_address_lookups"] > 0 and kinds["cache_hits"] > 0


def test_every_response_passes_the_bailiwick_stage(ingested):
    _, figures, _ = ingested
    counts = figures["counts"]
    assert counts["responses"] == EXCHANGES
    assert counts.get("unknown_server", 0) == 0
    assert counts.get("out_of_bailiwick", 0) == 0
    assert figures["damaged"] == figures["errors"] == 0


def test_answers_are_stored_with_their_zone_as_bailiwick(ingested):
    _, _, path = ingested
    store = SqliteStore(path)
    try:
        rows = store.db.execute("SELECT name, type, bailiwick, data FROM rrset").fetchall()
    finally:
        store.close()
    # a server's addresses are also stored as the parent's glue, under the parent's bailiwick
    servers = {names.key(server) for _, kind, _, data in rows if kind == resolutions.NS
               for server in unpack_rdata(data)}
    answers = [(key, zone) for key, kind, zone, _ in rows if kind in ANSWER_TYPES and key not in servers]
    assert len(answers) > 500
    for key, zone in answers:  # every zone that answers (ordinary, provider, CDN) is <label>.<tld>.
        tld_end = 1 + key[0]
        assert zone == names.wire_of_key(key[: tld_end + 1 + key[tld_end]]), names.text_of_key(key)
    referred = {zone for _, kind, zone, _ in rows if kind == resolutions.NS}
    assert b"\x00" in referred  # the root's NS set and the TLDs' delegations, from the root
    assert any(len(names.labels(zone)) == 1 for zone in referred)  # the zones' delegations, from their TLD
