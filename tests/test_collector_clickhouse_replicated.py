"""The ClickHouse store replicated, on real parts: a ZooKeeper from Debian's
package and two clickhouse-server processes on loopback, configured as the
cluster `pdns_replicated` (one shard, two replicas, macros per server) and
as `pdns_test` (two shards). `init-store` creates the schema ON CLUSTER with
the Replicated engine; what is ingested through one replica is on the
other, answers as the embedded store does, and a batch replayed after a
crash to the replica that has not got it yet is not doubled."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from collector import incoming
from collector.chain import Chain
from collector.clickhouse import journal, schema
from collector.clickhouse.store import ClickHouseStore, StoreUnavailable
from collector.ingest import Ingester
from collector.sqlite_store import SqliteStore
from tests import apikit, clickhouse, zookeeper
from tests.polling import wait_for
from tests.sshd import free_port
from tests.test_collector_clickhouse import (
    assert_same_answers,
    by_kind,
    cluster_entries,
    collector_config,
    entries,
    ingest_all,
    merged_entries_sql,
    seeded,
    template,
)

pytestmark = pytest.mark.skipif(bool(clickhouse.available() or zookeeper.available()),
                                reason=clickhouse.available() or zookeeper.available() or "")

REPLICATED = "pdns_replicated"
_REPLICATION = """<?xml version="1.0"?>
<yandex>
  {zookeeper}
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
  <macros><shard>01</shard><replica>{replica}</replica></macros>
  <interserver_http_host>127.0.0.1</interserver_http_host><interserver_http_port>{fetch_port}</interserver_http_port>
  <remote_servers><{cluster}><shard><internal_replication>true</internal_replication>{replicas}</shard></{cluster}>
  </remote_servers>
</yandex>
"""
_REPLICA = "<replica><host>127.0.0.1</host><port>{port}</port></replica>"


class Replicas:
    """ZooKeeper and two servers: replicas of one shard in `pdns_replicated`, two shards in `pdns_test`
    (tests.clickhouse writes that cluster; the replication comes in its config.d, merged by the server)."""

    def __init__(self, folder: str) -> None:
        self.zookeeper = zookeeper.ZooKeeper(os.path.join(folder, "zookeeper"))
        self.ports = [free_port(), free_port()]
        self.servers = [clickhouse.Server(os.path.join(folder, f"replica{n}"), port, self.ports)
                        for n, port in enumerate(self.ports, 1)]
        replicas = "".join(_REPLICA.format(port=port) for port in self.ports)
        for number, server in enumerate(self.servers, 1):
            os.makedirs(os.path.join(server.folder, "config.d"), exist_ok=True)
            with open(os.path.join(server.folder, "config.d", "replication.xml"), "w") as handle:
                handle.write(_REPLICATION.format(zookeeper=self.zookeeper.xml(), replica=f"r{number}",
                                                 fetch_port=free_port(), cluster=REPLICATED, replicas=replicas))
        try:
            for server in self.servers:
                server.start()
        except BaseException:
            self.close()
            raise

    def url(self, database: str, hosts: list[int] | None = None) -> str:
        """The `store` setting: the replicated cluster, its ZooKeeper path holding the shard macro."""
        named = ",".join(f"127.0.0.1:{port}" for port in hosts or self.ports)
        return (f"clickhouse://{named}/{database}?cluster={REPLICATED}"
                f"&replication=/clickhouse/tables/{{shard}}/{database}")

    def client(self, number: int):
        from clickhouse_driver import Client

        return Client("127.0.0.1", port=self.ports[number], settings={"strings_as_bytes": True},
                      send_receive_timeout=120)

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.zookeeper.stop()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    made = Replicas(str(tmp_path_factory.mktemp("replicas")))
    yield made
    made.close()


def init_store(folder: str, root: str, url: str) -> str:
    """`sie-dns-collector init-store` as an operator runs it: the statements it printed."""
    config = collector_config(folder, root, url)
    made = subprocess.run([sys.executable, "-m", "collector", "init-store", "-c", config], env=apikit.env(),
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    return made.stdout


def replica_entries(replicas: Replicas, number: int, database: str) -> dict[str, list[tuple]]:
    """One replica's own entries and index rows, merged, once it has every part the shard has."""
    client = replicas.client(number)
    try:
        client.execute(f"SYSTEM SYNC REPLICA {database}.{schema.LOCAL}")
        return by_kind(client.execute(merged_entries_sql(f"{database}.{schema.LOCAL}")))
    finally:
        client.disconnect()


def reference_of(folder: str, files: str, name: str) -> SqliteStore:
    root = os.path.join(folder, name)
    shutil.copytree(files, root)
    reference = seeded(SqliteStore(os.path.join(root, "pdns.sqlite")), root)
    ingest_all(root, reference)
    return reference


def test_init_store_on_cluster_makes_replicas_that_hold_and_answer_the_same(replicas, tmp_path):
    database = "pdns_repl"
    printed = init_store(str(tmp_path), str(tmp_path / "cluster"), replicas.url(database))
    assert f" ON CLUSTER {REPLICATED}" in printed and "ReplicatedAggregatingMergeTree(" in printed
    for number in (0, 1):  # ON CLUSTER made the tables on both servers, each its own replica
        client = replicas.client(number)
        engines = dict(client.execute(f"SELECT name, engine FROM system.tables WHERE database = '{database}'"))
        replica = client.execute(f"SELECT replica_name FROM system.replicas WHERE database = '{database}'")
        client.disconnect()
        assert engines[schema.LOCAL.encode()] == b"ReplicatedAggregatingMergeTree", engines
        assert engines[schema.DISTRIBUTED.encode()] == b"Distributed"
        assert replica == [(f"r{number + 1}".encode(),)]

    files = template(str(tmp_path))
    reference = reference_of(str(tmp_path), files, "embedded")
    root = str(tmp_path / "cluster")
    shutil.copytree(files, root)
    os.makedirs(tmp_path / "own")
    store = seeded(ClickHouseStore(replicas.url(database, hosts=[replicas.ports[0]]), str(tmp_path / "own")), root)
    assert [shard.replicas for shard in store.shards] == [[("127.0.0.1", port) for port in replicas.ports]]
    ingest_all(root, store)  # the writer is replica 1, the first of the shard's
    store.close()
    for number in (1, 0):
        assert replica_entries(replicas, number, database) == entries(reference), f"replica {number + 1}"
    assert cluster_entries(replicas.url(database)) == entries(reference)
    # replica 2 alone, read as a one-server store: every lookup as the embedded store answers it
    alone = ClickHouseStore(f"clickhouse://127.0.0.1:{replicas.ports[1]}/{database}", "/nonexistent", ingest=False)
    assert assert_same_answers(reference, alone) > 1000
    alone.close()
    # expire, a replicated mutation: gone from both replicas, and the forward names with the entries
    store = ClickHouseStore(replicas.url(database), str(tmp_path / "own"))
    assert store.expire(4_000_000_000) == reference.expire(4_000_000_000)
    store.close()
    reference.close()
    for number in (0, 1):  # the writer waited for its replica; the other applies the mutation in its time
        client = replicas.client(number)
        left = f"SELECT count() FROM {database}.{schema.LOCAL} WHERE kind IN ('rrset', 'rdata', 'name')"
        wait_for(lambda: client.execute(left) == [(0,)], 120, f"expiry on replica {number + 1}")  # noqa: B023
        client.disconnect()


class Crash(BaseException):
    """The ingester's process dying after the shard took the batch, before the journal went."""


def crash_after_the_insert(root: str, store: ClickHouseStore, monkeypatch) -> bytes:
    """Ingest every file of `root` in one batch and die once the shard has it: the journal it leaves."""
    def die(path: str) -> None:
        raise Crash(path)

    monkeypatch.setattr(journal, "remove", die)
    ingester = Ingester(root, store, Chain(store.directory), window=3600)
    with pytest.raises(Crash):
        while ingester.step():
            pass
        ingester.commit()
    monkeypatch.undo()
    store.close()
    with open(store.journal_path, "rb") as handle:
        return handle.read()


def test_a_batch_replayed_after_a_crash_is_in_once_on_both_replicas(replicas, tmp_path, monkeypatch):
    database = "pdns_replay"
    url = replicas.url(database)
    init_store(str(tmp_path), str(tmp_path / "cluster"), url)
    files = template(str(tmp_path), files=2, seed=9)
    reference = reference_of(str(tmp_path), files, "embedded")
    root, own = str(tmp_path / "cluster"), str(tmp_path / "own")
    shutil.copytree(files, root)
    os.makedirs(own)
    first = replicas.servers[0]
    lagging = replicas.client(1)
    try:
        lagging.execute(f"SYSTEM STOP FETCHES {database}.{schema.LOCAL}")  # replica 2 takes nothing from 1
        kept = crash_after_the_insert(root, seeded(ClickHouseStore(url, own), root), monkeypatch)
        first.stop()  # the replica that has the batch goes away too
        with pytest.raises(StoreUnavailable, match=r"r2 .*behind"):  # 2 may not answer for the batch
            ClickHouseStore(url, own)
        assert os.path.exists(os.path.join(own, journal.NAME))
        first.start()
        again = ClickHouseStore(url, own)  # replica 1 answers: it has the batch's marker, nothing is sent
        resumed = Ingester(root, again, Chain(again.directory), window=3600)
        resumed.recover()
        assert resumed.totals.records == 0 and not incoming.claimed(root) and not incoming.waiting(root)
        again.close()
        lagging.execute(f"SYSTEM START FETCHES {database}.{schema.LOCAL}")
        assert replica_entries(replicas, 1, database) == entries(reference)

        first.stop()  # the same batch replayed once more, now to replica 2 alone: in once all the same
        with open(os.path.join(own, journal.NAME), "wb") as handle:
            handle.write(kept)
        ClickHouseStore(url, own).close()
        assert not os.path.exists(os.path.join(own, journal.NAME))
    finally:
        lagging.disconnect()
        if first.process is None:
            first.start()
    for number in (0, 1):
        assert replica_entries(replicas, number, database) == entries(reference), f"replica {number + 1}"
    reference.close()


def test_init_store_on_cluster_over_two_shards(replicas, tmp_path):
    """The same ZooKeeper, the cluster of two shards: ON CLUSTER, plain engines, the Distributed table."""
    database = "pdns_sharded"
    url = f"clickhouse://127.0.0.1:{replicas.ports[0]}/{database}?cluster={clickhouse.CLUSTER}"
    printed = init_store(str(tmp_path), str(tmp_path / "cluster"), url)
    assert f" ON CLUSTER {clickhouse.CLUSTER}" in printed and "Replicated" not in printed
    files = template(str(tmp_path), files=2, seed=3)
    reference = reference_of(str(tmp_path), files, "embedded")
    root = str(tmp_path / "cluster")
    shutil.copytree(files, root)
    os.makedirs(tmp_path / "own")
    store = seeded(ClickHouseStore(url, str(tmp_path / "own")), root)
    assert len(store.shards) == 2
    ingest_all(root, store)
    store.close()
    assert cluster_entries(url) == entries(reference)
    reference.close()
