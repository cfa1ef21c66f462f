"""Benchmark: what ingest costs in front of the store, whatever engine is behind it.

bench.collector_bench measures the whole ingest into the embedded store;
bench.sqlite_floor what one SQLite row costs. This measures the rest, on
the same NMSG files (bench.collector_bench's traffic, made the first time):
every file read by `spoolscan` and taken through the `Chain` (decode in C,
bailiwick, front table, inverse index made at each drain), the aggregates
then dropped instead of merged into a store, with the bailiwick knowledge

- `memory`: in `MemoryDirectory` (dicts, unbounded: the cheapest it can be,
  and nothing survives a restart);
- `sqlite`: in `SqliteDirectory` on a fresh file with the store's pragmas
  (what the embedded store does for it),

committed, and what the ingest froze collected, every 60 s as the
ingester commits.

So `memory` is the floor of any store behind the chain as it is, and
`sqlite` less `memory` is what keeping the knowledge in SQLite costs. Each
case runs in a fresh process; printed: response records, CPU-s per
million (user + sys, all threads), records/s and max RSS, against the
issue's 10 CPU-s per million (100,000 records a second on one core).

    python -m bench.chain_floor                    # 1,000,000 responses
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import click

from bench.collector_bench import OUT, REPO, WINDOW, capture, sensor_files

CASES = ("memory", "sqlite")


def child(case: str, files: str, hints: str) -> dict:
    """Every file through a Chain whose aggregates go nowhere (in the child)."""
    from collector import roothints
    from collector.bailiwick import MemoryDirectory
    from collector.chain import Chain
    from collector.ingest import collect_frozen, cyclic_gc_paused
    from collector.spoolscan import batches
    from collector.sqlite_store import SqliteStore
    from sensor.pipeline import peak_rss_kb

    folder = tempfile.mkdtemp(prefix="chain-floor-", dir=OUT)
    store = None
    if case == "memory":
        directory = MemoryDirectory()
    else:  # the store's own knowledge tables and pragmas; its rows stay empty (nothing is merged)
        store = SqliteStore(os.path.join(folder, "knowledge.sqlite"))
        directory = store.directory
    roothints.seed(directory, roothints.read(hints))
    chain = Chain(directory)
    drained = 0

    def drain() -> None:
        nonlocal drained
        rrsets, rdata = chain.drain()
        drained += len(rrsets) + len(rdata)

    def commit() -> None:  # as the ingester's, every WINDOW seconds: its knowledge in, the frozen collected
        drain()
        if store is not None:
            store.commit([])
        collect_frozen()

    names = sorted(name for name in os.listdir(files) if name.endswith(".nmsg"))
    used = resource.getrusage(resource.RUSAGE_SELF)
    started = committed = time.perf_counter()
    for name in names:
        with cyclic_gc_paused():
            for batch in batches(os.path.join(files, name)):
                chain.take(batch)
                if chain.full():
                    drain()
        if time.perf_counter() - committed >= WINDOW:
            commit()
            committed = time.perf_counter()
    commit()
    seconds = time.perf_counter() - started
    now = resource.getrusage(resource.RUSAGE_SELF)
    cpu = now.ru_utime - used.ru_utime + now.ru_stime - used.ru_stime
    if store is not None:
        store.close()
    shutil.rmtree(folder)
    return {"responses": chain.counts["responses"], "cpu": cpu, "seconds": seconds, "rows": drained,
            "peak_kb": peak_rss_kb()}


@click.command()
@click.option("--responses", default=1_000_000, show_default=True, help="the traffic's size")
@click.option("--seed", default=1, show_default=True)
@click.option("--runs", default=1, show_default=True, help="runs per case (alternating; each printed)")
@click.option("--child", "child_case", type=click.Choice(CASES), hidden=True)
@click.option("--files", hidden=True)
@click.option("--hints", hidden=True)
def main(responses: int, seed: int, runs: int, child_case: str | None, files: str | None, hints: str | None) -> None:
    if child_case:
        click.echo(json.dumps(child(child_case, files, hints)))
        return
    pcap, hints, summary = capture(responses, seed)
    files = sensor_files(pcap, summary)
    for run in range(1, runs + 1):
        for case in CASES:
            argv = [sys.executable, "-m", "bench.chain_floor", "--child", case, "--files", files, "--hints", hints]
            out = subprocess.run(argv, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
                                 check=True).stdout
            r = json.loads(out)
            per_million = r["cpu"] / r["responses"] * 1e6
            click.echo(f"{case} run {run}: {r['responses']:,} responses, {per_million:.1f} CPU-s per million, "
                       f"{r['responses'] / r['seconds']:,.0f} records/s, max RSS {r['peak_kb'] / 1024:.0f} MB, "
                       f"{r['rows']:,} aggregate rows dropped (budget at 100,000 records/s: 10 CPU-s)")


if __name__ == "__main__":
    main()
