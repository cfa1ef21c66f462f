"""A spool on a small tmpfs that fills up: keep running, count, log once, resume."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sensor.records.record import Field, RecordType, UdpChecksum
from sensor.spool import formats as spoolfile
from sensor.spool import spooldir
from sensor.spool import writer as writer_module
from sensor.spool.writer import SpoolWriter
from tests import packets as P

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = 1_790_000_000


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs"
    return None


REASON = _why_not()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@contextlib.contextmanager
def tmpfs(mountpoint, size: str):
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "spool", "1m") as mountpoint:
        yield mountpoint


def incompressible_pair(i: int) -> dict:
    return {
        Field.TYPE: RecordType.UDP_QUERY_RESPONSE,
        Field.QUERY_IP: bytes([192, 0, 2, 53]),
        Field.RESPONSE_IP: bytes([198, 51, 100, 1]),
        Field.PROTO: 17,
        Field.QUERY_PORT: 1024 + i % 60000,
        Field.RESPONSE_PORT: 53,
        Field.ID: i & 0xFFFF,
        Field.QNAME: b"\x03www\x07example\x00",
        Field.QTYPE: 1,
        Field.QCLASS: 1,
        Field.RCODE: 0,
        Field.QUERY_PACKET: [os.urandom(80)],
        Field.QUERY_TIME_SEC: [T0],
        Field.QUERY_TIME_NSEC: [i],
        Field.RESPONSE_PACKET: [os.urandom(400)],
        Field.RESPONSE_TIME_SEC: [T0],
        Field.RESPONSE_TIME_NSEC: [i + 1],
        Field.UDP_CHECKSUM: UdpChecksum.CORRECT,
    }


def test_full_spool_disk_drops_counts_logs_once_and_resumes(small_disk, monkeypatch, caplog):
    monkeypatch.setattr(writer_module, "RETRY_SECONDS", 0.0)
    monkeypatch.setattr(writer_module, "SYNC_SECONDS", 0.0)  # push every batch to the disk
    caplog.set_level(logging.INFO)
    w = SpoolWriter(str(small_disk), "ch202", "host", interval=1, archive=False, upload=True)
    batch = [incompressible_pair(i) for i in range(100)]  # ~50 kB on disk per batch
    for second in range(60):  # 3 MB offered to a 1 MB disk
        for _ in range(2):
            w.write(batch, T0 + second, 0)
        w.advance(T0 + second + 1)
    assert w.unwritten > 0
    failures = [r for r in caplog.records if "cannot write the spool" in r.message]
    assert len(failures) == 1  # one line for the whole episode, not one per batch
    waiting = Path(spooldir.folder(small_disk, spooldir.WAITING, "ch202"))
    before = sorted(os.listdir(waiting))
    assert before
    held = sum(len(spoolfile.records(str(waiting / name))) for name in before)
    for name in before:  # what an uploader (or an operator) would do
        os.unlink(waiting / name)
    lost = w.unwritten
    for second in range(60, 63):
        w.write(batch, T0 + second, 0)
        w.advance(T0 + second + 1)
    w.close()
    assert any("can be written again" in r.message for r in caplog.records)
    # nothing more lost once there was room; what the broken file kept is counted back as written
    assert w.unwritten <= lost
    after = sorted(os.listdir(waiting))
    assert after and not set(after) & set(before)
    assert os.listdir(spooldir.folder(small_disk, spooldir.NEW, "ch202")) == []  # the broken file was finished too
    for name in after:  # every file is whole and readable to the end
        records = spoolfile.records(str(waiting / name))
        assert all(r[Field.TYPE] == RecordType.UDP_QUERY_RESPONSE for r in records)
        held += len(records)
    assert w.records_written == held  # exact: what the files hold
    assert w.records_written + w.unwritten == 63 * 100 + 60 * 100  # every record offered, once


def replay_pcap(tmp_path) -> str:
    """3000 pairs, each response 600 bytes of answers."""
    frames = []
    for i in range(3000):
        query = P.query(ident=i & 0xFFFF, sport=1024 + i, qname=f"n{i}.example", qtype=16)
        frames.append((P.ethernet(query), T0 + i / 100))
        big = P.big_response(600, ident=i & 0xFFFF, dport=1024 + i, qname=f"n{i}.example")
        frames.append((P.ethernet(big), T0 + i / 100 + 0.001))
    pcap = str(tmp_path / "c.pcap")
    P.write_pcap(pcap, frames)
    return pcap


def replay(tmp_path, spool, settings: str = 'interval="5"') -> dict[str, int]:
    """`run --pcap` into `spool`; the counts of its stop line."""
    config = tmp_path / "conf"
    config.write_text(f'spooldir="{spool}"\nDNSQR_RES_ADDRS="{P.RESOLVER}"\n{settings}\n')
    result = subprocess.run(
        [sys.executable, "-m", "sensor", "run", "-c", str(config), "--pcap", replay_pcap(tmp_path)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("cannot write the spool") == 1
    summary = next(line for line in result.stderr.splitlines() if "stopped:" in line)
    return {k: int(v) for k, v in (part.split("=") for part in summary.split() if "=" in part) if v.isdigit()}


def test_replay_onto_a_full_disk_finishes_and_reports_what_it_could_not_write(small_disk, tmp_path):
    # fill the disk first, leaving a little room
    filler = small_disk / "filler"
    subprocess.run(["dd", "if=/dev/urandom", f"of={filler}", "bs=1k", "count=960"], check=True, capture_output=True)
    counts = replay(tmp_path, small_disk)
    assert counts["unwritten"] > 0
    assert counts["records"] + counts["unwritten"] == 3000  # each record written or counted
    finished = glob.glob(os.path.join(spooldir.folder(small_disk, spooldir.WAITING, "ch202"), "*"))
    # left in new/: finished at the next start
    left = glob.glob(os.path.join(spooldir.folder(small_disk, spooldir.NEW, "ch202"), "*"))
    readable = sum(len(spoolfile.records(f)) for f in finished) + sum(
        len(spoolfile.records(f, allow_cut=True)) for f in left  # cut by the full disk
    )
    assert 0 < readable == counts["records"], (readable, counts)


@pytest.mark.parametrize(
    "spool_format, size, interval, kept",
    [
        ("cbor", "80k", 5, False),  # the open file's first gzip member cut by the full disk: nothing kept
        ("cbor", "100k", 60, True),  # one file: a member written whole, a later one cut
        ("nmsg", "100k", 60, True),  # one file: its first container written whole, the next one cut
    ],
)
def test_the_stop_line_counts_what_the_next_start_recovers(tmp_path, spool_format, size, interval, kept):
    """The file open when the disk filled is cut back to its last whole
    gzip member or NMSG container and left in new/ (removed if that is
    nothing); the next start, with room again, recovers exactly the
    records the stop line said were written, no more, no fewer."""
    with tmpfs(tmp_path / "spool", size) as spool:
        counts = replay(tmp_path, spool, f'spool_format="{spool_format}"\ninterval="{interval}"')
        assert counts["unwritten"] > 0 and counts["records"] + counts["unwritten"] == 3000
        left = os.listdir(spooldir.folder(spool, spooldir.NEW, "ch202"))  # for the next start
        subprocess.run(["mount", "-o", "remount,size=4m", str(spool)], check=True)
        formats = {"cbor": spoolfile.CborFormat(), "nmsg": spoolfile.NmsgFormat()}
        writer = SpoolWriter(str(spool), "ch202", "host", interval, archive=False, upload=True,
                             spool_format=formats[spool_format])
        writer.recover()
        writer.close()
        assert os.listdir(spooldir.folder(spool, spooldir.NEW, "ch202")) == []
        waiting = spooldir.folder(spool, spooldir.WAITING, "ch202")
        held = sum(len(spoolfile.records(os.path.join(waiting, name))) for name in os.listdir(waiting))
    assert held == counts["records"], (held, counts)
    assert bool(left) == kept
