"""Front de-duplication: the same observation, seen again, is one entry.

Most responses repeat what the database already holds (the same NS set of
a TLD in every referral, the same address for a popular name). The front
table coalesces them in memory over a window before they reach the store:
an entry is (first seen, last seen, count), merged as min / max / sum, so
flushing early (the table is full) or late gives the same store contents.
Bounded by entries, not time: `full()` tells the caller to flush. The
inverse index's aggregates are made from the RRsets' at the flush
(`inverse_index`), not held in a table of their own.
"""

from __future__ import annotations

from collections.abc import Hashable

# The front table's bound unless dedup_max_entries says otherwise: with it
# the ingest's max RSS stays under 256 MB on bench.collector_bench.
MAX_ENTRIES = 100_000


class FrontTable:
    """Aggregates keyed by any hashable observation."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries: dict[Hashable, list[int]] = {}

    def add(self, key: Hashable, when: int) -> None:
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = [when, when, 1]
            return
        if when < entry[0]:
            entry[0] = when
        elif when > entry[1]:
            entry[1] = when
        entry[2] += 1

    def full(self) -> bool:
        return len(self.entries) >= self.max_entries

    def __len__(self) -> int:
        return len(self.entries)

    def drain(self) -> list[tuple[Hashable, int, int, int]]:
        """Every aggregate, oldest key first; the table is empty after."""
        rows = [(key, first, last, count) for key, (first, last, count) in self.entries.items()]
        self.entries = {}
        return rows


def inverse_index(rrsets: list[tuple[Hashable, int, int, int]]) -> list[tuple[Hashable, int, int, int]]:
    """The inverse index's aggregates, ((datum, type, owner), first, last,
    count), of RRset aggregates, ((owner, type, bailiwick, data), first,
    last, count): each datum of each RRset is an observation of the datum
    at the owner, so its aggregate is the min / max / sum of theirs; in the
    order each first appears (what a FrontTable fed alongside would hold)."""
    index: dict[Hashable, list[int]] = {}
    for (owner, rrtype, _, rdatas), first, last, count in rrsets:
        for datum in rdatas:
            key = (datum, rrtype, owner)
            entry = index.get(key)
            if entry is None:
                index[key] = [first, last, count]
            else:
                if first < entry[0]:
                    entry[0] = first
                if last > entry[1]:
                    entry[1] = last
                entry[2] += count
    return [(key, first, last, count) for key, (first, last, count) in index.items()]
