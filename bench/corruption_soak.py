"""Corruption soak: random bit flips in spool files left in new/ by a crash.

Each trial takes a finished spool file, flips one random bit (or cuts it
at a random byte), leaves it in a fresh spool's new/ and runs the
writer's start-up recovery. Recovery must never raise; the file must end
in waiting/ holding a prefix of the original records (every record it
kept equal to the original's), or in damaged/, or be removed when empty.
`read` on every damaged file must finish and say what is wrong.

    python -m bench.corruption_soak --trials 1000 [--format cbor]
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import tempfile
import time

import click

from sensor.records.record import Field, RecordType
from sensor.spool import formats as spoolfile
from sensor.spool import spooldir
from sensor.spool.cbor import SpoolError
from sensor.spool.formats import CborFormat, NmsgFormat
from sensor.spool.writer import SpoolWriter

CHANNEL = "ch202"
T0 = 1_700_000_000


def _records(count: int) -> list[dict]:
    out = []
    for i in range(count):
        out.append({
            Field.TYPE: RecordType.UDP_QUERY_RESPONSE, Field.QUERY_IP: bytes([192, 0, 2, 53]),
            Field.RESPONSE_IP: bytes([198, 51, 100, i % 250]), Field.PROTO: 17, Field.QUERY_PORT: 1024 + i,
            Field.RESPONSE_PORT: 53, Field.ID: i & 0xFFFF, Field.QNAME: b"\x03www\x07example\x03com\x00",
            Field.QTYPE: 1, Field.QCLASS: 1, Field.RCODE: 0, Field.QUERY_PACKET: [bytes(60 + i % 40)],
            Field.QUERY_TIME_SEC: [T0 + i // 100], Field.QUERY_TIME_NSEC: [i * 1000],
            Field.RESPONSE_PACKET: [bytes(120 + i % 90)], Field.RESPONSE_TIME_SEC: [T0 + i // 100],
            Field.RESPONSE_TIME_NSEC: [i * 1000 + 500], Field.UDP_CHECKSUM: 3,
        })
    return out


def _format(name: str):
    return NmsgFormat() if name == "nmsg" else CborFormat()


def sample_file(work, spool_format: str, count: int = 3000) -> str:
    """A finished spool file of `count` records, in several NMSG containers."""
    path = os.path.join(str(work), f"sample.{_format(spool_format).ext}")
    records = _records(count)
    with open(path, "wb") as handle:
        stream = _format(spool_format).open(handle, "h", CHANNEL, T0, 0)
        for start in range(0, count, 500):
            stream.write(records[start : start + 500])
            stream.sync()  # several containers, as a live file gets
        stream.finish()
    return path


def flip_and_recover(work, original: str, spool_format: str, rng: random.Random) -> str:
    """One trial; returns "recovered", "set aside" or "removed"."""
    root = str(work)
    new = spooldir.folder(root, spooldir.NEW, CHANNEL)
    os.makedirs(new, exist_ok=True)
    with open(original, "rb") as handle:
        data = bytearray(handle.read())
    if rng.random() < 0.8:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    else:
        del data[rng.randrange(len(data)) :]
    name = os.path.basename(original).replace("sample", f"h.{T0}.000000")
    with open(os.path.join(new, name), "wb") as handle:
        handle.write(data)
    writer = SpoolWriter(root, CHANNEL, "h", 60, archive=False, upload=True, spool_format=_format(spool_format))
    try:
        writer.recover()  # must never raise
    finally:
        writer.close()
    assert os.listdir(new) == [], os.listdir(new)
    waiting = os.path.join(spooldir.folder(root, spooldir.WAITING, CHANNEL), name)
    damaged = os.path.join(spooldir.folder(root, spooldir.DAMAGED, CHANNEL), name)
    if os.path.exists(waiting):
        kept = spoolfile.records(waiting)
        assert kept == spoolfile.records(original)[: len(kept)], "recovered records are not a prefix"
        return "recovered"
    if os.path.exists(damaged):
        try:
            for _ in spoolfile.read(damaged):
                pass
        except SpoolError:
            pass  # read says what is wrong; it does not raise anything else
        return "set aside"
    return "removed"


@click.command()
@click.option("--trials", default=1000, show_default=True)
@click.option("--format", "spool_format", type=click.Choice(["nmsg", "cbor"]), default="nmsg", show_default=True)
@click.option("--seed", default=1, show_default=True)
def main(trials: int, spool_format: str, seed: int) -> None:
    rng = random.Random(seed)
    outcomes = {"recovered": 0, "set aside": 0, "removed": 0}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sie-corrupt-") as work:
        original = sample_file(work, spool_format)
        for trial in range(trials):
            trial_dir = os.path.join(work, f"t{trial}")
            outcomes[flip_and_recover(trial_dir, original, spool_format, rng)] += 1
            shutil.rmtree(trial_dir)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    click.echo(
        f"{trials} {spool_format} files with a flipped bit or a cut: 0 start-up failures; "
        f"{outcomes['recovered']} recovered (records a prefix of the original), "
        f"{outcomes['set aside']} set aside in damaged/, {outcomes['removed']} removed (empty); "
        f"{seconds:.1f} s, {seconds / trials * 1000:.1f} ms a file, max RSS {peak:.0f} MB"
    )


if __name__ == "__main__":
    main()
