"""Benchmark: `sie-dns-sensor run --pcap` on a million packets of resolver traffic.

For each spool format (NMSG, what the collector ingests; CBOR), in the
production configuration (DNSQR_RES_ADDRS set, the shipped
DNSQR_CAPTURE_RD="0", checksums verified, compression on), prints per run
and as the median: wall packets/s, CPU seconds per million packets (user +
sys of the sensor process, all its threads, from wait4), max RSS (the
sensor's own VmHWM), spool bytes per packet, and that CPU split by step:
capture, matching, encoding and compression, from the thread CPU clocks
the sensor reads around each batch and each file's writer thread (the
stop line's cpu_* fields; see pipeline.CpuSplit), the rest as `other`. Runs alternate between the
formats, and the records of the NMSG run are checked equal to the CBOR
run's. The capture is made deterministically by bench/traffic.py the first
time.

    python -m bench.sensor_bench            # 1,000,000 packets, 3 runs each
    python -m bench.sensor_bench --count 200000 --runs 1 --format nmsg
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import click

from bench import traffic
from sensor.spool import formats as spoolfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

CONFIG = """\
DNSQR_RES_ADDRS="{resolver4},{resolver6}"
DNSQR_CAPTURE_RD="0"
interval="60"
upload="yes"
archive="no"
spool_format="{spool_format}"
"""


STEPS = ("capture", "matching", "encoding", "compression")  # the stop line's cpu_* fields


def split_line(cpu: float, split: dict, packets: int) -> str:
    """CPU-s per million packets by step; `other` is start-up, recovery, shutdown, the GIL's hand-offs."""
    per = 1e6 / packets
    parts = [f"{step} {split[step] * per:.2f}" for step in STEPS]
    parts.append(f"other {(cpu - sum(split.values())) * per:.2f}")
    return "CPU-s per million packets by step: " + ", ".join(parts)


def one_run(pcap: str, config: str, keep_records: bool = False, keep_files: Callable[[str], Any] | None = None) -> dict:
    """One `run --pcap`; `keep_files`, when given, is applied to each spool file (in name order) before the
    spool is removed, its results returned as `kept`."""
    spool = tempfile.mkdtemp(prefix="sie-bench-")
    try:
        argv = [sys.executable, "-m", "sensor", "run", "-c", config, "--pcap", pcap, "--spooldir", spool]
        env = dict(os.environ, PYTHONPATH=REPO)
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        log = process.stderr.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise click.ClickException(f"sensor failed: {log}")
        output = 0
        records = []
        kept = []
        for root, _, files in os.walk(os.path.join(spool, "waiting")):
            output += sum(os.path.getsize(os.path.join(root, f)) for f in files)
            for name in sorted(files):
                if keep_records:
                    records += spoolfile.records(os.path.join(root, name))
                if keep_files is not None:
                    kept.append(keep_files(os.path.join(root, name)))
        summary = next(line for line in log.splitlines() if "stopped:" in line)
        fields = dict(part.split("=", 1) for part in summary.split() if "=" in part)
        return {
            "seconds": elapsed,
            "cpu": usage.ru_utime + usage.ru_stime,
            "spooled": records,
            "packets": int(fields["packets"]),
            "records": int(fields["records"]),
            "rss_mb": int(fields["max_rss_kb"]) / 1024,  # ru_maxrss would include the parent's
            "split": {step: float(fields[f"cpu_{step}"]) for step in STEPS},
            "output": output,
            "kept": kept,
        }
    finally:
        shutil.rmtree(spool, ignore_errors=True)


@click.command()
@click.option("--count", default=1_000_000, show_default=True, help="packets in the capture")
@click.option("--runs", default=3, show_default=True, help="runs per format")
@click.option("--pcap", default=None, help="use this capture instead of generating one")
@click.option("--format", "formats", type=click.Choice(["nmsg", "cbor"]), multiple=True,
              help="only this spool format (default: both)")
def main(count: int, runs: int, pcap: str | None, formats: tuple[str, ...]) -> None:
    if pcap is None:
        os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
        pcap = os.path.join(HERE, "out", f"traffic-{count}.pcap")
        if not os.path.exists(pcap):
            click.echo(f"generating {count} packets into {pcap} ...")
            traffic.write(pcap, count)
    formats = formats or ("nmsg", "cbor")
    configs = {}
    for spool_format in formats:
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as handle:
            handle.write(CONFIG.format(resolver4=traffic.RESOLVER4, resolver6=traffic.RESOLVER6,
                                       spool_format=spool_format))
            configs[spool_format] = handle.name
    results: dict[str, list[dict]] = {f: [] for f in formats}
    try:
        for index in range(runs):
            for spool_format in formats:  # alternate, so drift on a shared machine hits both
                results[spool_format].append(one_run(pcap, configs[spool_format], keep_records=index == 0))
    finally:
        for config in configs.values():
            os.unlink(config)
    for spool_format, rows in results.items():
        for i, r in enumerate(rows, 1):
            click.echo(
                f"{spool_format} run {i}: {r['packets']} packets in {r['seconds']:.2f} s = "
                f"{r['packets'] / r['seconds']:,.0f} packets/s; CPU {r['cpu']:.2f} s = "
                f"{r['cpu'] * 1e6 / r['packets']:.2f} CPU-s per million packets; max RSS {r['rss_mb']:.1f} MB; "
                f"output {r['output']:,} bytes = {r['output'] / r['packets']:.1f} bytes/packet; {r['records']} records"
            )
            click.echo(f"  {split_line(r['cpu'], r['split'], r['packets'])}")
        click.echo(
            f"{spool_format} median: {statistics.median(r['packets'] / r['seconds'] for r in rows):,.0f} packets/s, "
            f"{statistics.median(r['cpu'] * 1e6 / r['packets'] for r in rows):.2f} CPU-s per million packets, "
            f"max RSS {max(r['rss_mb'] for r in rows):.1f} MB, "
            f"{statistics.median(r['output'] / r['packets'] for r in rows):.1f} bytes/packet"
        )
        median_split = {step: statistics.median(r["split"][step] for r in rows) for step in STEPS}
        median_cpu = statistics.median(r["cpu"] for r in rows)
        click.echo(f"  median {split_line(median_cpu, median_split, rows[0]['packets'])}")
    if len(formats) == 2:
        same = results["nmsg"][0]["spooled"] == results["cbor"][0]["spooled"]
        click.echo(f"records of the NMSG run equal the CBOR run's: {'yes' if same else 'NO'} "
                   f"({len(results['nmsg'][0]['spooled'])} records)")
        if not same:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
