"""The store's one interface: what ingest writes and what queries read.

Two engines implement it (the embedded SQLite file, `sqlite_store`, and
ClickHouse for more than one machine); the same lookups give the same rows
in the same order on both. Names are passed and returned in wire form
(lower case); record data in the canonical wire form of `decompose`.

Lookups are generators: rows stream out in a stable order (owner key,
type, bailiwick, data for RRsets; data key, type, owner, data for the
inverse index), bounded by `limit` and skipped by `offset`, so a client
can page and no answer is ever built in memory whole.

Names may carry one wildcard, as DNSDB's do, standing for zero or more
labels: `under` is the left-hand one (`*.example.com`: the name and every
name below it), `starts` the right-hand one (`www.example.*`: the name
and every name that begins with its labels). Both are range scans, on
the reversed and on the forward name keys; neither is ever a full scan.
"""

from __future__ import annotations

import ipaddress
import sqlite3
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from . import bailiwick, decompose, names


@dataclass(frozen=True)
class Entry:
    """One RRset as seen: (rrname, rrtype, bailiwick, rdata set) -> when, how often."""

    rrname: bytes
    rrtype: int
    bailiwick: bytes
    rdata: tuple[bytes, ...]
    time_first: int
    time_last: int
    count: int


@dataclass(frozen=True)
class RdataEntry:
    """One record of the inverse index: this data, of this type, was seen at this owner."""

    rrname: bytes
    rrtype: int
    rdata: bytes
    time_first: int
    time_last: int
    count: int


@dataclass(frozen=True)
class Fences:
    """Time limits on a lookup (epoch seconds; None: no limit). An entry
    passes when time_first and time_last fall inside their bounds; bounds
    are inclusive."""

    first_after: int | None = None
    first_before: int | None = None
    last_after: int | None = None
    last_before: int | None = None

    def admit(self, first: int, last: int) -> bool:
        return (
            (self.first_after is None or first >= self.first_after)
            and (self.first_before is None or first <= self.first_before)
            and (self.last_after is None or last >= self.last_after)
            and (self.last_before is None or last <= self.last_before)
        )


NO_FENCES = Fences()

# one type, several (DNSDB's ANY-DNSSEC), or None: every type
RRTypes = int | Collection[int] | None


class StoreUnavailable(Exception):
    """A server or a shard did not answer, or cannot take a write now: nothing is lost, try again
    later (the text says which)."""


# What a store raises when it cannot take the batch now (its SQLite files busy past their wait,
# full or failing): the ingester lets the batch go, keeps its files and tries again later; never
# the fault of the file being read.
STORE_PROBLEMS = (StoreUnavailable, sqlite3.OperationalError)


class LookupTimeout(Exception):
    """A lookup ran past the time it was given; what it yielded so far is
    all there is (the text says how long it had)."""


@dataclass(frozen=True)
class Summary:
    """What a lookup would return, in four numbers (DNSDB's summarize):
    the sum of the counts, the number of rows, the earliest time_first and
    the latest time_last (None when there is no row)."""

    count: int
    num_results: int
    time_first: int | None
    time_last: int | None


def summary_of(rows: Iterable[tuple[int, int, int]], max_count: int | None = None) -> Summary:
    """The Summary of (count, time_first, time_last) rows, read one by one: where the sum of the
    counts reaches `max_count`, the rest is not read (DNSDB's max_count)."""
    count = found = 0
    first = last = None
    for each, seen_first, seen_last in rows:
        count, found = count + each, found + 1
        first = seen_first if first is None else min(first, seen_first)
        last = seen_last if last is None else max(last, seen_last)
        if max_count is not None and count >= max_count:
            break
    return Summary(count, found, first, last)


def type_list(rrtype: RRTypes) -> list[int] | None:
    """The types a lookup keeps, sorted; None: every type."""
    if rrtype is None:
        return None
    return [rrtype] if isinstance(rrtype, int) else sorted(set(rrtype))


def pack_rdata(rdatas: tuple[bytes, ...]) -> bytes:
    """An RRset's data as one value: each datum after its two-octet length."""
    return b"".join(len(rdata).to_bytes(2, "big") + rdata for rdata in rdatas)


def unpack_rdata(packed: bytes) -> tuple[bytes, ...]:
    out = []
    pos = 0
    while pos < len(packed):
        length = int.from_bytes(packed[pos : pos + 2], "big")
        out.append(packed[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return tuple(out)


def rdata_key(rrtype: int, rdata: bytes) -> bytes:
    """What the inverse index finds a datum by: an address as its octets,
    a name-bearing type by the name key of its target (so "every name in
    a zone" is a range), anything else by its data."""
    if rrtype in (decompose.TYPE_A, decompose.TYPE_AAAA):
        return rdata
    target = decompose.rdata_names(rrtype, rdata)
    return names.key(target) if target is not None else rdata


def address_range(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, bytes, bytes]:
    """(type, lowest, highest) packed addresses of a prefix, for a range scan."""
    rrtype = decompose.TYPE_A if network.version == 4 else decompose.TYPE_AAAA
    return rrtype, network.network_address.packed, network.broadcast_address.packed


class Store(Protocol):
    """What every engine offers."""

    directory: bailiwick.Directory

    def outcome(self, sensor: str, name: str) -> str | None:
        """None when this sensor's file of this name is not in the store,
        else how it went: "" whole, or why it was set aside as damaged."""

    def merge(self, rrsets: list, rdata: list) -> None:
        """Add aggregates (from `Chain.drain`) to the batch under way."""

    def commit(self, files: list[tuple[str, str, int, str]]) -> None:
        """Make the batch and the files it came from, (sensor, name, size,
        outcome), durable together: after a crash both or neither."""

    def rollback(self) -> None:
        """Forget the batch under way (its files will be ingested again)."""

    def rrsets(self, owner: bytes, *, under: bool = False, starts: bool = False, rrtype: RRTypes = None,
               bailiwick: bytes | None = None, fences: Fences = NO_FENCES,
               limit: int | None = None, offset: int = 0) -> Iterator[Entry]:
        """Entries owned by `owner` (or by any name under it, `under`; or
        beginning with its labels, `starts`)."""

    def rdata_name(self, target: bytes, *, under: bool = False, starts: bool = False, rrtype: RRTypes = None,
                   fences: Fences = NO_FENCES, limit: int | None = None, offset: int = 0) -> Iterator[RdataEntry]:
        """Records whose data names `target` (or any name under it, or beginning with its labels)."""

    def rdata_ip(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network, *, fences: Fences = NO_FENCES,
                 limit: int | None = None, offset: int = 0) -> Iterator[RdataEntry]:
        """A and AAAA records whose address is in `network`."""

    def rdata_ip_range(self, first: bytes, last: bytes, *, fences: Fences = NO_FENCES,
                       limit: int | None = None, offset: int = 0) -> Iterator[RdataEntry]:
        """A (4 octets) or AAAA (16) records whose address is from `first` to `last`, both included."""

    def rdata_raw(self, rdata: bytes, *, rrtype: RRTypes = None, fences: Fences = NO_FENCES,
                  limit: int | None = None, offset: int = 0) -> Iterator[RdataEntry]:
        """Records whose data is exactly `rdata`."""

    def summarize(self, lookup: str, *args, max_count: int | None = None, **kwargs) -> Summary:
        """The Summary of what `getattr(self, lookup)(*args, **kwargs)` would
        yield (its limit and offset included), stopping once the counts sum
        to `max_count` or more."""

    def expire(self, before: int) -> tuple[int, int]:
        """Remove entries last seen before `before`; (RRsets, index rows) removed."""

    def size(self) -> int:
        """Bytes on disk."""

    def close(self) -> None:
        """Let go of the store (a batch under way is rolled back)."""


class RdataLookups:
    """The four inverse-index lookups of a store whose lookups are built as selects: each is its
    select (`_rdata_<kind>_select`, the store's own SQL) read by the store's `_rdata`. Both engines
    inherit them, so the lookups' signatures are written once."""

    def rdata_name(self, target: bytes, *, under: bool = False, starts: bool = False, rrtype: RRTypes = None,
                   fences: Fences = NO_FENCES, limit: int | None = None, offset: int = 0) -> Iterator[RdataEntry]:
        return self._rdata(self._rdata_name_select(target, under=under, starts=starts, rrtype=rrtype,
                                                   fences=fences), limit, offset)

    def rdata_ip(self, network, *, fences: Fences = NO_FENCES,
                 limit: int | None = None, offset: int = 0) -> Iterator[RdataEntry]:
        return self._rdata(self._rdata_ip_select(network, fences=fences), limit, offset)

    def rdata_ip_range(self, first: bytes, last: bytes, *, fences: Fences = NO_FENCES,
                       limit: int | None = None, offset: int = 0) -> Iterator[RdataEntry]:
        return self._rdata(self._rdata_ip_range_select(first, last, fences=fences), limit, offset)

    def rdata_raw(self, rdata: bytes, *, rrtype: RRTypes = None, fences: Fences = NO_FENCES,
                  limit: int | None = None, offset: int = 0) -> Iterator[RdataEntry]:
        return self._rdata(self._rdata_raw_select(rdata, rrtype=rrtype, fences=fences), limit, offset)
