"""The embedded store: one SQLite file, no server to run.

Tables (every one WITHOUT ROWID, so each is one B-tree in key order):

- `rrset`: (name key, type, bailiwick, packed data) -> first, last, count;
- `rdata`: (data key, type, name key, data) -> first, last, count: the
  inverse index (`data` is empty where it equals the key: A and AAAA);
- `delegation`, `host_address`, `zone_server`: what the bailiwick stage
  has learned (zone -> server names, name -> addresses, address -> zones);
- `ingested`: every file whose aggregates are in the store.

Ingest writes a batch in one transaction: the merged aggregates, what the
bailiwick stage learned while making them, and the names of the files
they came from. A crash before the commit leaves none of it; after, all
of it; so a file is counted exactly once, and a restarted ingester judges
the same responses with the same knowledge.
"""

from __future__ import annotations

import ipaddress
import os
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator

from . import decompose, names
from .store import NO_FENCES, Entry, Fences, RdataEntry, address_range, pack_rdata, rdata_key, unpack_rdata

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
"""

_MERGE = (
    "INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
    "first = min(first, excluded.first), last = max(last, excluded.last), count = count + excluded.count"
)
_LOOKUP_CACHE = 65536  # addresses whose zones are held in memory
_KNOWN_FACTS = 1 << 20  # learned facts remembered, so a repeat costs no SQL


class SqliteDirectory:
    """The bailiwick knowledge in the store's tables, with the zones of
    recently seen servers cached (the cache only saves reads: evicting an
    address never changes an answer)."""

    def __init__(self, db: sqlite3.Connection, begin) -> None:
        self.db = db
        self.begin = begin  # what is learned belongs to the batch under way
        self.cache: OrderedDict[bytes, frozenset[bytes]] = OrderedDict()
        self.known: set[tuple[str, bytes, bytes]] = set()  # facts already in the tables: most repeat

    def _new(self, fact: tuple[str, bytes, bytes]) -> bool:
        if fact in self.known:
            return False
        if len(self.known) >= _KNOWN_FACTS:
            self.known.clear()
        self.known.add(fact)
        self.begin()
        return True

    def zones_of(self, address: bytes) -> frozenset[bytes]:
        zones = self.cache.get(address)
        if zones is not None:
            self.cache.move_to_end(address)
            return zones
        rows = self.db.execute("SELECT zone FROM zone_server WHERE address = ?", (address,))
        zones = frozenset(zone for (zone,) in rows)
        self.cache[address] = zones
        if len(self.cache) > _LOOKUP_CACHE:
            self.cache.popitem(last=False)
        return zones

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
        self.db.execute("INSERT OR IGNORE INTO zone_server VALUES (?, ?)", (address, zone))
        self.cache.pop(address, None)

    def forget_cache(self) -> None:
        """After a rollback the tables lost what was learned: so must the caches."""
        self.cache.clear()
        self.known.clear()


class SqliteStore:
    """The Store interface on one SQLite file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.execute("PRAGMA cache_size = -65536")  # 64 MiB of pages at most
        self.db.executescript(SCHEMA)
        self.in_batch = False
        self.directory = SqliteDirectory(self.db, self._begin)

    # ------------------------------------------------------------- writing
    def _begin(self) -> None:
        if not self.in_batch:
            self.db.execute("BEGIN IMMEDIATE")
            self.in_batch = True

    def outcome(self, sensor: str, name: str) -> str | None:
        row = self.db.execute("SELECT outcome FROM ingested WHERE sensor = ? AND file = ?", (sensor, name)).fetchone()
        return None if row is None else row[0]

    def merge(self, rrsets: list, rdata: list) -> None:
        self._begin()
        self.db.executemany(
            _MERGE.format(table="rrset"),
            [(names.key(owner), rrtype, zone, pack_rdata(datas), first, last, count)
             for (owner, rrtype, zone, datas), first, last, count in rrsets],
        )
        self.db.executemany(
            _MERGE.format(table="rdata"),
            [_rdata_row(datum, rrtype, owner, first, last, count)
             for (datum, rrtype, owner), first, last, count in rdata],
        )

    def commit(self, files: list[tuple[str, str, int, str]]) -> None:
        self._begin()
        self.db.executemany("INSERT OR IGNORE INTO ingested VALUES (?, ?, ?, ?)", files)
        self.db.execute("COMMIT")
        self.in_batch = False

    def rollback(self) -> None:
        if self.in_batch:
            self.db.execute("ROLLBACK")
            self.in_batch = False
        self.directory.forget_cache()

    # ------------------------------------------------------------- reading
    def rrsets(self, owner: bytes, *, under: bool = False, rrtype: int | None = None,
               bailiwick: bytes | None = None, fences: Fences = NO_FENCES,
               limit: int | None = None, offset: int = 0) -> Iterator[Entry]:
        where, args = _name_clause("name", names.key(owner), under)
        if rrtype is not None:
            where += " AND type = ?"
            args.append(rrtype)
        if bailiwick is not None:
            where += " AND bailiwick = ?"
            args.append(bailiwick.lower())
        where, args = _fence_clause(where, args, fences)
        sql = f"SELECT name, type, bailiwick, data, first, last, count FROM rrset WHERE {where} " \
              "ORDER BY name, type, bailiwick, data"
        for name, kind, zone, data, first, last, count in self._page(sql, args, limit, offset):
            yield Entry(names.wire_of_key(name), kind, zone, unpack_rdata(data), first, last, count)

    def rdata_name(self, target: bytes, *, under: bool = False, rrtype: int | None = None,
                   fences: Fences = NO_FENCES, limit: int | None = None, offset: int = 0) -> Iterator[RdataEntry]:
        where, args = _name_clause("key", names.key(target), under)
        types = [rrtype] if rrtype is not None else sorted(NAME_TYPES)
        where += f" AND type IN ({', '.join('?' * len(types))})"
        args.extend(types)
        return self._rdata(where, args, fences, limit, offset)

    def rdata_ip(self, network, *, fences: Fences = NO_FENCES,
                 limit: int | None = None, offset: int = 0) -> Iterator[RdataEntry]:
        rrtype, low, high = address_range(ipaddress.ip_network(network))
        return self._rdata("key BETWEEN ? AND ? AND type = ?", [low, high, rrtype], fences, limit, offset)

    def rdata_raw(self, rdata: bytes, *, rrtype: int | None = None, fences: Fences = NO_FENCES,
                  limit: int | None = None, offset: int = 0) -> Iterator[RdataEntry]:
        types = [rrtype] if rrtype is not None else None
        keys = sorted({_raw_key(kind, rdata) for kind in (types or [0, *NAME_TYPES])} - {None})
        where = f"key IN ({', '.join('?' * len(keys))}) AND (data = ? OR (data = x'' AND key = ?))"
        args = [*keys, rdata, rdata]
        if types:
            where += " AND type = ?"
            args.append(rrtype)
        return self._rdata(where, args, fences, limit, offset)

    def _rdata(self, where: str, args: list, fences: Fences, limit, offset) -> Iterator[RdataEntry]:
        where, args = _fence_clause(where, args, fences)
        sql = f"SELECT key, type, name, data, first, last, count FROM rdata WHERE {where} " \
              "ORDER BY key, type, name, data"
        for key, kind, name, data, first, last, count in self._page(sql, args, limit, offset):
            yield RdataEntry(names.wire_of_key(name), kind, data or key, first, last, count)

    def _page(self, sql: str, args: list, limit: int | None, offset: int) -> Iterator[tuple]:
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            args = [*args, -1 if limit is None else limit, offset]
        # a connection of its own per lookup: a lookup streams while ingest writes
        reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        try:
            cursor = reader.execute(sql, args)
            while rows := cursor.fetchmany(1024):
                yield from rows
        finally:
            reader.close()

    # --------------------------------------------------------- maintenance
    def expire(self, before: int) -> tuple[int, int]:
        self._begin()
        rrsets = self.db.execute("DELETE FROM rrset WHERE last < ?", (before,)).rowcount
        rdata = self.db.execute("DELETE FROM rdata WHERE last < ?", (before,)).rowcount
        self.db.execute("COMMIT")
        self.in_batch = False
        return rrsets, rdata

    def size(self) -> int:
        return sum(os.path.getsize(self.path + tail) for tail in ("", "-wal") if os.path.exists(self.path + tail))

    def counts(self) -> dict[str, int]:
        """Rows per table (status)."""
        return {table: self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("rrset", "rdata", "zone_server", "ingested")}

    def close(self) -> None:
        self.rollback()
        self.db.close()


NAME_TYPES = frozenset(t for t in decompose.NAME_FIELDS if t not in (14, 17, 26, 35))


def _rdata_row(datum: bytes, rrtype: int, owner: bytes, first: int, last: int, count: int) -> tuple:
    key = rdata_key(rrtype, datum)
    return key, rrtype, names.key(owner), b"" if key == datum else datum, first, last, count


def _raw_key(rrtype: int, rdata: bytes) -> bytes | None:
    try:
        return rdata_key(rrtype, rdata)
    except (decompose.Undecodable, IndexError):
        return None


def _name_clause(column: str, key: bytes, under: bool) -> tuple[str, list]:
    if under:
        return f"{column} >= ? AND {column} < ?", [key, key + names.RANGE_END]
    return f"{column} = ?", [key]


def _fence_clause(where: str, args: list, fences: Fences) -> tuple[str, list]:
    args = list(args)
    for column, op, value in (("first", ">=", fences.first_after), ("first", "<=", fences.first_before),
                              ("last", ">=", fences.last_after), ("last", "<=", fences.last_before)):
        if value is not None:
            where += f" AND {column} {op} ?"
            args.append(value)
    return where, args
