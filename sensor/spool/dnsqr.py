"""nmsg's `base:dnsqr` message (protobuf, proto2) for a record, and back.

The field numbers are the record's (`record.Field`): the spool record
was modelled on this message. Encoding follows what protobuf-c emits for
nmsg 1.3.3, field by field in number order, so the reference's golden
file is reproduced byte for byte: required fields (type, addresses, proto,
ports, id) always, with an empty address or 0 where a record has none
(a TCP record without a DNS id); optional ones only when present;
repeated fields unpacked (proto2's default); nanoseconds as sfixed32,
timeout as a double.

This module is the layout's one Python source: the NMSG spool packs its
common records (the UDP pair, the unanswered query) in C, `_nmsgpack.c`,
which tests hold to `encode` here and both to the protobuf library.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from sensor.records.record import Field, RecordType

# wire types
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5

_SFIXED32 = struct.Struct("<i")
_DOUBLE = struct.Struct("<d")


def varint(value: int) -> bytes:
    """Base-128 varint; a negative int64 as its 64-bit two's complement."""
    if 0 <= value < 0x80:
        return _ONE_OCTET[value]
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_ONE_OCTET = [bytes((n,)) for n in range(0x80)]


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


# field -> (wire type, kind); kind: "u" unsigned varint, "b" bytes,
# "i" int64 varint, "n" sfixed32, "d" double, "bool" bool varint
_LAYOUT = {
    Field.TYPE: (_VARINT, "u"),
    Field.QUERY_IP: (_BYTES, "b"),
    Field.RESPONSE_IP: (_BYTES, "b"),
    Field.PROTO: (_VARINT, "u"),
    Field.QUERY_PORT: (_VARINT, "u"),
    Field.RESPONSE_PORT: (_VARINT, "u"),
    Field.ID: (_VARINT, "u"),
    Field.QNAME: (_BYTES, "b"),
    Field.QTYPE: (_VARINT, "u"),
    Field.QCLASS: (_VARINT, "u"),
    Field.RCODE: (_VARINT, "u"),
    Field.QUERY_PACKET: (_BYTES, "b"),
    Field.QUERY_TIME_SEC: (_VARINT, "i"),
    Field.QUERY_TIME_NSEC: (_FIXED32, "n"),
    Field.RESPONSE_PACKET: (_BYTES, "b"),
    Field.RESPONSE_TIME_SEC: (_VARINT, "i"),
    Field.RESPONSE_TIME_NSEC: (_FIXED32, "n"),
    Field.TCP: (_BYTES, "b"),
    Field.ICMP: (_BYTES, "b"),
    Field.TIMEOUT: (_FIXED64, "d"),
    Field.UDP_CHECKSUM: (_VARINT, "u"),
    Field.RESOLVER_ADDRESS_ZEROED: (_VARINT, "bool"),
}
REPEATED = frozenset(
    (
        Field.QUERY_PACKET, Field.QUERY_TIME_SEC, Field.QUERY_TIME_NSEC,
        Field.RESPONSE_PACKET, Field.RESPONSE_TIME_SEC, Field.RESPONSE_TIME_NSEC,
    )
)
# Required by the .proto: written even when a record has no value.
REQUIRED_DEFAULTS = {
    Field.TYPE: RecordType.UDP_INVALID,
    Field.QUERY_IP: b"",
    Field.RESPONSE_IP: b"",
    Field.PROTO: 0,
    Field.QUERY_PORT: 0,
    Field.RESPONSE_PORT: 0,
    Field.ID: 0,
}
_TAGS = {field: tag(field, wire) for field, (wire, _) in _LAYOUT.items()}


def _one(kind: str, value) -> bytes:
    if kind == "b":
        return varint(len(value)) + value
    if kind in ("u", "i"):
        return varint(value)
    if kind == "n":
        return _SFIXED32.pack(value)
    if kind == "d":
        return _DOUBLE.pack(value)
    return b"\x01" if value else b"\x00"


def encode(record: dict) -> bytes:
    """The record as a serialized DnsQR message, field by field in number order.

    The NMSG spool packs its common records in C (`_nmsgpack`, checked
    against this in tests); this encodes the others, and any record for
    the tools (`render`).
    """
    parts = []
    for field, (_, kind) in _LAYOUT.items():
        value = record.get(field)
        if value is None:
            value = REQUIRED_DEFAULTS.get(field)
            if value is None:
                continue
        prefix = _TAGS[field]
        if field in REPEATED:
            for item in value:
                parts.append(prefix)
                parts.append(_one(kind, item))
        else:
            parts.append(prefix)
            parts.append(_one(kind, value))
    return b"".join(parts)


class DecodeError(ValueError):
    """Bytes that are not a well-formed DnsQR message."""


def read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, next position); DecodeError past `end` or beyond 64 bits."""
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise DecodeError("varint runs off the end")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def fields(data: bytes, start: int = 0, end: int | None = None):
    """Yield (field, wire type, value) of a protobuf message; bytes as slices."""
    pos = start
    end = len(data) if end is None else end
    while pos < end:
        key, pos = read_varint(data, pos, end)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = read_varint(data, pos, end)
        elif wire == _BYTES:
            length, pos = read_varint(data, pos, end)
            if pos + length > end:
                raise DecodeError(f"field {field} declares {length} bytes past the end")
            value = data[pos : pos + length]
            pos += length
        elif wire == _FIXED32:
            if pos + 4 > end:
                raise DecodeError(f"field {field} runs off the end")
            value = data[pos : pos + 4]
            pos += 4
        elif wire == _FIXED64:
            if pos + 8 > end:
                raise DecodeError(f"field {field} runs off the end")
            value = data[pos : pos + 8]
            pos += 8
        else:
            raise DecodeError(f"field {field} has wire type {wire}")
        yield field, wire, value


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


_DECODERS: dict[str, Callable] = {
    "u": lambda v: v & 0xFFFFFFFF,
    "i": _int64,
    "b": bytes,
    "n": lambda v: _SFIXED32.unpack(v)[0],
    "d": lambda v: _DOUBLE.unpack(v)[0],
    "bool": bool,
}


def decode(data: bytes) -> dict:
    """A DnsQR message as a record (unknown fields skipped)."""
    record: dict = {}
    for field, wire, value in fields(data):
        layout = _LAYOUT.get(field)
        if layout is None:
            continue  # a field this sensor does not know: skipped, as protobuf does
        expected, kind = layout
        if wire != expected:
            raise DecodeError(f"field {field} has wire type {wire}, expected {expected}")
        value = _DECODERS[kind](value)
        if field in REPEATED:
            record.setdefault(field, []).append(value)
        else:
            record[field] = value
    missing = [f for f in (Field.TYPE, Field.QUERY_IP, Field.RESPONSE_IP) if f not in record]
    if missing:
        raise DecodeError(f"required field {missing[0]} is missing")
    return record
