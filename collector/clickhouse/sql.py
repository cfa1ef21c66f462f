"""The SQL of each lookup on the ClickHouse schema (`schema`), as text.

Values are written into the text as literals (`literal`): names and data
are bytes, which the client library would not quote, and a whole
statement can then be run as it is anywhere (the tests run the same text
on a current ClickHouse in-process, chdb). Each lookup merges the rows of
a key at read time (GROUP BY, -Merge), fences the merged values (HAVING:
a partial row may pass a fence that the whole entry does not), and orders
as the embedded store does: owner key, type, bailiwick, data for RRsets;
data key, type, owner key, data for the inverse index; the forward key
first for a right-hand wildcard.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import names
from ..store import NO_FENCES, Fences

NO_LIMIT = 18446744073709551615  # LIMIT offset, count needs a count


def literal(value: bytes | str | int) -> str:
    """A ClickHouse literal: bytes as a string of \\x escapes (any octet, no quoting to get wrong)."""
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return "'" + "".join(f"\\x{octet:02x}" for octet in value) + "'"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"no literal for {type(value).__name__}")


def listed(values) -> str:
    return ", ".join(literal(v) for v in values)


@dataclass(frozen=True)
class Select:
    """One lookup: rows of `kind` where `where` holds (on the stored key
    columns), merged, fenced; `forward`: the range of forward keys of a
    right-hand wildcard (the store reads those names first, then their
    entries a chunk of names at a time: `chunk`)."""

    kind: str
    where: str
    fences: Fences = NO_FENCES
    forward: tuple[bytes, bytes] | None = None
    in_order: str = ""  # a chunk's ORDER BY first term: its rows come in its names' order (`chunk`)

    def sql(self, table: str, limit: int | None, offset: int) -> str:
        having = _having(self.fences)
        first = f"{self.in_order}, " if self.in_order else ""
        text = (f"SELECT key, type, other, data, minMerge(time_first) AS tf, maxMerge(time_last) AS tl, "
                f"sumMerge(count) AS n FROM {table} WHERE kind = '{self.kind}' AND {self.where} "
                "GROUP BY key, type, other, data" + (f" HAVING {having}" if having else "")
                + f" ORDER BY {first}key, type, other, data")
        if limit is not None or offset:
            text += f" LIMIT {offset}, {NO_LIMIT if limit is None else limit}"
        return text

    def summary_sql(self, table: str, limit: int | None, offset: int) -> str:
        return f"SELECT sum(n), count(), min(tf), max(tl) FROM ({self.sql(table, limit, offset)})"

    def names_sql(self, table: str) -> str:
        """The names of a right-hand wildcard, in forward-key order (each name's rows are on one shard)."""
        low, high = (literal(v) for v in self.forward)
        return (f"SELECT other FROM {table} WHERE kind = 'name' AND key >= {low} AND key < {high} "
                "GROUP BY key, other ORDER BY key")

    def chunk(self, keys: list[bytes]) -> Select:
        """The entries of these names only, name by name in the order given (the server sorts, so
        the client streams them, however many entries a name has): a literal IN list, which the
        primary key index reads granule by granule (an IN subquery is a full scan on 18.16)."""
        names_listed = listed(keys)
        # transform() looks a key up in a hash table: indexOf() scanned the list for every row (7 s for
        # a million rows of one name among 2,700, against 0.05 s, on 18.16 and on a current release)
        place = f"transform(key, [{names_listed}], [{', '.join(map(str, range(len(keys))))}], 0)"
        return Select(self.kind, f"{self.where} AND key IN ({names_listed})", self.fences, in_order=place)


def _having(fences: Fences) -> str:
    return " AND ".join(f"{column} {op} {value}" for column, op, value in (
        ("tf", ">=", fences.first_after), ("tf", "<=", fences.first_before),
        ("tl", ">=", fences.last_after), ("tl", "<=", fences.last_before)) if value is not None)


def name_condition(wire: bytes, under: bool, starts: bool) -> tuple[str, tuple[bytes, bytes] | None]:
    """(where, forward range) finding a name, or a wildcard's names (as `sqlite_store._name_clause`)."""
    if under and starts:
        raise ValueError("a name takes one wildcard, left or right, not both")
    if starts:
        forward = wire.lower()[:-1]
        return "1", (forward, forward + names.RANGE_END)
    key = names.key(wire)
    if under:
        return f"key >= {literal(key)} AND key < {literal(key + names.RANGE_END)}", None
    return f"key = {literal(key)}", None
