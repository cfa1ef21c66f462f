"""Benchmark: what one row costs SQLite at the embedded store's scale, whatever the ingest around it.

The collector's ingest writes about 5.1 million rows a million response
records on bench.collector_bench's traffic (1.75M RRset upserts, 2.05M
inverse-index upserts, 1.28M forward names), in merges of about 100,000
rows a table (the front table's bound). This measures, on a fresh file
with the store's pragmas, rows shaped as the store's (a reversed name key,
a type, a bailiwick, four bytes of data, first, last, count) spread over
the whole key space as new names are:

- `upsert`: executemany of the store's merge statement into a WITHOUT ROWID
  table, the rows of each merge sorted (what SqliteStore.merge does);
- `append`: executemany of plain inserts into a rowid table (no key to
  find: the least any row written through Python's sqlite3 costs);
- `bulk`: the same upserts run inside SQLite from a temporary table
  (INSERT ... SELECT ... ORDER BY: no Python per row), at the front table's
  merge size and at four times it.

Each prints microseconds of CPU a row and what 5.1 million rows would cost
(CPU-s per million response records), against the issue's 10 (100,000
records a second on one core).

    python -m bench.sqlite_floor            # 1,750,000 rows a case
"""

from __future__ import annotations

import os
import random
import sqlite3
import tempfile
import time

import click

ROWS_PER_MILLION_RESPONSES = 5_080_000  # merged rows a million responses, bench.collector_bench (RESULTS.md)
COLUMNS = ("name BLOB NOT NULL, type INTEGER NOT NULL, bailiwick BLOB NOT NULL, data BLOB NOT NULL, "
           "first INTEGER NOT NULL, last INTEGER NOT NULL, count INTEGER NOT NULL")
KEYED = f"CREATE TABLE t ({COLUMNS}, PRIMARY KEY (name, type, bailiwick, data)) WITHOUT ROWID"  # as the store's
APPENDED = f"CREATE TABLE t ({COLUMNS})"
UPSERT = ("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET first = min(first, excluded.first), "
          "last = max(last, excluded.last), count = count + excluded.count")


def rows(rng: random.Random, count: int, when: int) -> list[tuple]:
    """`count` rows of new names under 125,000 zones, in key order."""
    out = []
    for _ in range(count):
        zone = b"\x04test\x06zone%d" % rng.randrange(125_000)
        out.append((zone + b"\x04host%d" % rng.randrange(10**9), 1, zone, rng.randbytes(4), when, when, 1))
    out.sort()
    return out


def case(folder: str, kind: str, total: int, per_merge: int, seed: int) -> float:
    """CPU seconds a row of `kind`, merges of `per_merge` rows."""
    db = sqlite3.connect(os.path.join(folder, f"{kind}-{per_merge}.sqlite"), isolation_level=None)
    for pragma in ("journal_mode = WAL", "synchronous = FULL", "cache_size = -32768"):  # as SqliteStore
        db.execute(f"PRAGMA {pragma}")
    db.execute(APPENDED if kind == "append" else KEYED)
    if kind == "bulk":
        db.execute("CREATE TEMP TABLE staged AS SELECT * FROM t WHERE 0")
    rng = random.Random(seed)
    spent = 0.0
    for merge in range(total // per_merge):
        batch = rows(rng, per_merge, merge)
        if kind == "bulk":
            db.execute("DELETE FROM staged")
            db.executemany("INSERT INTO staged VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
        started = time.process_time()
        db.execute("BEGIN IMMEDIATE")
        if kind == "upsert":
            db.executemany(UPSERT, batch)
        elif kind == "append":
            db.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
        else:
            db.execute(UPSERT.replace("VALUES (?, ?, ?, ?, ?, ?, ?)",
                                      "SELECT * FROM staged WHERE true ORDER BY 1, 2, 3, 4"))
        db.execute("COMMIT")
        spent += time.process_time() - started
    db.close()
    return spent / (total // per_merge * per_merge)


@click.command()
@click.option("--rows", "total", default=1_750_000, show_default=True, help="rows written in each case")
@click.option("--merge", "per_merge", default=92_000, show_default=True, help="rows a merge (the front table's)")
@click.option("--seed", default=1, show_default=True)
def main(total: int, per_merge: int, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sqlite-floor-") as folder:
        for kind, size in (("upsert", per_merge), ("append", per_merge), ("bulk", per_merge),
                           ("bulk", per_merge * 4)):
            per_row = case(folder, kind, total, size, seed)
            click.echo(f"{kind:6} {total:,} rows in merges of {size:,}: {per_row * 1e6:.2f} us of CPU a row; "
                       f"{ROWS_PER_MILLION_RESPONSES / 1e6:.2f}M rows = "
                       f"{per_row * ROWS_PER_MILLION_RESPONSES:.1f} CPU-s per million response records "
                       f"(the whole ingest's target: 10)")


if __name__ == "__main__":
    main()
