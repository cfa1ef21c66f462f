"""Messages wdns reads and a strict decoder refuses, shown as nmsgtool shows them.

nmsgtool prints whatever wdns 0.12 makes of a message, so `read` must too:
a TSIG it cannot verify, a dynamic UPDATE with its empty delete RRs, EDNS
options and LOC/SVCB rdata whose lengths do not add up, compressed names
in rdata, the full 32-bit TTL. Each message is built here byte by byte
and the expected text is wdns's: `\\# len hex ` for the types it does not
describe, nothing after an IN-only type in another class, `### PARSE ERROR
#n ###` where an EDNS option is cut short.
"""

from __future__ import annotations

import glob
import json
import os
import struct

import pytest
from click.testing import CliRunner

from sensor.cli import main
from sensor.display import dnstext
from sensor.display.dnsmessage import ADDITIONAL, ANSWER, Fault, Res, decode
from sensor.records.dns import text_to_wire
from sensor.spool import spooldir
from tests import packets as P

CLASS_IN, CLASS_ANY, TYPE_A, TYPE_OPT = 1, 255, 1, 41


def header(ident: int, flags: int, qd: int = 0, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!6H", ident, flags, qd, an, ns, ar)


def question(owner: str, rrtype: int = TYPE_A) -> bytes:
    return text_to_wire(owner) + struct.pack("!HH", rrtype, CLASS_IN)


def rr(owner: bytes | str, rrtype: int, rdata: bytes, ttl: int = 60, rrclass: int = CLASS_IN) -> bytes:
    owner = text_to_wire(owner) if isinstance(owner, str) else owner
    return owner + struct.pack("!HHIH", rrtype, rrclass, ttl, len(rdata)) + rdata


def shown(wire: bytes) -> str:
    message = dnstext.parse(wire)
    assert message is not None, "shown as <PARSE ERROR>"
    return dnstext.to_text(message)


def section(text: str, title: str) -> list[str]:
    """The lines of one section of the dig-like text."""
    lines = text.split("\n")
    start = lines.index(f";; {title} SECTION:") + 1
    end = next((i for i in range(start, len(lines)) if not lines[i]), len(lines))
    return lines[start:end]


# ------------------------------------------------------------------ TSIG
TSIG_RDATA = (
    text_to_wire("hmac-sha256.") + (1_700_000_000).to_bytes(6, "big") + struct.pack("!HH", 300, 4)
    + bytes.fromhex("deadbeef") + struct.pack("!HHH", 0x1234, 0, 0)
)
TSIG_TEXT = (
    "\\# 33 0b 68 6d 61 63 2d 73 68 61 32 35 36 00 00 00 65 53 f1 00 01 2c 00 04 "
    "de ad be ef 12 34 00 00 00 00 "
)


def signed(flags: int, answers: bytes = b"", count: int = 0) -> bytes:
    return (header(0x1234, flags, 1, count, 0, 1) + question("www.example.com.") + answers
            + rr("key.example.", 250, TSIG_RDATA, ttl=0, rrclass=CLASS_ANY))


def test_a_tsig_signed_response_is_shown_with_its_tsig_as_generic_rdata():
    wire = signed(0x8400, rr(b"\xc0\x0c", TYPE_A, bytes([192, 0, 2, 1]), ttl=300), 1)
    assert shown(wire) == (
        ";; ->>HEADER<<- opcode: QUERY, rcode: NOERROR, id: 4660\n"
        ";; flags: qr aa; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 1\n\n"
        ";; QUESTION SECTION:\n;www.example.com. IN A\n\n"
        ";; ANSWER SECTION:\nwww.example.com. 300 IN A 192.0.2.1\n\n"
        ";; AUTHORITY SECTION:\n\n"
        f";; ADDITIONAL SECTION:\nkey.example. 0 ANY TSIG {TSIG_TEXT}\n"
    )
    assert dnstext.to_json(dnstext.parse(wire))["additional"] == [
        {"rrname": "key.example.", "rrttl": 0, "rrclass": "ANY", "rrtype": "TSIG", "rdata": [TSIG_TEXT]}
    ]


def test_read_shows_a_signed_exchange_it_captured(tmp_path, monkeypatch):
    """Through `run --pcap` and `read`, both forms: no <PARSE ERROR>, no null."""
    monkeypatch.setenv("DNSQR_RES_ADDRS", P.RESOLVER)
    response = signed(0x8400, rr(b"\xc0\x0c", TYPE_A, bytes([203, 0, 113, 7]), ttl=300), 1)
    frames = [
        (P.ethernet(P.udp(P.RESOLVER, P.AUTHORITY, 40000, 53, signed(0x0000))), 1_700_000_000.0),
        (P.ethernet(P.udp(P.AUTHORITY, P.RESOLVER, 53, 40000, response)), 1_700_000_000.01),
    ]
    pcap = str(tmp_path / "signed.pcap")
    P.write_pcap(pcap, frames)
    runner = CliRunner()
    result = runner.invoke(main, ["run", "-c", os.devnull, "--pcap", pcap, "--spooldir", str(tmp_path / "spool")])
    assert result.exit_code == 0, result.output
    files = glob.glob(os.path.join(spooldir.folder(tmp_path / "spool", spooldir.WAITING, "*"), "*"))
    (line,) = runner.invoke(main, ["read", "--format", "json", *files]).output.splitlines()
    message = json.loads(line)["message"]
    assert message["type"] == "UDP_QUERY_RESPONSE"
    for key in ("query_json", "response_json"):
        assert message[key]["additional"][0]["rdata"] == [TSIG_TEXT]
    assert message["response_json"]["answer"][0]["rdata"] == ["203.0.113.7"]
    pres = runner.invoke(main, ["read", "--format", "pres", *files]).output
    assert "<PARSE ERROR>" not in pres
    assert pres.count(f"key.example. 0 ANY TSIG {TSIG_TEXT}\n") == 2


# ---------------------------------------------------------------- UPDATE
def test_a_dynamic_update_keeps_its_empty_and_class_none_rrs():
    update_module = pytest.importorskip("dns.update", reason="builds the update with dnspython")
    update = update_module.UpdateMessage("example.", id=77)
    update.present("www", "A", "192.0.2.1")
    update.absent("old")
    update.replace("www", 300, "A", "192.0.2.2")
    update.delete("gone")
    update.delete("www", "AAAA", "2001:db8::1")
    message = dnstext.parse(update.to_wire())
    # wdns names the sections as for a query; an IN-only type (A, AAAA) in
    # class ANY or NONE has no rdata printed, an undescribed one (ANY) is generic.
    assert dnstext.to_text(message) == (
        ";; ->>HEADER<<- opcode: UPDATE, rcode: NOERROR, id: 77\n"
        ";; flags:; QUERY: 1, ANSWER: 2, AUTHORITY: 4, ADDITIONAL: 0\n\n"
        ";; QUESTION SECTION:\n;example. IN SOA\n\n"
        ";; ANSWER SECTION:\nwww.example. 0 IN A 192.0.2.1\nold.example. 0 NONE ANY \\# 0 \n\n"
        ";; AUTHORITY SECTION:\n"
        "www.example. 0 ANY A \n"
        "www.example. 300 IN A 192.0.2.2\n"
        "gone.example. 0 ANY ANY \\# 0 \n"
        "www.example. 0 NONE AAAA \n\n"
        ";; ADDITIONAL SECTION:\n"
    )
    out = dnstext.to_json(message)
    assert out["header"]["opcode"] == "UPDATE"
    assert [(r["rrname"], r["rrclass"], r["rrtype"], r["rdata"]) for r in out["authority"]] == [
        ("www.example.", "ANY", "A", [""]),
        ("www.example.", "IN", "A", ["192.0.2.2"]),
        ("gone.example.", "ANY", "ANY", ["\\# 0 "]),
        ("www.example.", "NONE", "AAAA", [""]),
    ]


# ------------------------------------------------------------------ EDNS
@pytest.mark.parametrize(
    "option, shown_as",
    [
        (b"\x00\x0a\x00\x05abcde", 'OPT=10: 61 62 63 64 65 ("abcde")'),  # a 5-octet cookie
        (b"\x00\x0f\x00\x01\x00", "EDE:  ### PARSE ERROR #12 ###"),  # an EDE without its info-code
        (b"\x00\x08\x00\x09\x00\x01\x20\x00\xc0\x00\x02\x01\x09", "CLIENT-SUBNET:  ### PARSE ERROR #12 ###"),
        (b"\x00\x0a\x00\x09abcde", "OPT=10: ### PARSE ERROR ###"),  # longer than the OPT's rdata
    ],
    ids=["cookie", "ede", "client-subnet", "overrun"],
)
def test_an_edns_option_of_odd_length_is_shown_as_wdns_prints_it(option, shown_as):
    wire = header(9, 0x0100, 1, 0, 0, 1) + question("example.") + rr(b"\x00", TYPE_OPT, option, 0x8000, 1232)
    text = shown(wire)
    assert "\n;; OPT PSEUDOSECTION:\n; EDNS: version: 0, flags: do; udp: 1232\n" f"; {shown_as}\n" in text
    edns = dnstext.to_json(dnstext.parse(wire))["header"]["opt"]["edns"]
    assert edns == {"version": 0, "flags": ["do"], "udp": 1232, "options": [shown_as]}


# ------------------------------------------------------------- LOC, SVCB
def test_a_loc_of_the_wrong_length_is_shown_as_generic_rdata():
    wire = header(1, 0x8400, 0, 1) + rr("example.", 29, bytes.fromhex("0012161389172dd070be"))
    assert section(shown(wire), "ANSWER") == ["example. 60 IN LOC \\# 10 00 12 16 13 89 17 2d d0 70 be "]


@pytest.mark.parametrize(
    "rdata, shown_as",
    [
        (b"\x00\x01", "1"),  # ends after the priority
        (b"\x00\x01\x00" + b"\x00\x04\x00\x00" + b"\x00\x03\x00\x02\x01\xbb", "1 . ipv4hint=port=443"),
        (b"\x00\x01\x00" + b"\x00\x03\x00\x02\x01\xbb" + b"\x00\x01\x00\x03\x02h2", '1 . port=443 alpn="h2"'),
    ],
    ids=["priority-only", "empty-ipv4hint", "keys-out-of-order"],
)
def test_an_svcb_whose_lengths_do_not_add_up_is_shown_as_far_as_it_goes(rdata, shown_as):
    wire = header(1, 0x8400, 0, 2) + rr("example.", 64, rdata) + rr(b"\xc0\x0c", 65, rdata)
    assert section(shown(wire), "ANSWER") == [f"example. 60 IN SVCB {shown_as}", f"example. 60 IN HTTPS {shown_as}"]


# ------------------------------------------------------------ mDNS, SRV
def test_an_srv_target_compressed_in_mdns_is_shown_uncompressed():
    owner = text_to_wire("_http._tcp.local.")
    answers = rr(owner, 12, b"\x04inst\xc0\x0c", ttl=4500)
    instance = 12 + len(owner) + 10  # where the PTR's rdata names the instance
    target = struct.pack("!HHH", 0, 0, 80) + b"\x04host" + bytes([0xC0, 12 + 6 + 5])  # -> "local."
    answers += rr(bytes([0xC0, instance]), 33, target, ttl=120)
    answers += rr(bytes([0xC0, instance]), 33, target, ttl=120, rrclass=0x8001)  # cache-flush bit
    text = shown(header(0, 0x8400, 0, 3) + answers)
    assert section(text, "ANSWER") == [
        "_http._tcp.local. 4500 IN PTR inst._http._tcp.local.",
        "inst._http._tcp.local. 120 IN SRV 0 0 80 host.local.",
        "inst._http._tcp.local. 120 CLASS32769 SRV ",  # not class IN: wdns prints no rdata
    ]


# ------------------------------------------------------------------- TTL
def test_the_ttl_is_printed_as_on_the_wire():
    answers = rr(b"\xc0\x0c", TYPE_A, bytes([192, 0, 2, 1]), ttl=0xFFFFFFFF)
    answers += rr(b"\xc0\x0c", TYPE_A, bytes([192, 0, 2, 2]), ttl=0x80000000)
    wire = header(1, 0x8180, 1, 2) + question("example.") + answers
    assert section(shown(wire), "ANSWER") == [
        "example. 4294967295 IN A 192.0.2.1",
        "example. 2147483648 IN A 192.0.2.2",
    ]
    (rrset,) = dnstext.to_json(dnstext.parse(wire))["answer"]
    assert rrset["rrttl"] == 2147483648  # an RRset's TTL is its lowest


# ---------------------------------------------- what wdns keeps, and not
def test_a_message_that_ends_before_its_counts_keeps_what_it_has():
    wire = header(1, 0x8180, 1, 3) + question("example.") + rr(b"\xc0\x0c", 15, b"\x00\x0a")
    text = shown(wire)
    assert "; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 0\n" in text
    assert section(text, "ANSWER") == ["example. 60 IN MX 10"]  # rdata may stop at a field boundary


def test_the_first_opt_in_any_section_is_the_edns_header_and_a_second_one_an_rr():
    wire = header(1, 0x8180, 1, 1, 0, 1) + question("example.")
    wire += rr(b"\x00", TYPE_OPT, b"", 0x00008000, 4096) + rr(b"\x00", TYPE_OPT, b"", 0, 512)
    text = shown(wire)
    assert "; EDNS: version: 0, flags: do; udp: 4096\n" in text
    assert "; QUERY: 1, ANSWER: 0, AUTHORITY: 0, ADDITIONAL: 1\n" in text
    assert section(text, "ADDITIONAL") == [". 0 CLASS512 OPT "]


def test_decode_keeps_what_came_before_a_fault_and_says_where():
    good = header(1, 0x8180, 1, 1, 0, 1) + question("example.") + rr(b"\xc0\x0c", TYPE_A, bytes([192, 0, 2, 1]))
    wire = good + rr(b"\x03www\xc0\x7f", TYPE_A, bytes(4))  # a pointer forward
    decoded = decode(wire)
    assert decoded.fault == Fault(Res.INVALID_COMPRESSION_POINTER, len(good), ADDITIONAL)
    assert [rr.rdata for rr in decoded.message.sections[ANSWER]] == [bytes([192, 0, 2, 1])]
    assert dnstext.parse(wire) is None  # wdns gives up on all of it: nmsgtool's <PARSE ERROR>


def test_every_cut_of_a_message_decodes_without_raising():
    wire = signed(0x8400, rr(b"\xc0\x0c", 33, struct.pack("!HHH", 1, 2, 3) + b"\x03srv\xc0\x0c"), 1)
    for end in range(len(wire) + 1):
        decoded = decode(wire[:end])
        assert (decoded.message is None) == (end < 12)
        assert decoded.fault is None or decoded.fault.offset <= end


def test_an_opt_asked_as_a_question_has_no_options_in_json():
    wire = header(1, 0x0000, 1) + b"\x00" + struct.pack("!HH", TYPE_OPT, 1232)
    out = dnstext.to_json(dnstext.parse(wire))
    assert out["header"]["opt"] == {"edns": {"version": 0, "flags": [], "udp": 1232}}  # nmsg: options NULL
    assert out["question"] == []


@pytest.mark.parametrize("text", [
    "example.com", "example.com.", r"a\.b.example", r"a\046b.example", r"\000.example", r"\255x.example",
    r"a\ b.example", r"a\\b.example", r"a\25x.example", r"a\25.example", r"a\2.example", r"a\256.example",
    r"a\1234.example", "a\\", r"a\\" + "\\", "a..b", "x" * 64 + ".example",
])
def test_a_name_written_by_a_person_is_read_as_dnspython_reads_it(text):
    """text_to_wire (the API's, the configuration's and the command line's names) takes what
    dnspython takes and refuses what it refuses: a backslash and a digit start \\DDD, exactly
    three digits up to 255 (RFC 1035 5.1), never a shorter escape read as its first digit."""
    dns_name = pytest.importorskip("dns.name")  # the pure selection runs this module without dnspython
    dns_exception = pytest.importorskip("dns.exception")
    try:
        expected = dns_name.from_text(text).to_wire()
    except dns_exception.DNSException:
        expected = None
    try:
        got = text_to_wire(text)
    except ValueError:
        got = None
    assert got == expected
