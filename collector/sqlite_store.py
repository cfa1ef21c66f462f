"""The embedded store: one SQLite file, no server to run.

Tables (every one WITHOUT ROWID, so each is one B-tree in key order):

- `rrset`: (name key, type, bailiwick, packed data) -> first, last, count;
- `rdata`: (data key, type, name key, data) -> first, last, count: the
  inverse index (`data` is empty where it equals the key: A and AAAA);
- `delegation`, `host_address`, `zone_server`: what the bailiwick stage
  has learned (zone -> server names, name -> addresses, address -> zones);
- `ingested`: every file whose aggregates are in the store;
- `name_forward`: (forward name key, name key) for every owner and every
  name in the data of a name-bearing type: the labels in written order,
  so a right-hand wildcard (`www.example.*`) is a range scan too, joined
  to `rrset` or `rdata` in forward-key order (no sort, streams).

Ingest writes a batch in one transaction: the merged aggregates (staged
in temporary tables as the front table drains, upserted table by table
at the commit), what the bailiwick stage learned while making them, and
the names of the files they came from. A crash before the commit leaves
none of it; after, all of it; so a file is counted exactly once, and a
restarted ingester judges the same responses with the same knowledge.
"""

from __future__ import annotations

import ipaddress
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from . import decompose, names
from .rowkeys import NameKeys, forward_key, index_key, name_key, packed
from .store import (
    NO_FENCES,
    Entry,
    Fences,
    LookupTimeout,
    RdataEntry,
    RdataLookups,
    RRTypes,
    Summary,
    address_range,
    rdata_key,
    summary_of,
    type_list,
    unpack_rdata,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS rrset (
    name BLOB NOT NULL, type INTEGER NOT NULL, bailiwick BLOB NOT NULL, data BLOB NOT NULL,
    first INTEGER NOT NULL, last INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (name, type, bailiwick, data)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rdata (
    key BLOB NOT NULL, type INTEGER NOT NULL, name BLOB NOT NULL, data BLOB NOT NULL,
    first INTEGER NOT NULL, last INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (key, type, name, data)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS delegation (
    server BLOB NOT NULL, zone BLOB NOT NULL, PRIMARY KEY (server, zone)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS host_address (
    host BLOB NOT NULL, address BLOB NOT NULL, PRIMARY KEY (host, address)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS zone_server (
    address BLOB NOT NULL, zone BLOB NOT NULL, PRIMARY KEY (address, zone)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ingested (
    sensor TEXT NOT NULL, file TEXT NOT NULL, size INTEGER NOT NULL, outcome TEXT NOT NULL,
    PRIMARY KEY (sensor, file)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS name_forward (
    fkey BLOB NOT NULL PRIMARY KEY, key BLOB NOT NULL) WITHOUT ROWID;
"""
KNOWLEDGE_TABLES = ("delegation", "host_address", "zone_server")  # what the bailiwick stage has learned
SCHEMA_VERSION = 1  # PRAGMA user_version: 1 = name_forward filled
_PROGRESS_STEPS = 10000  # SQLite steps between two looks at a lookup's deadline
_IDLE_READERS = 64  # read-only connections kept for the next lookups

# A batch's rows wait in temporary tables (SQLite's temporary file: SQLITE_TMPDIR, else /var/tmp; in
# the batch's transaction) until its commit, then go in table by table, sorted; after _STAGED_MAX rows
# (about 280 MB of temporary file, some 800,000 responses' worth) they go in before the commit.
STAGING = """
CREATE TEMP TABLE IF NOT EXISTS staged_rrset (name BLOB, type INTEGER, bailiwick BLOB, data BLOB,
    first INTEGER, last INTEGER, count INTEGER);
CREATE TEMP TABLE IF NOT EXISTS staged_rdata (key BLOB, type INTEGER, name BLOB, data BLOB,
    first INTEGER, last INTEGER, count INTEGER);
CREATE TEMP TABLE IF NOT EXISTS staged_forward (fkey BLOB, key BLOB);
"""
_STAGED_MAX = 4_000_000
_STAGE = "INSERT INTO staged_{table} VALUES (?, ?, ?, ?, ?, ?, ?)"
_MERGE_STAGED = (  # WHERE true: an upsert's SELECT needs a WHERE (SQLite's parser)
    "INSERT INTO {table} SELECT * FROM staged_{table} WHERE true ORDER BY 1, 2, 3, 4 ON CONFLICT DO UPDATE SET "
    "first = min(first, excluded.first), last = max(last, excluded.last), count = count + excluded.count"
)
# Bounds of what the directory holds in memory (max RSS, bench/RESULTS.md, "The collector"): the zones of
# recently seen servers, counted in zones (a shared hosting address serves thousands), and the facts
# already in the tables, in two generations of at most _KNOWN_FACTS each (the facts met in the
# last generation are kept when a new one starts, so the ones that repeat stay known).
_CACHED_ZONES = 1 << 19
_KNOWN_FACTS = 1 << 15


class SqliteDirectory:
    """The bailiwick knowledge in the store's tables, with the zones of
    recently seen servers cached (the cache only saves reads: evicting an
    address never changes an answer, and what is learned is added to the
    cached set of its address, so the cache stays the table's answer)."""

    def __init__(self, db: sqlite3.Connection, begin) -> None:
        self.db = db
        self.begin = begin  # what is learned belongs to the batch under way
        self.cache: OrderedDict[bytes, set[bytes]] = OrderedDict()
        self.cached_zones = 0  # zones held in `cache`, all addresses together
        self.zone_names: dict[bytes, bytes] = {}  # one bytes object a zone, shared by its servers' sets
        self.known: set[tuple[str, bytes, bytes]] = set()  # facts already in the tables: most repeat
        self.known_before: set[tuple[str, bytes, bytes]] = set()  # the generation before

    def _new(self, fact: tuple[str, bytes, bytes]) -> bool:
        if fact in self.known:
            return False
        new = fact not in self.known_before
        if len(self.known) >= _KNOWN_FACTS:
            self.known_before, self.known = self.known, set()
        self.known.add(fact)
        if new:
            self.begin()
        return new

    def zones_of(self, address: bytes) -> AbstractSet[bytes]:
        """The cache's own set: read it before teaching the directory anything."""
        zones = self.cache.get(address)
        if zones is not None:
            self.cache.move_to_end(address)
            return zones
        rows = self.db.execute("SELECT zone FROM zone_server WHERE address = ?", (address,))
        if len(self.zone_names) > _CACHED_ZONES:
            self.zone_names.clear()  # only shares: a set keeps the zones it holds
        shared = self.zone_names.setdefault
        zones = {shared(zone, zone) for (zone,) in rows}
        self.cache[address] = zones
        self.cached_zones += len(zones)
        self._shrink()
        return zones

    def _shrink(self) -> None:
        """The least recently asked addresses out of the cache, to its bound (the last one stays)."""
        while self.cached_zones > _CACHED_ZONES and len(self.cache) > 1:
            self.cached_zones -= len(self.cache.popitem(last=False)[1])

    def learn_delegation(self, zone: bytes, server_name: bytes) -> None:
        if not self._new(("ns", zone, server_name)):
            return
        if self.db.execute("INSERT OR IGNORE INTO delegation VALUES (?, ?)", (server_name, zone)).rowcount:
            rows = self.db.execute("SELECT address FROM host_address WHERE host = ?", (server_name,)).fetchall()
            for (address,) in rows:
                self._serves(address, zone)

    def learn_address(self, name: bytes, address: bytes) -> None:
        if not self._new(("address", name, address)):
            return
        if self.db.execute("INSERT OR IGNORE INTO host_address VALUES (?, ?)", (name, address)).rowcount:
            rows = self.db.execute("SELECT zone FROM delegation WHERE server = ?", (name,)).fetchall()
            for (zone,) in rows:
                self._serves(address, zone)

    def _serves(self, address: bytes, zone: bytes) -> None:
        if not self.db.execute("INSERT OR IGNORE INTO zone_server VALUES (?, ?)", (address, zone)).rowcount:
            return
        # Kept, not dropped: a shared address serves thousands of zones, and re-reading them all
        # after each one learned was a third of the ingest's time (bench/RESULTS.md, "The collector").
        zones = self.cache.get(address)
        if zones is not None:
            zones.add(self.zone_names.setdefault(zone, zone))
            self.cached_zones += 1
            self._shrink()  # a shared address learning zone after zone must not take the cache past its bound

    def forget_cache(self) -> None:
        """After a rollback the tables lost what was learned: so must the caches."""
        self.cache.clear()
        self.cached_zones = 0
        self.zone_names.clear()
        self.known.clear()
        self.known_before.clear()


def rebuild_zone_server(db: sqlite3.Connection) -> None:
    """zone_server made again from delegation and host_address, after facts left them (expire)."""
    db.execute("DELETE FROM zone_server")
    db.execute("INSERT INTO zone_server SELECT DISTINCT h.address, d.zone FROM delegation d "
               "JOIN host_address h ON h.host = d.server")


def root_servers(db: sqlite3.Connection) -> list[bytes]:
    """The root's servers the knowledge holds (the hints taught them: no expire takes them)."""
    return [server for (server,) in db.execute("SELECT server FROM delegation WHERE zone = ?", (names.ROOT,))]


class SqliteStore(RdataLookups):
    """The Store interface on one SQLite file."""

    def __init__(self, path: str, query_timeout: float | None = None, busy_timeout: float = 5.0) -> None:
        """`query_timeout`: seconds a lookup may run (LookupTimeout after), None: no bound;
        `busy_timeout`: seconds a write waits for another process's (the ingester's batch) to end."""
        self.path = path
        self.query_timeout = query_timeout
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        # 32 MiB of pages at most: the ingest's merges cost the same as with 64 (their rows come in key
        # order), and the ingester's memory stays under 256 MB (bench/RESULTS.md, "The collector")
        self.db.execute("PRAGMA cache_size = -32768")
        self.db.executescript(SCHEMA + STAGING)
        self.in_batch = False
        self.staged = 0  # rows in the staging tables
        self.directory = SqliteDirectory(self.db, self._begin)
        self.readers: list[sqlite3.Connection] = []  # idle read-only connections
        self.readers_lock = threading.Lock()
        self._upgrade()

    def _upgrade(self) -> None:
        """Fill name_forward from the names already in a store made before it existed (once)."""
        if self.db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        self.db.execute("BEGIN IMMEDIATE")
        if self.db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:  # another process may have
            for sql in ("SELECT DISTINCT name FROM rrset",
                        f"SELECT DISTINCT key FROM rdata WHERE type IN ({', '.join(map(str, _TARGET_TYPES))})"):
                cursor = self.db.execute(sql)
                while keys := cursor.fetchmany(4096):
                    self.db.executemany("INSERT OR IGNORE INTO name_forward VALUES (?, ?)",
                                        [(forward_key(key), key) for (key,) in keys])
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.db.execute("COMMIT")

    # ------------------------------------------------------------- writing
    def _begin(self) -> None:
        if not self.in_batch:
            self.db.execute("BEGIN IMMEDIATE")
            self.in_batch = True

    def outcome(self, sensor: str, name: str) -> str | None:
        row = self.db.execute("SELECT outcome FROM ingested WHERE sensor = ? AND file = ?", (sensor, name)).fetchone()
        return None if row is None else row[0]

    def merge(self, rrsets: list, rdata: list) -> None:
        """Stage the rows, one table's at a time (a merge's rows were the peak of the ingest's memory).
        The batch's merges go into the tables together (`_merge_staged`), sorted by SQLite: Python
        sorts nothing, and the upserts of a whole batch share the pages they land on (a row: 2.5 us
        staged and 1.7 upserted, against 4.3 upserted merge by merge; bench/RESULTS.md, "Ingest")."""
        self._begin()
        keys = NameKeys()  # every owner and target name of the rows, and its key
        self.db.executemany(_STAGE.format(table="rrset"),
                            [(keys[owner], rrtype, zone, packed(datas), first, last, count)
                             for (owner, rrtype, zone, datas), first, last, count in rrsets])
        self.db.executemany(_STAGE.format(table="rdata"),
                            [_rdata_row(keys, datum, rrtype, owner, first, last, count)
                             for (datum, rrtype, owner), first, last, count in rdata])
        self.db.executemany("INSERT INTO staged_forward VALUES (?, ?)", keys.forward_rows())
        self.staged += len(rrsets) + len(rdata)
        if self.staged >= _STAGED_MAX:
            self._merge_staged()

    def _merge_staged(self) -> None:
        """The staged rows into the tables, each table's in key order, in the batch's transaction."""
        if not self.staged:
            return
        for table in ("rrset", "rdata"):
            self.db.execute(_MERGE_STAGED.format(table=table))
        self.db.execute("INSERT OR IGNORE INTO name_forward SELECT * FROM staged_forward WHERE true ORDER BY 1")
        for table in ("rrset", "rdata", "forward"):
            self.db.execute(f"DELETE FROM staged_{table}")
        self.staged = 0

    def commit(self, files: list[tuple[str, str, int, str]]) -> None:
        self._begin()
        self._merge_staged()
        self.db.executemany("INSERT OR IGNORE INTO ingested VALUES (?, ?, ?, ?)", files)
        self.db.execute("COMMIT")
        self.in_batch = False

    def rollback(self) -> None:
        if self.in_batch:
            self.db.execute("ROLLBACK")  # the staged rows too: the temporary tables are in the transaction
            self.in_batch = False
        self.staged = 0
        self.directory.forget_cache()

    # ------------------------------------------------------------- reading
    def rrsets(self, owner: bytes, *, under: bool = False, starts: bool = False, rrtype: RRTypes = None,
               bailiwick: bytes | None = None, fences: Fences = NO_FENCES,
               limit: int | None = None, offset: int = 0) -> Iterator[Entry]:
        select = self._rrsets_select(owner, under=under, starts=starts, rrtype=rrtype, bailiwick=bailiwick,
                                     fences=fences)
        for name, kind, zone, data, first, last, count in self._page(select, limit, offset):
            yield Entry(names.wire_of_key(name), kind, zone, unpack_rdata(data), first, last, count)

    def summarize(self, lookup: str, *args, max_count: int | None = None, **kwargs) -> Summary:
        limit, offset = kwargs.pop("limit", None), kwargs.pop("offset", 0)
        select = getattr(self, f"_{lookup}_select")(*args, **kwargs)
        inner = _Select(select.source, select.where, select.args, select.order, "t.count, t.first, t.last")
        if max_count is None:
            rows = _Select(f"({inner.sql(limit, offset)}) AS t", "1", inner.paged_args(limit, offset), "",
                           "sum(t.count), count(*), min(t.first), max(t.last)")
            count, found, first, last = next(self._page(rows, None, 0))
            return Summary(count or 0, found, first, last)
        return summary_of(self._page(inner, limit, offset), max_count)

    # the SQL of each lookup (summarize runs the same, counting)
    def _rrsets_select(self, owner: bytes, *, under: bool = False, starts: bool = False, rrtype: RRTypes = None,
                       bailiwick: bytes | None = None, fences: Fences = NO_FENCES) -> _Select:
        source, where, args, order = _name_clause("rrset", "name", owner, under, starts)
        types = type_list(rrtype)
        if types is not None:
            where += f" AND t.type IN ({_marks(types)})"
            args.extend(types)
        if bailiwick is not None:
            where += " AND t.bailiwick = ?"
            args.append(bailiwick.lower())
        where, args = _fence_clause(where, args, fences)
        return _Select(source, where, args, f"{order}, t.type, t.bailiwick, t.data", _RRSET_COLUMNS)

    def _rdata_name_select(self, target: bytes, *, under: bool = False, starts: bool = False,
                           rrtype: RRTypes = None, fences: Fences = NO_FENCES) -> _Select:
        source, where, args, order = _name_clause("rdata", "key", target, under, starts)
        wanted = type_list(rrtype)
        # only the types whose data key is a name: another type's key is its data, never a name key
        types = sorted(_TARGET_TYPES) if wanted is None else [t for t in wanted if t in _TARGET_TYPES] or [-1]
        where += f" AND t.type IN ({_marks(types)})"
        args.extend(types)
        return _rdata_select(source, where, args, order, fences)

    def _rdata_ip_select(self, network, *, fences: Fences = NO_FENCES) -> _Select:
        _, low, high = address_range(ipaddress.ip_network(network))
        return self._rdata_ip_range_select(low, high, fences=fences)

    def _rdata_ip_range_select(self, first: bytes, last: bytes, *, fences: Fences = NO_FENCES) -> _Select:
        if len(first) != len(last) or len(first) not in (4, 16):
            raise ValueError("an address range is two IPv4 or two IPv6 addresses")
        rrtype = decompose.TYPE_A if len(first) == 4 else decompose.TYPE_AAAA
        return _rdata_select("rdata t", "t.key BETWEEN ? AND ? AND t.type = ?", [first, last, rrtype], "t.key",
                             fences)

    def _rdata_raw_select(self, rdata: bytes, *, rrtype: RRTypes = None, fences: Fences = NO_FENCES) -> _Select:
        types = type_list(rrtype)
        keys = sorted({_raw_key(kind, rdata) for kind in (types or [0, *NAME_TYPES])} - {None})
        where = f"t.key IN ({_marks(keys)}) AND (t.data = ? OR (t.data = x'' AND t.key = ?))"
        args = [*keys, rdata, rdata]
        if types:
            where += f" AND t.type IN ({_marks(types)})"
            args.extend(types)
        return _rdata_select("rdata t", where, args, "t.key", fences)

    def _rdata(self, select: _Select, limit, offset) -> Iterator[RdataEntry]:
        for key, kind, name, data, first, last, count in self._page(select, limit, offset):
            yield RdataEntry(names.wire_of_key(name), kind, data or key, first, last, count)

    def _page(self, select: _Select, limit: int | None, offset: int) -> Iterator[tuple]:
        # a connection of its own per lookup, so a lookup streams while ingest writes; taken
        # from those idle (opening one and reading the schema costs more than a small lookup)
        with self.readers_lock:
            reader = self.readers.pop() if self.readers else None
        if reader is None:
            reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        if self.query_timeout is not None:
            reader.set_progress_handler(_past(time.monotonic() + self.query_timeout), _PROGRESS_STEPS)
        cursor = None
        try:
            cursor = reader.execute(select.sql(limit, offset), select.paged_args(limit, offset))
            while rows := cursor.fetchmany(1024):
                yield from rows
        except sqlite3.OperationalError as exc:
            if "interrupted" not in str(exc):
                raise
            raise LookupTimeout(f"the lookup ran past its {self.query_timeout:g} s") from None
        finally:
            if cursor is not None:
                cursor.close()  # its statement reset: the reader holds no snapshot while idle
            with self.readers_lock:
                if len(self.readers) < _IDLE_READERS:
                    self.readers.append(reader)
                    reader = None
            if reader is not None:
                reader.close()

    # --------------------------------------------------------- maintenance
    def expire(self, before: int) -> tuple[int, int]:
        self._begin()
        self._merge_staged()  # expire commits: a batch's rows go in whole, never half
        rrsets = self.db.execute("DELETE FROM rrset WHERE last < ?", (before,)).rowcount
        rdata = self.db.execute("DELETE FROM rdata WHERE last < ?", (before,)).rowcount
        self.db.execute("DELETE FROM name_forward WHERE NOT EXISTS (SELECT 1 FROM rrset WHERE name = key) "
                        "AND NOT EXISTS (SELECT 1 FROM rdata WHERE rdata.key = name_forward.key)")
        self._expire_knowledge()
        self.db.execute("COMMIT")
        self.in_batch = False
        self.directory.forget_cache()
        return rrsets, rdata

    def _expire_knowledge(self) -> None:
        """What the bailiwick stage learned goes with the last entry it was learned from: a fact
        stays while the inverse index still holds its datum (zone Z has server N: the row (N, NS,
        Z); host N has address a: (a, A or AAAA, N)), else the tables grew for ever (one
        host_address row for every host ever seen). The root's servers stay: the hints taught them,
        not an entry. zone_server, the join of the two, is made again."""
        self.db.create_function("name_key", 1, name_key, deterministic=True)
        root = names.ROOT
        self.db.execute("DELETE FROM delegation WHERE zone != ? AND NOT EXISTS (SELECT 1 FROM rdata r WHERE "
                        "r.key = name_key(delegation.server) AND r.type = ? AND r.name = name_key(delegation.zone))",
                        (root, decompose.TYPE_NS))
        self.db.execute("DELETE FROM host_address WHERE host NOT IN (SELECT server FROM delegation WHERE zone = ?) "
                        "AND NOT EXISTS (SELECT 1 FROM rdata r WHERE r.key = host_address.address AND r.type = "
                        "(CASE length(host_address.address) WHEN 4 THEN ? ELSE ? END) "
                        "AND r.name = name_key(host_address.host))",
                        (root, decompose.TYPE_A, decompose.TYPE_AAAA))
        rebuild_zone_server(self.db)

    def size(self) -> int:
        return sum(os.path.getsize(self.path + tail) for tail in ("", "-wal") if os.path.exists(self.path + tail))

    def counts(self) -> dict[str, int]:
        """Rows per table (status)."""
        return {table: self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("rrset", "rdata", "zone_server", "ingested")}

    def close(self) -> None:
        self.rollback()
        self.db.close()
        with self.readers_lock:
            for reader in self.readers:
                reader.close()
            self.readers.clear()


NAME_TYPES = frozenset(t for t in decompose.NAME_FIELDS if t not in (14, 17, 26, 35))
_TARGET_TYPES = NAME_TYPES  # the types whose inverse-index key is a name key
_RRSET_COLUMNS = "t.name, t.type, t.bailiwick, t.data, t.first, t.last, t.count"
_RDATA_COLUMNS = "t.key, t.type, t.name, t.data, t.first, t.last, t.count"


@dataclass(frozen=True)
class _Select:
    """One lookup's query: rows of `columns` from `source` (the table as
    `t`) where `where` holds, in the stable order `order`."""

    source: str
    where: str
    args: list
    order: str
    columns: str

    def sql(self, limit: int | None, offset: int) -> str:
        order = f" ORDER BY {self.order}" if self.order else ""
        paging = " LIMIT ? OFFSET ?" if limit is not None or offset else ""
        return f"SELECT {self.columns} FROM {self.source} WHERE {self.where}{order}{paging}"

    def paged_args(self, limit: int | None, offset: int) -> list:
        if limit is None and not offset:
            return list(self.args)
        return [*self.args, -1 if limit is None else limit, offset]


def _rdata_select(source: str, where: str, args: list, order: str, fences: Fences) -> _Select:
    where, args = _fence_clause(where, args, fences)
    return _Select(source, where, args, f"{order}, t.type, t.name, t.data", _RDATA_COLUMNS)


def _past(deadline: float) -> Callable[[], bool]:
    """SQLite's progress handler: a true answer interrupts the statement."""
    return lambda: time.monotonic() > deadline


def _marks(values: list) -> str:
    return ", ".join("?" * len(values))


def _rdata_row(keys: NameKeys, datum: bytes, rrtype: int, owner: bytes, first: int, last: int, count: int) -> tuple:
    """The inverse-index row (its target's name, if any, among `keys`: written to name_forward too)."""
    key = index_key(keys, rrtype, datum)[0]
    return key, rrtype, keys[owner], b"" if key == datum else datum, first, last, count


def _raw_key(rrtype: int, rdata: bytes) -> bytes | None:
    try:
        return rdata_key(rrtype, rdata)
    except (decompose.Undecodable, IndexError):
        return None


def _name_clause(table: str, column: str, wire: bytes, under: bool, starts: bool) -> tuple[str, str, list, str]:
    """(source, where, args, order) finding a name, or a wildcard's names
    (`under`: reversed keys from the name's; `starts`: forward keys from the name's)."""
    if under and starts:
        raise ValueError("a name takes one wildcard, left or right, not both")
    if starts:
        forward = wire.lower()[:-1]
        return (f"name_forward f CROSS JOIN {table} t ON t.{column} = f.key", "f.fkey >= ? AND f.fkey < ?",
                [forward, forward + names.RANGE_END], "f.fkey")
    key = names.key(wire)
    if under:
        return f"{table} t", f"t.{column} >= ? AND t.{column} < ?", [key, key + names.RANGE_END], f"t.{column}"
    return f"{table} t", f"t.{column} = ?", [key], f"t.{column}"


def _fence_clause(where: str, args: list, fences: Fences) -> tuple[str, list]:
    args = list(args)
    for column, op, value in (("first", ">=", fences.first_after), ("first", "<=", fences.first_before),
                              ("last", ">=", fences.last_after), ("last", "<=", fences.last_before)):
        if value is not None:
            where += f" AND t.{column} {op} ?"
            args.append(value)
    return where, args
