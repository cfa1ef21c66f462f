"""Spool codec and writer: round trips, rotation, archive, crash recovery."""

from __future__ import annotations

import gzip
import io
import os
import random
import subprocess
import zlib
from pathlib import Path

import cbor2
import pytest

from sensor.matching.matcher import Matcher
from sensor.records.record import Field, RecordType, UdpChecksum
from sensor.spool import cbor as cbor_spool
from sensor.spool import spooldir
from sensor.spool.cbor import Compressor, SpoolError, encode_header, encode_record, read_spool
from sensor.spool.writer import SpoolBusy, SpoolWriter
from tests import packets as P

T0 = 1_700_000_000


def sample_records() -> list[dict]:
    """One of each shape the matcher makes, from real datagrams."""
    m = Matcher()
    out = []
    out += m.feed(P.query(), T0, 1)
    out += m.feed(P.response(), T0, 2)  # plain pair (fast encoder)
    out += m.feed(P.query(src=P.RESOLVER6, dst=P.AUTHORITY6), T0, 3)
    out += m.feed(P.response(src=P.AUTHORITY6, dst=P.RESOLVER6), T0, 4)  # IPv6 pair
    out += m.feed(P.query(ident=7, qtype=16), T0, 5)
    for i, frag in enumerate(P.fragment_ipv4(P.big_response(3000, ident=7), 1200)):
        out += m.feed(frag, T0, 6 + i)  # fragmented pair (general encoder)
    out += m.feed(P.response(ident=9), T0, 20)  # unsolicited
    out += m.feed(P.query(ident=10, sport=1000), T0, 21)
    out += m.flush()  # unanswered, with a float timeout
    assert [r[Field.TYPE] for r in out] == [
        RecordType.UDP_QUERY_RESPONSE,
        RecordType.UDP_QUERY_RESPONSE,
        RecordType.UDP_QUERY_RESPONSE,
        RecordType.UDP_UNSOLICITED_RESPONSE,
        RecordType.UDP_UNANSWERED_QUERY,
    ]
    return out


def write_file(path, records, cut: int | None = None) -> None:
    with open(path, "wb") as handle:
        compressor = Compressor(handle)
        compressor.write(encode_header("h", "ch", T0, 0))
        for record in records:
            compressor.write(encode_record(record))
        compressor.finish()
    if cut is not None:
        with open(path, "rb") as handle:
            data = handle.read()
        with open(path, "wb") as handle:
            handle.write(data[:cut])


def test_every_record_shape_round_trips(tmp_path):
    records = sample_records()
    path = tmp_path / "f.cbor.gz"
    write_file(path, records)
    header, read = read_spool(str(path))
    assert header["format"] == "sie-dnsqr" and header["channel"] == "ch"
    assert list(read) == records


def test_fast_pair_encoding_decodes_like_cbor2():
    pair = sample_records()[0]
    assert cbor2.loads(encode_record(pair)) == pair
    assert cbor2.loads(encode_record(pair)) == cbor2.loads(
        cbor2.dumps({int(k): int(v) if isinstance(v, int) else v for k, v in pair.items()})
    )


def test_file_is_plain_gzip_of_cbor_items(tmp_path):
    path = tmp_path / "f.cbor.gz"
    write_file(path, sample_records())
    data = gzip.decompress(path.read_bytes())
    assert cbor2.loads(data)["format"] == "sie-dnsqr"


def test_file_cut_short_yields_every_complete_record(tmp_path):
    records = sample_records() * 200
    full = tmp_path / "full.cbor.gz"
    write_file(full, records)
    size = full.stat().st_size
    seen = []
    for cut in (size // 4, size // 2, size - 10):
        path = tmp_path / f"cut{cut}.cbor.gz"
        write_file(path, records, cut=cut)
        _, read = read_spool(str(path), allow_cut=True)  # as recovery reads a crashed file
        got = list(read)
        assert got == records[: len(got)]  # a prefix, nothing damaged
        seen.append(len(got))
        with pytest.raises(SpoolError, match="cut short"):  # read says so
            list(read_spool(str(path))[1])
    assert 0 < seen[0] < seen[1] < seen[2] < len(records)


def write_members(path, records, sync_every: int) -> list[int]:
    """A file written as the spool writes it: a sync every `sync_every`
    records ends a member; the offsets where members end."""
    ends = []
    with open(path, "wb") as handle:
        compressor = Compressor(handle)
        compressor.write(encode_header("h", "ch", T0, 0))
        for number, record in enumerate(records, 1):
            compressor.write(encode_record(record))
            if number % sync_every == 0:
                compressor.sync()
                ends.append(handle.tell())
        compressor.finish()
    return ends


def members(data: bytes) -> int:
    count = 0
    while data:
        inflater = zlib.decompressobj(31)
        inflater.decompress(data)
        assert inflater.eof
        data, count = inflater.unused_data, count + 1
    return count


def test_a_file_of_many_members_reads_as_one_stream(tmp_path):
    """Members end at each sync and every MEMBER_SIZE bytes; readers and zcat see one stream."""
    records = sample_records() * 2000  # about 2 MB of CBOR
    path = tmp_path / "f.cbor.gz"
    write_members(path, records, sync_every=3001)
    data = path.read_bytes()
    assert members(data) >= 5
    assert list(read_spool(str(path))[1]) == records
    decoder = cbor2.CBORDecoder(io.BytesIO(gzip.decompress(data)))
    assert [decoder.decode() for _ in range(len(records) + 1)][1:] == records
    zcat = subprocess.run(["gzip", "-dc", str(path)], capture_output=True, check=True).stdout
    assert zcat == gzip.decompress(data)


def test_a_cut_in_a_later_member_keeps_the_earlier_ones(tmp_path):
    records = sample_records() * 300
    path = tmp_path / "f.cbor.gz"
    ends = write_members(path, records, sync_every=500)
    data = path.read_bytes()
    for cut, whole in ((ends[1] + 40, 1000), (ends[1], 1000), (ends[0] - 3, 0)):
        path.write_bytes(data[:cut])
        got = list(read_spool(str(path), allow_cut=True)[1])
        assert got == records[: len(got)] and len(got) >= whole
        if cut != ends[1]:  # a cut at a member's end looks like the file's end, as in NMSG
            with pytest.raises(SpoolError, match="cut short"):
                list(read_spool(str(path))[1])


def test_bytes_after_a_member_that_start_no_member_are_damage(tmp_path):
    path = tmp_path / "f.cbor.gz"
    write_file(path, sample_records())
    path.write_bytes(path.read_bytes() + b"not gzip")
    with pytest.raises(SpoolError, match="damaged"):
        list(read_spool(str(path))[1])


def test_not_a_spool_file_is_a_clear_error(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"hello")
    with pytest.raises(SpoolError):
        read_spool(str(path))
    path.write_bytes(gzip.compress(cbor2.dumps({"format": "other"})))
    with pytest.raises(SpoolError, match="not a sie-dnsqr"):
        read_spool(str(path))


# ------------------------------------------------------------------ writer
def writer(tmp_path, **kw) -> SpoolWriter:
    options = {"interval": 60, "archive": False, "upload": True} | kw
    return SpoolWriter(str(tmp_path), "ch1", "host", **options)


def folder(tmp_path, kind: str) -> Path:
    return Path(spooldir.folder(tmp_path, kind, "ch1"))


def files(tmp_path, kind: str) -> list[str]:
    return sorted(os.listdir(folder(tmp_path, kind)))


def test_rotation_on_interval_boundaries_of_packet_time(tmp_path):
    w = writer(tmp_path)
    rec = sample_records()[0]
    w.write([rec], 1_700_000_010, 0)
    assert files(tmp_path, spooldir.NEW) and not files(tmp_path, spooldir.WAITING)
    w.advance(1_700_000_039)  # 1_700_000_040 is a multiple of 60
    assert not files(tmp_path, spooldir.WAITING)
    w.advance(1_700_000_040)
    assert files(tmp_path, spooldir.WAITING) == ["host.1700000010.000000.cbor.gz"]
    w.write([rec, rec], 1_700_000_041, 5000)
    w.close()
    assert files(tmp_path, spooldir.WAITING) == ["host.1700000010.000000.cbor.gz", "host.1700000041.000005.cbor.gz"]
    assert not files(tmp_path, spooldir.NEW) and not files(tmp_path, spooldir.ARCHIVE)
    _, read = read_spool(str(folder(tmp_path, spooldir.WAITING) / "host.1700000041.000005.cbor.gz"))
    assert len(list(read)) == 2


def test_no_records_no_file(tmp_path):
    w = writer(tmp_path)
    w.write([], T0, 0)
    w.advance(T0 + 1000)
    w.close()
    assert not files(tmp_path, spooldir.WAITING) and not files(tmp_path, spooldir.NEW)


def test_archive_keeps_a_hard_link(tmp_path):
    w = writer(tmp_path, archive=True)
    w.write(sample_records(), T0, 0)
    w.close()
    (name,) = files(tmp_path, spooldir.WAITING)
    assert files(tmp_path, spooldir.ARCHIVE) == [name]
    assert os.stat(folder(tmp_path, spooldir.ARCHIVE) / name).st_nlink == 2


@pytest.mark.parametrize("archive", [True, False])
def test_upload_no_never_fills_waiting(tmp_path, archive):
    w = writer(tmp_path, archive=archive, upload=False)
    w.write(sample_records(), T0, 0)
    w.close()
    assert not files(tmp_path, spooldir.WAITING) and not files(tmp_path, spooldir.NEW)
    assert len(files(tmp_path, spooldir.ARCHIVE)) == (1 if archive else 0)


def test_two_writers_on_one_channel_are_refused(tmp_path):
    w = writer(tmp_path)
    with pytest.raises(SpoolBusy):
        writer(tmp_path)
    w.close()
    writer(tmp_path).close()


def test_crash_leftovers_are_finished_at_start(tmp_path):
    records = sample_records() * 50
    os.makedirs(folder(tmp_path, spooldir.NEW))
    cut = folder(tmp_path, spooldir.NEW) / "host.1700000000.000000.cbor.gz"
    write_file(cut, records, cut=1500)
    empty = folder(tmp_path, spooldir.NEW) / "host.1700000001.000000.cbor.gz"
    empty.write_bytes(b"")
    (folder(tmp_path, spooldir.NEW) / "host.1700000002.000000.cbor.gz.recovering").write_bytes(b"junk")
    w = writer(tmp_path)
    assert w.recover() == [cut.name]
    w.close()
    assert files(tmp_path, spooldir.NEW) == []
    (name,) = files(tmp_path, spooldir.WAITING)
    _, read = read_spool(str(folder(tmp_path, spooldir.WAITING) / name))
    got = list(read)
    assert 0 < len(got) < len(records) and got == records[: len(got)]
    # the recovered file is now complete: gzip reads it to the end
    gzip.decompress((folder(tmp_path, spooldir.WAITING) / name).read_bytes())


def test_records_survive_with_checksum_names(tmp_path):
    w = writer(tmp_path)
    w.write(sample_records(), T0, 0)
    w.close()
    (name,) = files(tmp_path, spooldir.WAITING)
    _, read = read_spool(str(folder(tmp_path, spooldir.WAITING) / name))
    assert next(iter(read))[Field.UDP_CHECKSUM] == UdpChecksum.CORRECT


_TAGS = (0, 1, 2, 3, 24, 25, 28, 29, 256, 258, 1000, 55799)  # dates, bignums, shared values, sets, unknown


def _tagged(rng: random.Random, value) -> bytes:
    """`value` in CBOR, a tag (two, now and then) put before it and before its list's values at random."""
    head = b""
    if rng.random() < 0.06:  # mostly one tag a record, so that no other refuses it first
        head = b"".join(cbor2.dumps(cbor2.CBORTag(rng.choice(_TAGS), None))[:-1]
                        for _ in range(2 if rng.random() < 0.2 else 1))
    if isinstance(value, list):
        return head + bytes([0x80 + len(value)]) + b"".join(_tagged(rng, item) for item in value)
    return head + cbor2.dumps(value)


def _records_taken(inflated: bytes, step: int, monkeypatch) -> int | str:
    monkeypatch.setattr(cbor_spool, "INFLATE_STEP", step)
    try:
        _, records = read_spool("tagged", stream=io.BytesIO(gzip.compress(encode_header("h", "c", 0, 0) + inflated)))
        return len(list(records))
    except SpoolError:
        return "refused"


def test_where_an_inflate_step_falls_never_changes_whether_a_tagged_record_is_taken(monkeypatch):
    """A record that fits one inflate step is decoded by cbor2 at once; one that does not is
    measured by item_end first. Both must take and refuse the same records, tags (which our
    writer never makes) included: with a tag refused only by item_end, the same file gave a
    record or an error by where a step ended (tag 2 before an integer, tag 28 before a list)."""
    rng = random.Random(7)
    whole = cbor_spool.INFLATE_STEP  # every record in one step
    differ = []
    for _ in range(3000):
        record = {Field.TYPE: 1, Field.QUERY_IP: b"\x01\x02\x03\x04", Field.RESPONSE_IP: b"\x05\x06\x07\x08",
                  Field.QUERY_TIME_SEC: [rng.randrange(3)], Field.QUERY_TIME_NSEC: [5],
                  Field.QUERY_PACKET: [b"ab"], Field.RESPONSE_PACKET: [], Field.RESPONSE_TIME_SEC: [],
                  Field.RESPONSE_TIME_NSEC: []}  # empty lists too: cbor2 checks no depth in one
        pairs = list(record.items())
        rng.shuffle(pairs)
        inflated = bytes([0xA0 + len(pairs)]) + b"".join(_tagged(rng, k) + _tagged(rng, v) for k, v in pairs)
        taken = {_records_taken(inflated, step, monkeypatch) for step in (whole, 5, 11)}
        if len(taken) > 1:
            differ.append(inflated.hex())
    assert differ == []


@pytest.mark.parametrize("step", [1 << 18, 1 << 12])  # the item decoded at once, or measured first
def test_a_tag_is_refused_before_cbor2_builds_what_it_names(monkeypatch, step):
    """cbor2 compiles a tag 35's string as a regular expression: one of 1 MiB, 1.5 KB compressed,
    cost 6.6 CPU-s, so a small file of them held the reader (the sensor's read, the collector's
    ingest) for hours. Every tag is refused before its value is read."""
    import re

    compiled = []
    monkeypatch.setattr(re, "compile", lambda *args, **kwargs: compiled.append(args))
    monkeypatch.setattr(cbor_spool, "INFLATE_STEP", step)
    record = cbor2.dumps({Field.TYPE: 1, Field.QUERY_IP: b"\x01\x02\x03\x04", Field.RESPONSE_IP: b"\x05\x06\x07\x08",
                          Field.QNAME: cbor2.CBORTag(35, "(a|a?)+" * 2000)})
    data = gzip.compress(encode_header("h", "c", 0, 0) + record)
    _, records = read_spool("regex", stream=io.BytesIO(data))
    try:
        list(records)
    except SpoolError as exc:
        said = str(exc)
    assert compiled == [] and "record 1 at byte" in said and "a tag" in said, said
