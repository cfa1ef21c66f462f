"""The ingester on real spool files in real folders: claiming, batches,
damaged files, duplicates, and exactly once across a crash."""

from __future__ import annotations

import ipaddress
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import click
import pytest

from collector import bailiwick, incoming, names, roothints
from collector.chain import Chain
from collector.ingest import Ingester
from collector.sqlite_store import KNOWLEDGE_TABLES, SqliteStore
from collector.store import unpack_rdata
from tests.collectorkit import STRANGER, ZONE, collector_config, hints_file, resolution, upload


@pytest.fixture
def root(tmp_path):
    incoming.make_folders(str(tmp_path))
    return str(tmp_path)


def open_ingester(root: str, busy_timeout: float = 5.0, **options) -> Ingester:
    store = SqliteStore(os.path.join(root, "pdns.sqlite"), busy_timeout=busy_timeout)
    roothints.seed(store.directory, roothints.read(hints_file(root)))
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


def knowledge_of(store: SqliteStore) -> set:
    """zone_server as the statement makes it from the entries the store holds, and the root hints."""
    memory = bailiwick.MemoryDirectory()
    roothints.seed(memory, roothints.read(os.path.join(os.path.dirname(store.path), "root.hints")))
    for name, rrtype, _, data in store.db.execute("SELECT name, type, bailiwick, data FROM rrset"):
        bailiwick.learn(memory, names.wire_of_key(name), rrtype, unpack_rdata(data))
    return {(address, zone) for address, zones in memory.zones.items() for zone in zones}


def test_expire_forgets_what_the_removed_entries_taught_and_keeps_the_root(root):
    upload(root, "sensor-a", "h.1000.000000.nmsg", resolution("www.old.test", "old.test", "203.0.113.80", 1000,
                                                              zone_server=STRANGER))
    upload(root, "sensor-a", "h.5000.000000.nmsg", resolution("www.new.test", "new.test", "203.0.113.81", 5000))
    ingester = open_ingester(root)
    ingester.step()
    store = ingester.store
    before = {table: store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in KNOWLEDGE_TABLES}
    assert set(store.db.execute("SELECT * FROM zone_server")) == knowledge_of(store)
    assert (STRANGER_PACKED, OLD_ZONE) in knowledge_of(store)

    store.expire(3000)
    after = {table: store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in KNOWLEDGE_TABLES}
    assert all(after[table] < before[table] for table in KNOWLEDGE_TABLES)
    assert set(store.db.execute("SELECT * FROM zone_server")) == knowledge_of(store)
    assert (STRANGER_PACKED, OLD_ZONE) not in knowledge_of(store)
    assert store.directory.zones_of(STRANGER_PACKED) == set()
    assert b"\x00" in store.directory.zones_of(ROOT_PACKED)
    assert store.directory.zones_of(ipaddress.ip_address(ZONE).packed) == {NEW_ZONE}

    # a response from the forgotten server is dropped until a referral names it again
    upload(root, "sensor-a", "h.6000.000000.nmsg", resolution("www.old.test", "old.test", "203.0.113.80", 6000,
                                                              zone_server=STRANGER)[2:])
    ingester.step()
    assert ingester.counts["unknown_server"] == 2  # the answer and the zone's NS beside it
    upload(root, "sensor-a", "h.6001.000000.nmsg", resolution("www.old.test", "old.test", "203.0.113.80", 6001,
                                                              zone_server=STRANGER))
    ingester.step()
    assert (STRANGER_PACKED, OLD_ZONE) in set(store.db.execute("SELECT * FROM zone_server"))
    store.close()


STRANGER_PACKED = ipaddress.ip_address(STRANGER).packed
ROOT_PACKED = ipaddress.ip_address("198.51.100.1").packed
OLD_ZONE, NEW_ZONE = b"\x03old\x04test\x00", b"\x03new\x04test\x00"


def collector_run(root: str, *argv: str, **settings: str) -> subprocess.CompletedProcess:
    """`sie-dns-collector ARGV` on a configuration of the collector at `root` (embedded store)."""
    config = collector_config(root, root, **settings)
    return subprocess.run([sys.executable, "-m", "collector", *argv, "-c", config], capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_ingester_expires_the_store_itself_when_retention_days_is_set(root):
    now = int(time.time())
    upload(root, "sensor-a", "h.1.000000.nmsg", resolution("www.old.test", "old.test", "203.0.113.80", now - 3 * 86400))
    first = collector_run(root, "ingest", "--once", "--user", "root", retention_days="2")
    assert first.returncode == 0, first.stderr
    upload(root, "sensor-a", "h.2.000000.nmsg", resolution("www.new.test", "new.test", "203.0.113.81", now))
    second = collector_run(root, "ingest", "--once", "--user", "root", retention_days="2")
    assert second.returncode == 0, second.stderr
    assert "expired 6 RRsets and 5 index rows last seen over 2 days ago" in second.stderr  # at its start
    store = SqliteStore(os.path.join(root, "pdns.sqlite"))
    assert [e.count for e in store.rrsets(b"\x03www\x03old\x04test\x00")] == []
    assert [e.count for e in store.rrsets(b"\x03www\x03new\x04test\x00")] == [1]
    store.close()


def test_expire_against_a_store_an_ingester_holds_says_so(root):
    upload(root, "sensor-a", "h.1.000000.nmsg", resolution("www.old.test", "old.test", "203.0.113.80", 1000))
    assert collector_run(root, "ingest", "--once", "--user", "root").returncode == 0
    holder = SqliteStore(os.path.join(root, "pdns.sqlite"))
    holder.db.execute("BEGIN IMMEDIATE")  # a batch under way, as the ingester's nearly always is
    try:
        done = collector_run(root, "expire", "--days", "1", dedup_window="1")
    finally:
        holder.db.execute("ROLLBACK")
        holder.close()
    assert done.returncode == 1
    assert "the store stayed busy for 12 s" in done.stderr and "Traceback" not in done.stderr


def test_the_ingesters_expiry_commits_the_batch_under_way_first(root):
    """expire commits what the store holds: the batch's aggregates must not go in without its ledger."""
    from collector import cli

    ingester = open_ingester(root, window=3600)
    upload(root, "sensor-a", "h.1000.000000.nmsg", resolution("www.example.test", "example.test", "203.0.113.80", 1000))
    for sensor, channel, name, size in incoming.waiting(root):
        ingester.ingest(incoming.claim(root, sensor, channel, name, size))
    assert ingester.batch and ingester.store.outcome("sensor-a", "ch202/h.1000.000000.nmsg") is None
    assert cli._expire_when_due(ingester, ingester.store, 1, 0.0) > time.monotonic()
    assert ingester.batch == [] and ingester.store.outcome("sensor-a", "ch202/h.1000.000000.nmsg") == ""
    ingester.store.close()


def staged_rows(when: int, owner: bytes) -> tuple[list, list]:
    from collector.dedup import inverse_index

    rrsets = [((owner, 1, b"\x04test\x00", (bytes([192, 0, 2, 1]),)), when, when, 1)]
    return rrsets, inverse_index(rrsets)


def test_a_batch_let_go_leaves_nothing_staged_and_a_full_stage_goes_in_before_the_commit(root, monkeypatch):
    from collector import sqlite_store

    store = SqliteStore(os.path.join(root, "pdns.sqlite"))
    store.merge(*staged_rows(1000, b"\x01a\x04test\x00"))
    store.rollback()  # the store refused the batch: its staged rows go with it
    store.merge(*staged_rows(1001, b"\x01b\x04test\x00"))
    assert store.db.execute("SELECT count(*) FROM rrset").fetchone()[0] == 0  # staged until the commit
    store.commit([])
    assert [name for (name,) in store.db.execute("SELECT name FROM rrset")] == [b"\x04test\x01b"]
    monkeypatch.setattr(sqlite_store, "_STAGED_MAX", 3)
    store.merge(*staged_rows(1002, b"\x01b\x04test\x00"))  # 2 rows staged
    assert store.db.execute("SELECT count FROM rrset").fetchall() == [(1,)]
    store.merge(*staged_rows(1003, b"\x01b\x04test\x00"))  # 4: in the tables, the batch still open
    assert store.db.execute("SELECT first, last, count FROM rrset").fetchall() == [(1001, 1003, 3)]
    assert store.in_batch and store.staged == 0
    store.commit([])
    assert store.db.execute("SELECT first, last, count FROM rdata").fetchall() == [(1001, 1003, 3)]
    store.close()


def test_an_expire_that_fails_is_logged_and_ingest_goes_on(root, monkeypatch, caplog):
    """A chore, not the ingester's work: whatever expire raises (but the store not answering, which
    the loop backs off from), it is said once and tried again a day later."""
    from collector import cli

    ingester = open_ingester(root)

    def refuse(before: int) -> tuple[int, int]:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(ingester.store, "expire", refuse)
    with caplog.at_level("ERROR", logger="collector"):
        due = cli._expire_when_due(ingester, ingester.store, 1, 0.0)
    assert due > time.monotonic() + 86000
    assert "expire failed, tried again in a day: disk I/O error" in caplog.text
    upload(root, "sensor-a", "h.1000.000000.nmsg", resolution("www.example.test", "example.test", "203.0.113.80", 1000))
    assert ingester.step() == 1
    ingester.store.close()


def test_a_store_busy_while_a_file_is_read_is_the_stores_problem_not_the_files(root):
    """Another process holding the write lock past the ingester's wait (an `expire`): the batch is
    let go and its files taken again once the store answers; never set aside as damaged, and what
    the bailiwick stage was learning is learned again."""
    from collector.store import STORE_PROBLEMS

    records = resolution("www.example.test", "example.test", "203.0.113.80", 1000)
    clean_root = root + "-clean"
    shutil.copytree(root, clean_root)
    upload(clean_root, "sensor-a", "h.1000.000000.nmsg", records)
    clean = open_ingester(clean_root)
    clean.step()
    upload(root, "sensor-a", "h.1000.000000.nmsg", records)
    ingester = open_ingester(root, busy_timeout=0.1)
    store = ingester.store
    holder = sqlite3.connect(os.path.join(root, "pdns.sqlite"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    (sensor, channel, name, size), = incoming.waiting(root)
    with pytest.raises(STORE_PROBLEMS):
        ingester.ingest(incoming.claim(root, sensor, channel, name, size))
    holder.execute("ROLLBACK")  # the lock is free before the commit: the file must not go in as damaged
    ingester.abandon()  # what the daemon's loop does with a store problem
    ingester.recover()
    assert store.outcome("sensor-a", "ch202/h.1000.000000.nmsg") == ""
    assert not os.path.exists(os.path.join(root, "damaged", "sensor-a"))
    assert dump(store) == dump(clean.store)
    assert knowledge_of(store) == knowledge_of(clean.store)
    holder.close()


def test_the_daemon_backs_off_from_a_busy_store_and_keeps_the_files(root):
    from collector import cli
    from sensor.service.daemonstate import StateFile

    upload(root, "sensor-a", "h.1000.000000.nmsg", resolution("www.example.test", "example.test", "203.0.113.80", 1000))
    ingester = open_ingester(root, busy_timeout=0.1)
    store = ingester.store
    holder = sqlite3.connect(os.path.join(root, "pdns.sqlite"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    state = StateFile(os.path.join(root, "state.json"))
    with pytest.raises(click.ClickException, match="database is locked"):  # --once gives up, and says why
        cli._ingest(ingester, store, state, [], once=True)
    holder.execute("ROLLBACK")
    assert [c.name for c in incoming.claimed(root)] == ["h.1000.000000.nmsg"]
    holder.close()
    store.close()


def test_a_file_sent_again_while_its_first_copy_waits_for_the_commit_is_taken_after_it(root):
    """Renamed over the first copy, the second took the first's only file with it when found a
    duplicate: a crash before the commit then lost the file."""
    records = resolution("www.example.test", "example.test", "203.0.113.80", 1000)
    ingester = open_ingester(root, window=3600)
    upload(root, "sensor-a", "h.1000.000000.nmsg", records)
    (sensor, channel, name, size), = incoming.waiting(root)
    ingester.ingest(incoming.claim(root, sensor, channel, name, size))
    upload(root, "sensor-a", "h.1000.000000.nmsg", records)  # the sensor's connection broke: sent again
    assert incoming.claim(root, sensor, channel, name, size) is None  # waits for the first copy's commit
    ingester.store.db.close()  # and the process dies before it
    again = open_ingester(root)
    again.recover()
    again.step()
    assert [e.count for e in again.store.rrsets(b"\x03www\x07example\x04test\x00")] == [1]
    assert again.store.outcome("sensor-a", "ch202/h.1000.000000.nmsg") == ""
    assert again.totals.duplicates == 1
    assert incoming.waiting(root) == [] and incoming.claimed(root) == []


def test_status_gives_rates_over_the_last_minute_and_survives_a_file_taken_meanwhile(root, monkeypatch):
    from collector import cli
    from collector import config as configuration
    from collector.ingest import Totals

    totals = Totals()
    assert totals.per_second(100.0) == (0.0, 0.0)
    totals.files, totals.records = 10, 5000
    assert totals.per_second(110.0) == (1.0, 500.0)
    totals.files, totals.records = 70, 35000
    assert totals.per_second(170.0) == (1.0, 500.0)  # 60 files in the last 60 s (the first sample gone)
    assert totals.per_second(230.0) == (0.0, 0.0)  # nothing in the last minute
    cfg = configuration.load(collector_config(root, root))
    monkeypatch.setattr(incoming, "waiting", lambda _root: [("sensor-a", "ch202", "taken.nmsg", 10)])
    found = cli._status(cfg)  # listed, then claimed by the ingester before its time was read
    assert found["backlog_files"] == 1 and found["backlog_oldest_seconds"] is None
    assert {"files_per_second", "records_per_second", "errors"} <= set(found)


def test_an_upload_that_cannot_be_moved_is_left_said_once_and_ingest_goes_on(root, monkeypatch, caplog):
    """A sensor's rsync -p can leave its folder read-only (rrsync lets --perms through): the
    rename fails, and before, the daemon died of it, every restart on the same file."""
    ingester = open_ingester(root)
    upload(root, "sensor-a", "h.1000.000000.nmsg", resolution("a.example.test", "example.test", "203.0.113.8", 1000))
    upload(root, "sensor-b", "h.1000.000000.nmsg", resolution("b.example.test", "example.test", "203.0.113.9", 1000))
    rename = os.rename

    def refuse(source, target):
        if f"{os.sep}sensor-a{os.sep}" in source:
            raise PermissionError(13, "Permission denied", source)
        rename(source, target)

    monkeypatch.setattr(incoming.os, "rename", refuse)
    with caplog.at_level("ERROR", logger="collector"):
        assert ingester.step(most=1) == 0  # sensor-a's file heads the list: it is set apart
        assert ingester.step(most=1) == 1  # and no longer takes the only place
        assert ingester.step(most=1) == 0
    assert caplog.text.count("sensor-a/ch202/h.1000.000000.nmsg: cannot take it (") == 1
    assert ingester.totals.errors == 1 and ingester.totals.files == 1
    assert [e.count for e in ingester.store.rrsets(b"\x01b\x07example\x04test\x00")] == [1]
    monkeypatch.setattr(incoming.os, "rename", rename)
    ingester.clock = lambda: time.monotonic() + 3600  # an hour later it is tried again
    assert ingester.step() == 1
    assert [e.count for e in ingester.store.rrsets(b"\x01a\x07example\x04test\x00")] == [1]


def test_a_folder_of_uploads_that_cannot_be_listed_is_said_and_ingest_goes_on(root, monkeypatch, caplog):
    """An SFTP login's folder without its set-group-ID bit cannot be listed by the ingester:
    its uploads were skipped without a word, for ever. Now it is an error, said once an hour
    while it lasts (and again if it comes back), and the other sensors' files go in."""
    upload(root, "sensor-a", "h.1000.000000.nmsg", resolution("a.example.test", "example.test", "203.0.113.8", 1000))
    upload(root, "sensor-b", "h.1000.000000.nmsg", resolution("b.example.test", "example.test", "203.0.113.9", 1000))
    hidden = os.path.join(root, incoming.INCOMING, "sensor-a", incoming.UP, "ch202")
    scandir = os.scandir
    refusing = [True]

    def refuse(path):
        if refusing[0] and os.fspath(path) == hidden:
            raise PermissionError(13, "Permission denied", path)
        return scandir(path)

    monkeypatch.setattr(incoming.os, "scandir", refuse)
    ingester = open_ingester(root)
    now = [0.0]
    ingester.clock = lambda: now[0]
    with caplog.at_level("ERROR", logger="collector"):
        assert ingester.step() == 1 and ingester.step() == 0
        now[0] += 3600
        assert ingester.step() == 0
    said = f"{hidden}: cannot list it (Permission denied): its uploads wait unseen"
    assert caplog.text.count(said) == 2 and ingester.totals.errors == 2
    from collector import cli

    assert cli._state(ingester, ingester.store)["unlisted"] == {hidden: "Permission denied"}  # status's problem
    refusing[0] = False
    assert ingester.step() == 1 and ingester.unlisted == {}
    assert [e.count for e in ingester.store.rrsets(b"\x01a\x07example\x04test\x00")] == [1]


def test_a_step_ends_after_its_seconds_with_the_batch_open_and_the_last_one_commits(root):
    """The daemon reports its state between steps: 64 large files in one step took minutes."""
    from collector.ingest import STEP_SECONDS

    for n in range(3):
        upload(root, "sensor-a", f"h.{1000 + n}.000000.nmsg",
               resolution(f"w{n}.example.test", "example.test", "203.0.113.80", 1000 + n))
    ingester = open_ingester(root, window=3600)
    now = [0.0]

    def clock() -> float:
        now[0] += STEP_SECONDS / 2
        return now[0]

    ingester.clock = clock
    assert ingester.step() == 1 and len(incoming.waiting(root)) == 2
    assert ingester.store.outcome("sensor-a", "ch202/h.1000.000000.nmsg") is None  # the batch still open
    assert ingester.step() == 1 and ingester.step() == 1  # the last file: nothing else waits, so it commits
    assert [ingester.store.outcome("sensor-a", f"ch202/h.{1000 + n}.000000.nmsg") for n in range(3)] == [""] * 3


def test_status_dates_an_upload_from_its_arrival_not_the_sensors_clock(root):
    """rsync --times keeps the sensor's modification time: after a sensor's outage every file it
    sent looked old at once, and status said uploads had waited for hours."""
    from collector import cli
    from collector import config as configuration

    path = upload(root, "sensor-a", "h.1000.000000.nmsg", resolution("www.example.test", "example.test",
                                                                      "203.0.113.80", 1000))
    os.utime(path, (time.time() - 7200, time.time() - 7200))  # written two hours ago, arrived now
    found = cli._status(configuration.load(collector_config(root, root)))
    assert found["backlog_files"] == 1 and found["backlog_oldest_seconds"] < 60
    assert not [problem for problem in found["problems"] if "oldest upload" in problem]
