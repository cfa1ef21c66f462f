"""The Store interface on ClickHouse: one server, or a cluster of shards.

Writing. A batch is built in memory, split by shard (the owner name's
cityHash64, as the Distributed table's sharding key), each shard's block
also carrying the batch's ledger rows (its files), the knowledge it
learned and a marker row with the batch's id. The batch is written to the
journal (`journal`), then each shard gets its block as one INSERT (one
part: atomic on that shard) unless it already has the marker; the journal
goes when every shard has it. A crash or a shard that is down leaves the
journal: before anything else the store finishes it (`settle`), so a file
is in the store exactly once, on every shard, however often the insert
was tried. (ClickHouse's own de-duplication of identical blocks covers
only Replicated tables on 18.16, and not a block whose knowledge rows the
shard stamped again, hence the marker.) On a replicated shard a marker
or a ledger row is only asked of a replica that has every part the
shard's log names (`_caught_up`): a replica that lags could lack a batch
another replica took, and the replay would double it. While the only
replica that answers lags (the one holding the batch is down), the
store does not answer: ingest backs off and keeps its files.

Forward names. A "name" row carries the first and last times of the
entries that name it (owner or target), so expire removes it with them;
a name already sent is sent again once its last time has moved on by
REFRESH, so its stored last time is never more than that behind.

Knowledge. The bailiwick stage reads the knowledge from a local SQLite
file (`SqliteDirectory`, its tables and cache: lookups in microseconds),
and what it learns goes to the cluster in the batch ("ns" and "address"
rows, on every shard), committed with the data it came from. The local
file is a cache of the cluster's facts: at open and after each commit the
store asks for the facts committed since it last asked (rows stamped with
the shard's clock), so what one ingester learns every ingester writing
the cluster uses from its next batch on. A fact is sent again when it is
learned again in a later REFRESH period, so its row's last time (the
ingester's clock at the commit) is never more than REFRESH behind its
last use; expire takes the facts unused for the retention and REFRESH
more (the root's servers stay: the hints taught them), and the local
file is then read again from the cluster. An ingester's facts go with
their entries, as in the embedded store, give or take REFRESH.

Reading. Lookups run the text of `sql` on the read table (the Distributed
one in cluster mode), merged at read time, streamed block by block; a
lookup abandoned midway disconnects its connection (the server stops).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Protocol

from .. import decompose, names
from ..rowkeys import NameKeys, index_key, packed
from ..sqlite_store import NAME_TYPES, SCHEMA, SqliteDirectory, _raw_key, rebuild_zone_server, root_servers
from ..store import (
    NO_FENCES,
    Entry,
    Fences,
    LookupTimeout,
    RdataEntry,
    RdataLookups,
    RRTypes,
    StoreUnavailable,
    Summary,
    address_range,
    summary_of,
    type_list,
    unpack_rdata,
)
from . import journal, schema
from .location import Location, parse
from .sql import Select, listed, literal, name_condition

log = logging.getLogger("collector")
KNOWLEDGE_NAME = "clickhouse-knowledge.sqlite"
MUTATION_WAIT = 600  # seconds expire waits for a shard's mutation to finish
SYNC_SLACK = 600  # seconds a fact may take from the shard's clock to being readable
_IDLE_READERS = 16
_BLOCK = 1024  # rows a block when streaming an answer
_CHUNK_TEXT = 65536  # octets of SQL naming a chunk of a right-hand wildcard's names; twice, with their places
# (in `sql.Select.chunk`): at most some 180 KiB of max_query_size's 256
BATCH_ROWS = 250_000  # rows a batch holds before it asks for its commit (about 100 MB here, as much in the driver)
_KNOWN_NAMES = 1 << 20  # forward names already sent, so a repeat within REFRESH costs no row
_SENT_FACTS = 1 << 18  # facts sent this REFRESH period (about 50 MB); past it, a fact may go twice
_EXPIRED_KINDS = "('rrset', 'rdata', 'name', 'ns', 'address')"  # the kinds of row expire takes
REFRESH = 86400  # seconds a forward name's or a fact's stored last time may lag (expire keeps it so long)
REPLICA_WAIT = 5.0  # seconds a lagging replica is given to catch up before the store says it does not answer

SYNC_SCHEMA = "CREATE TABLE IF NOT EXISTS clickhouse_sync (location TEXT PRIMARY KEY, mark INTEGER NOT NULL)"


class Connection(Protocol):
    """What the store needs of a server (`DriverConnection`; tests add chdb's)."""

    def rows(self, sql: str) -> list[tuple]: ...

    def stream(self, sql: str) -> Iterator[tuple]: ...

    def insert(self, table: str, rows: list[tuple]) -> None: ...

    def close(self) -> None: ...


Connect = Callable[[Location, list[tuple[str, int]], float | None], Connection]


class DriverConnection:
    """clickhouse-driver (the native protocol) to the first of `hosts` that answers."""

    def __init__(self, location: Location, hosts: list[tuple[str, int]], query_timeout: float | None) -> None:
        from clickhouse_driver import Client

        # the driver logs each failed host with its traceback; StoreUnavailable says it in one line
        logging.getLogger("clickhouse_driver").setLevel(logging.ERROR)
        (host, port), *others = hosts
        settings = {"strings_as_bytes": True, "insert_block_size": 1 << 62}  # a batch's block is never split
        if query_timeout is not None:
            settings.update(max_execution_time=max(1, int(query_timeout)), timeout_overflow_mode="throw")
        self.where = ",".join(f"{h}:{p}" for h, p in hosts)
        self.client = Client(host=host, port=port, user=location.user, password=location.password,
                             alt_hosts=",".join(f"{h}:{p}" for h, p in others) or None, settings=settings,
                             connect_timeout=5, send_receive_timeout=max(30, int(query_timeout or 0) + 30))

    def rows(self, sql: str) -> list[tuple]:
        with self._errors():
            return self.client.execute(sql)

    def stream(self, sql: str) -> Iterator[tuple]:
        with self._errors():
            yield from self.client.execute_iter(sql, settings={"max_block_size": _BLOCK})

    def insert(self, table: str, rows: list[tuple]) -> None:
        with self._errors():
            self.client.execute(f"INSERT INTO {table} ({schema.COLUMNS}) VALUES", rows)

    def close(self) -> None:
        self.client.disconnect()

    def _errors(self):
        return _translated(self.where)


class _translated:
    """The driver's errors as the store's: unreachable -> StoreUnavailable, past its time -> LookupTimeout."""

    # socket timeout, network, all tries failed, cancelled; refused logins: unknown user, wrong password,
    # password required, address not allowed (18.16), authentication failed (current releases); and
    # a shard that cannot take a write now: no ZooKeeper (225), a read-only replica (242: its ZooKeeper
    # session lost), too many parts (252), an insert whose outcome is unknown (319), ZooKeeper (999),
    # out of memory (241), too many queries (202). Else the ingester died of them, and at each restart
    # again on the journal's batch, while the shard was briefly unwell.
    _UNAVAILABLE = frozenset({209, 210, 279, 394, 192, 193, 194, 195, 516, 225, 242, 252, 319, 999, 241, 202})

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, _trace) -> bool:
        if exc is None:
            return False
        from clickhouse_driver import errors

        code = getattr(exc, "code", None)
        if code == errors.ErrorCodes.TIMEOUT_EXCEEDED:
            raise LookupTimeout(f"the lookup ran past its time ({self.where})") from None
        if isinstance(exc, (errors.NetworkError, errors.SocketTimeoutError, EOFError, OSError)) or \
                code in self._UNAVAILABLE:
            said = [line for line in str(getattr(exc, "message", exc)).splitlines() if line.strip()]
            first = said[0].removeprefix("DB::Exception: ").partition(" Stack trace:")[0] if said \
                else type(exc).__name__
            raise StoreUnavailable(f"ClickHouse at {self.where}: {first[:300]}"
                                   + (f" (code {code})" if code else "")) from None
        return False


class Shard:
    """One shard: its number, its weight, its replicas (the writer tries them in order)."""

    def __init__(self, number: int, weight: int, replicas: list[tuple[str, int]]) -> None:
        self.number, self.weight, self.replicas = number, weight, replicas
        self.connection: Connection | None = None

    def text(self) -> str:
        return f"shard {self.number} ({','.join(f'{h}:{p}' for h, p in self.replicas)})"


class SharedDirectory(SqliteDirectory):
    """SqliteDirectory on the local knowledge file, noting each new fact
    learned from traffic (`learned`) so that the batch carries it to the cluster."""

    def __init__(self, db: sqlite3.Connection, begin, now: float) -> None:
        super().__init__(db, begin)
        self.learned: list[tuple[str, bytes, bytes]] = []
        self.recording = True
        self.sent: set[tuple[str, bytes, bytes]] = set()  # facts learned (and sent) this REFRESH period
        self.period_end = now + REFRESH

    def _new(self, fact: tuple[str, bytes, bytes]) -> bool:
        new = super()._new(fact)
        if self.recording and fact not in self.sent:  # new, or not sent yet this period: its last time moves on
            if len(self.sent) >= _SENT_FACTS:
                self.sent.clear()
            self.sent.add(fact)
            self.learned.append(fact)
        return new

    def forget_cache(self) -> None:
        """After a rollback or a reload: what was sent is forgotten with the rest (sent again if met)."""
        super().forget_cache()
        self.sent.clear()

    def next_period(self, now: float) -> None:
        """At a commit: once the period is over, every fact learned again is sent again."""
        if now >= self.period_end:
            self.sent.clear()
            self.period_end = now + REFRESH

    def apply(self, facts) -> None:
        """Learn facts the cluster already has (not sent again)."""
        self.recording = False
        try:
            for kind, key, other in facts:
                if kind == "ns":
                    self.learn_delegation(key, other)
                else:
                    self.learn_address(key, other)
        finally:
            self.recording = True


def shards_of(location: Location, connection: Connection) -> list[Shard]:
    """The cluster's shards as the servers' remote_servers name them (one, without a cluster)."""
    if not location.cluster:
        return [Shard(1, 1, list(location.hosts))]
    rows = connection.rows("SELECT shard_num, shard_weight, host_address, port FROM system.clusters WHERE "
                           f"cluster = {literal(location.cluster)} ORDER BY shard_num, replica_num")
    if not rows:
        raise StoreUnavailable(f"no cluster {location.cluster} in the remote_servers of {location.text()}")
    shards: dict[int, Shard] = {}
    for number, weight, host, port in rows:
        host = host.decode() if isinstance(host, bytes) else host
        shards.setdefault(int(number), Shard(int(number), int(weight), [])).replicas.append((host, int(port)))
    return list(shards.values())


class ClickHouseStore(RdataLookups):
    """The Store interface on ClickHouse (see the module's text)."""

    def __init__(self, location: Location | str, folder: str, query_timeout: float | None = None,
                 connect: Connect | None = None, ingest: bool = True, busy_timeout: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        """`folder`: this collector's own files (journal, knowledge cache); `query_timeout`: seconds a
        lookup may run; `ingest` False: for lookups only (the query server), the ingester's files untouched;
        `busy_timeout`: seconds a write to the knowledge file waits for another process's (the
        ingester's batch); `clock`: the time the facts are stamped with (tests move it on)."""
        self.location = parse(location) if isinstance(location, str) else location
        self.folder = folder
        self.query_timeout = query_timeout
        self.connect = connect or DriverConnection
        self.read_table = schema.read_table(self.location)
        self.input_table = f"{self.location.database}.{schema.INPUT}"
        self.readers: list[Connection] = []
        self.readers_lock = threading.Lock()
        self.journal_path = os.path.join(folder, journal.NAME)
        self.ingest = ingest
        self.db = sqlite3.connect(os.path.join(folder, KNOWLEDGE_NAME) if ingest else ":memory:",
                                  isolation_level=None, check_same_thread=False, timeout=busy_timeout)
        self.clock = clock
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.executescript(SCHEMA + SYNC_SCHEMA)  # its data tables stay empty: only the knowledge is kept here
        self.in_batch = False
        self.directory = SharedDirectory(self.db, self._begin, clock())
        self.blocks: dict[int, list[tuple]] = {}
        self.pending = 0  # rows in `blocks`
        self.spent: Counter[str] = Counter()  # seconds in each step of a commit, and batches (benchmarks)
        self.batch_names: dict[bytes, int] = {}  # forward names in the batch: the last time each was sent with
        self.sent_names: dict[bytes, int] = {}  # and those the store has (this process sent them)
        first = self._reader()
        try:
            self.shards = shards_of(self.location, first)
        finally:
            self._release(first, broken=False)
        self.slots = [shard for shard in self.shards for _ in range(max(1, shard.weight))]
        from clickhouse_cityhash.cityhash import CityHash64

        self.hash = CityHash64
        if ingest:
            self.settle()
            self.sync_knowledge()

    # ------------------------------------------------------------- writing
    def _begin(self) -> None:
        if not self.in_batch:
            self.db.execute("BEGIN IMMEDIATE")
            self.in_batch = True

    def _shard_of(self, owner_key: bytes) -> int:
        return self.slots[self.hash(owner_key) % len(self.slots)].number

    def outcome(self, sensor: str, name: str) -> str | None:
        """Asked of the first shard's writer, which has every batch's ledger (each shard gets it all)."""
        self.settle()
        shard = self.shards[0]
        writer = self._writer(shard)
        try:
            self._caught_up(writer, shard)
            rows = writer.rows(f"SELECT data FROM {self.location.database}.{schema.LOCAL} WHERE kind = 'file' "
                               f"AND key = {literal(sensor)} AND other = {literal(name)} LIMIT 1")
        except StoreUnavailable as exc:
            self._drop_writer(shard)
            raise StoreUnavailable(f"{shard.text()}: {exc}") from None
        return None if not rows else _text(rows[0][0])

    def merge(self, rrsets: list, rdata: list) -> None:
        self._begin()
        seen: dict[bytes, tuple[int, int]] = {}  # name key: (first, last) of the entries naming it here
        keys = NameKeys()  # every owner and target name of the rows, and its key (in C: rowkeys)
        for (owner, rrtype, zone, datas), first, last, count in rrsets:
            key = keys[owner]
            _widen(seen, key, first, last)
            self._add(key, ("rrset", key, rrtype, zone, packed(datas), first, last, count))
        for (datum, rrtype, owner), first, last, count in rdata:
            (key, target), owner_key = index_key(keys, rrtype, datum), keys[owner]
            self._add(owner_key, ("rdata", key, rrtype, owner_key, b"" if key == datum else datum, first, last, count))
            if rrtype in NAME_TYPES and target is not None:
                _widen(seen, key, first, last)
        for key, (first, last) in seen.items():
            sent = max(self.batch_names.get(key, -REFRESH), self.sent_names.get(key, -REFRESH))
            if last >= sent + REFRESH:
                self._add(key, ("name", names.wire_of_key(key)[:-1], 0, key, b"", first, last, 0))
                self.batch_names[key] = last

    def _add(self, owner_key: bytes, row: tuple) -> None:
        self.blocks.setdefault(self._shard_of(owner_key), []).append(row)
        self.pending += 1

    @property
    def full(self) -> bool:
        """The batch holds as many rows as it should in memory: the ingester commits it now."""
        return self.pending >= BATCH_ROWS

    def commit(self, files: list[tuple[str, str, int, str]]) -> None:
        self.settle()
        facts = list(self.directory.learned)
        now = int(self.clock())
        if self.blocks or facts or files:
            ident = uuid.uuid4().hex
            # count 0: a fact is sent again (a day later, after a restart), and its rows say when, not how often
            common = [(kind, key, 0, other, b"", now, now, 0) for kind, key, other in facts]
            common += [("file", sensor.encode(), 0, name.encode(), outcome.encode(), now, now, size)
                       for sensor, name, size, outcome in files]
            common.append(("batch", ident.encode(), 0, b"", b"", now, now, 1))
            batch = journal.Batch(ident, {shard.number: self.blocks.get(shard.number, []) + common
                                          for shard in self.shards}, facts)
            started = time.perf_counter()
            journal.write(self.journal_path, batch)
            self.spent["journal"] += time.perf_counter() - started
            self.spent["batches"] += 1
            self._local_commit()
            self._finish(batch)
            self.sent_names.update(self.batch_names)
            if len(self.sent_names) > _KNOWN_NAMES:
                self.sent_names.clear()
        else:
            self._local_commit()
        self._forget_batch()
        self.directory.next_period(now)
        try:
            self.sync_knowledge()
        except StoreUnavailable as exc:  # the batch is in: the facts come at the next commit
            log.info("knowledge not refreshed: %s", exc)

    def _local_commit(self) -> None:
        if self.in_batch:
            self.db.execute("COMMIT")
            self.in_batch = False

    def _forget_batch(self) -> None:
        self.blocks = {}
        self.pending = 0
        self.batch_names = {}
        self.directory.learned = []

    def rollback(self) -> None:
        if self.in_batch:
            self.db.execute("ROLLBACK")
            self.in_batch = False
        self.directory.forget_cache()  # and what the batch sent, which is not in the cluster
        self._forget_batch()

    def settle(self) -> None:
        """Finish the journal's batch, if a crash or a shard left one: each
        shard without its marker gets its block; then the journal goes."""
        batch = journal.read(self.journal_path)
        if batch is not None:
            self._finish(batch)

    def _finish(self, batch: journal.Batch) -> None:
        for shard in self.shards:
            if shard.number not in batch.blocks:
                raise StoreUnavailable(f"the journal's batch {batch.ident} names shards "
                                       f"{sorted(batch.blocks)}, the cluster {[s.number for s in self.shards]}")
        for shard in self.shards:
            writer = self._writer(shard)
            try:
                self._caught_up(writer, shard)
                marker = f"kind = 'batch' AND key = {literal(batch.ident)}"
                local = f"{self.location.database}.{schema.LOCAL}"
                started = time.perf_counter()
                present = int(writer.rows(f"SELECT count() FROM {local} WHERE {marker}")[0][0])
                self.spent["marker"] += time.perf_counter() - started
                if not present:
                    started = time.perf_counter()
                    writer.insert(self.input_table, batch.blocks[shard.number])
                    self.spent["insert"] += time.perf_counter() - started
            except StoreUnavailable as exc:
                self._drop_writer(shard)
                raise StoreUnavailable(f"{shard.text()}: {exc}") from None
        if self.in_batch:  # the facts of a journal written before a crash: into the local cache too
            self.directory.apply(batch.facts)
        else:
            self._begin()
            self.directory.apply(batch.facts)
            self._local_commit()
        journal.remove(self.journal_path)

    def _caught_up(self, writer: Connection, shard: Shard) -> None:
        """Return once the writer's replica has every part its shard's log names (at once without
        replication); StoreUnavailable if it has not within REPLICA_WAIT seconds."""
        if not self.location.replication:
            return
        deadline = time.monotonic() + REPLICA_WAIT
        while True:
            rows = writer.rows(
                "SELECT replica_name, inserts_in_queue, is_readonly OR is_session_expired, log_pointer, "
                f"log_max_index FROM system.replicas WHERE database = {literal(self.location.database)} "
                f"AND table = '{schema.LOCAL}'")
            if not rows:
                raise StoreUnavailable(f"no replicated table {schema.LOCAL} there (run sie-dns-collector init-store)")
            replica, fetching, stale, pulled, logged = rows[0]
            # log_pointer: the next log entry the replica will take (0 before it took any)
            unpulled = int(pulled) and int(pulled) <= int(logged)
            if not (int(fetching) or int(stale) or unpulled):
                return
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"replica {_text(replica)} is behind ({int(fetching)} "
                                       f"parts to fetch{', no ZooKeeper session' if int(stale) else ''}); "
                                       "a batch may be on a replica that does not answer")
            time.sleep(0.1)

    def _writer(self, shard: Shard) -> Connection:
        if shard.connection is None:
            shard.connection = self.connect(self.location, shard.replicas, None)
        return shard.connection

    def _drop_writer(self, shard: Shard) -> None:
        if shard.connection is not None:
            shard.connection.close()
            shard.connection = None

    def sync_knowledge(self) -> None:
        """Learn the facts other ingesters committed since the last look (all of them the first time)."""
        if self.in_batch:
            return
        row = self.db.execute("SELECT mark FROM clickhouse_sync WHERE location = ?", (self.location.text(),)).fetchone()
        now, facts = self._facts_since(row[0] if row else 0)
        self._begin()
        self._learn_synced(now, facts)
        self._local_commit()

    def _facts_since(self, mark: int) -> tuple[int, list[tuple]]:
        """The shard's clock, and the facts the cluster has committed since `mark` by it."""
        now = int(self._rows("SELECT toUInt32(now())")[0][0])
        return now, self._rows(f"SELECT kind, key, other FROM {self.read_table} WHERE kind IN ('ns', 'address') "
                               f"GROUP BY kind, key, other HAVING minMerge(time_first) >= {mark}")

    def _learn_synced(self, now: int, facts: list[tuple]) -> None:
        self.directory.apply((_text(kind), key, other) for kind, key, other in facts)
        self.db.execute("INSERT OR REPLACE INTO clickhouse_sync VALUES (?, ?)",
                        (self.location.text(), max(0, now - SYNC_SLACK)))

    # ------------------------------------------------------------- reading
    def rrsets(self, owner: bytes, *, under: bool = False, starts: bool = False, rrtype: RRTypes = None,
               bailiwick: bytes | None = None, fences: Fences = NO_FENCES,
               limit: int | None = None, offset: int = 0) -> Iterator[Entry]:
        select = self._rrsets_select(owner, under=under, starts=starts, rrtype=rrtype, bailiwick=bailiwick,
                                     fences=fences)
        for key, kind, zone, data, first, last, count in self._select(select, limit, offset):
            yield Entry(names.wire_of_key(key), int(kind), zone, unpack_rdata(data), int(first), int(last),
                        int(count))

    def summarize(self, lookup: str, *args, max_count: int | None = None, **kwargs) -> Summary:
        limit, offset = kwargs.pop("limit", None), kwargs.pop("offset", 0)
        select = getattr(self, f"_{lookup}_select")(*args, **kwargs)
        if max_count is None and select.forward is None:
            count, found, first, last = self._rows(select.summary_sql(self.read_table, limit, offset))[0]
            found = int(found)
            return Summary(int(count or 0), found, int(first) if found else None, int(last) if found else None)
        rows = self._select(select, limit, offset)
        return summary_of(((int(each), int(first), int(last)) for *_, first, last, each in rows), max_count)

    def _rrsets_select(self, owner: bytes, *, under: bool = False, starts: bool = False, rrtype: RRTypes = None,
                       bailiwick: bytes | None = None, fences: Fences = NO_FENCES) -> Select:
        where, forward = name_condition(owner, under, starts)
        types = type_list(rrtype)
        if types is not None:
            where += f" AND type IN ({listed(types)})"
        if bailiwick is not None:
            where += f" AND other = {literal(bailiwick.lower())}"
        return Select("rrset", where, fences, forward)

    def _rdata_name_select(self, target: bytes, *, under: bool = False, starts: bool = False,
                           rrtype: RRTypes = None, fences: Fences = NO_FENCES) -> Select:
        where, forward = name_condition(target, under, starts)
        wanted = type_list(rrtype)
        types = sorted(NAME_TYPES) if wanted is None else [t for t in wanted if t in NAME_TYPES] or [0]
        return Select("rdata", f"{where} AND type IN ({listed(types)})", fences, forward)

    def _rdata_ip_select(self, network, *, fences: Fences = NO_FENCES) -> Select:
        _, low, high = address_range(ipaddress.ip_network(network))
        return self._rdata_ip_range_select(low, high, fences=fences)

    def _rdata_ip_range_select(self, first: bytes, last: bytes, *, fences: Fences = NO_FENCES) -> Select:
        if len(first) != len(last) or len(first) not in (4, 16):
            raise ValueError("an address range is two IPv4 or two IPv6 addresses")
        rrtype = decompose.TYPE_A if len(first) == 4 else decompose.TYPE_AAAA
        return Select("rdata", f"key >= {literal(first)} AND key <= {literal(last)} AND type = {rrtype}", fences)

    def _rdata_raw_select(self, rdata: bytes, *, rrtype: RRTypes = None, fences: Fences = NO_FENCES) -> Select:
        types = type_list(rrtype)
        keys = sorted({_raw_key(kind, rdata) for kind in (types or [0, *NAME_TYPES])} - {None})
        where = f"key IN ({listed(keys)}) AND (data = {literal(rdata)} OR (data = '' AND key = {literal(rdata)}))"
        if types:
            where += f" AND type IN ({listed(types)})"
        return Select("rdata", where, fences)

    def _rdata(self, select: Select, limit, offset) -> Iterator[RdataEntry]:
        for key, kind, owner, data, first, last, count in self._select(select, limit, offset):
            yield RdataEntry(names.wire_of_key(owner), int(kind), data or key, int(first), int(last), int(count))

    def _select(self, select: Select, limit: int | None, offset: int) -> Iterator[tuple]:
        """The rows of a lookup, paged; a right-hand wildcard's by chunks of its names, in forward-key order."""
        if select.forward is None:
            yield from self._stream(select.sql(self.read_table, limit, offset))
            return
        if limit is not None and limit <= 0:
            return
        skip, left = offset, limit
        for keys in self._name_chunks(select):
            wanted = None if left is None else skip + left  # the server stops there
            rows = self._stream(select.chunk(keys).sql(self.read_table, wanted, 0))  # in the chunk's order
            for row in rows:
                if skip:
                    skip -= 1
                    continue
                if left is not None:
                    left -= 1
                    if not left:  # the stream read to its end first (LIMIT: nothing more), so its
                        for _ in rows:  # connection goes back to the pool, not closed mid-answer
                            pass
                        yield row
                        return
                yield row

    def _name_chunks(self, select: Select) -> Iterator[list[bytes]]:
        keys: list[bytes] = []
        size = 0
        for (key,) in self._stream(select.names_sql(self.read_table)):
            keys.append(key)
            size += 4 * len(key) + 4
            if size >= _CHUNK_TEXT:
                yield keys
                keys, size = [], 0
        if keys:
            yield keys

    def _reader(self) -> Connection:
        with self.readers_lock:
            if self.readers:
                return self.readers.pop()
        return self.connect(self.location, list(self.location.hosts), self.query_timeout)

    def _release(self, reader: Connection, broken: bool) -> None:
        if not broken:
            with self.readers_lock:
                if len(self.readers) < _IDLE_READERS:
                    self.readers.append(reader)
                    return
        reader.close()

    def _rows(self, sql: str) -> list[tuple]:
        reader = self._reader()
        broken = True
        try:
            rows = reader.rows(sql)
            broken = False
            return rows
        finally:
            self._release(reader, broken)

    def _stream(self, sql: str) -> Iterator[tuple]:
        # a connection of its own per lookup; one left midway is closed (the server then stops the query)
        reader = self._reader()
        broken = True
        try:
            yield from reader.stream(sql)
            broken = False
        finally:
            self._release(reader, broken)

    # --------------------------------------------------------- maintenance
    def expire(self, before: int) -> tuple[int, int]:
        """Entries whose merged time_last is before `before` go, on each shard (all of a key's rows are
        on one shard), and with them the forward names no entry left names and the facts no batch
        sent again (a name's or a fact's last time is at most REFRESH behind: it stays that much
        longer), but for the root's servers. The ingester's store (`ingest`) first finishes its
        journal's batch, and then reads its local knowledge file again from the cluster, whatever
        removed the facts (this expire, or one run by `sie-dns-collector expire`, which opens the
        store for lookups only and touches neither the journal nor that file)."""
        if self.ingest:
            self.settle()
        counted = dict.fromkeys(("rrset", "rdata"), 0)
        doomed = self._doomed_sql(before)
        for kind, number in self._rows(f"SELECT kind, count() FROM ({doomed.format(table=self.read_table)}) "
                                       "GROUP BY kind"):
            counted[_text(kind)] = int(number)
        local = f"{self.location.database}.{schema.LOCAL}"
        for shard in self.shards:
            writer = self._writer(shard)
            settings = self._mutation_settings(writer)
            writer.rows(f"ALTER TABLE {local} DELETE WHERE kind IN {_EXPIRED_KINDS} AND "
                        f"(kind, key, type, other, data) IN ({doomed.format(table=local)}){settings}")
            deadline = time.monotonic() + MUTATION_WAIT
            while int(writer.rows(f"SELECT count() FROM system.mutations WHERE database = "
                                  f"{literal(self.location.database)} AND table = '{schema.LOCAL}' "
                                  "AND NOT is_done")[0][0]):
                if time.monotonic() > deadline:  # the ingester calls this: it must not wait for ever
                    log.warning("%s: the expire is still running after %d s; it goes on in the server",
                                shard.text(), MUTATION_WAIT)
                    break
                time.sleep(0.2)
        if self.ingest:
            self._reload_knowledge()
        return counted["rrset"], counted["rdata"]

    def _mutation_settings(self, writer: Connection) -> str:
        """Current releases refuse a mutation with a subquery on a Replicated table unless told it may
        differ between replicas (each evaluates the subquery itself: a key renewed while the delete
        runs may go on one replica only); 18.16 knows no such setting, and runs it as it is."""
        if not self.location.replication:
            return ""
        known = writer.rows("SELECT count() FROM system.settings WHERE name = 'allow_nondeterministic_mutations'")
        return " SETTINGS allow_nondeterministic_mutations = 1" if int(known[0][0]) else ""

    def _doomed_sql(self, before: int) -> str:
        """The rows expire removes (`{table}` to fill in): merged last time before `before`, REFRESH
        earlier for names and facts, none of the root's servers."""
        roots = [other for (other,) in self._rows(f"SELECT DISTINCT other FROM {self.read_table} "
                                                  f"WHERE kind = 'ns' AND key = {literal(names.ROOT)}")]
        keep = f"NOT (kind = 'ns' AND key = {literal(names.ROOT)})"
        if roots:
            keep += f" AND NOT (kind = 'address' AND key IN ({listed(roots)}))"
        return (f"SELECT kind, key, type, other, data FROM {{table}} WHERE kind IN {_EXPIRED_KINDS} AND {keep} "
                "GROUP BY kind, key, type, other, data HAVING maxMerge(time_last) < "
                f"if(kind IN ('name', 'ns', 'address'), {max(0, int(before) - REFRESH)}, {int(before)})")

    def _reload_knowledge(self) -> None:
        """The local file holds what the cluster holds after an expire: every fact but the root's
        servers goes and all the cluster's are learned again, in one transaction (no reader of the
        file sees it half-empty), with the caches emptied first (else the facts they still held
        would not be written again)."""
        now, facts = self._facts_since(0)
        self._begin()
        try:
            roots = root_servers(self.db)
            self.db.execute("DELETE FROM delegation WHERE zone != ?", (names.ROOT,))
            self.db.execute(f"DELETE FROM host_address WHERE host NOT IN ({', '.join('?' * len(roots))})", roots)
            rebuild_zone_server(self.db)
            self.directory.forget_cache()
            self._learn_synced(now, facts)
        except BaseException:
            self.rollback()
            raise
        self._local_commit()

    def size(self) -> int:
        return sum(int(self._writer(shard).rows(
            f"SELECT sum(bytes_on_disk) FROM system.parts WHERE database = {literal(self.location.database)} "
            f"AND table = '{schema.LOCAL}' AND active")[0][0]) for shard in self.shards)

    def counts(self) -> dict[str, int]:
        """Entries per kind (status, benchmarks), and the knowledge's zone_server rows (local)."""
        found = {"rrset": 0, "rdata": 0, "ingested": 0}
        rows = self._rows(f"SELECT kind, count() FROM (SELECT kind FROM {self.read_table} WHERE kind IN "
                          "('rrset', 'rdata', 'file') GROUP BY kind, key, type, other, data) GROUP BY kind")
        for kind, number in rows:
            found["ingested" if _text(kind) == "file" else _text(kind)] = int(number)
        found["zone_server"] = self.db.execute("SELECT count(*) FROM zone_server").fetchone()[0]
        return found

    def close(self) -> None:
        self.rollback()
        for shard in self.shards:
            self._drop_writer(shard)
        with self.readers_lock:
            for reader in self.readers:
                reader.close()
            self.readers.clear()
        self.db.close()


def init(location: Location, connect: Connect | None = None, on_cluster: bool | None = None) -> list[str]:
    """Create the schema (idempotent): ON CLUSTER when the servers have
    ZooKeeper (or `on_cluster`), else on every server of the cluster in
    turn. The statements run, for the operator to see."""
    connect = connect or DriverConnection
    first = connect(location, list(location.hosts), None)
    try:
        if on_cluster is None:
            on_cluster = bool(location.cluster) and _has_zookeeper(first)
        statements = schema.statements(location, on_cluster)
        if on_cluster or not location.cluster:
            for statement in statements:
                first.rows(statement)
            return statements
        servers = [replica for shard in shards_of(location, first) for replica in shard.replicas]
    finally:
        first.close()
    for server in servers:
        each = connect(location, [server], None)
        try:
            for statement in statements:
                each.rows(statement)
        finally:
            each.close()
    return statements


def _has_zookeeper(connection: Connection) -> bool:
    try:
        connection.rows("SELECT count() FROM system.zookeeper WHERE path = '/'")
        return True
    except StoreUnavailable:
        raise
    except Exception:  # no ZooKeeper configured: the server refuses the table
        return False


def _widen(seen: dict[bytes, tuple[int, int]], key: bytes, first: int, last: int) -> None:
    was = seen.get(key)
    seen[key] = (first, last) if was is None else (min(was[0], first), max(was[1], last))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

