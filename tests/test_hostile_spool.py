"""Damaged and hostile spool files: read reports them, recovery sets them aside.

`python -m bench.corruption_soak` runs the bit-flip part a thousand times
and prints time and memory figures; here a sample of it runs.
"""

from __future__ import annotations

import gzip
import os
import random

import cbor2
import pytest
from click.testing import CliRunner

from bench.corruption_soak import flip_and_recover, sample_file
from sensor import spool, spooldir, spoolfile
from sensor.cli import main
from sensor.record import Field, RecordType

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
        ("wrong-types", cbor2.dumps({1: "one", 2: b"\0" * 4, 3: b"\0" * 4}), "record 1: field 1"),
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
    from sensor.writer import SpoolWriter

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
