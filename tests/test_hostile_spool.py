"""Damaged and hostile spool files: read reports them, recovery sets them aside.

`python -m bench.corruption_soak` runs the bit-flip part a thousand times
and prints time and memory figures; here a sample of it runs.
"""

from __future__ import annotations

import gzip
import os
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cbor2
import pytest
from click.testing import CliRunner

from bench.corruption_soak import flip_and_recover, sample_file
from sensor.cli import main
from sensor.records.record import Field, RecordType
from sensor.spool import cbor as spool
from sensor.spool import dnsqr, nmsg, spooldir
from sensor.spool import formats as spoolfile
from sensor.spool.cbor import SpoolError
from sensor.spool.dnsqr import tag, varint

T0 = 1_700_000_000
HEADER = spool.encode_header("h", "ch202", T0, 0)


def cbor_file(path, body: bytes) -> str:
    path.write_bytes(gzip.compress(HEADER + body, 4))
    return str(path)


def good_records(count: int) -> bytes:
    record = {Field.TYPE: RecordType.UDP_UNANSWERED_QUERY, Field.QUERY_IP: bytes(4), Field.RESPONSE_IP: bytes(4),
              Field.QUERY_PACKET: [b"x" * 60], Field.QUERY_TIME_SEC: [T0], Field.QUERY_TIME_NSEC: [0]}
    return b"".join(spool.encode_record(record) for _ in range(count))


@pytest.mark.parametrize(
    "name, body, where",
    [
        ("empty-maps", b"\xa0" * 4_000_000, "record 1"),  # a few KB compressed
        ("zeros", bytes(32_000_000), "record 1"),  # a gzip bomb of integers
        ("huge-string", b"\xa1\x02\x5a\x40\x00\x00\x00" + bytes(40_000_000), "more than"),  # declares 1 GiB
        ("wrong-types", cbor2.dumps({1: "one", 2: b"\0" * 4, 3: b"\0" * 4}),
         "record 1 at byte 61 of the inflated stream: field 1"),
        ("not-a-record", good_records(3) + cbor2.dumps([1, 2, 3]), "record 4"),
    ],
)
def test_read_refuses_a_hostile_file_says_where_and_goes_on(tmp_path, name, body, where):
    hostile = cbor_file(tmp_path / f"{name}.cbor.gz", body)
    fine = cbor_file(tmp_path / "fine.cbor.gz", good_records(2))
    result = CliRunner().invoke(main, ["read", "--format", "text", hostile, fine])
    assert result.exit_code == 1
    assert f"{name}.cbor.gz" in result.output and where in result.output
    assert result.output.count("UDP_UNANSWERED_QUERY") >= 2  # the next file is still read


def test_bytes_inserted_mid_stream_are_reported_not_silently_cut(tmp_path):
    path = tmp_path / "f.cbor.gz"
    cbor_file(path, good_records(45_000))
    data = path.read_bytes()
    path.write_bytes(data[:5000] + b"\x00\x01\x02\x03\x04" + data[5000:])
    result = CliRunner().invoke(main, ["read", "--format", "text", str(path)])
    assert result.exit_code == 1
    assert "f.cbor.gz: " in result.output and ("record " in result.output or "damaged" in result.output)


@pytest.mark.parametrize("spool_format", ["nmsg", "cbor"])
def test_bit_flips_in_a_crashed_file_never_stop_start_up(tmp_path, spool_format):
    original = sample_file(tmp_path, spool_format)
    rng = random.Random(7)
    outcomes = {"recovered": 0, "set aside": 0, "removed": 0}
    for trial in range(60):
        outcome = flip_and_recover(tmp_path / f"t{trial}", original, spool_format, rng)
        outcomes[outcome] += 1
    assert outcomes["recovered"] > 0 and sum(outcomes.values()) == 60


def test_a_file_that_cannot_be_recovered_is_moved_to_damaged(tmp_path, caplog):
    root = tmp_path / "spool"
    new = spooldir.folder(str(root), spooldir.NEW, "ch202")
    os.makedirs(new)
    with open(os.path.join(new, "h.1700000000.000000.cbor.gz"), "wb") as handle:
        handle.write(b"\x1f\x8b" + os.urandom(200))
    from sensor.spool.writer import SpoolWriter

    writer = SpoolWriter(str(root), "ch202", "h", 60, archive=False, upload=True)
    assert writer.recover() == []
    writer.close()
    assert os.listdir(new) == []
    assert os.listdir(spooldir.folder(str(root), spooldir.DAMAGED, "ch202")) == ["h.1700000000.000000.cbor.gz"]
    assert "could not be recovered" in caplog.text


def test_records_of_a_recovered_file_are_a_prefix(tmp_path):
    original = sample_file(tmp_path, "nmsg")
    whole = spoolfile.records(original)
    assert len(whole) > 100


def test_a_flipped_bit_in_an_uncompressed_nmsg_payload_fails_its_crc(tmp_path):
    path = tmp_path / "f.nmsg"
    with open(path, "wb") as handle:
        stream = spoolfile.NmsgFormat(compress=False).open(handle, "h", "ch202", T0, 0)
        stream.write([dict(r) for r in spoolfile.records(sample_file(tmp_path, "nmsg", count=5))])
        stream.finish()
    data = bytearray(path.read_bytes())
    data[200] ^= 0x01  # inside the first record's query packet: it still decodes
    path.write_bytes(data)
    result = CliRunner().invoke(main, ["read", str(path)])
    assert result.exit_code == 1 and "fails its CRC32C" in result.output


# ------------------------------------------------------------------- bombs
# `read` on each: refused fast (the acceptance: under 1 s of wall
# time and 100 MB of max RSS in the child), non-zero exit, the file and
# the byte named.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMPTY_PAYLOAD = b"\x0a\x00"  # Nmsg.payloads, zero bytes long


def cbor_bomb(path, array_head: bytes, end: bytes = b"") -> str:
    """A header, then one array of 16 Mi empty maps: 16 KB gzipped."""
    path.write_bytes(gzip.compress(HEADER + array_head + b"\xa0" * (16 << 20) + end, 9))
    return str(path)


def nmsg_container(flags: int, body: bytes) -> bytes:
    return nmsg.HEADER.pack(nmsg.MAGIC, flags, nmsg.VERSION, len(body)) + body


def zlib_container(body: bytes) -> bytes:
    return nmsg_container(nmsg.FLAG_ZLIB, struct.pack(">I", len(body)) + zlib.compress(body, 9))


def fragment(ident: int, current: int, last: int, piece: bytes) -> bytes:
    return nmsg_container(nmsg.FLAG_FRAGMENT, tag(1, 0) + varint(ident) + tag(2, 0) + varint(current) + tag(3, 0)
                          + varint(last) + tag(4, 2) + varint(len(piece)) + piece)


def other_payload() -> bytes:
    """A well-formed NmsgPayload of base type 1 (not dnsqr), without data."""
    payload = tag(1, 0) + varint(1) + tag(2, 0) + varint(1) + tag(3, 0) + varint(T0) + tag(4, 5) + bytes(4)
    return tag(1, 2) + varint(len(payload)) + payload


BOMBS = {
    "cbor-array": lambda p: cbor_bomb(p, b"\x9a" + struct.pack(">I", 16 << 20)),
    "cbor-indefinite-array": lambda p: cbor_bomb(p, b"\x9f", end=b"\xff"),
    "nmsg-zlib-64MiB-of-empty-payloads": lambda p: p.write_bytes(zlib_container(EMPTY_PAYLOAD * (32 << 20))),
    "nmsg-16MB-of-empty-payloads": lambda p: p.write_bytes(nmsg_container(0, EMPTY_PAYLOAD * (8 << 20))),
    "nmsg-2000-fragments-never-completed": lambda p: p.write_bytes(
        b"".join(fragment(ident, 0, 1, bytes(8)) for ident in range(2000))),
    "nmsg-zlib-64MiB-of-other-payloads": lambda p: p.write_bytes(
        zlib_container(other_payload() * ((64 << 20) // len(other_payload())))),
}
SAYS = {
    "cbor-array": "record 1 at byte 61 of the inflated stream: not a record: an array, not a map",
    "cbor-indefinite-array": "record 1 at byte 61 of the inflated stream: not a record: an array, not a map",
    "nmsg-zlib-64MiB-of-empty-payloads": "container 1 at byte 0, payload 1 at byte 0 of its body: not an NmsgPayload",
    "nmsg-16MB-of-empty-payloads": "container 1 at byte 0, payload 1 at byte 0 of its body: not an NmsgPayload",
    "nmsg-2000-fragments-never-completed": "2000 fragmented containers never completed (2000 fragments; the first "
                                           "from container 1 at byte 0)",
    "nmsg-zlib-64MiB-of-other-payloads": "container 1 at byte 0, payload 1025 at byte 17408 of its body: more than "
                                         "1024 payloads that are not base:dnsqr",
}


# The child is started by a small launcher, not by pytest: Linux counts in a
# child's max RSS the memory of the process it was forked from (a large
# pytest, here) until its exec.
_LAUNCH = """
import os, subprocess, sys, threading, time
started = time.monotonic()
child = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
watchdog = threading.Timer(float(sys.argv[1]), child.kill)
watchdog.start()
stderr = child.stderr.read()
_, status, usage = os.wait4(child.pid, 0)
watchdog.cancel()
sys.stderr.buffer.write(stderr)
print(time.monotonic() - started, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status))
"""


def measured_read(*paths: str, timeout: float = 300) -> tuple[float, float, int, str]:
    """`sie-dns-sensor read --format text PATH...` in a child: (wall
    seconds, the child's max RSS in MB, exit status, stderr); killed
    after `timeout` seconds (a read that hangs)."""
    launched = subprocess.run(
        [sys.executable, "-c", _LAUNCH, str(timeout), sys.executable, "-m", "sensor", "read", "--format", "text",
         *paths],
        capture_output=True, text=True, check=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
    )
    seconds, max_rss_mb, status = launched.stdout.split()
    return float(seconds), float(max_rss_mb), int(status), launched.stderr


@pytest.mark.parametrize("name", list(BOMBS))
def test_read_refuses_a_bomb_fast_and_says_where(tmp_path, name):
    path = tmp_path / f"h.{T0}.000000.{'cbor.gz' if name.startswith('cbor') else 'nmsg'}"
    BOMBS[name](path)
    seconds, max_rss_mb, status, stderr = measured_read(str(path))
    print(f"\n{name} ({path.stat().st_size} bytes): {seconds:.2f} s, max RSS {max_rss_mb:.0f} MB, exit {status}")
    assert status == 1 and f"{path}: {SAYS[name]}" in stderr, stderr
    assert seconds < 1.0 and max_rss_mb < 100, (seconds, max_rss_mb)


def test_read_of_a_spool_skips_a_fifo_and_a_symlink_in_waiting_and_says_so(tmp_path):
    waiting = Path(spooldir.folder(tmp_path / "spool", spooldir.WAITING, "ch202"))
    waiting.mkdir(parents=True)
    cbor_file(waiting / f"h.{T0}.000001.cbor.gz", good_records(2))
    os.mkfifo(waiting / f"h.{T0}.000002.cbor.gz")  # no writer will ever come
    elsewhere = cbor_file(tmp_path / "elsewhere.cbor.gz", good_records(5))
    os.symlink(elsewhere, waiting / f"h.{T0}.000003.cbor.gz")
    result = subprocess.run([sys.executable, "-m", "sensor", "read", "--format", "text", str(tmp_path / "spool")],
                            capture_output=True, text=True, timeout=60, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 1
    assert result.stdout.count("UDP_UNANSWERED_QUERY") == 2  # the regular file only
    assert f"h.{T0}.000002.cbor.gz: a FIFO, not a regular file: skipped" in result.stderr
    assert f"h.{T0}.000003.cbor.gz: a symbolic link, not a regular file: skipped" in result.stderr


def test_a_fifo_named_on_the_command_line_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / f"h.{T0}.000002.nmsg"
    os.mkfifo(fifo)
    _, _, status, stderr = measured_read(str(fifo), timeout=20)
    assert status == 1 and f"{fifo}: a FIFO, not a regular file: skipped" in stderr, stderr


def test_nmsg_damage_names_the_container_the_payload_and_the_byte(tmp_path):
    message = spool_record_message()
    good = nmsg.Container()
    good.add(nmsg.wrap(message, T0, 0, b""), nmsg.payload_crc(message))
    first = good.serialize(compress=True)
    body = good.entries + good.crcs
    damaged_zlib = nmsg_container(nmsg.FLAG_ZLIB, struct.pack(">I", len(body)) + b"\x78\x9c\xff\xff" + bytes(20))
    bad_crc = nmsg_container(0, bytes(body[:-1]) + bytes([body[-1] ^ 1]))
    for name, data, says in (
        ("zlib.nmsg", first + damaged_zlib, f"container 2 at byte {len(first)}: compressed body damaged"),
        ("crc.nmsg", first + bad_crc, f"container 2 at byte {len(first)}, payload 1 at byte 0 of its body: "
                                      "fails its CRC32C"),
    ):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SpoolError, match=says):
            spoolfile.records(str(tmp_path / name))


def spool_record_message() -> bytes:
    record = {Field.TYPE: RecordType.UDP_UNANSWERED_QUERY, Field.QUERY_IP: bytes(4), Field.RESPONSE_IP: bytes(4),
              Field.QUERY_PACKET: [b"x" * 60], Field.QUERY_TIME_SEC: [T0], Field.QUERY_TIME_NSEC: [0]}
    return dnsqr.encode(record)


# A recovery under an address-space limit: before the readers were bounded,
# this bomb made a MemoryError, whose message is empty: "could not be recovered ()".
_RECOVER = """
import logging, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
logging.basicConfig(level=logging.INFO, format="%(message)s")
from sensor.spool.formats import NmsgFormat
from sensor.spool.writer import SpoolWriter
writer = SpoolWriter(sys.argv[1], "ch202", "h", 60, archive=False, upload=True, spool_format=NmsgFormat())
writer.recover()
writer.close()
"""


def test_recovery_of_a_bomb_in_new_sets_it_aside_with_a_reason(tmp_path):
    root = tmp_path / "spool"
    new = Path(spooldir.folder(root, spooldir.NEW, "ch202"))
    new.mkdir(parents=True)
    BOMBS["nmsg-zlib-64MiB-of-empty-payloads"](new / f"h.{T0}.000000.nmsg")
    result = subprocess.run([sys.executable, "-c", _RECOVER, str(root)], capture_output=True, text=True,
                            timeout=300, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 0, result.stderr
    assert (f"spool file h.{T0}.000000.nmsg could not be recovered (" in result.stderr
            and "container 1 at byte 0, payload 1 at byte 0 of its body: not an NmsgPayload" in result.stderr)
    assert os.listdir(spooldir.folder(root, spooldir.DAMAGED, "ch202")) == [f"h.{T0}.000000.nmsg"]
