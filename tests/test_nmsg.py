"""NMSG spool files: the reference's own files, an independent decoder.

The encoder is hand-written (it runs for every record); the protobuf
library, given a descriptor built here from nmsg's field numbers, is the
independent check, and the reference's files in ../shared/corpus are the
target (skipped where the corpus is absent).
"""

from __future__ import annotations

import base64
import glob
import io
import ipaddress
import json
import os
import random
import zlib

import pytest
from click.testing import CliRunner
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from sensor.cli import main
from sensor.edges.libpcap import Capture
from sensor.matching.bpf import Vantage, build_filter, parse_networks
from sensor.matching.matcher import Matcher, Settings
from sensor.records.record import Field, RecordType
from sensor.spool import dnsqr, nmsg, spooldir
from sensor.spool import formats as spoolfile
from sensor.spool.cbor import SpoolError
from sensor.spool.formats import NmsgFormat
from tests import packets as P

CORPUS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus")
needs_corpus = pytest.mark.skipif(not os.path.isdir(CORPUS), reason="../shared/corpus is not here")
T0 = 1_700_000_000

# ------------------------------------------------------- independent decoder
_T = descriptor_pb2.FieldDescriptorProto
DNSQR_FIELDS = [  # nmsg/base/dnsqr.proto: name, number, type, label (enums as uint32 on the wire)
    ("type", 1, _T.TYPE_UINT32, _T.LABEL_REQUIRED),
    ("query_ip", 2, _T.TYPE_BYTES, _T.LABEL_REQUIRED),
    ("response_ip", 3, _T.TYPE_BYTES, _T.LABEL_REQUIRED),
    ("proto", 4, _T.TYPE_UINT32, _T.LABEL_REQUIRED),
    ("query_port", 5, _T.TYPE_UINT32, _T.LABEL_REQUIRED),
    ("response_port", 6, _T.TYPE_UINT32, _T.LABEL_REQUIRED),
    ("id", 7, _T.TYPE_UINT32, _T.LABEL_REQUIRED),
    ("qname", 8, _T.TYPE_BYTES, _T.LABEL_OPTIONAL),
    ("qtype", 9, _T.TYPE_UINT32, _T.LABEL_OPTIONAL),
    ("qclass", 10, _T.TYPE_UINT32, _T.LABEL_OPTIONAL),
    ("rcode", 11, _T.TYPE_UINT32, _T.LABEL_OPTIONAL),
    ("query_packet", 12, _T.TYPE_BYTES, _T.LABEL_REPEATED),
    ("query_time_sec", 13, _T.TYPE_INT64, _T.LABEL_REPEATED),
    ("query_time_nsec", 14, _T.TYPE_SFIXED32, _T.LABEL_REPEATED),
    ("response_packet", 15, _T.TYPE_BYTES, _T.LABEL_REPEATED),
    ("response_time_sec", 16, _T.TYPE_INT64, _T.LABEL_REPEATED),
    ("response_time_nsec", 17, _T.TYPE_SFIXED32, _T.LABEL_REPEATED),
    ("tcp", 18, _T.TYPE_BYTES, _T.LABEL_OPTIONAL),
    ("icmp", 19, _T.TYPE_BYTES, _T.LABEL_OPTIONAL),
    ("timeout", 20, _T.TYPE_DOUBLE, _T.LABEL_OPTIONAL),
    ("udp_checksum", 21, _T.TYPE_UINT32, _T.LABEL_OPTIONAL),
    ("resolver_address_zeroed", 22, _T.TYPE_BOOL, _T.LABEL_OPTIONAL),
]


def _dnsqr_class():
    proto = descriptor_pb2.FileDescriptorProto(name="test_dnsqr.proto", package="check", syntax="proto2")
    message = proto.message_type.add(name="DnsQR")
    for name, number, kind, label in DNSQR_FIELDS:
        message.field.add(name=name, number=number, type=kind, label=label)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("check.DnsQR"))


DnsQR = _dnsqr_class()


def as_protobuf(record: dict):
    message = DnsQR()
    for name, number, _, label in DNSQR_FIELDS:
        value = record.get(number, dnsqr.REQUIRED_DEFAULTS.get(number))
        if value is None:
            continue
        if label == _T.LABEL_REPEATED:
            getattr(message, name).extend(value)
        else:
            setattr(message, name, int(value) if isinstance(value, int) and not isinstance(value, bool) else value)
    return message


def every_record_shape() -> list[dict]:
    """Records of every type and shape the matcher makes."""
    out = []

    def run(datagrams, **settings):
        m = Matcher(Settings(vantage=Vantage(parse_networks(f"{P.RESOLVER},{P.RESOLVER6}")), strict=True,
                             **settings))
        for i, datagram in enumerate(datagrams):
            out.extend(m.feed(datagram, T0 + i, 1000 * i))
        out.extend(m.flush())

    run([P.query(), P.response()])  # the common pair
    run([P.query(src=P.RESOLVER6, dst=P.AUTHORITY6), P.response(src=P.AUTHORITY6, dst=P.RESOLVER6)])
    run([P.query(), *P.fragment_ipv4(P.big_response(3000), 1200)])  # fragments
    run([P.query(ident=7)])  # unanswered, timeout
    run([P.response(ident=9)])  # unsolicited
    run([P.query(qname=None), P.response(qname=None, rcode=5, answers=())])  # no question
    run([P.tcp(P.RESOLVER, P.AUTHORITY, 40100, 53), P.tcp(P.AUTHORITY, P.RESOLVER, 53, 40100)])
    run([P.icmp_unreachable(P.AUTHORITY, P.RESOLVER, P.query())])
    run([P.icmp6_error(P.AUTHORITY6, P.RESOLVER6, P.query(src=P.RESOLVER6, dst=P.AUTHORITY6))])
    run([P.icmp6_error(P.AUTHORITY6, P.RESOLVER6, P.query(src=P.RESOLVER6, dst=P.AUTHORITY6))],
        zero_resolver_address=True)
    run([P.query(), P.response()], zero_resolver_address=True)
    run([P.query(), P.response()], capture_qr=0)
    run([P.query(), P.response()], capture_qr=1)
    kinds = {RecordType(r[Field.TYPE]) for r in out}
    assert kinds == set(RecordType) - {RecordType.UDP_INVALID}
    return out


SHAPES = every_record_shape()


@pytest.mark.parametrize("record", SHAPES, ids=lambda r: RecordType(r[Field.TYPE]).name)
def test_encoding_equals_the_protobuf_librarys(record):
    ours = dnsqr.encode(record)
    assert ours == as_protobuf(record).SerializeToString()
    parsed = DnsQR.FromString(ours)
    assert parsed.query_ip == record[Field.QUERY_IP] and parsed.id == record[Field.ID]
    assert list(parsed.query_packet) == record.get(Field.QUERY_PACKET, [])
    assert list(parsed.response_time_nsec) == record.get(Field.RESPONSE_TIME_NSEC, [])


@pytest.mark.parametrize("record", SHAPES, ids=lambda r: RecordType(r[Field.TYPE]).name)
def test_decoding_bytes_the_protobuf_library_wrote(record):
    assert dnsqr.decode(as_protobuf(record).SerializeToString()) == record


def test_times_past_2038_and_negative_nanoseconds_round_trip():
    (record,) = [r for r in SHAPES if r[Field.TYPE] == RecordType.UDP_QUERY_RESPONSE][:1]
    late = dict(record)
    late[Field.QUERY_TIME_SEC] = [5_000_000_000]
    assert dnsqr.decode(dnsqr.encode(late)) == late
    assert DnsQR.FromString(dnsqr.encode(late)).query_time_sec[0] == 5_000_000_000


def test_damaged_messages_raise_decode_error():
    good = dnsqr.encode(SHAPES[0])
    for bad in (good[:-1], b"\x12\xff\xff\xff\x0f", b"\x0b"):
        with pytest.raises(dnsqr.DecodeError):
            dnsqr.decode(bad)


# ---------------------------------------------------------------- files
def test_containers_fill_as_nmsgtool_fills_them(tmp_path):
    path = tmp_path / "f.nmsg"
    record = SHAPES[0]
    with open(path, "wb") as handle:
        stream = NmsgFormat(compress=False).open(handle, "h", "c", T0, 0)
        stream.write([record] * 5000)
        stream.finish()
    with open(path, "rb") as handle:
        sizes = [len(body) for _, body, _ in nmsg.containers(handle)]
    assert len(sizes) >= 2 and all(size < nmsg.CONTAINER_SIZE for size in sizes)
    assert sizes[0] > nmsg.CONTAINER_SIZE - 1000  # full, not flushed early
    assert len(spoolfile.records(str(path))) == 5000


def test_a_file_cut_mid_container_is_recovered_up_to_the_cut(tmp_path):
    path = tmp_path / "f.nmsg"
    with open(path, "wb") as handle:
        stream = NmsgFormat(compress=True).open(handle, "h", "c", T0, 0)
        stream.write(SHAPES[:3])
        stream.sync()  # first container written
        stream.write(SHAPES[3:6])
        stream.finish()
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # a crash cut the second container
    assert len(list(spoolfile.read(str(path), allow_cut=True))) == 3  # recovery reads up to the cut
    with pytest.raises(SpoolError, match="cut short"):  # read says so
        spoolfile.records(str(path))
    assert NmsgFormat().recover(str(path), "h", "c") == 3
    assert spoolfile.records(str(path)) == SHAPES[:3]
    path.write_bytes(data[:5])
    with pytest.raises(SpoolError):
        NmsgFormat().recover(str(path), "h", "c")


def test_fragmented_containers_are_reassembled():
    container = nmsg.Container()
    message = dnsqr.encode(SHAPES[0])
    container.add(nmsg.wrap(message, T0, 5, b""), nmsg.payload_crc(message))
    whole = container.serialize(compress=False)[nmsg.HEADER.size :]
    pieces = [whole[:40], whole[40:100], whole[100:]]
    stream = b""
    for index, piece in enumerate(pieces):
        fragment = (dnsqr.tag(1, 0) + dnsqr.varint(77) + dnsqr.tag(2, 0) + dnsqr.varint(index)
                    + dnsqr.tag(3, 0) + dnsqr.varint(len(pieces) - 1) + dnsqr.tag(4, 2)
                    + dnsqr.varint(len(piece)) + piece)
        stream += nmsg.HEADER.pack(nmsg.MAGIC, nmsg.FLAG_FRAGMENT, nmsg.VERSION, len(fragment)) + fragment
    ((record, envelope),) = list(nmsg.records(io.BytesIO(stream)))
    assert record == SHAPES[0] and envelope.time == (T0, 5)


@pytest.mark.parametrize(("body", "complaint"), [
    (bytes(2 * 100_000) + dnsqr.tag(3, 0) + b"\x80" * 9 + b"\x7f", "field number 0"),
    ((dnsqr.tag(5, 0) + b"\x00") * 5000, f"more than {nmsg.MAX_OTHER_FIELDS} fields that are neither payloads"),
])
def test_a_container_of_filler_is_refused_after_a_few_fields(body, complaint):
    """64 MiB of fields that are not payloads (from 260 KB of upload) were read one by one:
    minutes of the ingester's CPU, and no error at the end."""
    deflated = zlib.compress(body, 9)
    data = (nmsg.HEADER.pack(nmsg.MAGIC, nmsg.FLAG_ZLIB, nmsg.VERSION, 4 + len(deflated))
            + len(body).to_bytes(4, "big") + deflated)
    with pytest.raises(nmsg.NmsgError, match=complaint):
        list(nmsg.records(io.BytesIO(data)))


def _fragment(ident: int, current: int, last: object, piece: bytes) -> bytes:
    last_field = (dnsqr.tag(3, 2) + dnsqr.varint(len(last)) + last if isinstance(last, bytes)
                  else dnsqr.tag(3, 0) + dnsqr.varint(last))
    body = (dnsqr.tag(1, 0) + dnsqr.varint(ident) + dnsqr.tag(2, 0) + dnsqr.varint(current) + last_field
            + dnsqr.tag(4, 2) + dnsqr.varint(len(piece)) + piece)
    return nmsg.HEADER.pack(nmsg.MAGIC, nmsg.FLAG_FRAGMENT, nmsg.VERSION, len(body)) + body


@pytest.mark.parametrize(("stream", "complaint"), [
    (_fragment(7, 5, 9, b"x") + _fragment(7, 0, 1, b"y"), "whose first fragment said 9"),
    (_fragment(7, 0, b"\x01", b"x"), r"damaged fragment \(field 3 has wire type 2\)"),
])
def test_fragments_that_disagree_are_damage_not_a_crash(stream, complaint):
    """KeyError and TypeError before: the ingester set the file aside all the same, but
    `sie-dns-sensor read` died with a traceback."""
    with pytest.raises(nmsg.NmsgError, match=complaint):
        list(nmsg.records(io.BytesIO(stream)))


@pytest.mark.parametrize(
    "data, complaint",
    [
        (b"NMSG\x00\x02\xff\xff\xff\xff", "declares"),
        (b"NMSG\x01\x02\x00\x00\x00\x08\xff\xff\xff\xff\x78\x9c\x03\x00", "declares"),
        (b"NMSX\x00\x02\x00\x00\x00\x00", "no NMSG container"),
        (b"NMSG\x01\x02\x00\x00\x00\x06\x00\x00\x00\x10\x00\x00", "damaged"),
    ],
)
def test_hostile_containers_are_refused_with_a_reason(data, complaint):
    with pytest.raises(nmsg.NmsgError, match=complaint):
        list(nmsg.records(io.BytesIO(data)))


# ------------------------------------------------------- the reference's files
def corpus(*parts: str) -> str:
    return os.path.join(CORPUS, *parts)


def _config(tmp_path, text: str) -> str:
    path = tmp_path / "sie-dns-sensor"
    path.write_text(f'spooldir="{tmp_path / "spool"}"\nupload="no"\narchive="yes"\n' + text)
    return str(path)


@needs_corpus
def test_replay_of_nmsgs_test_vector_writes_its_golden_file_byte_for_byte(tmp_path):
    """nmsg's own test demands exactly these bytes of nmsgtool."""
    written = _replay_test1(tmp_path, compress="no")
    with open(corpus("nmsg", "test1-dnsqr.nmsg"), "rb") as expected, open(written, "rb") as ours:
        assert ours.read() == expected.read()


@needs_corpus
def test_compressed_replay_inflates_to_the_references_compressed_containers(tmp_path):
    """Another deflate (isal), the same containers once plain zlib inflates them."""
    written = _replay_test1(tmp_path, compress="yes")

    def inflated(path):
        with open(path, "rb") as handle:
            return [(flags, nmsg.inflate(body)) for flags, body, _ in nmsg.containers(handle)]

    assert inflated(written) == inflated(corpus("nmsg", "test1-dnsqr.zlib.nmsg"))
    with open(written, "rb") as handle:
        (flags, body, _), = list(nmsg.containers(handle))
    assert flags == nmsg.FLAG_ZLIB and zlib.decompress(body[4:])  # plain zlib reads it


def _replay_test1(tmp_path, compress: str) -> str:
    config = _config(
        tmp_path,
        f'DNSQR_RES_ADDRS="203.0.113.195"\nspool_format="nmsg"\nnmsg_compress="{compress}"\n'
        'nmsg_source="0x19721976"\ninterval="3600"\n',
    )
    result = CliRunner().invoke(main, ["run", "-c", config, "--pcap", corpus("nmsg", "test1-dnsqr.pcap")])
    assert result.exit_code == 0, result.output
    (written,) = glob.glob(os.path.join(spooldir.folder(tmp_path / "spool", spooldir.ARCHIVE, "ch202"), "*.nmsg"))
    return written


def _raw(message: dict) -> dict:
    """The reference JSON's values in record form, for the fields compared."""

    def address(text):
        return b"" if text is None else ipaddress.ip_address(text).packed

    out = {
        Field.TYPE: RecordType[message["type"]],
        Field.QUERY_IP: address(message["query_ip"]),
        Field.RESPONSE_IP: address(message["response_ip"]),
        Field.QUERY_PORT: message["query_port"],
        Field.RESPONSE_PORT: message["response_port"],
        Field.ID: message["id"],
    }
    for name, field in (("query_packet", Field.QUERY_PACKET), ("response_packet", Field.RESPONSE_PACKET)):
        if message.get(name):
            out[field] = [base64.b64decode(p) for p in message[name]]
    for name, field in (
        ("query_time_sec", Field.QUERY_TIME_SEC), ("query_time_nsec", Field.QUERY_TIME_NSEC),
        ("response_time_sec", Field.RESPONSE_TIME_SEC), ("response_time_nsec", Field.RESPONSE_TIME_NSEC),
    ):
        if message.get(name):
            out[field] = message[name]
    for name, field in (("tcp", Field.TCP), ("icmp", Field.ICMP)):
        if name in message:
            out[field] = base64.b64decode(message[name])
    return out


@needs_corpus
@pytest.mark.parametrize(
    "path",
    [
        *sorted(glob.glob(os.path.join(CORPUS, "reference", "*__*.nmsg"))),
        os.path.join(CORPUS, "nmsg", "test1-dnsqr.zlib.nmsg"),
    ],
    ids=os.path.basename,
)
def test_reference_files_decode_to_what_nmsgtool_printed(path):
    json_path = path.replace(".zlib.nmsg", ".json").replace(".nmsg", ".json")
    with open(json_path) as handle:
        printed = [json.loads(line) for line in handle]
    read = list(spoolfile.read(path))
    assert len(read) == len(printed)
    for (record, envelope), line in zip(read, printed, strict=True):
        expected = _raw(line["message"])
        assert {k: record.get(k) for k in expected} == expected
        assert record.get(Field.TIMEOUT, 0) == pytest.approx(line["message"].get("timeout", 0), abs=1e-6)
        if "source" in line:
            assert f"{envelope.source:x}" == line["source"]


@needs_corpus
def test_generated_20k_records_equal_the_references_field_for_field():
    networks = parse_networks("192.0.2.1")
    capture = Capture.open_file(corpus("reference", "generated-20k.pcap"), build_filter(networks))
    matcher = Matcher(Settings(vantage=Vantage(networks), strict=True))
    ours = []
    while (batch := capture.read_batch()) is not None:
        for packet, sec, nsec in batch:
            ours += matcher.feed(packet, sec, nsec)
    ours += matcher.flush()
    theirs = spoolfile.records(corpus("reference", "generated-20k.nmsg"))
    assert len(ours) == len(theirs) == 10_542
    for index, (mine, reference) in enumerate(zip(ours, theirs, strict=True)):
        assert mine == reference, index  # timeout included, to the last bit


# ---------------------------------------------------------------- read
def test_read_takes_a_spool_directory_and_goes_on_past_a_bad_file(tmp_path):
    pcap = str(tmp_path / "c.pcap")
    frames = [(P.ethernet(P.query(ident=i, sport=20000 + i)), T0 + 70 * i) for i in range(3)]
    P.write_pcap(pcap, frames)
    config = _config(tmp_path, 'DNSQR_RES_ADDRS="192.0.2.53"\ninterval="60"\n')
    assert CliRunner().invoke(main, ["run", "-c", config, "--pcap", pcap]).exit_code == 0
    # unanswered queries are filed when they time out: query 0 at T0+70, 1 and 2 at T0+140
    assert len(glob.glob(os.path.join(spooldir.folder(tmp_path / "spool", spooldir.ARCHIVE, "ch202"), "*.nmsg"))) == 2
    bad = tmp_path / "notes.txt"
    bad.write_text("not a spool file")
    result = CliRunner().invoke(main, ["read", "--format", "text", str(bad), str(tmp_path / "spool")])
    assert result.exit_code == 1
    assert "notes.txt: not a spool file" in result.output
    ids = [line.split("id=")[1].split()[0] for line in result.output.splitlines() if "id=" in line]
    assert ids == ["0", "1", "2"]  # every file of the spool, oldest first, despite the bad one


@needs_corpus
@pytest.mark.parametrize(
    "path",
    [
        *sorted(glob.glob(os.path.join(CORPUS, "reference", "*__*.nmsg"))),
        os.path.join(CORPUS, "nmsg", "test1-dnsqr.nmsg"),
        os.path.join(CORPUS, "nmsg", "test1-dnsqr.zlib.nmsg"),
    ],
    ids=os.path.basename,
)
def test_read_json_of_reference_files_equals_nmsgtools_json(path):
    """Every key nmsgtool -J printed, the envelope's time and source included."""
    json_path = path.replace(".zlib.nmsg", ".json").replace(".nmsg", ".json")
    with open(json_path) as handle:
        expected = [json.loads(line) for line in handle]
    result = CliRunner().invoke(main, ["read", "--format", "json", path])
    assert result.exit_code == 0, result.output
    ours = [json.loads(line) for line in result.output.splitlines()]
    assert len(ours) == len(expected)
    for index, (mine, theirs) in enumerate(zip(ours, expected, strict=True)):
        assert mine == theirs, f"record {index}"


def test_read_of_a_spool_takes_waiting_and_archive_each_file_once(tmp_path):
    """archive="yes": uploaded files stay in archive/ alone, the rest are in both."""
    pcap = str(tmp_path / "c.pcap")
    P.write_pcap(pcap, [(P.ethernet(P.query(ident=i, sport=20000 + i)), T0 + 70 * i) for i in range(3)])
    config = _config(tmp_path, 'DNSQR_RES_ADDRS="192.0.2.53"\ninterval="60"\nupload="yes"\n')
    assert CliRunner().invoke(main, ["run", "-c", config, "--pcap", pcap]).exit_code == 0
    waiting = spooldir.folder(tmp_path / "spool", spooldir.WAITING, "ch202")
    (uploaded, _) = sorted(glob.glob(os.path.join(waiting, "*.nmsg")))
    os.unlink(uploaded)  # as the uploader does; its archive/ link stays
    result = CliRunner().invoke(main, ["read", "--format", "text", str(tmp_path / "spool")])
    assert result.exit_code == 0, result.output
    ids = [line.split("id=")[1].split()[0] for line in result.output.splitlines()]
    assert ids == ["0", "1", "2"]


def test_add_message_builds_the_containers_wrap_and_add_build():
    """nmsg.Container.add_message (the statement the C packer is held to)
    against the plain steps: wrap, payload_crc, fits, add; CRCs of every
    varint length, seconds past 2**28, trailers, and the full-container rule."""
    rng = random.Random(7)
    messages = [rng.randbytes(rng.choice((1, 60, 127, 128, 300, 5000))) for _ in range(400)]
    small_crcs = [m for m in (rng.randbytes(20) for _ in range(4000)) if nmsg.payload_crc(m) < 1 << 28][:20]
    assert small_crcs  # about one in sixteen
    for trailer in (b"", nmsg.payload_trailer(0x19721976, 7, None)):
        flat, plain = [nmsg.Container(size=8192)], [nmsg.Container(size=8192)]
        for index, message in enumerate(messages + small_crcs):
            sec, nsec = T0 + index * 1000, index * 7919
            if not flat[-1].add_message(message, sec, nsec, trailer):
                flat.append(nmsg.Container(size=8192))
                assert flat[-1].add_message(message, sec, nsec, trailer)
            payload = nmsg.wrap(message, sec, nsec, trailer)
            if not plain[-1].fits(len(payload)):
                plain.append(nmsg.Container(size=8192))
            plain[-1].add(payload, nmsg.payload_crc(message))
        assert len(flat) == len(plain) > 10
        assert [c.serialize(compress=False) for c in flat] == [c.serialize(compress=False) for c in plain]
