"""Benchmark: the ClickHouse store beside the embedded one.

Two clickhouse-server processes from Debian's package (tests/clickhouse.py)
on loopback, two shards of a cluster, a Distributed table: the store as
`store="clickhouse://...?cluster=..."` gives it.

`ingest`: the files of bench/collector_bench.py (a caching resolver walking
from the root, written by `sie-dns-sensor run --pcap`) ingested by a fresh
process through an `Ingester`, once into the embedded store (collector_bench's
own run) and once into a new database on the cluster. Printed: response
records/s, the ingest process's CPU (wait4) and the servers' CPU (their
/proc/PID/stat, before and after) per million response records, bytes on disk
per unique RRset.

`lookups`: lookup latency at the Store interface (in process, one lookup at
a time, random names: p50 / p99) on the same synthetic aggregates as
bench/query_bench.py (<rrsets> A RRsets, 1000 a zone, plus <big> under
big.bench, each with its index row and forward name) in both engines: the
embedded file query_bench made (made here if absent) and the cluster, filled
once through ClickHouseStore.merge/commit (the ingester's write path) and
kept under bench/out/clickhouse-query-<rrsets>-<big>/. Kinds: exact (an
owner's RRsets), left (*.zone, limit 100), right (owner.*), rdata (an
address), summarize (*.zone).

    python -m bench.clickhouse_bench ingest --responses 1000000
    python -m bench.clickhouse_bench lookups                 # 10 M + 1 M RRsets
    python -m bench.clickhouse_bench lookups --rrsets 200000 --big 10000 --lookups 300
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import click

from bench import collector_bench, query_bench

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
KINDS = ("exact", "left", "right", "rdata", "summarize")


def _servers(folder: str):
    from tests.clickhouse import Cluster

    return Cluster(folder)


def server_cpu(cluster) -> float:
    """CPU seconds (user + system) the cluster's server processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for server in cluster.servers:
        with open(f"/proc/{server.process.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


# ------------------------------------------------------------------ ingest
def ingest_child(url: str, root: str, hints: str) -> dict:
    """Every waiting file through an Ingester into the ClickHouse store (in the child)."""
    from collector import roothints
    from collector.chain import Chain
    from collector.clickhouse.store import ClickHouseStore
    from collector.ingest import Ingester
    from sensor.pipeline import peak_rss_kb

    store = ClickHouseStore(url, root)
    roothints.seed(store.directory, roothints.read(hints))
    store.commit([])
    ingester = Ingester(root, store, Chain(store.directory), window=collector_bench.WINDOW)
    started = time.perf_counter()
    while ingester.step():
        pass
    seconds = time.perf_counter() - started
    rows, size, spent = store.counts(), store.size(), dict(store.spent)
    store.close()
    totals = ingester.totals
    return {"seconds": seconds, "counts": dict(ingester.counts), "files": totals.files, "errors": totals.errors,
            "peak_kb": peak_rss_kb(), "rows": rows, "size": size, "spent": spent}


def ingest_run(cluster, files: str, hints: str, database: str) -> dict:
    from collector.clickhouse import location
    from collector.clickhouse.store import init

    url = cluster.url(database)
    init(location.parse(url))
    root = tempfile.mkdtemp(prefix="collector-clickhouse-", dir=OUT)
    try:
        up = os.path.join(root, "incoming", collector_bench.SENSOR, "up", collector_bench.CHANNEL)
        os.makedirs(up)
        for name in os.listdir(files):
            if not name.startswith("."):
                os.link(os.path.join(files, name), os.path.join(up, name))
        before = server_cpu(cluster)
        process = subprocess.Popen([sys.executable, "-m", "bench.clickhouse_bench", "ingest-child", url, root, hints],
                                   stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=REPO))
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise click.ClickException("the ClickHouse ingest failed")
        result = json.loads(output)
        result["cpu"] = usage.ru_utime + usage.ru_stime
        result["server_cpu"] = server_cpu(cluster) - before
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report_ingest(result: dict) -> None:
    responses = result["counts"].get("responses", 0)
    rrsets = result["rows"]["rrset"]
    click.echo(f"clickhouse: {responses:,} response records in {result['seconds']:.2f} s = "
               f"{responses / result['seconds']:,.0f} records/s; ingest CPU {result['cpu']:.2f} s = "
               f"{result['cpu'] * 1e6 / responses:.2f} CPU-s per million response records, servers' CPU "
               f"{result['server_cpu']:.2f} s = {result['server_cpu'] * 1e6 / responses:.2f} per million; max RSS "
               f"{result['peak_kb'] / 1024:.1f} MB")
    click.echo(f"  store {result['size']:,} bytes on disk (two shards, after the merges so far) / {rrsets:,} unique "
               f"RRsets = {result['size'] / rrsets:.1f} bytes per RRset; {result['rows']['rdata']:,} index rows; "
               f"{result['files']} files ({result['errors']} errors)")
    spent = result["spent"]
    click.echo(f"  exactly once: {spent.get('batches', 0)} batches; journal written in "
               f"{spent.get('journal', 0):.2f} s, markers looked up in {spent.get('marker', 0):.2f} s, blocks "
               f"inserted in {spent.get('insert', 0):.2f} s (all shards)")


# ----------------------------------------------------------------- lookups
def fill(store, rrsets: int, big: int) -> None:
    """query_bench's synthetic aggregates, merged and committed batch by batch."""
    started = time.monotonic()
    batch: list = []

    def flush() -> None:
        query_bench._merge(store, batch)
        store.commit([])
        batch.clear()

    for zone in range((rrsets + query_bench.HOSTS - 1) // query_bench.HOSTS):
        zone_name = query_bench.label(f"z{zone:05d}") + query_bench.label("bench") + b"\x00"
        for host in range(min(query_bench.HOSTS, rrsets - zone * query_bench.HOSTS)):
            index = zone * query_bench.HOSTS + host
            batch.append((query_bench.owner(zone, host), zone_name, query_bench.address(index),
                          1_600_000_000 + index))
        if len(batch) >= query_bench.BATCH:
            flush()
            print(f"  {(zone + 1) * query_bench.HOSTS:,} RRsets, {time.monotonic() - started:.0f} s", file=sys.stderr)
    big_zone = query_bench.label("big") + query_bench.label("bench") + b"\x00"
    for index in range(big):
        batch.append((query_bench.label(f"h{index:07d}") + big_zone, big_zone, query_bench.address(rrsets + index),
                      1_600_000_000 + index))
        if len(batch) >= query_bench.BATCH:
            flush()
    flush()
    print(f"filled: {rrsets + big:,} RRsets in {time.monotonic() - started:.0f} s", file=sys.stderr)


def picks(kind: str, rrsets: int, count: int, seed: int) -> list[tuple[str, tuple, dict]]:
    """(method, args, options) of `count` random lookups of `kind`."""
    import ipaddress

    rng = random.Random(seed)
    out = []
    for _ in range(count):
        zone, host = rng.randrange(rrsets // query_bench.HOSTS), rng.randrange(query_bench.HOSTS)
        zone_wire = query_bench.label(f"z{zone:05d}") + query_bench.label("bench") + b"\x00"
        if kind == "exact":
            out.append(("rrsets", (query_bench.owner(zone, host),), {}))
        elif kind == "left":
            out.append(("rrsets", (zone_wire,), {"under": True, "limit": 100}))
        elif kind == "right":
            out.append(("rrsets", (query_bench.owner(zone, host),), {"starts": True}))
        elif kind == "rdata":
            out.append(("rdata_ip", (ipaddress.ip_network(ipaddress.ip_address(
                query_bench.address(zone * query_bench.HOSTS + host))),), {}))
        else:
            out.append(("summarize", ("rrsets", zone_wire), {"under": True}))
    return out


def time_lookups(store, rrsets: int, count: int, seed: int) -> dict:
    """p50 / p99 (ms) and rows of each kind of lookup, one at a time."""
    found = {}
    for kind in KINDS:
        latencies, rows = [], 0
        for method, args, options in picks(kind, rrsets, count, seed):
            started = time.perf_counter()
            answer = getattr(store, method)(*args, **options)
            rows += 1 if kind == "summarize" else len(list(answer))
            latencies.append(time.perf_counter() - started)
        ordered = sorted(latencies)
        found[kind] = {"p50_ms": round(statistics.median(ordered) * 1000, 2),
                       "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 2), "rows": rows}
    return found


@click.group()
def main() -> None:
    """The ClickHouse store's figures beside the embedded store's."""


@main.command()
@click.option("--responses", default=1_000_000, show_default=True, help="exchanges in collector_bench's capture")
@click.option("--seed", default=1, show_default=True)
@click.option("--engine", type=click.Choice(["sqlite", "clickhouse", "both"]), default="both", show_default=True)
def ingest(responses: int, seed: int, engine: str) -> None:
    """Ingest rate and CPU per million response records, both engines, the same files."""
    pcap, hints, summary = collector_bench.capture(responses, seed)
    files = collector_bench.sensor_files(pcap, summary)
    if engine in ("sqlite", "both"):
        collector_bench.report("sqlite", 1, collector_bench.one_run("sqlite", files, hints, 1000, seed, []))
    if engine in ("clickhouse", "both"):
        folder = tempfile.mkdtemp(prefix="clickhouse-ingest-", dir=OUT)
        cluster = _servers(folder)
        try:
            report_ingest(ingest_run(cluster, files, hints, "pdns_bench"))
        finally:
            cluster.remove()


@main.command("ingest-child", hidden=True)
@click.argument("url")
@click.argument("root")
@click.argument("hints")
def ingest_child_command(url: str, root: str, hints: str) -> None:
    click.echo(json.dumps(ingest_child(url, root, hints)))


@main.command()
@click.option("--rrsets", default=10_000_000, show_default=True, help="unique RRsets (1000 a zone)")
@click.option("--big", default=1_000_000, show_default=True, help="RRsets under big.bench")
@click.option("--lookups", "count", default=2000, show_default=True, help="lookups of each kind")
@click.option("--seed", default=1, show_default=True)
def lookups(rrsets: int, big: int, count: int, seed: int) -> None:
    """Lookup latency, both engines, on the same synthetic aggregates."""
    from collector.clickhouse import location
    from collector.clickhouse.store import ClickHouseStore, init
    from collector.sqlite_store import SqliteStore

    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"query-store-{rrsets}-{big}.sqlite")
    if not os.path.exists(path):
        query_bench.fill(path, rrsets, big)
    embedded = SqliteStore(path)
    click.echo(json.dumps({"engine": "sqlite", "store_bytes": embedded.size(),
                           **time_lookups(embedded, rrsets, count, seed)}))
    embedded.close()
    folder = os.path.join(OUT, f"clickhouse-query-{rrsets}-{big}")
    complete = os.path.join(folder, ".complete")
    if not os.path.exists(complete):
        shutil.rmtree(folder, ignore_errors=True)
    cluster = _servers(folder)
    try:
        url = cluster.url("pdns")
        if not os.path.exists(complete):
            init(location.parse(url))
            own = os.path.join(folder, "collector")
            os.makedirs(own, exist_ok=True)
            started = time.monotonic()
            writer = ClickHouseStore(url, own)
            fill(writer, rrsets, big)
            writer.close()
            click.echo(json.dumps({"filled_rrsets": rrsets + big, "seconds": round(time.monotonic() - started)}))
            open(complete, "w").close()
        store = ClickHouseStore(url, folder, ingest=False)
        click.echo(json.dumps({"engine": "clickhouse (2 shards, loopback)", "store_bytes": store.size(),
                               **time_lookups(store, rrsets, count, seed)}))
        store.close()
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
