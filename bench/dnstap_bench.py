"""Benchmark: `sie-dns-sensor run --dnstap unix:...` fed a million dnstap messages.

Generates (once, deterministically) a Frame Streams file of resolver
query/response messages (bench/dnstap_traffic.py), starts the sensor on a
unix socket in the production configuration but for upload (spool files
written and compressed, archived), and replays the file into the socket
with the bidirectional handshake, as fast as the sensor takes it: a unix
stream socket never drops, so the rate at which the sensor drains it is the
rate it sustains without loss. The clock runs from START to the FINISH the
sensor sends after reading the last frame. Prints messages/s, the sensor's
CPU seconds (user+sys) per million messages, its max RSS, and checks that
every message arrived and every pair was made.

    python -m bench.dnstap_bench                    # 1,000,000 messages, 3 runs
    python -m bench.dnstap_bench --sender fstrm_replay   # libfstrm's client instead
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import click

from bench import dnstap_traffic
from sensor.edges.dnstap_schema import CONTENT_TYPE
from sensor.edges.framestream import Control, control_frame

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

CONFIG = """\
DNSQR_CAPTURE_RD="0"
interval="60"
upload="no"
archive="yes"
"""


def dataset(count: int, seed: int) -> str:
    path = os.path.join(HERE, "out", f"dnstap-{count}-{seed}.fstrm")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        click.echo(f"generating {path} ...", err=True)
        dnstap_traffic.write_file(path + ".tmp", dnstap_traffic.exchanges(count, seed))
        os.replace(path + ".tmp", path)
    return path


def _data_frames(path: str) -> bytes:
    """The file without its START and STOP frames: what follows a handshake."""
    with open(path, "rb") as handle:
        data = handle.read()
    start = len(control_frame(Control.START, (CONTENT_TYPE,)))
    stop = len(control_frame(Control.STOP))
    return data[start:-stop]


def _wait_for(path: str, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if process.poll() is not None or time.monotonic() > deadline:
            raise click.ClickException(f"the sensor did not listen: {process.stderr.read()}")
        time.sleep(0.05)


def one_run(fstrm: str, frames: bytes, count: int, sender: str) -> dict:
    work = tempfile.mkdtemp(prefix="sie-dnstap-bench-")
    try:
        config = os.path.join(work, "conf")
        with open(config, "w") as handle:
            handle.write(CONFIG)
        sock = os.path.join(work, "dnstap.sock")
        argv = [sys.executable, "-m", "sensor", "run", "-c", config, "--dnstap", f"unix:{sock}",
                "--spooldir", os.path.join(work, "spool"), "--user", "nobody-here"]
        process = subprocess.Popen(argv, env=dict(os.environ, PYTHONPATH=REPO), stderr=subprocess.PIPE, text=True)
        _wait_for(sock, process)
        if sender == "python":
            client = dnstap_traffic.Sender(sock)
            client.sock.settimeout(600)
            started = time.perf_counter()
            client.handshake()
            view = memoryview(frames)
            for offset in range(0, len(frames), 1 << 20):
                client.sock.sendall(view[offset : offset + (1 << 20)])
            client.finish()  # FINISH comes after the sensor read every frame
            elapsed = time.perf_counter() - started
        else:
            started = time.perf_counter()
            subprocess.run(["fstrm_replay", "-t", CONTENT_TYPE.decode(), "-u", sock, "-r", fstrm],
                           check=True, capture_output=True)
            elapsed = time.perf_counter() - started  # fstrm_replay waits for FINISH too
        process.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(process.pid, 0)
        log = process.stderr.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise click.ClickException(f"sensor failed: {log}")
        stop = next(line for line in log.splitlines() if "stopped:" in line)
        figures = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", stop)}
        cpu = usage.ru_utime + usage.ru_stime
        return {
            "elapsed": elapsed,
            "rate": count / elapsed,
            "cpu_per_million": cpu / count * 1e6,
            "received": figures["kernel_received"],
            "pairs": figures["pairs"],
            "max_rss_kb": figures["max_rss_kb"],
            "stop": stop,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


@click.command()
@click.option("--count", default=1_000_000, show_default=True, help="dnstap messages (half queries)")
@click.option("--seed", default=1, show_default=True)
@click.option("--runs", default=3, show_default=True)
@click.option("--sender", type=click.Choice(["python", "fstrm_replay"]), default="python", show_default=True)
def main(count: int, seed: int, runs: int, sender: str) -> None:
    """Replay a dnstap file into the sensor's socket and print its figures."""
    fstrm = dataset(count, seed)
    frames = _data_frames(fstrm)
    results = []
    for number in range(1, runs + 1):
        r = one_run(fstrm, frames, count, sender)
        lost = count - r["received"]
        click.echo(
            f"run {number}: {r['rate']:,.0f} messages/s ({r['elapsed']:.2f} s wall), "
            f"{r['cpu_per_million']:.2f} CPU s (user+sys) per million messages, "
            f"max RSS {r['max_rss_kb'] / 1024:.1f} MB, "
            f"received {r['received']:,} of {count:,} (lost {lost}), pairs {r['pairs']:,}"
        )
        if lost or r["pairs"] != count // 2:
            raise click.ClickException(f"loss or unpaired messages: {r['stop']}")
        results.append(r)
    click.echo(
        f"median: {statistics.median(r['rate'] for r in results):,.0f} messages/s, "
        f"{statistics.median(r['cpu_per_million'] for r in results):.2f} CPU s per million, "
        f"max RSS {max(r['max_rss_kb'] for r in results) / 1024:.1f} MB (sender: {sender})"
    )


if __name__ == "__main__":
    main()
