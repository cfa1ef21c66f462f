"""A burst of distinct never-answered queries: the table stays bounded."""

from __future__ import annotations

from bench.flood import flood_frames, replay_capped, write_flood
from sensor.matching.matcher import Matcher, Settings
from sensor.records.record import RecordType


def test_flood_keeps_the_table_at_its_maximum_and_evicts_as_unanswered(tmp_path):
    pcap = str(tmp_path / "flood.pcap")
    write_flood(pcap, 150_000)
    cap_kbytes = 256 * 1024
    counters, rss_mb, _ = replay_capped(pcap, str(tmp_path / "spool"), table_max=20_000, cap_kbytes=cap_kbytes)
    assert counters["packets"] == 150_000
    assert counters["records"] == 150_000  # every query leaves, as unanswered
    assert counters["query_evicted"] == 130_000  # all but the last table-full
    assert rss_mb < cap_kbytes / 1024 / 2  # well under the cap; the process was not stopped by it


def test_table_never_exceeds_its_maximum_in_the_matcher():

    matcher = Matcher(Settings(table_max=1000))
    emitted = 0
    for ts, frame in flood_frames(20_000):
        out = matcher.feed(frame[14:], int(ts), 0)
        assert len(matcher.table) <= 1000
        emitted += len(out)
        assert all(r[1] == RecordType.UDP_UNANSWERED_QUERY for r in out)
    assert emitted == 19_000 and len(matcher.table) == 1000
