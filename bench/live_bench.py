"""Live zero-loss rate: tcpreplay generated traffic onto a veth at rising rates.

For each capture_workers value (`--workers`, default 1 and 2) and each
rate, a fresh sensor captures on one end of a veth pair (in its own network
namespace) while tcpreplay sends the first `--count` packets of the
benchmark capture into the other end. Printed per rate: packets sent (by
tcpreplay), packets the sensor saw, kernel drops (pcap stats), records
written, CPU seconds per million packets (user + sys of every worker, from
/proc, the threads included), and the pairing rate (pairs / responses sent;
the capture's responses all answer queries sent before them). The answer:
the highest rate with zero drops and 100% pairing.

    python -m bench.live_bench --rates 150000,200000,250000 --loops 6   # 6M packets a rate
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import click

from bench import traffic
from tests import netns

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the subprocess imports sensor from here


def first_packets(source: str, target: str, count: int) -> int:
    """Copy the first `count` packets; return how many are DNS responses."""
    responses = 0
    with open(source, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read(24))
        for _ in range(count):
            header = src.read(16)
            if len(header) < 16:
                break
            caplen = struct.unpack("<IIII", header)[2]
            frame = src.read(caplen)
            dst.write(header + frame)
            ipv4 = frame[12:14] == b"\x08\x00"
            udp = 14 + ((frame[14] & 0x0F) * 4 if ipv4 else 40)
            if frame[udp + 10] & 0x80:
                responses += 1
    return responses


def cpu_seconds(pid: int) -> float:
    """User + sys CPU of a process and its children (the capture workers),
    from /proc, read before it is stopped (its shutdown is not counted)."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            children = [int(child) for child in handle.read().split()]
    except OSError:
        return total
    return total + sum(cpu_seconds(child) for child in children)


def one_rate(lab: netns.Lab, pcap: str, responses: int, rate: int, work: str, loops: int, workers: int) -> dict:
    spool = os.path.join(work, f"spool-{rate}-{workers}")
    config = os.path.join(work, "conf")
    with open(config, "w") as handle:
        handle.write(
            f'spooldir="{spool}"\nDNSQR_RES_ADDRS="{traffic.RESOLVER4},{traffic.RESOLVER6}"\n'
            f'DNSQR_CAPTURE_RD="0"\nupload="no"\narchive="no"\ncapture_workers="{workers}"\n'
        )
    env = dict(os.environ, PYTHONPATH=REPO)
    sensor = lab.popen(
        lab.a,
        [sys.executable, "-m", "sensor", "run", "-c", config, "--interface", lab.a_if, *netns.STAY_AS_IS],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    while "capturing from" not in sensor.stderr.readline():
        if sensor.poll() is not None:
            raise click.ClickException("sensor did not start")
    time.sleep(1)
    replay = lab.run(
        lab.b,
        ["tcpreplay", "-i", lab.b_if, f"--pps={rate}", "--preload-pcap", f"--loop={loops}", pcap],
        capture_output=True,
        text=True,
    )
    sent = int(re.search(r"Actual: (\d+) packets", replay.stdout).group(1))
    seconds = float(re.search(r"packets \(\d+ bytes\) sent in ([\d.]+) seconds", replay.stdout).group(1))
    time.sleep(2)
    cpu = cpu_seconds(sensor.pid)
    sensor.send_signal(signal.SIGTERM)
    _, log = sensor.communicate(timeout=120)
    summary = [line for line in log.splitlines() if "stopped:" in line][-1]  # with workers: their total
    fields = {k: v for k, v in (p.split("=", 1) for p in summary.split() if "=" in p)}
    pairs = int(fields["pairs"])
    return {
        "rate": rate,
        "sent": sent,
        "achieved_pps": sent / seconds if seconds else 0.0,
        "seen": int(fields["packets"]),
        "dropped": int(fields["kernel_dropped"]) + int(fields["if_dropped"]),
        "records": int(fields["records"]),
        "pairs": pairs,
        "responses": responses * loops,
        "log": summary,
        "cpu": cpu,
    }


@click.command()
@click.option("--rates", default="50000,100000,150000,200000,250000", show_default=True)
@click.option("--count", default=1_000_000, show_default=True, help="packets in the replayed file")
@click.option("--loops", default=6, show_default=True, help="times the file is sent at each rate (sustained load)")
@click.option("--workers", "worker_counts", default="1,2", show_default=True, help="capture_workers values to try")
def main(rates: str, count: int, loops: int, worker_counts: str) -> None:
    reason = netns.available() or (None if shutil.which("tcpreplay") else "needs tcpreplay")
    if reason:
        raise click.ClickException(reason)
    work = tempfile.mkdtemp(prefix="sie-live-")
    source = os.path.join(REPO, "bench", "out", "traffic-1000000.pcap")
    if not os.path.exists(source):
        os.makedirs(os.path.dirname(source), exist_ok=True)
        traffic.write(source, 1_000_000)
    pcap = os.path.join(work, "replay.pcap")
    responses = first_packets(source, pcap, count)
    best: dict[int, int] = {}
    try:
        with netns.Lab(["192.0.2.53/24"], ["198.51.100.1/24"]) as lab:
            for workers in (int(w) for w in worker_counts.split(",")):
                best[workers] = 0
                for rate in (int(r) for r in rates.split(",")):
                    result = one_rate(lab, pcap, responses, rate, work, loops, workers)
                    clean = result["dropped"] == 0 and result["seen"] == result["sent"]
                    clean = clean and result["pairs"] == result["responses"]
                    click.echo(
                        f"{workers} worker(s), rate {rate:>7}/s: sent {result['sent']} at "
                        f"{result['achieved_pps']:,.0f}/s, seen {result['seen']}, kernel drops {result['dropped']}, "
                        f"records {result['records']}, pairs {result['pairs']}/{result['responses']} responses, "
                        f"CPU {result['cpu'] * 1e6 / max(result['seen'], 1):.2f} s per million packets "
                        f"-> {'clean' if clean else 'LOSS'}"
                    )
                    if clean:
                        best[workers] = max(best[workers], int(result["achieved_pps"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for workers, rate in best.items():
        click.echo(f"{workers} worker(s): highest rate with zero drops and 100% pairing: {rate:,} packets/s")


if __name__ == "__main__":
    main()
