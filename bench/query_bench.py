"""Benchmark: `sie-dns-collector serve` under 50 concurrent clients.

The store is synthetic aggregates merged straight into the embedded store
(SqliteStore.merge, the ingester's own write path, in key order), made
once and kept under bench/out/:

    query-store-<rrsets>-<big>.sqlite   <rrsets> unique A RRsets, hNNN.zNNNNN.bench (1000 a zone),
                                        each with its inverse-index row and forward name, plus
                                        <big> more under big.bench (the long answer)

Then the real server (`python -m collector serve`, a process of its own on
loopback) answers, in this order:

1. one lookup of every row under big.bench (limit=0: api_results_max,
   1,000,000), read whole: rows, seconds, and the server's peak RSS
   (VmHWM) from a fresh start: what streaming costs;
2. for each kind of lookup, `--clients` clients on keep-alive
   connections, each asking a random lookup of that kind as soon as its
   last answer ended, for `--seconds`: requests/s, latency p50 and p99
   (request sent to last byte read), errors. Kinds: exact (rrset/name of
   one owner), left (*.zone, limit=100), right (owner.*: the forward
   index), rdata (rdata/ip of one address).

    python -m bench.query_bench                               # 10 M RRsets + 1 M, 50 clients
    python -m bench.query_bench --rrsets 200000 --big 100000 --seconds 5
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time

import click

from collector.sqlite_store import SqliteStore

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
HOSTS = 1000  # a zone
BATCH = 200_000
KINDS = ("exact", "left", "right", "rdata")


def label(text: str) -> bytes:
    return bytes([len(text)]) + text.encode()


def owner(zone: int, host: int) -> bytes:
    return label(f"h{host:03d}") + label(f"z{zone:05d}") + label("bench") + b"\x00"


def address(index: int) -> bytes:
    return bytes([10, (index >> 16) & 255, (index >> 8) & 255, index & 255])


def _merge(store: SqliteStore, rows: list[tuple[bytes, bytes, bytes, int]]) -> None:
    """(owner, zone, address, when) rows as the chain's aggregates."""
    store.merge([((name, 1, zone, (data,)), when, when + 3600, 1 + when % 7) for name, zone, data, when in rows],
                [((data, 1, name), when, when + 3600, 1 + when % 7) for name, _, data, when in rows])


def fill(path: str, rrsets: int, big: int) -> None:
    """The synthetic store (written aside, renamed when whole: an interrupted fill starts again)."""
    partial = path + ".partial"
    for tail in ("", "-wal", "-shm"):
        if os.path.exists(partial + tail):
            os.unlink(partial + tail)
    store = SqliteStore(partial)
    started = time.monotonic()
    batch: list = []
    zones = (rrsets + HOSTS - 1) // HOSTS
    for zone in range(zones):
        zone_name = label(f"z{zone:05d}") + label("bench") + b"\x00"
        for host in range(min(HOSTS, rrsets - zone * HOSTS)):
            index = zone * HOSTS + host
            batch.append((owner(zone, host), zone_name, address(index), 1_600_000_000 + index))
        if len(batch) >= BATCH:
            _merge(store, batch)
            store.commit([])
            batch = []
            print(f"  {(zone + 1) * HOSTS:,} RRsets, {time.monotonic() - started:.0f} s", file=sys.stderr)
    big_zone = label("big") + label("bench") + b"\x00"
    for index in range(big):
        batch.append((label(f"h{index:07d}") + big_zone, big_zone, address(rrsets + index), 1_600_000_000 + index))
        if len(batch) >= BATCH:
            _merge(store, batch)
            store.commit([])
            batch = []
    _merge(store, batch)
    store.commit([])
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    os.rename(partial, path)
    print(f"filled {path}: {rrsets + big:,} RRsets in {time.monotonic() - started:.0f} s", file=sys.stderr)


class Served:
    """The real server on a free loopback port, with one key."""

    def __init__(self, store: str, folder: str) -> None:
        config = os.path.join(folder, "query-bench.conf")
        with open(config, "w") as handle:
            handle.write(f'collector_dir="{folder}"\nstore="sqlite:{store}"\napi_keys="{folder}/query-bench.keys"\n'
                         'api_burst_size="100000000"\napi_key_lookups="1000"\n')
        if os.path.exists(f"{folder}/query-bench.keys"):
            os.unlink(f"{folder}/query-bench.keys")
        env = dict(os.environ, PYTHONPATH=REPO, SIE_DNS_SENSOR_SYSLOG_SOCKET="/nonexistent")
        made = subprocess.run([sys.executable, "-m", "collector", "add-key", "-c", config, "bench"],
                              capture_output=True, text=True, env=env, check=True)
        self.key = made.stdout.strip()
        self.process = subprocess.Popen([sys.executable, "-m", "collector", "serve", "-c", config, "--listen",
                                         "127.0.0.1:0"], stderr=subprocess.PIPE, text=True, env=env)
        for line in self.process.stderr:
            if "answering on http://127.0.0.1:" in line:
                self.port = int(line.split("127.0.0.1:")[1].split("/")[0])
                break
        else:
            raise SystemExit("the server did not start")

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


async def _answer(reader: asyncio.StreamReader) -> tuple[int, int]:
    """(status, body lines) of one chunked (or sized) HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)}
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
        return status, body.count(b"\n")
    lines = 0
    while size := int((await reader.readline()).strip(), 16):
        lines += (await reader.readexactly(size + 2)).count(b"\n") - 1
    await reader.readline()
    return status, lines


async def _client(port: int, key: str, paths, stop: float, latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < stop:
            path = paths()
            sent = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {key}\r\n\r\n".encode())
            status, _ = await _answer(reader)
            latencies.append(time.perf_counter() - sent)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


def _paths(kind: str, rrsets: int):
    zones = rrsets // HOSTS
    lookup = "/dnsdb/v2/lookup/"

    def pick() -> str:
        zone, host = random.randrange(zones), random.randrange(HOSTS)
        if kind == "exact":
            return f"{lookup}rrset/name/h{host:03d}.z{zone:05d}.bench"
        if kind == "left":
            return f"{lookup}rrset/name/*.z{zone:05d}.bench?limit=100"
        if kind == "right":
            return f"{lookup}rrset/name/h{host:03d}.z{zone:05d}.*"
        index = zone * HOSTS + host
        return f"{lookup}rdata/ip/10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"

    return pick


async def load(port: int, key: str, kind: str, rrsets: int, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[int] = []
    stop = time.monotonic() + seconds
    started = time.monotonic()
    await asyncio.gather(*(_client(port, key, _paths(kind, rrsets), stop, latencies, errors)
                           for _ in range(clients)))
    elapsed = time.monotonic() - started
    ordered = sorted(latencies)
    return {"kind": kind, "requests": len(latencies), "per_second": round(len(latencies) / elapsed),
            "p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2), "errors": len(errors)}


async def long_answer(port: int, key: str) -> dict:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(f"GET /dnsdb/v2/lookup/rrset/name/*.big.bench?limit=0 HTTP/1.1\r\nHost: bench\r\n"
                 f"X-API-Key: {key}\r\n\r\n".encode())
    status, lines = await _answer(reader)
    writer.close()
    return {"status": status, "rows": lines - 2, "seconds": round(time.monotonic() - started, 1)}


@click.command()
@click.option("--rrsets", default=10_000_000, show_default=True, help="unique RRsets (1000 a zone)")
@click.option("--big", default=1_000_000, show_default=True, help="RRsets under big.bench (the long answer)")
@click.option("--clients", default=50, show_default=True)
@click.option("--seconds", default=20.0, show_default=True, help="per kind of lookup")
def main(rrsets: int, big: int, clients: int, seconds: float) -> None:
    """Fill (once) and serve the synthetic store; print the figures as JSON lines."""
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"query-store-{rrsets}-{big}.sqlite")
    if not os.path.exists(path):
        fill(path, rrsets, big)
    server = Served(path, OUT)
    try:
        answer = asyncio.run(long_answer(server.port, server.key))
        answer.update(kind="long answer", server_peak_rss_mb=round(server.peak_rss_mb(), 1),
                      rows_per_second=round(answer["rows"] / answer["seconds"]))
        print(json.dumps(answer), flush=True)
        for kind in KINDS:
            print(json.dumps(asyncio.run(load(server.port, server.key, kind, rrsets, clients, seconds))), flush=True)
        print(json.dumps({"server_peak_rss_mb_after_load": round(server.peak_rss_mb(), 1),
                          "store_bytes": os.path.getsize(path)}), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
