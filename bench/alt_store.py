"""The alternative embedded engine the benchmark measures against SQLite: LMDB.

LMDB (the `lmdb` binding, not a project dependency: `pip install lmdb`)
is what an operator would embed for a key-value write path: one file,
memory-mapped B+trees in key order, one writer and lock-free readers,
transactions that are durable at commit (fsync, as SQLite's
synchronous=FULL). This is the minimal store for that comparison, not a
second engine for the collector: the write path the ingester uses
(`outcome`, `merge`, `commit`, `rollback`, a `directory` persisted in the
same transactions) and the exact-owner lookup (`rrsets(owner)`), in the
same key order as `SqliteStore`.

Key layouts (each table one named database; fixed-width counters in the
value, little-endian first, last, count):

- rrset: name key, 0, type (2 octets), bailiwick (wire), packed data;
- rdata: type, then the data key (an address as its octets; a name's key
  and 0; other data after its 2-octet length), then the owner's name key,
  0, and the data where it differs from the key;
- delegation, host_address, zone_server: duplicate-sorted (server ->
  zones, host -> addresses, address -> zones);
- ingested: sensor, 0, file -> size and outcome.

LMDB keys stop at 511 octets; a longer one (a large TXT or NS set) is cut
and ended with a 16-octet hash of the whole, which then follows the
counters in the value. SQLite has no such limit.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections import OrderedDict
from collections.abc import Iterator

import lmdb

from collector import names
from collector.sqlite_store import NAME_TYPES
from collector.store import Entry, pack_rdata, rdata_key, unpack_rdata

_COUNTERS = struct.Struct("<IIQ")  # first, last (epoch seconds), count
_MAP_SIZE = 1 << 38  # address space only: the file grows with what is written
_LOOKUP_CACHE = 65536  # as SqliteDirectory
_KNOWN_FACTS = 1 << 20


def _bounded(key: bytes, limit: int) -> tuple[bytes, bytes]:
    """(the key LMDB stores, the whole key when it had to be cut, else b"")."""
    if len(key) <= limit:
        return key, b""
    return key[: limit - 16] + hashlib.blake2b(key, digest_size=16).digest(), key


def _add(txn: lmdb.Transaction, db, key: bytes, extra: bytes, first: int, last: int, count: int) -> None:
    """Merge one aggregate: min first, max last, sum of counts."""
    old = txn.get(key, db=db)
    if old is not None:
        was_first, was_last, was_count = _COUNTERS.unpack_from(old)
        first, last, count = min(first, was_first), max(last, was_last), count + was_count
    txn.put(key, _COUNTERS.pack(first, last, count) + extra, db=db)


def _name_end(wire: bytes, pos: int) -> int:
    while wire[pos]:
        pos += wire[pos] + 1
    return pos + 1


class LmdbDirectory:
    """The bailiwick knowledge in duplicate-sorted tables, cached as
    SqliteDirectory caches it (so the comparison is of the engines)."""

    def __init__(self, store: LmdbStore) -> None:
        self.store = store
        self.cache: OrderedDict[bytes, frozenset[bytes]] = OrderedDict()
        self.known: set[tuple[str, bytes, bytes]] = set()

    def _new(self, fact: tuple[str, bytes, bytes]) -> bool:
        if fact in self.known:
            return False
        if len(self.known) >= _KNOWN_FACTS:
            self.known.clear()
        self.known.add(fact)
        return True

    def zones_of(self, address: bytes) -> frozenset[bytes]:
        zones = self.cache.get(address)
        if zones is not None:
            self.cache.move_to_end(address)
            return zones
        zones = frozenset(self.store.duplicates(self.store.zone_server, address))
        self.cache[address] = zones
        if len(self.cache) > _LOOKUP_CACHE:
            self.cache.popitem(last=False)
        return zones

    def learn_delegation(self, zone: bytes, server_name: bytes) -> None:
        if not self._new(("ns", zone, server_name)):
            return
        txn = self.store.begin()
        if txn.put(server_name, zone, db=self.store.delegation, dupdata=False):
            for address in self.store.duplicates(self.store.host_address, server_name):
                self._serves(txn, address, zone)

    def learn_address(self, name: bytes, address: bytes) -> None:
        if not self._new(("address", name, address)):
            return
        txn = self.store.begin()
        if txn.put(name, address, db=self.store.host_address, dupdata=False):
            for zone in self.store.duplicates(self.store.delegation, name):
                self._serves(txn, address, zone)

    def _serves(self, txn: lmdb.Transaction, address: bytes, zone: bytes) -> None:
        txn.put(address, zone, db=self.store.zone_server, dupdata=False)
        self.cache.pop(address, None)

    def forget_cache(self) -> None:
        self.cache.clear()
        self.known.clear()


class LmdbStore:
    """Store's write path and exact-owner lookup on one LMDB environment."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(path, exist_ok=True)
        self.env = lmdb.open(path, map_size=_MAP_SIZE, max_dbs=8, sync=True, metasync=True, readahead=False)
        self.limit = self.env.max_key_size()
        self.rrset = self.env.open_db(b"rrset")
        self.rdata = self.env.open_db(b"rdata")
        self.delegation = self.env.open_db(b"delegation", dupsort=True)
        self.host_address = self.env.open_db(b"host_address", dupsort=True)
        self.zone_server = self.env.open_db(b"zone_server", dupsort=True)
        self.ingested = self.env.open_db(b"ingested")
        self.txn: lmdb.Transaction | None = None
        self.directory = LmdbDirectory(self)

    # ------------------------------------------------------------- writing
    def begin(self) -> lmdb.Transaction:
        """The batch's write transaction (opened by the first write)."""
        if self.txn is None:
            self.txn = self.env.begin(write=True)
        return self.txn

    def _get(self, key: bytes, db) -> bytes | None:
        if self.txn is not None:
            return self.txn.get(key, db=db)
        with self.env.begin() as txn:
            return txn.get(key, db=db)

    def duplicates(self, db, key: bytes) -> list[bytes]:
        """The values of `key` in a duplicate-sorted table, as the batch sees them."""
        if self.txn is not None:
            return self._duplicates(self.txn, db, key)
        with self.env.begin() as txn:
            return self._duplicates(txn, db, key)

    @staticmethod
    def _duplicates(txn: lmdb.Transaction, db, key: bytes) -> list[bytes]:
        cursor = txn.cursor(db=db)
        return list(cursor.iternext_dup()) if cursor.set_key(key) else []

    def outcome(self, sensor: str, name: str) -> str | None:
        value = self._get(f"{sensor}\0{name}".encode(), self.ingested)
        return None if value is None else value[8:].decode()

    def merge(self, rrsets: list, rdata: list) -> None:
        txn = self.begin()
        for (owner, rrtype, zone, datas), first, last, count in rrsets:
            key = names.key(owner) + b"\0" + rrtype.to_bytes(2, "big") + zone + pack_rdata(datas)
            _add(txn, self.rrset, *_bounded(key, self.limit), first, last, count)
        for (datum, rrtype, owner), first, last, count in rdata:
            _add(txn, self.rdata, *_bounded(_rdata_row_key(datum, rrtype, owner), self.limit), first, last, count)

    def commit(self, files: list[tuple[str, str, int, str]]) -> None:
        txn = self.begin()
        for sensor, name, size, outcome in files:
            txn.put(f"{sensor}\0{name}".encode(), size.to_bytes(8, "big") + outcome.encode(), db=self.ingested,
                    overwrite=False)
        txn.commit()
        self.txn = None

    def rollback(self) -> None:
        if self.txn is not None:
            self.txn.abort()
            self.txn = None
        self.directory.forget_cache()

    # ------------------------------------------------------------- reading
    def rrsets(self, owner: bytes) -> Iterator[Entry]:
        """Entries owned by exactly `owner`, in SqliteStore's order."""
        prefix = names.key(owner) + b"\0"
        with self.env.begin() as txn:
            cursor = txn.cursor(db=self.rrset)
            if not cursor.set_range(prefix):
                return
            for key, value in cursor:
                if not key.startswith(prefix):
                    return
                first, last, count = _COUNTERS.unpack_from(value)
                whole = value[_COUNTERS.size :] or key
                rrtype = int.from_bytes(whole[len(prefix) : len(prefix) + 2], "big")
                end = _name_end(whole, len(prefix) + 2)
                yield Entry(owner.lower(), rrtype, whole[len(prefix) + 2 : end], unpack_rdata(whole[end:]),
                            first, last, count)

    def counts(self) -> dict[str, int]:
        with self.env.begin() as txn:
            return {name: txn.stat(db)["entries"] for name, db in
                    (("rrset", self.rrset), ("rdata", self.rdata), ("zone_server", self.zone_server),
                     ("ingested", self.ingested))}

    def pages_in_use(self) -> int:
        """Pages of every table's tree (the rest of the file is free pages)."""
        with self.env.begin() as txn:
            stats = [txn.stat(db) for db in (self.rrset, self.rdata, self.delegation, self.host_address,
                                              self.zone_server, self.ingested)] + [self.env.stat()]
        return sum(s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"] for s in stats)

    def size(self) -> int:
        """Bytes of the data file that are in use (LMDB never shrinks the file)."""
        return (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]

    def close(self) -> None:
        self.rollback()
        self.env.close()


def _rdata_row_key(datum: bytes, rrtype: int, owner: bytes) -> bytes:
    key = rdata_key(rrtype, datum)
    if rrtype in (1, 28):  # an address: fixed width, so a prefix range is an address range
        head = key
    elif rrtype in NAME_TYPES:  # a name's key: ends with 0, so "every name under a zone" is one range
        head = key + b"\0"
    else:
        head = len(key).to_bytes(2, "big") + key
    return rrtype.to_bytes(2, "big") + head + names.key(owner) + b"\0" + (b"" if key == datum else datum)
