"""The ClickHouse store on real servers: two clickhouse-server processes from
Debian's package on loopback as two shards of a cluster, a Distributed
table over them. The same spool files answer every lookup as the embedded
store does; a batch is in the store once however the ingester dies or a
shard goes away; `init-store`, `ingest` and `status` on the command line;
and the same SQL on a current ClickHouse (chdb, in-process)."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from bench.ingest_soak import make_uploads
from collector import bailiwick, incoming, names, roothints
from collector.chain import Chain
from collector.clickhouse import journal, location, schema
from collector.clickhouse import store as clickhouse_store
from collector.clickhouse.store import REFRESH, ClickHouseStore, StoreUnavailable, init
from collector.ingest import Ingester
from collector.sqlite_store import SqliteStore
from collector.store import Fences
from tests import apikit, clickhouse
from tests.collectorkit import collector_config, hints_file, resolution, upload
from tests.polling import wait_for

pytestmark = pytest.mark.skipif(clickhouse.available() is not None, reason=clickhouse.available() or "")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    servers = clickhouse.Cluster(str(tmp_path_factory.mktemp("clickhouse")))
    yield servers
    servers.close()


def seeded(store, folder: str):
    roothints.seed(store.directory, roothints.read(hints_file(folder)))
    store.commit([])
    return store


def template(folder: str, files: int = 4, seed: int = 7) -> str:
    """Spool files from two sensors (resolutions walking from the root, names repeating) and one
    of many record types: what every store here ingests."""
    root = os.path.join(folder, "template")
    make_uploads(root, files, seed, per_file=30)
    upload(root, "sensor-a", "host.1800000000.000099.nmsg", apikit.records())
    # www.aa.other before www.zz.test in written order, after it in reversed: the right-hand wildcard's order
    upload(root, "sensor-b", "host.1800000001.000100.nmsg",
           resolution("www.zz.test", "zz.test", "192.0.2.7", 1_700_000_500)
           + resolution("www.aa.other", "aa.other", "192.0.2.8", 1_700_000_600))
    return root


def ingest_all(root: str, store) -> None:
    ingester = Ingester(root, store, Chain(store.directory), window=3600)
    while ingester.step():
        pass


def ingest_both(folder: str, url: str, files: str) -> tuple[list[str], SqliteStore, ClickHouseStore]:
    """The same spool files ingested into the embedded store and into the ClickHouse store at `url`
    (made first): their collector folders, and both stores, open."""
    init(location.parse(url))
    roots = [os.path.join(folder, name) for name in ("embedded", "cluster")]
    for root in roots:
        shutil.copytree(files, root)
    os.makedirs(os.path.join(folder, "cluster-own"))
    reference = seeded(SqliteStore(os.path.join(roots[0], "pdns.sqlite")), roots[0])
    store = seeded(ClickHouseStore(url, os.path.join(folder, "cluster-own")), roots[1])
    for root, each in zip(roots, (reference, store), strict=True):
        ingest_all(root, each)
    return roots, reference, store


def entries(store: SqliteStore) -> dict[str, list[tuple]]:
    """The embedded store's entries and index rows, as comparable tuples."""
    return {"rrset": sorted(store.db.execute("SELECT * FROM rrset").fetchall()),
            "rdata": sorted(store.db.execute("SELECT * FROM rdata").fetchall())}


def merged_entries_sql(table: str) -> str:
    """The entries and index rows of `table`, merged as a lookup merges them, with their kind first."""
    return (f"SELECT kind, key, type, other, data, minMerge(time_first), maxMerge(time_last), sumMerge(count) "
            f"FROM {table} WHERE kind IN ('rrset', 'rdata') GROUP BY kind, key, type, other, data")


def by_kind(rows: list[tuple]) -> dict[str, list[tuple]]:
    """merged_entries_sql's rows: the entries and the index rows, each sorted."""
    return {kind: sorted(tuple(row[1:]) for row in rows if row[0] == kind) for kind in ("rrset", "rdata")}


def cluster_entries(url: str) -> dict[str, list[tuple]]:
    """The cluster's entries and index rows, merged, read through the Distributed table."""
    store = ClickHouseStore(url, "/nonexistent", ingest=False)
    try:
        return by_kind(store._rows(merged_entries_sql(store.read_table)))
    finally:
        store.close()


def merged_rows(cluster: clickhouse.Cluster, database: str, kinds: str) -> list[list[tuple]]:
    """Each shard's own rows of `kinds` (an SQL condition on kind), merged: kind, key, type,
    other, data, first, last, count."""
    from clickhouse_driver import Client

    shards = []
    for port in cluster.ports:
        client = Client("127.0.0.1", port=port, settings={"strings_as_bytes": True})
        shards.append(client.execute(f"SELECT kind, key, type, other, data, minMerge(time_first), "
                                     f"maxMerge(time_last), sumMerge(count) FROM {database}.{schema.LOCAL} "
                                     f"WHERE {kinds} GROUP BY kind, key, type, other, data"))
        client.disconnect()
    return shards


def shard_dump(cluster: clickhouse.Cluster, database: str) -> list[list[tuple]]:
    """Each shard's own rows, merged (batch markers left out, and the times of bookkeeping and
    forward-name rows: a name's row is sent again by a new process, or a REFRESH later, with the
    times of the batch it is in, so its times follow the batching, which follows the clock;
    `assert_names_within_their_entries` holds them to what they promise)."""
    return [sorted(row if row[0] in ("rrset", "rdata") else (*row[:5], row[7]) for row in rows)
            for rows in merged_rows(cluster, database, "kind != 'batch'")]


def assert_names_within_their_entries(cluster: clickhouse.Cluster, database: str) -> None:
    """Every forward name's times lie within those of the entries naming it (as owner, or as the
    target of an inverse-index row), its last time at most REFRESH behind theirs (what expire needs)."""
    spans: dict[bytes, list[int]] = {}
    named: dict[bytes, tuple[int, int]] = {}
    for rows in merged_rows(cluster, database, "kind IN ('rrset', 'rdata', 'name')"):
        for kind, key, rrtype, other, _, first, last, _ in rows:
            if kind == "name":
                named[other] = (first, last)
            elif kind == "rrset" or rrtype in clickhouse_store.NAME_TYPES:
                span = spans.setdefault(key, [first, last])
                span[0], span[1] = min(span[0], first), max(span[1], last)
    assert named and set(named) <= set(spans)
    for key, (first, last) in named.items():
        low, high = spans[key]
        assert low <= first <= last <= high and last >= high - REFRESH, (key, first, last, low, high)


# ---------------------------------------------------------------- lookups
def every_lookup(reference: SqliteStore) -> list[tuple[str, tuple, dict]]:
    """(method, args, options) for every name and address of the data, with fences and limits."""
    db = reference.db
    keys = {key for (key,) in db.execute("SELECT name FROM rrset")}
    keys |= {key for (key,) in db.execute("SELECT key FROM rdata WHERE type IN (2, 5, 12, 15)")}
    wires = set()
    for key in keys:
        wires.update(bailiwick.ancestors(names.wire_of_key(key)))
    times = sorted(t for (t,) in db.execute("SELECT first FROM rrset UNION SELECT last FROM rrset"))
    middle = times[len(times) // 2]
    calls: list[tuple[str, tuple, dict]] = []
    variants = [{"fences": Fences(first_after=middle)}, {"fences": Fences(last_before=middle)},
                {"fences": Fences(first_before=middle, last_after=middle)}, {"limit": 2, "offset": 1},
                {"limit": 1}]
    for number, wire in enumerate(sorted(wires)):
        varied = variants[number % len(variants)]  # every variant on a fifth of the names, each name plain
        for method in ("rrsets", "rdata_name"):
            for options in ({}, varied):
                calls.append((method, (wire,), options))
                calls.append((method, (wire,), {"under": True, **options}))
            if wire != b"\x00":
                calls.append((method, (wire,), {"starts": True, **varied}))
        calls.append(("rrsets", (wire,), {"rrtype": [2, 1], "bailiwick": wire}))
        if wire != b"\x00":  # its first label alone: `www.*`
            calls.append(("rrsets", (wire[: wire[0] + 1] + b"\x00",), {"starts": True, **varied}))
    for (address,) in db.execute("SELECT DISTINCT key FROM rdata WHERE type IN (1, 28)"):
        host = ipaddress.ip_address(address)
        calls.append(("rdata_ip", (ipaddress.ip_network(host),), {}))
        calls.append(("rdata_ip", (ipaddress.ip_network(f"{host}/{24 if host.version == 4 else 64}",
                                                        strict=False),), {"limit": 5, "offset": 2}))
        calls.append(("rdata_raw", (address,), {"fences": Fences(last_after=middle)}))
    for (datum,) in db.execute("SELECT DISTINCT data FROM rdata WHERE data != x''"):
        calls.append(("rdata_raw", (datum,), {}))
    calls.append(("rdata_ip_range", (bytes([198, 51, 100, 0]), bytes([203, 0, 113, 80])), {"limit": 7}))
    return calls


def assert_same_answers(reference, other) -> int:
    calls = every_lookup(reference)
    for number, (method, args, options) in enumerate(calls):
        expected = list(getattr(reference, method)(*args, **options))
        assert list(getattr(other, method)(*args, **options)) == expected, (method, args, options)
        if number % 5 == 0:  # summaries of a fifth of them (each costs a query)
            assert other.summarize(method, *args, **options) == reference.summarize(method, *args, **options)
            assert other.summarize(method, *args, max_count=3, **options) == \
                reference.summarize(method, *args, max_count=3, **options)
    return len(calls)


def test_the_cluster_answers_every_lookup_as_the_embedded_store(cluster, tmp_path):
    from clickhouse_driver import Client

    url = cluster.url("pdns_equal")
    roots, reference, store = ingest_both(str(tmp_path), url, template(str(tmp_path)))
    assert store.outcome("sensor-a", "ch202/host.1800000000.000099.nmsg") == ""
    assert cluster_entries(url) == entries(reference)
    rows_per_shard = [len([row for row in dump if row[0] == "rrset"]) for dump in shard_dump(cluster, "pdns_equal")]
    assert all(rows_per_shard) and sum(rows_per_shard) == len(entries(reference)["rrset"])  # each on one shard
    for number, port in enumerate(cluster.ports):  # the shard the Distributed table's sharding key names
        misplaced = Client("127.0.0.1", port=port).execute(
            f"SELECT count() FROM pdns_equal.{schema.LOCAL} WHERE kind IN ('rrset', 'rdata', 'name') "
            f"AND {schema.SHARDING} % 2 != {number}")
        assert misplaced == [(0,)]
    reader = ClickHouseStore(url, "/nonexistent", ingest=False)  # as the query server opens it
    assert assert_same_answers(reference, reader) > 1000
    released = []
    release = reader._release
    reader._release = lambda connection, broken: (released.append(broken), release(connection, broken))
    assert len(list(reader.rrsets(b"\x03www\x00", starts=True, limit=1, offset=1))) == 1  # `www.*`: many names
    assert released and not any(released)  # each answer read to its end (LIMIT), its connection kept, not closed
    reader.close()
    store.close()
    reference.close()
    answers = []
    for root, setting in zip(roots, (f"sqlite:{roots[0]}/pdns.sqlite", url), strict=True):
        config = collector_config(str(tmp_path), root, setting)
        for argv in (["rrset", "*.example.test", "--json", "--limit", "5", "--offset", "1"],
                     ["rdata", "203.0.113.0/24", "--json", "--last-after", "1500"],
                     ["rrset", "www.example.*", "--summarize"]):
            done = subprocess.run([sys.executable, "-m", "collector", "query", *argv, "-c", config],
                                  env=apikit.env(), capture_output=True, text=True)
            assert done.returncode == 0 and done.stdout, done.stderr
            answers.append(done.stdout)
    assert answers[:3] == answers[3:]  # `query` on the command line: the same text from either store


def test_the_sql_runs_on_a_current_clickhouse(tmp_path):
    chdb = pytest.importorskip("chdb", reason="chdb (a current ClickHouse in-process) is not installed")
    del chdb
    engine = clickhouse.Chdb(str(tmp_path / "chdb"))
    try:
        assert int(engine.version().split(".")[0]) >= 24
        at = location.parse("clickhouse://chdb:9000/pdns")
        init(at, connect=engine)
        files = template(str(tmp_path), files=2)
        roots = [str(tmp_path / name) for name in ("embedded", "chdb-root")]
        for root in roots:
            shutil.copytree(files, root)
        reference = seeded(SqliteStore(os.path.join(roots[0], "pdns.sqlite")), roots[0])
        store = seeded(ClickHouseStore(at, roots[1], connect=engine), roots[1])
        for root, each in zip(roots, (reference, store), strict=True):
            ingest_all(root, each)
        assert assert_same_answers(reference, store) > 500
        # as with replication= (the table here is not: no ZooKeeper): current releases refuse a mutation
        # with a subquery on a Replicated table without allow_nondeterministic_mutations
        store.location = dataclasses.replace(store.location, replication="/clickhouse/tables/{shard}/pdns")
        assert store._mutation_settings(engine) == " SETTINGS allow_nondeterministic_mutations = 1"
        assert store.expire(1_700_000_100) == reference.expire(1_700_000_100)
        assert list(store.rrsets(b"\x00", under=True)) == list(reference.rrsets(b"\x00", under=True))
        store.close()
        reference.close()
    finally:
        engine.cleanup()


def test_expire_takes_the_forward_names_with_their_entries(cluster, tmp_path):
    _, reference, store = ingest_both(str(tmp_path), cluster.url("pdns_expire"), template(str(tmp_path), files=2))
    lasts = sorted(last for (last,) in reference.db.execute("SELECT last FROM rrset"))
    middle = lasts[len(lasts) // 2]
    assert store.expire(middle) == reference.expire(middle)
    assert assert_same_answers(reference, store) > 100  # the names left find what is left, in order
    assert store.expire(4_000_000_000) == reference.expire(4_000_000_000)  # everything
    assert reference.db.execute("SELECT count(*) FROM name_forward").fetchone() == (0,)
    for dump in shard_dump(cluster, "pdns_expire"):
        assert [row for row in dump if row[0] in ("rrset", "rdata", "name")] == []
    store.close()
    reference.close()


def cluster_facts(store: ClickHouseStore) -> dict[tuple[str, bytes, bytes], int]:
    """The bailiwick facts in the cluster, merged: (kind, key, other) -> its last time."""
    rows = store._rows(f"SELECT kind, key, other, maxMerge(time_last) FROM {store.read_table} "
                       "WHERE kind IN ('ns', 'address') GROUP BY kind, key, other")
    return {(kind.decode() if isinstance(kind, bytes) else kind, key, other): int(last)
            for kind, key, other, last in rows}


def local_facts(store: ClickHouseStore) -> set[tuple[str, bytes, bytes]]:
    """The facts in the ingester's local knowledge file."""
    return ({("ns", zone, server) for server, zone in store.db.execute("SELECT server, zone FROM delegation")}
            | {("address", host, address) for host, address
               in store.db.execute("SELECT host, address FROM host_address")})


def test_expire_takes_the_facts_not_learned_again_and_the_local_file_follows(cluster, tmp_path):
    """A fact learned again in a later REFRESH period is sent again (its last time moves on), so
    expire takes only the facts no traffic taught since, never the root's servers; the local
    knowledge file then holds what the cluster holds."""
    url = cluster.url("pdns_facts")
    init(location.parse(url))
    clock = [1_900_000_000]
    own = tmp_path / "own"
    own.mkdir()
    store = seeded(ClickHouseStore(url, str(own), clock=lambda: clock[0]), str(tmp_path))
    first, later = tmp_path / "first", tmp_path / "later"
    make_uploads(str(first), 2, seed=1, per_file=30)
    make_uploads(str(later), 1, seed=2, per_file=10)
    for folder, _, files in os.walk(later):  # another file than the first one of `first`
        for name in files:
            os.rename(os.path.join(folder, name), os.path.join(folder, name.replace("000000", "000999")))
    ingest_all(str(first), store)
    before = cluster_facts(store)
    clock[0] += 2 * REFRESH
    store.commit([])  # the ingester commits every dedup_window: the period is over
    ingest_all(str(later), store)
    learned_again = {fact for fact, last in cluster_facts(store).items() if last == clock[0]}
    assert learned_again & set(before)  # facts already there were sent again, not only new ones
    roots = {fact for fact in before if fact[0] == "ns" and fact[1] == names.ROOT}
    roots |= {fact for fact in before if fact[0] == "address" and any(fact[1] == r[2] for r in roots)}
    assert roots and not roots & learned_again  # the hints' facts, sent once at the start
    local_before = local_facts(store)
    pending = journal.Batch("f" * 32, {shard.number: [("batch", b"f" * 32, 0, b"", b"", 1, 1, 1)]
                                       for shard in store.shards}, [])
    journal.write(store.journal_path, pending)  # a batch the ingester is writing: only it finishes it
    command = ClickHouseStore(url, str(own), ingest=False)  # as `sie-dns-collector expire` opens it
    command.expire(clock[0] - 1000 + REFRESH)
    command.close()
    assert journal.read(store.journal_path) == pending
    assert not store._rows(f"SELECT 1 FROM {store.read_table} WHERE kind = 'batch' AND key = '{'f' * 32}'")
    journal.remove(store.journal_path)
    after = set(cluster_facts(store))
    assert after == roots | learned_again
    assert after < set(before) | learned_again  # some went
    assert local_facts(store) == local_before  # the running ingester's file is its own
    store.expire(clock[0] - 1000 + REFRESH)  # its daily expire: nothing left to take, the file read again
    assert set(cluster_facts(store)) == after
    assert local_facts(store) == after
    servers = {server for kind, zone, server in after if kind == "ns"}
    for kind, host, address in after:  # and the cache answers as the file does
        if kind == "address" and host in servers:
            zones = {zone for _, zone, server in after if server == host}
            assert store.directory.zones_of(address) >= zones
    store.close()


def test_expire_stops_waiting_for_a_mutation_that_never_ends(cluster, tmp_path, monkeypatch, caplog):
    """The ingester expires daily: a shard's delete that never finishes (here one queued behind a
    mutation that fails for ever) is left to the server after MUTATION_WAIT, with one warning."""
    url = cluster.url("pdns_stuck")
    _, reference, store = ingest_both(str(tmp_path), url, template(str(tmp_path), files=1))
    local = f"pdns_stuck.{schema.LOCAL}"
    for shard in store.shards:
        store._writer(shard).rows(f"ALTER TABLE {local} DELETE WHERE throwIf(length(key) >= 0)")
    monkeypatch.setattr(clickhouse_store, "MUTATION_WAIT", 1)
    started = time.monotonic()
    assert store.expire(4_000_000_000) == reference.expire(4_000_000_000)
    assert time.monotonic() - started < 60
    assert "the expire is still running after 1 s; it goes on in the server" in caplog.text
    for shard in store.shards:  # 18.16 has no KILL MUTATION: the table goes with its mutations
        store._writer(shard).rows("DROP DATABASE pdns_stuck")
    store.close()
    reference.close()


API_PATHS = ("/dnsdb/v2/lookup/rrset/name/*.example.test?limit=5&offset=1",
             "/dnsdb/v2/lookup/rrset/name/www.example.%2A",
             "/dnsdb/v2/lookup/rrset/name/*.example.test?time_first_after=1500",
             "/dnsdb/v2/lookup/rdata/name/www.example.test", "/dnsdb/v2/lookup/rdata/ip/203.0.113.0%2C24",
             "/dnsdb/v2/summarize/rrset/name/*.test", "/dnsdb/v2/lookup/rrset/name/no-such.example.test")


def test_the_http_api_over_the_cluster_answers_as_over_the_embedded_store(cluster, tmp_path):
    url = cluster.url("pdns_api")
    roots, reference, store = ingest_both(str(tmp_path), url, template(str(tmp_path), files=2))
    store.close()
    reference.close()
    answers = {}
    for root, setting in zip(roots, (f"sqlite:{roots[0]}/pdns.sqlite", url), strict=True):
        config = collector_config(str(tmp_path), root, setting)
        key = apikit.add_key(config, "analyst")
        server = apikit.Server(config)  # `sie-dns-collector serve`, its own process
        try:
            answers[setting] = [server.get(path, {"X-API-Key": key})[::2] for path in API_PATHS]
        finally:
            server.stop()
    embedded, clustered = answers.values()
    assert [status for status, _ in embedded] == [200] * len(API_PATHS)
    assert all(body.count(b"\n") >= 3 for _, body in embedded[:-1])  # an object at least, but in the last
    assert clustered == embedded


# ---------------------------------------------------------- exactly once
def test_a_batch_half_in_when_a_shard_fails_is_finished_once(tmp_path):
    servers = clickhouse.Cluster(str(tmp_path / "servers"))
    try:
        url = servers.url("pdns_half")
        init(location.parse(url))
        files = template(str(tmp_path), files=2)
        for name in ("clean", "half"):
            shutil.copytree(files, str(tmp_path / name))
            os.makedirs(tmp_path / f"{name}-own")
        init(location.parse(servers.url("pdns_clean")))
        clean = seeded(ClickHouseStore(servers.url("pdns_clean"), str(tmp_path / "clean-own")), str(tmp_path))
        ingest_all(str(tmp_path / "clean"), clean)
        clean.close()

        store = seeded(ClickHouseStore(url, str(tmp_path / "half-own")), str(tmp_path))
        ingester = Ingester(str(tmp_path / "half"), store, Chain(store.directory), window=3600)
        for sensor, channel, name, size in incoming.waiting(str(tmp_path / "half")):
            ingester.ingest(incoming.claim(str(tmp_path / "half"), sensor, channel, name, size))
        servers.servers[1].stop()  # shard 2 goes away after the batch is read, before its commit
        with pytest.raises(StoreUnavailable, match="shard 2"):
            ingester.commit()
        ingester.abandon()
        assert os.path.exists(store.journal_path)
        store.close()  # the process dies here, its journal on disk, shard 1 holding the batch
        servers.servers[1].start()
        again = ClickHouseStore(url, str(tmp_path / "half-own"))  # finishes the journal at once
        assert not os.path.exists(again.journal_path)
        resumed = Ingester(str(tmp_path / "half"), again, Chain(again.directory))
        resumed.recover()  # every file is in: each is moved on, none read again
        assert resumed.totals.records == 0 and incoming.claimed(str(tmp_path / "half")) == []
        assert shard_dump(servers, "pdns_half") == shard_dump(servers, "pdns_clean")
        again.close()
    finally:
        servers.close()


def collector(*argv: str, **options) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "collector", *argv], env=apikit.env(), **options)


def test_an_ingester_killed_mid_batch_and_restarted_equals_a_clean_run(cluster, tmp_path):
    files = os.path.join(str(tmp_path), "uploads")
    make_uploads(files, 16, seed=11, per_file=150)
    runs = {}
    for name in ("clean", "killed"):
        root = str(tmp_path / name)
        shutil.copytree(files, root)
        config = collector_config(str(tmp_path), root, cluster.url(f"pdns_{name}"))
        made = subprocess.run([sys.executable, "-m", "collector", "init-store", "-c", config], env=apikit.env(),
                              capture_output=True, text=True)
        assert made.returncode == 0 and "ENGINE = Distributed(pdns_test" in made.stdout, made.stderr
        runs[name] = (root, config)
    started = time.monotonic()
    assert collector("ingest", "--once", "--user", "root", "-c", runs["clean"][1]).wait(300) == 0
    full = time.monotonic() - started
    rng = random.Random(4)
    for delay in sorted(rng.uniform(0.5, full) for _ in range(3)):
        process = collector("ingest", "--once", "--user", "root", "-c", runs["killed"][1],
                            stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert collector("ingest", "--once", "--user", "root", "-c", runs["killed"][1]).wait(300) == 0
    assert shard_dump(cluster, "pdns_killed") == shard_dump(cluster, "pdns_clean")
    for database in ("pdns_killed", "pdns_clean"):
        assert_names_within_their_entries(cluster, database)
    assert not [name for _, _, found in os.walk(os.path.join(runs["killed"][0], "work")) for name in found]


def status(config: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "collector", "status", "--json", "-c", config], env=apikit.env(),
                          capture_output=True, text=True)
    return json.loads(done.stdout)


def test_a_shard_down_ingest_backs_off_keeps_its_files_says_so_and_resumes(tmp_path):
    servers = clickhouse.Cluster(str(tmp_path / "servers"))
    ingester = None
    try:
        files = os.path.join(str(tmp_path), "uploads")
        make_uploads(files, 8, seed=5, per_file=60)
        root = str(tmp_path / "collector")
        incoming.make_folders(root)
        config = collector_config(str(tmp_path), root, servers.url("pdns_down"))
        assert subprocess.run([sys.executable, "-m", "collector", "init-store", "-c", config],
                              env=apikit.env(), capture_output=True).returncode == 0
        later = sorted(name for name in os.listdir(os.path.join(files, "incoming", "sensor-a", "up", "ch202")))[2:]
        staged = str(tmp_path / "staged")
        shutil.copytree(files, staged)
        for name in later:  # these arrive while shard 2 is down
            os.unlink(os.path.join(staged, "incoming", "sensor-a", "up", "ch202", name))
        shutil.copytree(os.path.join(staged, "incoming"), os.path.join(root, "incoming"), dirs_exist_ok=True)
        log_path = str(tmp_path / "ingest.log")
        with open(log_path, "w") as log:
            ingester = collector("ingest", "--user", "root", "-c", config, stderr=log)
        wait_for(lambda: status(config).get("backlog_files") == 0 and status(config)["ingested_files"], 60,
                 "first files ingested")
        servers.servers[1].stop()
        for name in later:
            shutil.copy(os.path.join(files, "incoming", "sensor-a", "up", "ch202", name),
                        os.path.join(root, "incoming", "sensor-a", "up", "ch202", name))
        said = wait_for(lambda: [p for p in status(config)["problems"] if "store has not answered" in p], 90,
                        "problem in status")
        assert "shard 2" in said[0] or "127.0.0.1" in said[0]
        kept = [n for _, _, found in os.walk(os.path.join(root, "incoming")) for n in found] + \
            [n for _, _, found in os.walk(os.path.join(root, "work")) for n in found]
        assert set(later) <= set(kept)  # nothing moved on while its batch is not in
        servers.servers[1].start()
        wait_for(lambda: (lambda s: s["backlog_files"] == 0 and not s["problems"])(status(config)), 150,
                 "resumed ingest")
        assert not [n for _, _, found in os.walk(os.path.join(root, "work")) for n in found]
        ingester.send_signal(signal.SIGTERM)
        assert ingester.wait(60) == 0
        with open(log_path) as log:
            said = log.read()
        assert "the store does not answer, files kept" in said and "Traceback" not in said
        ingester = None
        reference_root = str(tmp_path / "reference")
        shutil.copytree(files, reference_root)
        reference = seeded(SqliteStore(os.path.join(reference_root, "pdns.sqlite")), str(tmp_path))
        ingest_all(reference_root, reference)
        assert cluster_entries(servers.url("pdns_down")) == entries(reference)
        reference.close()
    finally:
        if ingester is not None:
            ingester.kill()
            ingester.wait()
        servers.close()


# ------------------------------------------------------------ the setting
@pytest.mark.parametrize("code", [242, 252, 319, 225, 999])
def test_a_shard_that_cannot_take_a_write_now_is_unavailable_not_fatal(code):
    """A read-only replica (its ZooKeeper session lost), too many parts, an insert of unknown
    outcome: the ingester died of them, and at each restart again on the journal's batch."""
    from clickhouse_driver import errors

    from collector.clickhouse.store import _translated

    with pytest.raises(StoreUnavailable, match=f"code {code}"), _translated("ch1:9000"):
        raise errors.ServerException("DB::Exception: the shard says no. Stack trace: ...", code=code)
    with pytest.raises(errors.ServerException), _translated("ch1:9000"):  # a refusal that will not pass: as it is
        raise errors.ServerException("DB::Exception: Syntax error", code=62)


def test_the_store_setting_names_hosts_database_cluster_and_replication():
    found = location.parse("clickhouse://ingest:s3cret@h1:9000,[2001:db8::1]:9001,h3/pdns?cluster=dns"
                           "&replication=/clickhouse/tables/{shard}/pdns")
    assert found.hosts == (("h1", 9000), ("2001:db8::1", 9001), ("h3", 9000))
    assert (found.database, found.cluster, found.user, found.password) == ("pdns", "dns", "ingest", "s3cret")
    assert "s3cret" not in found.text()
    for bad, why in (("clickhouse://h1:9000", "names no database"), ("clickhouse://h1:99999/pdns", "out of range"),
                     ("clickhouse://h1/pdns?shards=2", "unknown parameter"),
                     ("clickhouse://h1/pdns?replication=/x", "needs a cluster"),
                     ("clickhouse://h 1/pdns", "HOST:PORT")):
        with pytest.raises(ValueError, match=why):
            location.parse(bad)


@pytest.mark.parametrize("setting", [
    "clickhouse://user:se/cret?x@h1:9000/pdns",  # the ? cuts first: 'user:se' was shown as a host
    "clickhouse://user:pa?cluster=se-cret@h1/pdns",  # the rest of the password read as the cluster
    "clickhouse://user:pa?secret=1@h1/pdns",  # ... as a parameter's name
    "clickhouse://user:se:cret@h 1/pdns",
    "clickhouse://us/er:cret@h 1/pdns",  # not a user name: masked with the password
    "clickhouse:/default:cret@h1:9000/pdns",  # a scheme mistyped
    "clickhouse:default:se-cret@h1:9000/pdns",
])
def test_a_wrong_store_setting_shows_nothing_of_its_password(setting):
    with pytest.raises(ValueError) as refused:
        location.parse(setting)
    said = str(refused.value)
    assert "***" in said and not {"se", "cret", "secret", "se-cret"} & set(re.split(r"[^a-z-]+", said)), said


def test_a_store_setting_without_a_password_is_shown_whole_in_its_errors():
    for setting, piece in (("clickhouse://user@h 1/pdns", "'h 1'"), ("clickhouse://h1/pdns?shards=2", "'shards'")):
        with pytest.raises(ValueError, match=re.escape(f"'{setting}': ")) as refused:
            location.parse(setting)
        assert piece in str(refused.value)
    assert location.masked("clickhouse://ingest:s3cret@h1/pdns") == "clickhouse://ingest:***@h1/pdns"


def test_the_store_password_is_never_printed(cluster, tmp_path):
    secret = "s3cret-Pw"
    url = cluster.url("pdns_secret").replace("clickhouse://", f"clickhouse://default:{secret}@")
    root = str(tmp_path / "collector")
    incoming.make_folders(root)
    config = collector_config(str(tmp_path), root, url)
    said = {}
    for command in (["check-config"], ["init-store"], ["ingest", "--once", "--user", "root"], ["status"]):
        done = subprocess.run([sys.executable, "-m", "collector", *command, "-c", config], env=apikit.env(),
                              capture_output=True, text=True, timeout=120)
        said[command[0]] = done.stdout + done.stderr
    masked = f"clickhouse://default:***@127.0.0.1:{cluster.ports[0]},"
    assert f'store="{masked}' in said["check-config"]
    assert "Wrong password for user default. (code 193)" in said["init-store"]  # the server refused it
    assert f"into {masked}" in said["ingest"] and "the store does not answer" in said["ingest"]
    assert f"store: {masked}" in said["status"] and "store has not answered" in said["status"]
    wrong = collector_config(str(tmp_path), root, f"clickhouse://default:{secret}@127.0.0.1:1")  # no database
    done = subprocess.run([sys.executable, "-m", "collector", "check-config", "-c", wrong], env=apikit.env(),
                          capture_output=True, text=True, timeout=60)
    said["wrong"] = done.stdout + done.stderr
    assert done.returncode != 0 and "default:***@127.0.0.1:1': names no database" in said["wrong"]
    assert not [command for command, text in said.items() if secret in text]


def test_init_store_on_a_cluster_with_zookeeper_and_replicas():
    at = location.parse("clickhouse://h1/pdns?cluster=dns&replication=/clickhouse/tables/{shard}/pdns")
    made = schema.statements(at, on_cluster=True)
    assert all(" ON CLUSTER dns" in statement for statement in made)
    assert "ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/pdns/pdns_local', '{replica}')" in made[1]
    assert made[-1].endswith(f"ENGINE = Distributed(dns, pdns, pdns_local, {schema.SHARDING})")
