"""The DNS messages inside a record, decoded as nmsgtool shows them.

nmsgtool prints, beside a base:dnsqr record, the query's and the
response's DNS message (`query`, `response` and `dns`: base64 of the UDP
payload, the response reassembled from its fragments) and their decoded
form (`query_json`, `response_json`): header (opcode, rcode, id, flags,
EDNS), then question, answer, authority and additional sections, each a
list of RRsets as wdns groups them (owner name without case, type and
class; the lowest TTL). dnspython does the parsing; the text forms follow
wdns where the two differ (names escaped as wdns does, RRSIG times as
epoch seconds, type names from `rrnames`, no spaces in base64). A message
that does not parse is shown as `null`, as nmsgtool shows it.
"""

from __future__ import annotations

import base64
import ipaddress
import struct

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdata
import dns.rdatatype

from .constants import IPPROTO_FRAGMENT, IPPROTO_UDP, Field
from .dns import wire_to_text
from .rrnames import class_name, rcode_name, type_name

_IPV6_SKIPPABLE = frozenset((0, 43, 60))
_FLAGS = (("qr", dns.flags.QR), ("aa", dns.flags.AA), ("tc", dns.flags.TC), ("rd", dns.flags.RD),
          ("ra", dns.flags.RA), ("ad", dns.flags.AD), ("cd", dns.flags.CD))
_EDNS_DO = 0x8000
_OPT_CLIENT_SUBNET = 8
_OPT_EDE = 15
EDE_PURPOSES = (
    "Other Error", "Unsupported DNSKEY Algorithm", "Unsupported DS Digest Type", "Stale Answer",
    "Forged Answer", "DNSSEC Indeterminate", "DNSSEC Bogus", "Signature Expired",
    "Signature Not Yet Valid", "DNSKEY Missing", "RRSIGs Missing", "No Zone Key Bit Set",
    "NSEC Missing", "Cached Error", "Not Ready", "Blocked", "Censored", "Filtered", "Prohibited",
    "Stale NXDomain Answer", "Not Authoritative", "Not Supported", "No Reachable Authority",
    "Network Error", "Invalid Data",
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ------------------------------------------------- from datagrams to DNS
def _udp_payload(segment: bytes) -> bytes | None:
    """The payload of a UDP segment (bounded by its length field)."""
    if len(segment) < 8:
        return None
    length = struct.unpack_from("!H", segment, 4)[0]
    if length < 8:
        return None
    return segment[8:length]


def _transport(packet: bytes) -> tuple[int, int, int, bool, bytes] | None:
    """(protocol, fragment offset, identification, more fragments, payload)."""
    if not packet:
        return None
    if packet[0] >> 4 == 4 and len(packet) >= 20:
        header = (packet[0] & 0x0F) * 4
        total, ident, frag, proto = struct.unpack_from("!2xHHH1xB", packet)
        return proto, (frag & 0x1FFF) * 8, ident, bool(frag & 0x2000), packet[header:total]
    if packet[0] >> 4 == 6 and len(packet) >= 40:
        proto, offset = packet[6], 40
        end = 40 + struct.unpack_from("!H", packet, 4)[0]
        while proto in _IPV6_SKIPPABLE and offset + 8 <= end:
            proto, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
        if proto == IPPROTO_FRAGMENT and offset + 8 <= end:
            proto, frag, ident = struct.unpack_from("!BxHI", packet, offset)
            return proto, frag & 0xFFF8, ident, bool(frag & 1), packet[offset + 8 : end]
        return proto, 0, 0, False, packet[offset:end]
    return None


def dns_payload(packets: list[bytes]) -> bytes | None:
    """The DNS message a record's datagram(s) carry; fragments joined."""
    pieces = []
    for packet in packets:
        parsed = _transport(packet)
        if parsed is None:
            return None
        pieces.append(parsed)
    if pieces[0][0] != IPPROTO_UDP:
        return None
    if len(pieces) == 1:
        return _udp_payload(pieces[0][4])
    joined = bytearray()
    for _, offset, _, _, data in sorted(pieces, key=lambda p: p[1]):
        if offset != len(joined):
            return None  # a hole or an overlap: nmsg's reassembly fails too
        joined += data
    return _udp_payload(bytes(joined))


# ------------------------------------------------------- message to JSON
def _name(name: dns.name.Name) -> str:
    return wire_to_text(name.to_wire())


def _types(bitmap_types) -> str:
    return " ".join(type_name(t) for t in bitmap_types)


def _bitmap(windows) -> list[int]:
    out = []
    for window, bits in windows:
        for index, byte in enumerate(bits):
            out += [window * 256 + index * 8 + bit for bit in range(8) if byte & (0x80 >> bit)]
    return out


def rdata_text(rdata: dns.rdata.Rdata) -> str:
    """An rdata's text as wdns writes it (dnspython's where they agree)."""
    kind = rdata.rdtype
    if kind in (dns.rdatatype.NS, dns.rdatatype.CNAME, dns.rdatatype.PTR, dns.rdatatype.DNAME):
        return _name(rdata.target)
    if kind == dns.rdatatype.MX:
        return f"{rdata.preference} {_name(rdata.exchange)}"
    if kind == dns.rdatatype.SOA:
        return (f"{_name(rdata.mname)} {_name(rdata.rname)} {rdata.serial} {rdata.refresh} {rdata.retry} "
                f"{rdata.expire} {rdata.minimum}")
    if kind == dns.rdatatype.SRV:
        return f"{rdata.priority} {rdata.weight} {rdata.port} {_name(rdata.target)}"
    if kind in (dns.rdatatype.RRSIG, dns.rdatatype.SIG):
        return (f"{type_name(rdata.type_covered)} {rdata.algorithm} {rdata.labels} {rdata.original_ttl} "
                f"{rdata.expiration} {rdata.inception} {rdata.key_tag} {_name(rdata.signer)} "
                f"{_b64(rdata.signature)}")
    if kind == dns.rdatatype.NSEC:
        return f"{_name(rdata.next)} {_types(_bitmap(rdata.windows))}".rstrip()
    if kind == dns.rdatatype.NSEC3:
        salt = rdata.salt.hex().upper() or "-"
        text = rdata.to_text().split()
        return " ".join([*text[:3], salt, text[4].upper(), _types(_bitmap(rdata.windows))]).rstrip()
    return rdata.to_text(chunksize=0) if hasattr(rdata, "key") or hasattr(rdata, "digest") else rdata.to_text()


def _option_text(code: int, data: bytes) -> str:
    printable = "".join(chr(b) if 0x20 <= b <= 0x7E else "." for b in data)
    if code == _OPT_CLIENT_SUBNET and len(data) >= 4:
        family, source, scope = struct.unpack_from("!HBB", data)
        address = data[4:]
        size = {1: 4, 2: 16}.get(family)
        if size is not None and len(address) <= size:
            text = str(ipaddress.ip_address(address + bytes(size - len(address))))
            return f"CLIENT-SUBNET: {text}/{source}/{scope}"
    if code == _OPT_EDE and len(data) >= 2:
        (info,) = struct.unpack_from("!H", data)
        purpose = f" ({EDE_PURPOSES[info]})" if info < len(EDE_PURPOSES) else ""
        rest = "".join(chr(b) if 0x20 <= b <= 0x7E else "." for b in data[2:])
        return f"EDE: {info}{purpose}: ({rest})"
    hexes = "".join(f"{b:02x} " for b in data)
    return f"OPT={code}: {hexes}(\"{printable}\")"


def _rrsets(section, question: bool) -> list[dict]:
    """RRs grouped as wdns groups them: name (no case), type, class."""
    groups: list[dict] = []
    keys: list[tuple] = []
    for rrset in section:
        key = (rrset.name.canonicalize().to_wire(), rrset.rdtype, rrset.rdclass)
        if question:
            groups.append({"qname": _name(rrset.name), "qclass": class_name(rrset.rdclass),
                           "qtype": _type_or_bug(rrset.rdtype, rrset.rdclass)})
            continue
        for index in range(len(keys) - 1, -1, -1):
            if keys[index] == key:
                group = groups[index]
                group["rrttl"] = min(group["rrttl"], rrset.ttl)
                group["rdata"] += [rdata_text(r) for r in rrset]
                break
        else:
            keys.append(key)
            groups.append({"rrname": _name(rrset.name), "rrttl": rrset.ttl, "rrclass": class_name(rrset.rdclass),
                           "rrtype": _type_or_bug(rrset.rdtype, rrset.rdclass),
                           "rdata": [rdata_text(r) for r in rrset]})
    return groups


def _type_or_bug(rrtype: int, rrclass: int) -> str:
    """nmsg prints an unnamed type as TYPE<class> (sic): kept, to compare equal."""
    name = type_name(rrtype)
    return f"TYPE{rrclass}" if name.startswith("TYPE") else name


def message_json(wire: bytes) -> dict | None:
    """The message as nmsgtool's query_json/response_json, or None."""
    try:
        message = dns.message.from_wire(wire, one_rr_per_rrset=True, question_only=False)
    except (dns.exception.DNSException, ValueError, struct.error, IndexError):
        return None
    flags = struct.unpack_from("!H", wire, 2)[0]
    opcode = (flags >> 11) & 0x0F
    rcode = flags & 0x0F
    header: dict = {
        "opcode": dns.opcode.to_text(opcode) if opcode in (0, 1, 2, 4, 5) else opcode,
        "rcode": rcode_name(rcode) if not rcode_name(rcode).isdigit() else rcode,
        "id": message.id,
        "flags": [name for name, bit in _FLAGS if message.flags & bit],
    }
    if message.opt is not None:
        header["opt"] = {
            "edns": {
                "version": message.edns,
                "flags": ["do"] if message.ednsflags & _EDNS_DO else [],
                "udp": message.payload,
                "options": [_option_text(o.otype, o.to_wire()) for o in message.options],
            }
        }
    return {
        "header": header,
        "question": _rrsets(message.question, question=True),
        "answer": _rrsets(message.answer, question=False),
        "authority": _rrsets(message.authority, question=False),
        "additional": _rrsets(message.additional, question=False),
    }


def decoded_messages(record: dict) -> dict:
    """`query`, `query_json`, `response`, `response_json`, `dns`, as nmsgtool."""
    out: dict = {}
    queries = record.get(Field.QUERY_PACKET) or []
    if len(queries) == 1 and len(record.get(Field.QUERY_IP, b"")) in (4, 16):
        payload = dns_payload(queries)
        if payload is not None:
            out["query"] = _b64(payload)
            out["query_json"] = message_json(payload)
    responses = record.get(Field.RESPONSE_PACKET) or []
    if responses and len(record.get(Field.RESPONSE_IP, b"")) in (4, 16):
        payload = dns_payload(responses)
        if payload is not None:
            out["response"] = _b64(payload)
            out["response_json"] = message_json(payload)
            out["dns"] = out["response"]
    return out
