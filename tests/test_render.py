"""`read`'s output against nmsgtool 1.3.3's, and the rules behind it.

The conformance tests rebuild each record from the reference's own JSON
(../shared/corpus: packets, times, addresses, qname) and require our
rendering of it to be that JSON line byte for byte, computed fields
included (delay, query/response, query_json/response_json, dns). Only
what nmsgtool takes from outside the message is handed in: the payload's
time (a TCP record carries none of its own) and `source` (set on
nmsgtool's command line).
"""

from __future__ import annotations

import base64
import datetime
import glob
import json
import os
import socket
import struct

import pytest

from sensor.display import dnstext, render
from sensor.records.dns import text_to_wire, wire_to_text
from sensor.records.record import FIELD_NAMES, Field, RecordType, UdpChecksum
from sensor.records.rrnames import RCODES, RRCLASSES, RRTYPES, rcode_name, rrclass_name, rrtype_name
from sensor.spool import spooldir

CORPUS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus")
JSON_FILES = sorted(glob.glob(os.path.join(CORPUS, "reference", "*.json"))) + sorted(
    glob.glob(os.path.join(CORPUS, "nmsg", "*.json"))
)
needs_corpus = pytest.mark.skipif(not os.path.isdir(CORPUS), reason="../shared/corpus is not here")

PROTOS = {"UDP": 17, "TCP": 6, "ICMP": 1}


def _number(table: dict, text: str, prefix: str) -> int:
    names = {name: number for number, name in table.items()}
    return names[text] if text in names else int(text.removeprefix(prefix))


def _packed(text: str | None) -> bytes:
    if text is None:
        return b""
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def record_from_reference(message: dict) -> dict:
    """A record dict holding what the reference's JSON message says."""
    record = {
        Field.TYPE: RecordType[message["type"]],
        Field.QUERY_IP: _packed(message["query_ip"]),
        Field.RESPONSE_IP: _packed(message["response_ip"]),
        Field.PROTO: PROTOS.get(message["proto"]) or int(message["proto"]),
        Field.QUERY_PORT: message["query_port"],
        Field.RESPONSE_PORT: message["response_port"],
        Field.ID: message["id"],
    }
    if "qname" in message:
        record[Field.QNAME] = text_to_wire(message["qname"])
    if "qclass" in message:
        record[Field.QCLASS] = _number(RRCLASSES, message["qclass"], "CLASS")
    if "qtype" in message:
        record[Field.QTYPE] = _number(RRTYPES, message["qtype"], "TYPE")
    if "rcode" in message:
        record[Field.RCODE] = _number(RCODES, message["rcode"], "")
    for name, field in (("query_packet", Field.QUERY_PACKET), ("response_packet", Field.RESPONSE_PACKET)):
        if message[name]:
            record[field] = [base64.b64decode(p) for p in message[name]]
    for name in ("query_time_sec", "query_time_nsec", "response_time_sec", "response_time_nsec"):
        if message[name]:
            record[getattr(Field, name.upper())] = list(message[name])
    if "timeout" in message:
        record[Field.TIMEOUT] = message["timeout"]
    if "udp_checksum" in message:
        record[Field.UDP_CHECKSUM] = UdpChecksum[message["udp_checksum"]]
    if "resolver_address_zeroed" in message:
        record[Field.RESOLVER_ADDRESS_ZEROED] = message["resolver_address_zeroed"]
    for name, field in (("tcp", Field.TCP), ("icmp", Field.ICMP)):
        if name in message:
            record[field] = base64.b64decode(message[name])
    return record


def envelope_from_reference(line: dict) -> render.Envelope:
    when, nanos = line["time"].split(".")
    moment = datetime.datetime.strptime(when, "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.UTC)
    source = int(line["source"], 16) if "source" in line else None
    return render.Envelope(time=(int(moment.timestamp()), int(nanos)), source=source)


def reference_lines():
    for path in JSON_FILES:
        with open(path) as handle:
            for number, text in enumerate(handle, 1):
                yield pytest.param(text.rstrip("\n"), id=f"{os.path.basename(path)}:{number}")


@needs_corpus
@pytest.mark.parametrize("text", list(reference_lines()) if os.path.isdir(CORPUS) else [])
def test_json_equals_nmsgtool_byte_for_byte(text):
    line = json.loads(text)
    record = record_from_reference(line["message"])
    envelope = envelope_from_reference(line)
    if record.get(Field.QUERY_TIME_SEC) or record.get(Field.RESPONSE_TIME_SEC):
        assert render.record_time(record) == envelope.time  # the reference's rule for the time
    assert render.to_json(record, envelope) == text


@needs_corpus
def test_every_reference_file_was_compared():
    assert len(JSON_FILES) == 11
    kinds = {json.loads(text)["message"]["type"] for text in (p.values[0] for p in reference_lines())}
    assert {"UDP_QUERY_RESPONSE", "UDP_UNANSWERED_QUERY", "TCP"} <= kinds


@needs_corpus
def test_presentation_equals_nmsgtool():
    with open(os.path.join(CORPUS, "nmsg", "test1-dnsqr.json")) as handle:
        lines = [json.loads(text) for text in handle]
    with open(os.path.join(CORPUS, "nmsg", "test1-dnsqr.pres")) as handle:
        expected = handle.read()
    ours = "".join(
        render.to_pres(record_from_reference(line["message"]), envelope_from_reference(line)) + "\n"
        for line in lines
    )
    assert ours == expected


# ------------------------------------------------------------ unit tests
def test_names_are_wdns_names():
    assert [rrtype_name(n) for n in (10, 11, 30, 32, 38, 108, 109, 32768, 32769)] == [
        "NULL", "WKS", "NXT", "NIMLOC", "A6", "EUI48", "EUI64", "TA", "DLV"]
    assert rrtype_name(23) == "NSAP-PTR"
    assert (rrtype_name(53), rrtype_name(63), rrtype_name(65534)) == ("TYPE53", "TYPE63", "TYPE65534")
    assert (rrclass_name(3), rrclass_name(2)) == ("CH", "CLASS2")
    assert [rcode_name(n) for n in (10, 11, 15, 16)] == ["NOTZONE", "11", "15", "BADVERS"]


def test_unknown_rcode_is_a_string_in_json_and_unknown_in_presentation():
    record = {Field.TYPE: RecordType.UDP_UNSOLICITED_RESPONSE, Field.RCODE: 11}
    assert '"rcode":"11"' in render.to_json(record)
    assert "rcode: <UNKNOWN> (11)\n" in render.to_pres(record)
    assert "qtype: <UNKNOWN> (53)\n" in render.to_pres({Field.TYPE: 1, Field.QTYPE: 53})


@pytest.mark.parametrize(
    "label, text",
    [
        (b"a b", "a\\032b"),
        (b'a"b', 'a"b'),
        (b"$x", "$x"),
        (b"a.b", "a\\.b"),
        (b"a\\b", "a\\\\b"),
        (b"();:<>?[]{|}`,", "();:<>?[]{|}`,"),
        (b"\x00\x7f\xff", "\\000\\127\\255"),
    ],
)
def test_name_escaping_is_wdns_escaping(label, text):
    wire = bytes([len(label)]) + label + b"\x03com\x00"
    assert wire_to_text(wire) == text + ".com."
    assert text_to_wire(text + ".com.") == wire  # the configuration reads it back


@pytest.mark.parametrize(
    "value, text",
    [(0.00571, "0.00571"), (1.09700299999999995, "1.09700299999999995"), (0.0, "0.0"),
     (1.618949, "1.618948999999999971"), (30.0, "30.0")],
)
def test_doubles_are_printed_as_nmsg_prints_them(value, text):
    assert render.nmsg_double(value) == text


def test_delay_is_nmsgs_and_has_no_float_noise():
    record = {
        Field.TYPE: RecordType.UDP_QUERY_RESPONSE,
        Field.QUERY_TIME_SEC: [100], Field.QUERY_TIME_NSEC: [999_000_000],
        Field.RESPONSE_TIME_SEC: [101, 101], Field.RESPONSE_TIME_NSEC: [9_166_000, 9_000_000],
    }
    assert render.delay(record) == 0 + 10_166_000 / 1e9  # borrowed a second; the later fragment
    assert '"delay":0.010166' in render.to_json(record)
    assert "delay: 0.010166\n" in render.to_pres(record)
    record[Field.TYPE] = RecordType.UDP_UNSOLICITED_RESPONSE
    assert render.delay(record) is None


def _udp4(payload: bytes, src=b"\xc0\x00\x02\x01", dst=b"\xc6\x33\x64\x01") -> bytes:
    udp = struct.pack("!HHHH", 53, 4242, 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, src, dst) + udp


def test_an_undecodable_message_is_shown_as_nmsgtool_shows_it():
    junk = b"\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\x03www\xc0\x50"
    record = {
        Field.TYPE: RecordType.UDP_UNSOLICITED_RESPONSE,
        Field.QUERY_IP: b"\xc6\x33\x64\x01", Field.RESPONSE_IP: b"\xc0\x00\x02\x01",
        Field.RESPONSE_PACKET: [_udp4(junk)], Field.RESPONSE_TIME_SEC: [1], Field.RESPONSE_TIME_NSEC: [0],
    }
    message = json.loads(render.to_json(record))["message"]
    assert base64.b64decode(message["response"]) == junk
    assert message["response_json"] is None
    assert "response: <PARSE ERROR>\n" in render.to_pres(record)


def test_an_unanswered_query_prints_empty_response_arrays():
    query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01"
    record = {
        Field.TYPE: RecordType.UDP_UNANSWERED_QUERY,
        Field.QUERY_IP: b"\xc0\x00\x02\x01", Field.RESPONSE_IP: b"\xc6\x33\x64\x01",
        Field.QUERY_PACKET: [_udp4(query)], Field.QUERY_TIME_SEC: [1], Field.QUERY_TIME_NSEC: [5],
        Field.TIMEOUT: 60.5,
    }
    message = json.loads(render.to_json(record))["message"]
    assert message["response_packet"] == message["response_time_sec"] == message["response_time_nsec"] == []
    assert "response" not in message and "delay" not in message
    assert message["query_json"]["question"] == [{"qname": ".", "qclass": "IN", "qtype": "A"}]
    assert '"timeout":60.5,' in render.to_json(record)
    assert "timeout: 60.500000\n" in render.to_pres(record)
    assert render.to_pres(record).endswith(  # no EDNS: a blank line where the OPT section goes
        "query: [17 octets]\n;; ->>HEADER<<- opcode: QUERY, rcode: NOERROR, id: 4660\n"
        ";; flags: rd; QUERY: 1, ANSWER: 0, AUTHORITY: 0, ADDITIONAL: 0\n\n;; QUESTION SECTION:\n;. IN A\n\n"
        ";; ANSWER SECTION:\n\n;; AUTHORITY SECTION:\n\n;; ADDITIONAL SECTION:\n---\n"
    )


@pytest.mark.parametrize(
    "rdata, rrtype, text",
    [
        (bytes([1, 2, 3, 4]), 1, "1.2.3.4"),
        (bytes([1, 2, 3, 4]), 999, "\\# 4 01 02 03 04 "),
        (b"\x12\x34\x08\x02\xab\xcd", 43, "4660 8 2 ABCD"),
        (b"\x05a b\"\\", 16, '"a b\\"\\\\"'),
        (b"\x00\x04", 46, "MF"),
        (b"\x00\x35", 46, "TYPE53"),
        (b"\x00\x02\x01", 1, " ### PARSE ERROR ###"),
    ],
)
def test_rdata_is_printed_as_wdns_prints_it(rdata, rrtype, text):
    assert dnstext.rdata_text(rdata, rrtype, 1) == text


def _dnsqr_class():
    """base:dnsqr built with the protobuf library, from dnsqr.proto's field list."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    layout = [
        ("type", F.LABEL_REQUIRED, F.TYPE_UINT32), ("query_ip", F.LABEL_REQUIRED, F.TYPE_BYTES),
        ("response_ip", F.LABEL_REQUIRED, F.TYPE_BYTES), ("proto", F.LABEL_REQUIRED, F.TYPE_UINT32),
        ("query_port", F.LABEL_REQUIRED, F.TYPE_UINT32), ("response_port", F.LABEL_REQUIRED, F.TYPE_UINT32),
        ("id", F.LABEL_REQUIRED, F.TYPE_UINT32), ("qname", F.LABEL_OPTIONAL, F.TYPE_BYTES),
        ("qtype", F.LABEL_OPTIONAL, F.TYPE_UINT32), ("qclass", F.LABEL_OPTIONAL, F.TYPE_UINT32),
        ("rcode", F.LABEL_OPTIONAL, F.TYPE_UINT32), ("query_packet", F.LABEL_REPEATED, F.TYPE_BYTES),
        ("query_time_sec", F.LABEL_REPEATED, F.TYPE_INT64),
        ("query_time_nsec", F.LABEL_REPEATED, F.TYPE_SFIXED32),
        ("response_packet", F.LABEL_REPEATED, F.TYPE_BYTES),
        ("response_time_sec", F.LABEL_REPEATED, F.TYPE_INT64),
        ("response_time_nsec", F.LABEL_REPEATED, F.TYPE_SFIXED32),
        ("tcp", F.LABEL_OPTIONAL, F.TYPE_BYTES), ("icmp", F.LABEL_OPTIONAL, F.TYPE_BYTES),
        ("timeout", F.LABEL_OPTIONAL, F.TYPE_DOUBLE), ("udp_checksum", F.LABEL_OPTIONAL, F.TYPE_UINT32),
        ("resolver_address_zeroed", F.LABEL_OPTIONAL, F.TYPE_BOOL),
    ]
    proto = descriptor_pb2.FileDescriptorProto(name="render_test_dnsqr.proto", package="rendertest")
    message = proto.message_type.add(name="DnsQR")
    for number, (name, label, kind) in enumerate(layout, 1):
        message.field.add(name=name, number=number, label=label, type=kind)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("rendertest.DnsQR"))


@needs_corpus
def test_payload_size_equals_the_protobuf_librarys():
    """The `[len]` of the presentation header: the serialized payload's size."""
    dnsqr = _dnsqr_class()
    with open(os.path.join(CORPUS, "reference", "go-dnscollector__dnsdump_udp+tcp.json")) as handle:
        messages = [json.loads(text)["message"] for text in handle]
    messages.append({**messages[0], "timeout": 1.5, "resolver_address_zeroed": True, "rcode": "11",
                     "query_time_sec": [-1], "query_time_nsec": [-5]})
    for message in messages:
        record = record_from_reference(message)
        values = {FIELD_NAMES[field]: value for field, value in record.items()}
        assert render.payload_size(record) == dnsqr(**values).ByteSize()


@needs_corpus
@pytest.mark.parametrize("fmt, suffix", [("json", ".json"), ("pres", ".pres")])
def test_read_prints_what_nmsgtool_prints_for_the_same_pcap(tmp_path, monkeypatch, fmt, suffix):
    """`run --pcap` then `read`: nmsgtool's output, but for `source` (its command line)."""
    from click.testing import CliRunner

    from sensor.cli import main

    monkeypatch.setenv("DNSQR_RES_ADDRS", "203.0.113.195")
    runner = CliRunner()
    pcap = os.path.join(CORPUS, "nmsg", "test1-dnsqr.pcap")
    result = runner.invoke(main, ["run", "-c", os.devnull, "--pcap", pcap, "--spooldir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (spool_file,) = glob.glob(os.path.join(spooldir.folder(tmp_path, spooldir.WAITING, "*"), "*"))
    result = runner.invoke(main, ["read", "--format", fmt, spool_file])
    assert result.exit_code == 0, result.output
    with open(os.path.join(CORPUS, "nmsg", "test1-dnsqr" + suffix)) as handle:
        expected = handle.read()
    expected = expected.replace("] [19721976] [", "] [00000000] [").replace(',"source":"19721976"', "")
    assert result.output == expected
