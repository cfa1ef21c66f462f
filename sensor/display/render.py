"""Records for people: nmsgtool's JSON and presentation forms, and one text line.

`to_json` prints what `nmsgtool -J` prints for a base:dnsqr payload that
holds the record, `to_pres` what plain `nmsgtool` prints, field for field
and byte for byte (nmsg 1.3.3 with wdns 0.12), so an operator can compare
the sensor's output with the reference tool's, and scripts written against
the C sensor's output keep working. The rules, from nmsg's message module
and base/dnsqr.c:

- Fields come in the module's order. The seven required protobuf fields
  (type, addresses, proto, ports, id) are always printed (an address that
  is not 4 or 16 bytes as `null`), optional ones when the record has them,
  repeated ones always (`[]` when empty).
- Names and numbers: type, class and rcode through `rrnames` (unknown
  rcodes as a number in a string); proto `UDP`/`TCP`/`ICMP` or the number
  in a string; doubles (`delay`, `timeout`) as C's `%.18f` with trailing
  zeros cut (`0.00571`, `1.618948999999999971`).
- Computed fields: `delay` only for UDP_QUERY_RESPONSE with one query time
  (to the last fragment when the response came in several); `query` /
  `response` / `dns` are the DNS message (the UDP payload, cut at the UDP
  length; a query only when it is one datagram, a response reassembled
  from its fragments), `query_json` / `response_json` its decoded form, or
  `null` when it cannot be decoded; the presentation form says
  `<PARSE ERROR>` there.
"""

from __future__ import annotations

import base64
import datetime
import json
import socket

from sensor.display import dnstext
from sensor.matching.fragments import Reassembler
from sensor.records.dns import wire_to_text
from sensor.records.record import Envelope, Field, RecordType, UdpChecksum, elapsed, record_time
from sensor.records.rrnames import RCODES, RRCLASSES, RRTYPES, rcode_name, rrclass_name, rrtype_name
from sensor.records.wire import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP
from sensor.spool import dnsqr

PROTOCOLS = {IPPROTO_UDP: "UDP", IPPROTO_TCP: "TCP", IPPROTO_ICMP: "ICMP"}
VENDOR_BASE, MSGTYPE_DNSQR = 1, 9
MAX_NAME_LEN = 255


def delay(record: dict) -> float | None:
    """Seconds from the query to the response (its last fragment), as nmsg.

    Only for a UDP_QUERY_RESPONSE with one query time; None otherwise.
    """
    if record.get(Field.TYPE) != RecordType.UDP_QUERY_RESPONSE:
        return None
    qsec, qnsec = record.get(Field.QUERY_TIME_SEC, ()), record.get(Field.QUERY_TIME_NSEC, ())
    rsec, rnsec = record.get(Field.RESPONSE_TIME_SEC, ()), record.get(Field.RESPONSE_TIME_NSEC, ())
    if len(qsec) != 1 or len(qnsec) != 1 or len(rsec) != len(rnsec) or not rsec:
        return None
    waits = [elapsed(qsec[0], qnsec[0], sec, nsec) for sec, nsec in zip(rsec, rnsec, strict=True)]
    return waits[0] if len(waits) == 1 else max([0.0, *waits])


# ------------------------------------------------------- the DNS messages
def query_message(record: dict) -> bytes | None:
    """The query's DNS message: only when the query is one datagram."""
    packets = record.get(Field.QUERY_PACKET) or ()
    if len(packets) != 1:
        return None
    return _single_payload(packets[0], len(record.get(Field.QUERY_IP) or b""))


def response_message(record: dict) -> bytes | None:
    """The response's DNS message, reassembled when it came in fragments."""
    packets = record.get(Field.RESPONSE_PACKET) or ()
    if not packets or Field.RESPONSE_IP not in record:
        return None
    if len(packets) == 1:
        return _single_payload(packets[0], len(record[Field.RESPONSE_IP]))
    return _reassembled_payload(packets)


def _single_payload(packet: bytes, address_len: int) -> bytes | None:
    """UDP payload of an unfragmented datagram, read as nmsg_ipdg_parse does."""
    if address_len == 4:
        if len(packet) < 20:
            return None
        if int.from_bytes(packet[6:8], "big") & 0x3FFF or packet[9] != IPPROTO_UDP:
            return None
        return _udp_payload(packet[(packet[0] & 0x0F) * 4 :])
    if address_len == 16:
        start = _ipv6_udp_start(packet)
        return None if start is None else _udp_payload(packet[start:])
    return None


_IPV6_EXTENSIONS = frozenset((0, 43, 44, 50, 51, 60))


def _ipv6_udp_start(packet: bytes) -> int | None:
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return None
    next_header, start = packet[6], 40
    payload_len = int.from_bytes(packet[4:6], "big")
    while next_header in _IPV6_EXTENSIONS:
        if start + 2 > len(packet) or next_header == 44:
            return None
        # nmsg byte-swaps the one-octet length (ntohs): only 0 fits.
        ext_len = 8 * ((packet[start + 1] << 8) + 1)
        if ext_len > payload_len:
            return None
        next_header, start, payload_len = packet[start], start + ext_len, payload_len - ext_len
    if start + payload_len > len(packet) or payload_len == 0 or next_header != IPPROTO_UDP:
        return None
    return start


def _udp_payload(segment: bytes) -> bytes | None:
    if len(segment) < 8:
        return None
    length = int.from_bytes(segment[4:6], "big")
    return segment[8 : 8 + (length - 8 if length >= 8 else length)]


def _reassembled_payload(packets: list[bytes]) -> bytes | None:
    """Every packet must be a fragment of the same datagram, all of it there."""
    reassembler = Reassembler({})
    for packet in packets:
        fragment = _fragment(packet)
        if fragment is None:
            return None
        done = reassembler.add(*fragment, packet, 0, 0)
        if done is not None:
            return _udp_payload(done[0]) if fragment[0][-1] == IPPROTO_UDP else None
    return None


def _fragment(packet: bytes) -> tuple | None:
    """(key, offset, more, piece) of an IPv4 or IPv6 fragment, else None."""
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        frag = int.from_bytes(packet[6:8], "big")
        if not frag & 0x3FFF:
            return None
        key = (packet[12:20], packet[4:6], packet[9])
        total = min(int.from_bytes(packet[2:4], "big"), len(packet))
        return key, (frag & 0x1FFF) * 8, bool(frag & 0x2000), packet[(packet[0] & 0x0F) * 4 : total]
    if len(packet) >= 48 and packet[0] >> 4 == 6 and packet[6] == 44:
        frag = int.from_bytes(packet[42:44], "big")
        key = (packet[8:40], packet[44:48], packet[40])
        return key, frag & 0xFFF8, bool(frag & 1), packet[48 : 40 + int.from_bytes(packet[4:6], "big")]
    return None


# --------------------------------------------------------------- the JSON
def _address(packed: bytes | None) -> str | None:
    if packed is not None and len(packed) == 4:
        return socket.inet_ntop(socket.AF_INET, packed)
    if packed is not None and len(packed) == 16:
        return socket.inet_ntop(socket.AF_INET6, packed)
    return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _enum_name(enum_type, number: int) -> str | int:
    try:
        return enum_type(number).name
    except ValueError:
        return number


def _qname_text(wire: bytes) -> str:
    return wire_to_text(wire) if 0 < len(wire) <= MAX_NAME_LEN else ""


def message(record: dict) -> dict:
    """The record as nmsgtool's JSON `message` object (delay/timeout as floats)."""
    get = record.get
    out: dict = {
        "type": _enum_name(RecordType, get(Field.TYPE, 0)),
        "query_ip": _address(get(Field.QUERY_IP)),
        "response_ip": _address(get(Field.RESPONSE_IP)),
        "proto": _proto_name(get(Field.PROTO, 0)),
        "query_port": get(Field.QUERY_PORT, 0) & 0xFFFF,
        "response_port": get(Field.RESPONSE_PORT, 0) & 0xFFFF,
        "id": get(Field.ID, 0) & 0xFFFF,
    }
    if Field.QNAME in record:
        out["qname"] = _qname_text(record[Field.QNAME])
    if Field.QCLASS in record:
        out["qclass"] = rrclass_name(record[Field.QCLASS] & 0xFFFF)
    if Field.QTYPE in record:
        out["qtype"] = rrtype_name(record[Field.QTYPE] & 0xFFFF)
    if Field.RCODE in record:
        out["rcode"] = rcode_name(record[Field.RCODE] & 0xFFFF)
    out["query_packet"] = [_b64(p) for p in get(Field.QUERY_PACKET, ())]
    out["query_time_sec"] = list(get(Field.QUERY_TIME_SEC, ()))
    out["query_time_nsec"] = list(get(Field.QUERY_TIME_NSEC, ()))
    out["response_packet"] = [_b64(p) for p in get(Field.RESPONSE_PACKET, ())]
    out["response_time_sec"] = list(get(Field.RESPONSE_TIME_SEC, ()))
    out["response_time_nsec"] = list(get(Field.RESPONSE_TIME_NSEC, ()))
    if Field.TIMEOUT in record:
        out["timeout"] = float(record[Field.TIMEOUT])
    waited = delay(record)
    if waited is not None:
        out["delay"] = waited
    if Field.UDP_CHECKSUM in record:
        out["udp_checksum"] = _enum_name(UdpChecksum, record[Field.UDP_CHECKSUM])
    if Field.RESOLVER_ADDRESS_ZEROED in record:
        out["resolver_address_zeroed"] = bool(record[Field.RESOLVER_ADDRESS_ZEROED])
    query = query_message(record)
    if query is not None:
        out["query"] = _b64(query)
        out["query_json"] = _decoded_json(query)
    response = response_message(record)
    if response is not None:
        out["response"] = _b64(response)
        out["response_json"] = _decoded_json(response)
        out["dns"] = out["response"]
    for field in (Field.TCP, Field.ICMP):
        if field in record:
            out["tcp" if field == Field.TCP else "icmp"] = _b64(record[field])
    return out


def _proto_name(proto: int) -> str:
    return PROTOCOLS.get(proto & 0xFFFF) or str(proto & 0xFFFF)


def _decoded_json(wire: bytes) -> dict | None:
    decoded = dnstext.parse(wire)
    return None if decoded is None else dnstext.to_json(decoded)


def _timestamp(sec: int, nsec: int) -> str:
    moment = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(seconds=sec)
    return f"{moment:%Y-%m-%d %H:%M:%S}.{nsec:09d}"


def to_json(record: dict, envelope: Envelope | None = None) -> str:
    """One line as `nmsgtool -J` prints it: envelope around the message."""
    envelope = envelope or Envelope()
    out: dict = {
        "time": _timestamp(*(envelope.time or record_time(record))),
        "vname": "base",
        "mname": "dnsqr",
    }
    if envelope.source:
        out["source"] = f"{envelope.source:08x}"
    if envelope.operator:
        out["operator"] = envelope.operator  # nmsgtool prints an alias when its alias file names one
    if envelope.group:
        out["group"] = envelope.group
    out["message"] = message(record)
    return _dump(out)


def _dump(value) -> str:
    """JSON as nmsg writes it: compact, doubles as `%.18f` minus trailing zeros."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{_dump(k)}:{_dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    if isinstance(value, float):
        return nmsg_double(value)
    return json.dumps(value, ensure_ascii=False)


def nmsg_double(value: float) -> str:
    """nmsg's JSON double: `%.18f`, trailing zeros cut but one kept after the point."""
    text = f"{value:.18f}"
    if "." in text:
        text = text.rstrip("0")
        if text.endswith("."):
            text += "0"
    return text


# ------------------------------------------------------- presentation form
def to_pres(record: dict, envelope: Envelope | None = None) -> str:
    """nmsgtool's default presentation of the payload; print it with a newline after."""
    envelope = envelope or Envelope()
    sec, nsec = envelope.time or record_time(record)
    moment = _timestamp(sec, 0)[:-10]
    size = envelope.payload_len if envelope.payload_len is not None else payload_size(record)
    header = (
        f"[{size}] [{moment}.{nsec:09d}] [{VENDOR_BASE}:{MSGTYPE_DNSQR} base dnsqr] "
        f"[{(envelope.source or 0):08x}] [{envelope.operator or ''}] [{envelope.group or ''}] "
    )
    return header + "\n" + "".join(_pres_lines(record))


def _pres_lines(record: dict):
    get = record.get
    kind = get(Field.TYPE, 0)
    yield f"type: {RecordType(kind).name if kind in RecordType._value2member_map_ else f'<UNKNOWN ENUM VAL={kind}>'}\n"
    for name, field in (("query_ip", Field.QUERY_IP), ("response_ip", Field.RESPONSE_IP)):
        packed = get(field) or b""
        text = _address(packed)
        yield f"{name}: {text}\n" if text else f"{name}: <INVALID IP len={len(packed)}>\n"
    proto = get(Field.PROTO, 0) & 0xFFFF
    yield f"proto: {PROTOCOLS[proto]} ({proto})\n" if proto in PROTOCOLS else f"proto: {proto}\n"
    for name, field in (("query_port", Field.QUERY_PORT), ("response_port", Field.RESPONSE_PORT), ("id", Field.ID)):
        yield f"{name}: {get(field, 0) & 0xFFFF}\n"
    if 0 < len(get(Field.QNAME) or b"") <= MAX_NAME_LEN:
        yield f"qname: {wire_to_text(record[Field.QNAME])}\n"
    if Field.QCLASS in record:
        qclass = record[Field.QCLASS] & 0xFFFF
        yield f"qclass: {RRCLASSES.get(qclass) or f'CLASS{qclass}'} ({qclass})\n"
    if Field.QTYPE in record:
        qtype = record[Field.QTYPE] & 0xFFFF
        yield f"qtype: {RRTYPES.get(qtype, '<UNKNOWN>')} ({qtype})\n"
    if Field.RCODE in record:
        rcode = record[Field.RCODE] & 0xFFFF
        yield f"rcode: {RCODES.get(rcode, '<UNKNOWN>')} ({rcode})\n"
    if Field.TIMEOUT in record:
        yield f"timeout: {record[Field.TIMEOUT]:f}\n"
    waited = delay(record)
    if waited is not None:
        yield f"delay: {waited:f}\n"
    if get(Field.RESPONSE_PACKET) and Field.UDP_CHECKSUM in record:
        yield f"udp_checksum: {_enum_name(UdpChecksum, record[Field.UDP_CHECKSUM])}\n"
    if Field.RESOLVER_ADDRESS_ZEROED in record:
        yield f"resolver_address_zeroed: {bool(record[Field.RESOLVER_ADDRESS_ZEROED])}\n"
    for name, wire in (("query", query_message(record)), ("response", response_message(record))):
        if wire is None:
            continue
        decoded = dnstext.parse(wire)
        if decoded is None:
            yield f"{name}: <PARSE ERROR>\n"
        else:
            yield f"{name}: [{len(wire)} octets]\n{dnstext.to_text(decoded)}---\n"


def payload_size(record: dict) -> int:
    """Bytes of the record serialized as a base:dnsqr message (pres header)."""
    return len(dnsqr.encode(record))


# ------------------------------------------------------------ one text line
def to_text(record: dict, envelope: Envelope | None = None) -> str:
    """One human line: when, what, who to whom, which question, how it went."""
    m = message(record)
    sec, nsec = record_time(record)
    parts = [
        _timestamp(sec, nsec),
        str(m["type"]),
        f"{m['query_ip'] or '?'}#{m['query_port']}",
        "->",
        f"{m['response_ip'] or '?'}#{m['response_port']}",
        str(m["proto"]),
        f"id={m['id']}",
    ]
    if "qname" in m:
        parts.append(f"{m['qname']} {m.get('qclass', '')} {m.get('qtype', '')}")
    if "rcode" in m:
        parts.append(str(m["rcode"]))
    if "delay" in m:
        parts.append(f"delay={m['delay']:.6f}")
    if "timeout" in m:
        parts.append(f"timeout={m['timeout']:.6f}")
    if "udp_checksum" in m:
        parts.append(f"checksum={m['udp_checksum']}")
    return " ".join(parts)
