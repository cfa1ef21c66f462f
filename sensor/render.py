"""Records for people: nmsgtool's JSON conventions, and a one-line text form.

The JSON follows nmsgtool's output for base:dnsqr (type, proto, rcode,
qtype and qclass by name, addresses and qname as text, packets in base64,
times as parallel sec/nsec arrays, `delay` computed) so scripts written
against the C sensor's output keep working.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json

from .constants import (
    FIELD_NAMES,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Field,
    Rcode,
    RecordType,
    UdpChecksum,
)
from .dns import wire_to_text
from .record import record_time

RR_TYPES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
    17: "RP", 18: "AFSDB", 24: "SIG", 25: "KEY", 28: "AAAA", 29: "LOC", 33: "SRV",
    35: "NAPTR", 36: "KX", 37: "CERT", 39: "DNAME", 41: "OPT", 42: "APL", 43: "DS",
    44: "SSHFP", 45: "IPSECKEY", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 49: "DHCID",
    50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 53: "SMIMEA", 55: "HIP", 59: "CDS",
    60: "CDNSKEY", 61: "OPENPGPKEY", 62: "CSYNC", 63: "ZONEMD", 64: "SVCB", 65: "HTTPS",
    99: "SPF", 249: "TKEY", 250: "TSIG", 251: "IXFR", 252: "AXFR", 255: "ANY", 256: "URI",
    257: "CAA",
}
RR_CLASSES = {1: "IN", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}
PROTOCOLS = {IPPROTO_UDP: "UDP", IPPROTO_TCP: "TCP", IPPROTO_ICMP: "ICMP", IPPROTO_ICMPV6: "ICMPV6"}


def _name_of(table: dict, number: int, prefix: str) -> str:
    return table.get(number, f"{prefix}{number}")


def _enum_name(enum_type, number: int) -> str | int:
    try:
        return enum_type(number).name
    except ValueError:
        return number


def _address(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed)) if len(packed) in (4, 16) else packed.hex()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def delay(record: dict) -> float | None:
    """Seconds from the first query datagram to the first response datagram."""
    if record.get(Field.QUERY_TIME_SEC) and record.get(Field.RESPONSE_TIME_SEC):
        seconds = record[Field.RESPONSE_TIME_SEC][0] - record[Field.QUERY_TIME_SEC][0]
        nanos = record[Field.RESPONSE_TIME_NSEC][0] - record[Field.QUERY_TIME_NSEC][0]
        return seconds + nanos / 1e9
    return None


def message(record: dict) -> dict:
    """The record as nmsgtool prints a base:dnsqr message object."""
    out: dict = {}
    get = record.get
    out["type"] = _enum_name(RecordType, get(Field.TYPE, 0))
    for field in (Field.QUERY_IP, Field.RESPONSE_IP):
        if field in record:
            out[_key(field)] = _address(record[field])
    if Field.PROTO in record:
        out["proto"] = PROTOCOLS.get(record[Field.PROTO], record[Field.PROTO])
    for field in (Field.QUERY_PORT, Field.RESPONSE_PORT, Field.ID):
        if field in record:
            out[_key(field)] = record[field]
    if Field.QNAME in record:
        out["qname"] = wire_to_text(record[Field.QNAME])
    if Field.QCLASS in record:
        out["qclass"] = _name_of(RR_CLASSES, record[Field.QCLASS], "CLASS")
    if Field.QTYPE in record:
        out["qtype"] = _name_of(RR_TYPES, record[Field.QTYPE], "TYPE")
    if Field.RCODE in record:
        out["rcode"] = _enum_name(Rcode, record[Field.RCODE])
    for packets, secs, nsecs in (
        (Field.QUERY_PACKET, Field.QUERY_TIME_SEC, Field.QUERY_TIME_NSEC),
        (Field.RESPONSE_PACKET, Field.RESPONSE_TIME_SEC, Field.RESPONSE_TIME_NSEC),
    ):
        if packets in record:
            out[_key(packets)] = [_b64(p) for p in record[packets]]
        for field in (secs, nsecs):
            if field in record:
                out[_key(field)] = list(record[field])
    if Field.TIMEOUT in record:
        out["timeout"] = record[Field.TIMEOUT]
    waited = delay(record)
    if waited is not None:
        out["delay"] = waited
    if Field.UDP_CHECKSUM in record:
        out["udp_checksum"] = _enum_name(UdpChecksum, record[Field.UDP_CHECKSUM])
    if Field.RESOLVER_ADDRESS_ZEROED in record:
        out["resolver_address_zeroed"] = bool(record[Field.RESOLVER_ADDRESS_ZEROED])
    for field in (Field.TCP, Field.ICMP):
        if field in record:
            out[_key(field)] = _b64(record[field])
    return out


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
