"""Benchmark: the collector's ingest of NMSG files the sensor wrote, per embedded engine.

The traffic is a caching resolver walking from the root (bench/resolutions.py),
so every stage works: the bailiwick stage, seeded from the universe's root
hints, learns each server from the referral that named it, and keeps the
answers (traffic from servers nobody referred to would all be dropped there).
The capture and the sensor's files are made once and kept under bench/out/:

    capture:  resolutions-<N>-<seed>.pcap (+ .hints, + .pcap.json)
    files:    resolutions-<N>-<seed>.nmsg/  (`sie-dns-sensor run --pcap`, production
              configuration, NMSG, `interval` giving about 300 files)

Then for each engine (runs alternate between engines, so drift on a shared
machine hits both) a fresh process ingests every file from a collector root's
incoming/<sensor>/up/<channel>/ (an `Ingester` with the engine's store, seeded
from the root hints, window 60 s): wait4 gives its CPU (user + sys, all
threads) and it reports its own peak RSS (VmHWM: Linux carries the parent's
peak into ru_maxrss); a second process then counts the store's rows and
times random exact-owner lookups, then (SQLite) expires what was last seen
before the middle of the traffic's time. Printed per run, then the medians:
response records ingested (those that fed the chain), records/s (wall time
of the ingest loop), CPU-s per million response records (the whole ingest
process), max RSS, store bytes per unique RRset, unique RRsets,
inverse-index rows, the chain's counters, lookup latency (p50/p99), and
what that expire removed (entries, and the bailiwick knowledge learned
only from them) and cost.

    python -m bench.collector_bench                        # 1,000,000 responses, both engines
    python -m bench.collector_bench --responses 100000 --engine sqlite --runs 3
"""

from __future__ import annotations

import cProfile
import hashlib
import json
import os
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import click

from bench import resolutions
from bench.traffic import RESOLVER4, RESOLVER6

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
ENGINES = ("sqlite", "lmdb")
SENSOR, CHANNEL = "bench", "ch202"
FILES_WANTED = 300
WINDOW = 60.0

SENSOR_CONFIG = """\
DNSQR_RES_ADDRS="{resolver4},{resolver6}"
DNSQR_CAPTURE_RD="0"
interval="{interval}"
upload="yes"
archive="no"
spool_format="nmsg"
"""


# ------------------------------------------------------------ made once, kept
def capture(responses: int, seed: int) -> tuple[str, str, dict]:
    """(pcap, root hints, summary) of the resolutions, generated the first time."""
    os.makedirs(OUT, exist_ok=True)
    stem = os.path.join(OUT, f"resolutions-{responses}-{seed}")
    pcap, hints = stem + ".pcap", stem + ".hints"
    if not os.path.exists(pcap + ".json"):  # written last: its presence means the rest is whole
        click.echo(f"generating {responses} exchanges into {pcap} ...")
        started = time.perf_counter()
        resolutions.write(pcap, hints, responses, seed)
        click.echo(f"  {time.perf_counter() - started:.1f} s")
    with open(pcap + ".json") as handle:
        return pcap, hints, json.load(handle)


def run_sensor(pcap: str, interval: int, spool: str) -> tuple[str, str]:
    """`sie-dns-sensor run --pcap` into `spool`, production configuration,
    NMSG: (the folder of the files it finished, its stop line)."""
    config = os.path.join(spool, "sensor.conf")
    with open(config, "w") as handle:
        handle.write(SENSOR_CONFIG.format(resolver4=RESOLVER4, resolver6=RESOLVER6, interval=interval))
    argv = [sys.executable, "-m", "sensor", "run", "-c", config, "--pcap", pcap, "--spooldir", spool]
    result = subprocess.run(argv, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True)
    if result.returncode != 0:
        raise click.ClickException(f"sensor failed: {result.stderr}")
    stop = next(line for line in result.stderr.splitlines() if "stopped:" in line)
    return os.path.join(spool, "waiting", CHANNEL), stop.split("stopped: ", 1)[1]


def sensor_files(pcap: str, summary: dict) -> str:
    """The folder of NMSG files the sensor wrote from `pcap` (made the first time)."""
    folder = pcap[: -len(".pcap")] + ".nmsg"
    if os.path.exists(os.path.join(folder, ".complete")):
        return folder
    interval = max(1, round((summary["last"] - summary["first"]) / FILES_WANTED))
    spool = tempfile.mkdtemp(prefix="sie-collector-bench-", dir=OUT)
    try:
        written, stop = run_sensor(pcap, interval, spool)
        click.echo(f"sensor (interval {interval} s): {stop[:100]}")
        shutil.rmtree(folder, ignore_errors=True)
        shutil.move(written, folder)
        open(os.path.join(folder, ".complete"), "w").close()
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    return folder


# --------------------------------------------------------- the child processes
def open_store(engine: str, root: str):
    if engine == "sqlite":
        from collector.sqlite_store import SqliteStore

        return SqliteStore(os.path.join(root, "pdns.sqlite"))
    from bench.alt_store import LmdbStore

    return LmdbStore(os.path.join(root, "pdns.lmdb"))


def ingest_all(engine: str, root: str, hints: str, front: int | None = None, profile: bool = False) -> dict:
    """Every waiting file through an Ingester into a new store (in the child)."""
    from collector import roothints
    from collector.chain import Chain
    from collector.ingest import Ingester
    from sensor.pipeline import peak_rss_kb

    store = open_store(engine, root)
    roothints.seed(store.directory, roothints.read(hints))
    store.commit([])
    chain = Chain(store.directory) if front is None else Chain(store.directory, max_entries=front)
    ingester = Ingester(root, store, chain, window=WINDOW)
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    while ingester.step():
        pass
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    resident = _resident_kb()  # before close: what the mapped store still holds
    store.close()
    if profiler:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(45)
    totals = ingester.totals
    return {"seconds": seconds, "counts": dict(ingester.counts), "files": totals.files, "damaged": totals.damaged,
            "records": totals.records, "errors": totals.errors, "peak_kb": peak_rss_kb(), "resident_kb": resident}


def _resident_kb() -> dict[str, int]:
    """RssAnon (the process's own memory) and RssFile (mapped files: LMDB's
    pages, which the kernel may drop under pressure) now."""
    with open("/proc/self/status") as handle:
        return {line.split(":")[0]: int(line.split()[1]) for line in handle if line.startswith(("RssAnon", "RssFile"))}


def lookups(engine: str, root: str, count: int, seed: int) -> dict:
    """Rows, size and the latency of `count` random exact-owner lookups (in the child)."""
    from collector import names

    store = open_store(engine, root)
    rows = store.counts()
    size = store.size()
    owners = sorted(set(_owner_keys(engine, store)))
    picked = [names.wire_of_key(key) for key in random.Random(seed).choices(owners, k=count)]
    found = 0
    latencies = []
    for owner in picked:
        started = time.perf_counter()
        found += len(list(store.rrsets(owner)))
        latencies.append(time.perf_counter() - started)
    result = {"rows": rows, "size": size, "in_use": _in_use(engine, store), "owners": len(owners), "found": found,
              "latency": _percentiles(latencies)}
    if engine == "sqlite":
        result["digest"] = _digest(store.db)
    if engine == "sqlite":  # the same query on one open connection: what the engine costs without the store's connect
        sql = "SELECT name, type, bailiwick, data, first, last, count FROM rrset WHERE name = ? " \
              "ORDER BY name, type, bailiwick, data"
        latencies = []
        for owner in picked:
            started = time.perf_counter()
            store.db.execute(sql, (names.key(owner),)).fetchall()
            latencies.append(time.perf_counter() - started)
        result["latency_one_connection"] = _percentiles(latencies)
        result["expire"] = _expire_middle(store)
    store.close()
    return result


def _expire_middle(store) -> dict:
    """What `expire` removes and costs at the middle of the traffic's time (last thing on the store)."""
    from collector.sqlite_store import KNOWLEDGE_TABLES

    before = {table: store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in KNOWLEDGE_TABLES}
    first, last = store.db.execute("SELECT min(first), max(last) FROM rrset").fetchone()
    cpu, started = time.process_time(), time.perf_counter()
    rrsets, rdata = store.expire((first + last) // 2)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    after = {table: store.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in KNOWLEDGE_TABLES}
    return {"rrsets": rrsets, "rdata": rdata, "seconds": seconds, "cpu": cpu, "before": before, "after": after}


def _in_use(engine: str, store) -> int:
    """Bytes of the store's pages that hold data (the rest are free pages
    the engine reuses: LMDB frees a page it copied only at commit)."""
    if engine == "sqlite":
        pages, free, size = (store.db.execute(f"PRAGMA {name}").fetchone()[0]
                             for name in ("page_count", "freelist_count", "page_size"))
        return (pages - free) * size
    return store.pages_in_use() * store.env.stat()["psize"]


def _digest(db) -> str:
    """SHA-256 of every row of the data tables and the bailiwick stage's, in key order: two trees ingesting
    the same files must give the same (what a change to the ingest keeps)."""
    from collector.sqlite_store import KNOWLEDGE_TABLES

    digest = hashlib.sha256()
    for table in ("rrset", "rdata", "name_forward", *KNOWLEDGE_TABLES):
        for row in db.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4" if table in ("rrset", "rdata")
                              else f"SELECT * FROM {table} ORDER BY 1, 2"):
            digest.update(repr(row).encode())
    return digest.hexdigest()[:16]


def _owner_keys(engine: str, store):
    if engine == "sqlite":
        return (name for (name,) in store.db.execute("SELECT name FROM rrset"))
    with store.env.begin() as txn:
        return [key[: key.index(b"\0")] for key in txn.cursor(db=store.rrset).iternext(values=False)]


def _percentiles(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {"p50_us": ordered[len(ordered) // 2] * 1e6, "p99_us": ordered[int(len(ordered) * 0.99)] * 1e6}


def run_child(argv: list[str]) -> dict:
    """Run one step in a fresh process; its JSON answer and its wait4 usage."""
    process = subprocess.Popen([sys.executable, "-m", "bench.collector_bench", *argv], stdout=subprocess.PIPE,
                               env=dict(os.environ, PYTHONPATH=REPO))
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise click.ClickException(f"{argv[:2]} failed (exit {os.waitstatus_to_exitcode(status)})")
    result = json.loads(output)
    result["cpu"] = usage.ru_utime + usage.ru_stime  # ru_maxrss is not used: it carries this process's peak
    return result


# ------------------------------------------------------------------- the runs
def one_run(engine: str, files: str, hints: str, lookups_wanted: int, seed: int, options: list[str]) -> dict:
    root = tempfile.mkdtemp(prefix=f"collector-{engine}-", dir=OUT)
    try:
        up = os.path.join(root, "incoming", SENSOR, "up", CHANNEL)
        os.makedirs(up)
        for name in os.listdir(files):
            if not name.startswith("."):
                os.link(os.path.join(files, name), os.path.join(up, name))  # the ingester removes its name only
        result = run_child(["--child", "ingest", "--engine", engine, "--root", root, "--hints", hints, *options])
        result["store"] = run_child(["--child", "lookup", "--engine", engine, "--root", root,
                                 "--lookups", str(lookups_wanted), "--seed", str(seed)])
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(engine: str, index: int | str, r: dict) -> None:
    counts, store = r["counts"], r["store"]
    responses = counts.get("responses", 0)
    rrsets, rdata = store["rows"]["rrset"], store["rows"]["rdata"]
    click.echo(f"{engine} run {index}: {responses:,} response records in {r['seconds']:.2f} s = "
               f"{responses / r['seconds']:,.0f} records/s; CPU {r['cpu']:.2f} s = "
               f"{r['cpu'] * 1e6 / responses:.2f} CPU-s per million response records; max RSS "
               f"{r['peak_kb'] / 1024:.1f} MB (at the end: anonymous {r['resident_kb']['RssAnon'] / 1024:.1f} MB, "
               f"mapped files {r['resident_kb']['RssFile'] / 1024:.1f} MB)")
    click.echo(f"  store {store['size']:,} bytes / {rrsets:,} unique RRsets = {store['size'] / rrsets:.1f} bytes "
               f"per RRset ({store['in_use'] / rrsets:.1f} in pages that hold data); {rdata:,} inverse-index rows; "
               f"{store['rows']['zone_server']:,} zone_server rows; "
               f"{r['files']} files ({r['damaged']} damaged, {r['errors']} errors)"
               + (f"; rows' digest {store['digest']}" if "digest" in store else ""))
    click.echo("  chain: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
    dropped = counts.get("unknown_server", 0) + counts.get("out_of_bailiwick", 0)
    click.echo(f"  dropped by bailiwick: {dropped} (unknown_server {counts.get('unknown_server', 0)}, "
               f"out_of_bailiwick {counts.get('out_of_bailiwick', 0)})")
    line = f"  {store['lookups']:,} random exact-owner lookups: p50 {store['latency']['p50_us']:.0f} us, " \
           f"p99 {store['latency']['p99_us']:.0f} us"
    if "latency_one_connection" in store:
        one = store["latency_one_connection"]
        line += f" (a connection per lookup, as SqliteStore.rrsets); on one open connection p50 " \
                f"{one['p50_us']:.0f} us, p99 {one['p99_us']:.0f} us"
    click.echo(line)
    if "expire" in store:
        gone = store["expire"]
        tables = ", ".join(f"{t} {gone['before'][t]:,} -> {gone['after'][t]:,}" for t in gone["before"])
        click.echo(f"  expire at the middle of the traffic's time: {gone['rrsets']:,} RRsets and {gone['rdata']:,} "
                   f"index rows in {gone['seconds']:.1f} s ({gone['cpu']:.1f} CPU-s); {tables}")


@click.command()
@click.option("--responses", default=1_000_000, show_default=True, help="exchanges in the generated capture")
@click.option("--seed", default=1, show_default=True)
@click.option("--runs", default=1, show_default=True, help="runs per engine (the median is printed)")
@click.option("--engine", type=click.Choice([*ENGINES, "all"]), default="all", show_default=True)
@click.option("--lookups", "lookups_wanted", default=10_000, show_default=True, help="random exact-owner lookups")
@click.option("--front", type=int, default=None, help="the front table's bound (default: Chain's)")
@click.option("--profile", is_flag=True, help="print the ingest's cProfile (cumulative) to stderr")
@click.option("--child", type=click.Choice(["ingest", "lookup"]), hidden=True)
@click.option("--root", hidden=True)
@click.option("--hints", hidden=True)
def main(responses: int, seed: int, runs: int, engine: str, lookups_wanted: int, front: int | None, profile: bool,
         child: str | None, root: str | None, hints: str | None) -> None:
    if child == "ingest":
        click.echo(json.dumps(ingest_all(engine, root, hints, front, profile)))
        return
    if child == "lookup":
        click.echo(json.dumps(lookups(engine, root, lookups_wanted, seed) | {"lookups": lookups_wanted}))
        return
    pcap, hints, summary = capture(responses, seed)
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(summary["kinds"].items()))
    click.echo(f"capture: {summary['responses']:,} exchanges over {summary['last'] - summary['first']:.0f} s of "
               f"resolver time, {summary['zones']:,} zones; {kinds}")
    files = sensor_files(pcap, summary)
    engines = ENGINES if engine == "all" else (engine,)
    results: dict[str, list[dict]] = {e: [] for e in engines}
    for index in range(runs):
        for name in engines:  # alternate, so drift on a shared machine hits both
            options = ([f"--front={front}"] if front else []) + (["--profile"] if profile else [])
            results[name].append(one_run(name, files, hints, lookups_wanted, seed, options))
            report(name, index + 1, results[name][-1])
    for name, rows in results.items():
        def records(r: dict) -> int:
            return r["counts"].get("responses", 0)

        click.echo(f"{name} median of {len(rows)}: "
                   f"{statistics.median(records(r) / r['seconds'] for r in rows):,.0f} records/s, "
                   f"{statistics.median(r['cpu'] * 1e6 / records(r) for r in rows):.2f} CPU-s per million "
                   f"response records, max RSS {max(r['peak_kb'] for r in rows) / 1024:.1f} MB, "
                   f"{statistics.median(r['store']['size'] / r['store']['rows']['rrset'] for r in rows):.1f} "
                   f"bytes per unique RRset, lookups p50 "
                   f"{statistics.median(r['store']['latency']['p50_us'] for r in rows):.0f} us / p99 "
                   f"{statistics.median(r['store']['latency']['p99_us'] for r in rows):.0f} us")


if __name__ == "__main__":
    main()
