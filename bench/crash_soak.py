"""Crash safety: SIGKILL `sie-dns-sensor run` at random moments, then check.

Each trial replays the same capture into a fresh spool and kills the
sensor at a random moment. Then:
- every file in waiting/ (what the uploader sees) is complete (whole NMSG
  containers to the last byte, or a whole gzip stream), and exactly the records of the same file in an uninterrupted
  reference run (the replay is deterministic, names included);
- a restart finishes what was left in new/: it moves to waiting/, readable,
  its records a prefix of the reference file of the same name.

    python -m bench.crash_soak --trials 50 [--format cbor]
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import click

from bench import traffic
from sensor.spool import formats as spoolfile
from sensor.spool import nmsg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHANNEL = "ch202"
CONFIG = 'DNSQR_RES_ADDRS="{resolvers}"\ninterval="1"\nupload="yes"\nspool_format="{spool_format}"\n'


def _config(spool_format: str) -> str:
    return CONFIG.format(resolvers=f"{traffic.RESOLVER4},{traffic.RESOLVER6}", spool_format=spool_format)


def _whole(path: str) -> None:
    """Raise unless the file is complete in its format."""
    with open(path, "rb") as handle:
        data = handle.read()
    if nmsg.is_nmsg(data):
        assert nmsg.whole_length(path) == len(data), f"{path}: ends inside a container"
    else:
        gzip.decompress(data)  # raises on a stream that is not whole


def _sensor(config: str, pcap: str, spool: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sensor", "run", "-c", config, "--pcap", pcap, "--spooldir", spool],
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=REPO),
    )


def _records(path: str) -> list[dict]:
    return spoolfile.records(path)


def reference(pcap: str, work: str, spool_format: str = "nmsg") -> dict[str, list[dict]]:
    """File name -> records, from a run that is not interrupted."""
    spool = os.path.join(work, "reference")
    config = os.path.join(work, "conf")
    with open(config, "w") as handle:
        handle.write(_config(spool_format))
    if _sensor(config, pcap, spool).wait() != 0:
        raise RuntimeError("reference run failed")
    waiting = os.path.join(spool, "waiting", CHANNEL)
    return {name: _records(os.path.join(waiting, name)) for name in sorted(os.listdir(waiting))}


def trial(pcap: str, empty_pcap: str, work: str, kill_after: float, expected: dict) -> dict:
    """One kill and restart; raises AssertionError on any violation."""
    spool = os.path.join(work, "trial")
    shutil.rmtree(spool, ignore_errors=True)
    config = os.path.join(work, "conf")
    sensor = _sensor(config, pcap, spool)
    time.sleep(kill_after)
    sensor.send_signal(signal.SIGKILL)
    sensor.wait()
    waiting = os.path.join(spool, "waiting", CHANNEL)
    new = os.path.join(spool, "new", CHANNEL)
    finished = sorted(os.listdir(waiting)) if os.path.isdir(waiting) else []
    for name in finished:
        _whole(os.path.join(waiting, name))
        assert _records(os.path.join(waiting, name)) == expected[name], f"{name} differs"
    left = sorted(os.listdir(new)) if os.path.isdir(new) else []
    assert len(left) <= 1, left
    if _sensor(config, empty_pcap, spool).wait() != 0:
        raise AssertionError("restart failed")
    assert os.listdir(new) == []
    recovered = 0
    for name in left:
        path = os.path.join(waiting, name)
        if not os.path.exists(path):
            continue  # the crash came before the header reached the disk: nothing to keep
        got = _records(path)
        assert got == expected[name][: len(got)], f"{name}: not a prefix of the reference"
        recovered += len(got)
    return {"finished": len(finished), "cut": len(left), "recovered_records": recovered}


def make_inputs(work: str, count: int) -> tuple[str, str]:
    pcap = os.path.join(work, "traffic.pcap")
    traffic.write(pcap, count, seed=5)
    empty = os.path.join(work, "empty.pcap")
    traffic.write(empty, 0)
    return pcap, empty


@click.command()
@click.option("--trials", default=50, show_default=True)
@click.option("--count", default=400_000, show_default=True, help="packets in the replayed capture")
@click.option("--seed", default=1, show_default=True)
@click.option("--format", "spool_format", type=click.Choice(["nmsg", "cbor"]), default="nmsg", show_default=True)
def main(trials: int, count: int, seed: int, spool_format: str) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="sie-crash-") as work:
        pcap, empty = make_inputs(work, count)
        started = time.perf_counter()
        expected = reference(pcap, work, spool_format)
        full = time.perf_counter() - started
        totals = {"finished": 0, "cut": 0, "recovered_records": 0}
        for i in range(trials):
            result = trial(pcap, empty, work, rng.uniform(0.2, 0.9 * full), expected)
            for key in totals:
                totals[key] += result[key]
            click.echo(f"trial {i + 1}: {result}")
    click.echo(
        f"{trials} SIGKILL trials, no violation: {totals['finished']} finished files checked record for "
        f"record, {totals['cut']} cut files recovered ({totals['recovered_records']} records)"
    )


if __name__ == "__main__":
    main()
