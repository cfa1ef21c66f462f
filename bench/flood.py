"""Flood: a burst of distinct queries that are never answered.

Writes a capture of `--count` distinct queries from the resolver within a
couple of seconds of packet time, replays it through the sensor under its
memory cap (RLIMIT_AS = memory_ulimit_kbytes, as a live sensor has), and
prints the table bound, evictions, max RSS and the memory each outstanding
query costs.

    python -m bench.flood                     # 1,000,000 queries, table 131072
"""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc

import click

from bench.traffic import ETH_V4, RESOLVER4, _ipv4_udp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = 1_790_000_000


def flood_frames(count: int, seed: int = 3):
    """(timestamp, frame): distinct names, ids and ports, ~500k queries/s."""
    rng = random.Random(seed)
    resolver = socket.inet_pton(socket.AF_INET, RESOLVER4)
    header = b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    for i in range(count):
        label = f"q{i:x}".encode()
        message = struct.pack("!H", i & 0xFFFF) + header[2:] + bytes([len(label)]) + label
        message += b"\x05flood\x07example\x00\x00\x01\x00\x01"
        server = bytes([198, 51, 100, 1 + i % 250])
        frame = ETH_V4 + _ipv4_udp(resolver, server, 1024 + rng.randrange(64000), 53, message, i & 0xFFFF)
        yield T0 + i / 500_000, frame


def write_flood(path: str, count: int) -> None:
    with open(path, "wb") as handle:
        handle.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in flood_frames(count):
            sec = int(ts)
            handle.write(struct.pack("<IIII", sec, round((ts - sec) * 1e6) % 1_000_000, len(frame), len(frame)))
            handle.write(frame)


CAPPED = (
    "import sys; from sensor.service import daemon; daemon.limit_memory(int(sys.argv.pop(1)));"
    "from sensor.cli import main; sys.argv[0] = 'sie-dns-sensor'; main()"
)


def replay_capped(pcap: str, spool: str, table_max: int, cap_kbytes: int) -> tuple[dict, float, float]:
    """Run the sensor on `pcap` under the cap: (summary counters, max RSS MB, seconds)."""
    config = os.path.join(spool, "conf")
    os.makedirs(spool, exist_ok=True)
    with open(config, "w") as handle:
        handle.write(f'DNSQR_RES_ADDRS="{RESOLVER4}"\nDNSQR_STATE_TABLE_MAX="{table_max}"\nupload="yes"\n')
    argv = [sys.executable, "-c", CAPPED, str(cap_kbytes), "run", "-c", config, "--pcap", pcap, "--spooldir", spool]
    started = time.perf_counter()
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    _, status, _ = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    log = process.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"sensor failed ({status}): {log[-2000:]}")
    summary = next(line for line in log.splitlines() if "stopped:" in line)
    counters = {
        k: int(v) for k, v in (p.split("=", 1) for p in summary.split() if "=" in p and p.split("=")[1].isdigit())
    }
    return counters, counters["max_rss_kb"] / 1024, seconds


def bytes_per_query(count: int = 131072) -> float:
    """Python heap per outstanding query, packet included (tracemalloc)."""
    from sensor.matching.matcher import Matcher, Settings

    matcher = Matcher(Settings(table_max=count))
    frames = [(frame[14:], int(ts), int((ts % 1) * 1e9)) for ts, frame in flood_frames(count)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for packet, sec, nsec in frames:
        matcher.feed(packet, sec, nsec)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / len(matcher.table)


@click.command()
@click.option("--count", default=1_000_000, show_default=True)
@click.option("--table-max", default=131072, show_default=True)
@click.option("--cap-kbytes", default=524288, show_default=True, help="memory_ulimit_kbytes")
def main(count: int, table_max: int, cap_kbytes: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sie-flood-") as work:
        pcap = os.path.join(work, "flood.pcap")
        write_flood(pcap, count)
        counters, rss, seconds = replay_capped(pcap, os.path.join(work, "spool"), table_max, cap_kbytes)
    click.echo(f"{count} never-answered queries in {seconds:.1f} s; DNSQR_STATE_TABLE_MAX={table_max}")
    click.echo(f"records: {counters['records']} (all unanswered), evicted: {counters.get('query_evicted', 0)}")
    click.echo(f"max RSS {rss:.1f} MB under a cap of {cap_kbytes / 1024:.0f} MB")
    click.echo(f"heap per outstanding query: {bytes_per_query(table_max):.0f} bytes (packet included)")


if __name__ == "__main__":
    main()
