"""The ClickHouse schema: one aggregating table, fed through a view, read whole.

Every row of the store is in one table, `pdns_local`, ordered by
(kind, key, type, other, data):

    kind     key               type    other             data
    rrset    owner name key    rrtype  bailiwick (wire)  the RRset's data, packed
    rdata    data key          rrtype  owner name key    the datum ('' when it is the key: A, AAAA)
    name     forward name key  0       name key          ''   (right-hand wildcards; times: its entries')
    ns       zone (wire)       0       server name       ''   (bailiwick knowledge; count 0)
    address  host name (wire)  0       address           ''   (bailiwick knowledge; count 0)
    file     sensor            0       file name         outcome  (the ledger; count: its size)
    batch    batch id          0       ''                ''   (one per batch: the shard has it)

with time_first, time_last and count as aggregate states (min, max, sum):
an AggregatingMergeTree merges rows of one key in the background, and
every lookup merges what is left at read time (GROUP BY with -Merge), so
answers are exact whatever the merges have done. Name keys are reversed
labels (`names`), so "a name and everything under it" is one range of the
primary key, as are an address range and a name's exact rows: a lookup
reads the few granules (`index_granularity` rows each) where its range
lies. One table, not one per kind, because one INSERT block becomes one
part, atomically: a batch's entries, index rows, knowledge, ledger and
marker land on a shard together or not at all (ClickHouse has no
transaction across tables).

The collector inserts plain values into `pdns_in` (engine Null: it keeps
nothing); the materialized view `pdns_mv` turns each row into aggregate
states (`arrayReduce('minState', [x])`: no GROUP BY, so one block in is one
block, one part, out) and writes them to `pdns_local`. Knowledge rows get
the shard's clock as time_first, so an ingester can ask for the facts
committed since it last looked. In cluster mode `pdns` is a Distributed
table over `pdns_local` on every shard (sharding key: the owner name's
cityHash64), and lookups read it; the ingester writes each shard's
`pdns_in` itself (see `store`).

The SQL keeps to what ClickHouse 18.16 (Debian 12) and current releases
both accept: no SimpleAggregateFunction, no `input()`, no OFFSET keyword.
"""

from __future__ import annotations

from .location import Location

KINDS = ("rrset", "rdata", "name", "ns", "address", "file", "batch")
LOCAL, INPUT, VIEW, DISTRIBUTED = "pdns_local", "pdns_in", "pdns_mv", "pdns"
COLUMNS = "kind, key, type, other, data, time_first, time_last, count"
GRANULE = 1024  # rows per mark: a point lookup decompresses about this many rows
SHARDING = "cityHash64(if(kind IN ('rdata', 'name'), other, key))"  # the owner name, as `store.owner_of`
_ENUM = "Enum8(" + ", ".join(f"'{kind}' = {n}" for n, kind in enumerate(KINDS, 1)) + ")"
_KEY_COLUMNS = f"kind {_ENUM}, key String, type UInt16, other String, data String"


def read_table(location: Location) -> str:
    """The table lookups read: the Distributed one in cluster mode."""
    return f"{location.database}.{DISTRIBUTED if location.cluster else LOCAL}"


def _engine(location: Location) -> str:
    if location.replication:
        return f"ReplicatedAggregatingMergeTree('{location.replication}/{LOCAL}', '{{replica}}')"
    return "AggregatingMergeTree()"


def statements(location: Location, on_cluster: bool) -> list[str]:
    """CREATE statements (idempotent) for the store at `location`; with
    `on_cluster`, each runs ON CLUSTER (ZooKeeper's distributed DDL), else
    they are to be run on every server of the cluster."""
    db = location.database
    where = f" ON CLUSTER {location.cluster}" if on_cluster and location.cluster else ""
    made = [
        f"CREATE DATABASE IF NOT EXISTS {db}{where}",
        f"CREATE TABLE IF NOT EXISTS {db}.{LOCAL}{where} ({_KEY_COLUMNS}, "
        "time_first AggregateFunction(min, UInt32), time_last AggregateFunction(max, UInt32), "
        f"count AggregateFunction(sum, UInt64)) ENGINE = {_engine(location)} "
        f"ORDER BY (kind, key, type, other, data) SETTINGS index_granularity = {GRANULE}",
        f"CREATE TABLE IF NOT EXISTS {db}.{INPUT}{where} ({_KEY_COLUMNS}, "
        "time_first UInt32, time_last UInt32, count UInt64) ENGINE = Null",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{VIEW}{where} TO {db}.{LOCAL} AS SELECT kind, key, type, "
        "other, data, arrayReduce('minState', [if(kind IN ('ns', 'address'), toUInt32(now()), time_first)]) "
        "AS time_first, arrayReduce('maxState', [time_last]) AS time_last, "
        f"arrayReduce('sumState', [count]) AS count FROM {db}.{INPUT}",
    ]
    if location.cluster:
        made.append(f"CREATE TABLE IF NOT EXISTS {db}.{DISTRIBUTED}{where} AS {db}.{LOCAL} "
                    f"ENGINE = Distributed({location.cluster}, {db}, {LOCAL}, {SHARDING})")
    return made
