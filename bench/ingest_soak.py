"""Exactly once: SIGKILL `sie-dns-collector ingest` at random moments, then check.

The same uploads (two sensors, `--files` spool files of resolutions walking
from the root, names repeating across files) are ingested once without
interruption, and then, in each trial, by an ingester killed with SIGKILL
at random moments (several times) and restarted until it has taken
everything. The store must then equal the clean run's, entry for entry:
every RRset and inverse-index row with its first, last and count, what the
bailiwick stage learned, and the ledger of files. Batches are kept short
(dedup_window=1) and the front table small (1,000 entries, so it is
flushed into the open batch many times a file), so kills land inside a
batch, between a flush and its commit, and between commits.

    python -m bench.ingest_soak --trials 20 --files 120
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

import click

from tests.collectorkit import ROOT_HINTS, resolution, upload

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES = ("rrset", "rdata", "delegation", "host_address", "zone_server", "ingested")


def make_uploads(root: str, files: int, seed: int, per_file: int = 300) -> None:
    """`files` spool files from two sensors; zones and names repeat across files."""
    rng = random.Random(seed)
    for n in range(files):
        records = []
        when = 1_700_000_000 + n * 60
        for i in range(per_file):
            zone = f"z{rng.randrange(400)}.test"
            host = f"h{rng.randrange(20)}.{zone}"
            records += resolution(host, zone, f"203.0.113.{rng.randrange(256)}", when + i % 60)
        upload(root, f"sensor-{'ab'[n % 2]}", f"host.{when}.{n:06d}.nmsg", records)


def _config(work: str, root: str) -> str:
    path = os.path.join(work, f"conf-{os.path.basename(root)}")
    with open(path, "w") as handle:
        handle.write(f'collector_dir="{root}"\nroot_hints="{os.path.join(work, "root.hints")}"\n'
                     'dedup_window="1"\ndedup_max_entries="1000"\n')
    return path


def _ingester(config: str, once: bool) -> subprocess.Popen:
    argv = [sys.executable, "-m", "collector", "ingest", "-c", config, "--user", "root"]
    return subprocess.Popen(argv + (["--once"] if once else []), stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONPATH=REPO))


def dump(root: str) -> dict[str, list]:
    db = sqlite3.connect(os.path.join(root, "pdns.sqlite"))
    try:
        return {table: sorted(db.execute(f"SELECT * FROM {table}").fetchall()) for table in TABLES}
    finally:
        db.close()


def reference(work: str, template: str) -> tuple[dict, float]:
    root = os.path.join(work, "reference")
    shutil.copytree(template, root)
    started = time.perf_counter()
    if _ingester(_config(work, root), once=True).wait() != 0:
        raise RuntimeError("the uninterrupted run failed")
    return dump(root), time.perf_counter() - started


def trial(work: str, template: str, expected: dict, kills: list[float]) -> dict:
    """Kill at each of `kills` (seconds after a start), then run to the end; raise on any difference."""
    root = os.path.join(work, "trial")
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(template, root)
    config = _config(work, root)
    for delay in kills:
        process = _ingester(config, once=True)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
    if _ingester(config, once=True).wait() != 0:
        raise AssertionError("the final run failed")
    got = dump(root)
    for table in TABLES:
        assert got[table] == expected[table], f"{table}: {len(got[table])} rows, expected {len(expected[table])}"
    left = [name for _, _, names in os.walk(os.path.join(root, "work")) for name in names]
    assert not left, f"left in work/: {left}"
    return {"files": len(got["ingested"]), "rrsets": len(got["rrset"])}


def prepare(work: str, files: int, seed: int) -> str:
    with open(os.path.join(work, "root.hints"), "w") as handle:
        handle.write(ROOT_HINTS)
    template = os.path.join(work, "template")
    make_uploads(template, files, seed)
    return template


@click.command()
@click.option("--trials", default=20, show_default=True)
@click.option("--files", default=120, show_default=True, help="spool files uploaded (two sensors)")
@click.option("--kills", default=3, show_default=True, help="SIGKILLs per trial before the final run")
@click.option("--seed", default=1, show_default=True)
def main(trials: int, files: int, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="sie-ingest-soak-") as work:
        template = prepare(work, files, seed)
        expected, full = reference(work, template)
        click.echo(f"uninterrupted: {len(expected['ingested'])} files, {len(expected['rrset'])} RRsets in {full:.1f} s")
        for number in range(trials):
            result = trial(work, template, expected, [rng.uniform(0.2, full) for _ in range(kills)])
            click.echo(f"trial {number + 1}: {result}")
    click.echo(f"{trials} trials of {kills} SIGKILLs each over {files} files: the store equals the clean run's")


if __name__ == "__main__":
    main()
