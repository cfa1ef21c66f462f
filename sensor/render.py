"""Records for people: nmsgtool's JSON and presentation, and a text line.

The JSON is what nmsgtool 1.3.3 prints for base:dnsqr (`-J`): the same
keys in the same order, type/proto/rcode/qtype/qclass by the reference's
names (`rrnames`), names escaped as wdns escapes them, addresses as text
(null when a record has none), packets in base64, every repeated field
printed (`[]` when empty), doubles as nmsg prints them, `delay` computed
as nmsg computes it, and the decoded DNS messages (`dnsjson`). Scripts
written against the C sensor's output keep working.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json

from . import dnsjson
from .constants import FIELD_NAMES, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Field, RecordType, UdpChecksum
from .dns import wire_to_text
from .record import record_time
from .rrnames import class_name, rcode_name, type_name

PROTOCOLS = {IPPROTO_UDP: "UDP", IPPROTO_TCP: "TCP", IPPROTO_ICMP: "ICMP"}
MAX_NAME = 255  # longer qnames print as "" (nmsg's dns_name_format)
_REPEATED = (
    Field.QUERY_PACKET, Field.QUERY_TIME_SEC, Field.QUERY_TIME_NSEC,
    Field.RESPONSE_PACKET, Field.RESPONSE_TIME_SEC, Field.RESPONSE_TIME_NSEC,
)


def _enum_name(enum_type, number: int) -> str | int:
    try:
        return enum_type(number).name
    except ValueError:
        return number


def _address(packed: bytes) -> str | None:
    return str(ipaddress.ip_address(packed)) if len(packed) in (4, 16) else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def as_nmsg_double(value: float) -> float:
    """The value nmsg's JSON shows: printed with %.18f, zeros trimmed."""
    return float(f"{value:.18f}")


def _seconds_between(sec: int, nsec: int, later_sec: int, later_nsec: int) -> float:
    """As nmsg: whole seconds and nanoseconds apart, borrowing, then a double."""
    seconds, nanos = later_sec - sec, later_nsec - nsec
    if nanos < 0:
        seconds -= 1
        nanos += 1_000_000_000
    return seconds + nanos / 1e9


def delay(record: dict) -> float | None:
    """Seconds from the query to its response, for a pair (nmsg's rule).

    Only a UDP_QUERY_RESPONSE with one query datagram has one; with a
    fragmented response it is measured to the latest fragment.
    """
    if record.get(Field.TYPE) != RecordType.UDP_QUERY_RESPONSE:
        return None
    query_secs = record.get(Field.QUERY_TIME_SEC) or []
    response_secs = record.get(Field.RESPONSE_TIME_SEC) or []
    if len(query_secs) != 1 or not response_secs:
        return None
    sec, nsec = query_secs[0], record[Field.QUERY_TIME_NSEC][0]
    waits = [
        _seconds_between(sec, nsec, rsec, rnsec)
        for rsec, rnsec in zip(response_secs, record[Field.RESPONSE_TIME_NSEC], strict=False)
    ]
    return waits[0] if len(waits) == 1 else max(0.0, *waits)


def message(record: dict) -> dict:
    """The record as nmsgtool prints a base:dnsqr message object."""
    out: dict = {}
    get = record.get
    out["type"] = _enum_name(RecordType, get(Field.TYPE, 0))
    for field in (Field.QUERY_IP, Field.RESPONSE_IP):
        out[_key(field)] = _address(get(field, b""))
    proto = get(Field.PROTO, 0)
    out["proto"] = PROTOCOLS.get(proto, str(proto))
    for field in (Field.QUERY_PORT, Field.RESPONSE_PORT, Field.ID):
        out[_key(field)] = get(field, 0)
    if Field.QNAME in record:
        qname = record[Field.QNAME]
        out["qname"] = wire_to_text(qname) if 0 < len(qname) <= MAX_NAME else ""
    if Field.QCLASS in record:
        out["qclass"] = class_name(record[Field.QCLASS])
    if Field.QTYPE in record:
        out["qtype"] = type_name(record[Field.QTYPE])
    if Field.RCODE in record:
        out["rcode"] = rcode_name(record[Field.RCODE])
    for field in _REPEATED:
        values = get(field) or []
        out[_key(field)] = [_b64(v) for v in values] if field in _PACKETS else list(values)
    if Field.TIMEOUT in record:
        out["timeout"] = as_nmsg_double(record[Field.TIMEOUT])
    waited = delay(record)
    if waited is not None:
        out["delay"] = as_nmsg_double(waited)
    if Field.UDP_CHECKSUM in record and get(Field.RESPONSE_PACKET):
        out["udp_checksum"] = _enum_name(UdpChecksum, record[Field.UDP_CHECKSUM])
    if Field.RESOLVER_ADDRESS_ZEROED in record:
        out["resolver_address_zeroed"] = bool(record[Field.RESOLVER_ADDRESS_ZEROED])
    out.update(dnsjson.decoded_messages(record))
    for field in (Field.TCP, Field.ICMP):
        if field in record:
            out[_key(field)] = _b64(record[field])
    return out


_PACKETS = (Field.QUERY_PACKET, Field.RESPONSE_PACKET)


def _key(field: int) -> str:
    return FIELD_NAMES[field]


def _timestamp(sec: int, nsec: int) -> str:
    moment = datetime.datetime.fromtimestamp(sec, tz=datetime.UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S}.{nsec:09d}"


def to_json(record: dict, envelope: dict | None = None) -> str:
    """One line: nmsgtool's envelope (time, vname, mname, and the NMSG
    payload's source/operator/group ids, in hex, when it had them)."""
    envelope = envelope or {}
    sec, nsec = envelope.get("time") or record_time(record)
    out = {"time": _timestamp(sec, nsec), "vname": "base", "mname": "dnsqr"}
    for name in ("source", "operator", "group"):
        if name in envelope:
            out[name] = f"{envelope[name]:08x}"
    out["message"] = message(record)
    return json.dumps(out, separators=(",", ":"))


def to_text(record: dict, envelope: dict | None = None) -> str:
    """One human line: when, what, who to whom, which question, how it went."""
    m = message(record)
    sec, nsec = record_time(record)
    parts = [
        _timestamp(sec, nsec),
        str(m["type"]),
        f"{m.get('query_ip', '?')}#{m.get('query_port', '?')}",
        "->",
        f"{m.get('response_ip', '?')}#{m.get('response_port', '?')}",
        str(m.get("proto", "?")),
    ]
    if "id" in m:
        parts.append(f"id={m['id']}")
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
