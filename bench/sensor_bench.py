"""Benchmark: `sie-dns-sensor run --pcap` on a million packets of resolver traffic.

Prints packets per second, the process's max RSS and the spool bytes per
packet, in the production configuration (DNSQR_RES_ADDRS set, the shipped
DNSQR_CAPTURE_RD="0", checksums verified, compression on). The capture is
made deterministically by bench/traffic.py the first time.

    python -m bench.sensor_bench            # 1,000,000 packets, 3 runs
    python -m bench.sensor_bench --count 200000 --runs 1
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import click

from bench import traffic

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

CONFIG = """\
DNSQR_RES_ADDRS="{resolver4},{resolver6}"
DNSQR_CAPTURE_RD="0"
interval="60"
upload="yes"
archive="no"
"""


def one_run(pcap: str, config: str) -> dict:
    spool = tempfile.mkdtemp(prefix="sie-bench-")
    try:
        argv = [sys.executable, "-m", "sensor", "run", "-c", config, "--pcap", pcap, "--spooldir", spool]
        env = dict(os.environ, PYTHONPATH=REPO)
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
        _, status, _ = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        log = process.stderr.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise click.ClickException(f"sensor failed: {log}")
        output = 0
        for root, _, files in os.walk(os.path.join(spool, "waiting")):
            output += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        summary = next(line for line in log.splitlines() if "stopped:" in line)
        fields = dict(part.split("=", 1) for part in summary.split() if "=" in part)
        return {
            "seconds": elapsed,
            "packets": int(fields["packets"]),
            "records": int(fields["records"]),
            "rss_mb": int(fields["max_rss_kb"]) / 1024,  # ru_maxrss would include the parent's
            "output": output,
        }
    finally:
        shutil.rmtree(spool, ignore_errors=True)


@click.command()
@click.option("--count", default=1_000_000, show_default=True, help="packets in the capture")
@click.option("--runs", default=3, show_default=True)
@click.option("--pcap", default=None, help="use this capture instead of generating one")
def main(count: int, runs: int, pcap: str | None) -> None:
    if pcap is None:
        os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
        pcap = os.path.join(HERE, "out", f"traffic-{count}.pcap")
        if not os.path.exists(pcap):
            click.echo(f"generating {count} packets into {pcap} ...")
            traffic.write(pcap, count)
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as handle:
        handle.write(CONFIG.format(resolver4=traffic.RESOLVER4, resolver6=traffic.RESOLVER6))
        config = handle.name
    try:
        results = [one_run(pcap, config) for _ in range(runs)]
    finally:
        os.unlink(config)
    for i, r in enumerate(results, 1):
        click.echo(
            f"run {i}: {r['packets']} packets in {r['seconds']:.2f} s = {r['packets'] / r['seconds']:,.0f} packets/s; "
            f"max RSS {r['rss_mb']:.1f} MB; output {r['output']:,} bytes = "
            f"{r['output'] / r['packets']:.1f} bytes/packet; "
            f"{r['records']} records"
        )
    rates = [r["packets"] / r["seconds"] for r in results]
    click.echo(
        f"median: {statistics.median(rates):,.0f} packets/s, "
        f"max RSS {max(r['rss_mb'] for r in results):.1f} MB, "
        f"{results[0]['output'] / results[0]['packets']:.1f} bytes/packet"
    )


if __name__ == "__main__":
    main()
