"""The ingester on real spool files in real folders: claiming, batches,
damaged files, duplicates, and exactly once across a crash."""

from __future__ import annotations

import os
import shutil

import pytest

from collector import incoming, roothints
from collector.chain import Chain
from collector.ingest import Ingester
from collector.sqlite_store import SqliteStore
from tests.collectorkit import ROOT_HINTS, resolution, upload


@pytest.fixture
def root(tmp_path):
    incoming.make_folders(str(tmp_path))
    return str(tmp_path)


def open_ingester(root: str, **options) -> Ingester:
    hints = os.path.join(root, "root.hints")
    with open(hints, "w") as handle:
        handle.write(ROOT_HINTS)
    store = SqliteStore(os.path.join(root, "pdns.sqlite"))
    roothints.seed(store.directory, roothints.read(hints))
    store.commit([])
    return Ingester(root, store, Chain(store.directory), **options)


def dump(store: SqliteStore) -> list:
    return store.db.execute("SELECT * FROM rrset ORDER BY 1, 2, 3, 4").fetchall() + \
        store.db.execute("SELECT * FROM rdata ORDER BY 1, 2, 3, 4").fetchall()


def test_files_are_claimed_ingested_and_removed(root):
    upload(root, "sensor-a", "h.1000.000000.nmsg", resolution("www.example.test", "example.test", "203.0.113.80", 1000))
    upload(root, "sensor-a", ".h.1001.000000.nmsg.XyZ12", resolution("a.example.test", "example.test", "1.2.3.4", 1001))
    ingester = open_ingester(root)
    assert ingester.step() == 1
    assert [e.count for e in ingester.store.rrsets(b"\x03www\x07example\x04test\x00")] == [1]
    assert incoming.waiting(root) == []
    assert os.listdir(os.path.join(root, "incoming", "sensor-a", "up", "ch202")) == [".h.1001.000000.nmsg.XyZ12"]
    assert ingester.store.outcome("sensor-a", "ch202/h.1000.000000.nmsg") == ""
    assert not os.listdir(os.path.join(root, "work", "sensor-a", "ch202"))


def test_a_file_sent_again_is_not_counted_again(root):
    records = resolution("www.example.test", "example.test", "203.0.113.80", 1000)
    ingester = open_ingester(root)
    upload(root, "sensor-a", "h.1000.000000.nmsg", records)
    ingester.step()
    upload(root, "sensor-a", "h.1000.000000.nmsg", records)
    ingester.step()
    assert [e.count for e in ingester.store.rrsets(b"\x03www\x07example\x04test\x00")] == [1]
    assert ingester.totals.duplicates == 1


def test_a_damaged_file_gives_what_decodes_and_is_set_aside(root):
    path = upload(root, "sensor-a", "h.1000.000000.nmsg", resolution("www.example.test", "example.test",
                                                                      "203.0.113.80", 1000))
    with open(path, "ab") as handle:
        handle.write(b"NMSG\x00\x02" + b"\xff" * 40)
    ingester = open_ingester(root)
    ingester.step()
    assert [e.count for e in ingester.store.rrsets(b"\x03www\x07example\x04test\x00")] == [1]
    assert os.listdir(os.path.join(root, "damaged", "sensor-a", "ch202")) == ["h.1000.000000.nmsg"]
    assert ingester.store.outcome("sensor-a", "ch202/h.1000.000000.nmsg")


def test_a_crash_before_the_commit_loses_nothing_and_counts_nothing_twice(root):
    for n in range(6):
        upload(root, "sensor-a", f"h.{1000 + n}.000000.nmsg",
               resolution(f"w{n % 3}.example.test", "example.test", "203.0.113.80", 1000 + n))
    clean_root = root + "-clean"  # the clean run, on a copy
    shutil.copytree(root, clean_root)
    clean = open_ingester(clean_root)
    clean.step()
    expected = dump(clean.store)

    crashed = open_ingester(root, window=3600)  # one batch: nothing commits until the end
    for sensor, channel, name, size in incoming.waiting(root)[:4]:
        crashed.ingest(incoming.claim(root, sensor, channel, name, size))
    crashed.store.db.close()  # the process dies: the open transaction is gone
    again = open_ingester(root)
    again.recover()
    again.step()
    assert dump(again.store) == expected
    assert incoming.waiting(root) == [] and incoming.claimed(root) == []
