"""Front de-duplication: the same observation, seen again, is one entry.

Most responses repeat what the database already holds (the same NS set of
a TLD in every referral, the same address for a popular name). The front
table coalesces them in memory over a window before they reach the store:
an entry is (first seen, last seen, count), merged as min / max / sum, so
flushing early (the table is full) or late gives the same store contents.
Bounded by entries, not time: `full()` tells the caller to flush.
"""

from __future__ import annotations

from collections.abc import Hashable


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
