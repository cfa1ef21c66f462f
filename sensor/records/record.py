"""The record: its types, fields and checksum verdicts, its layout, its time.

A record is a dict keyed by `Field` numbers, which are nmsg base:dnsqr's
protobuf field numbers (so operators' tools keep meaning the same thing,
and the numbers are on disk in both spool formats). The matcher builds
records; the spool formats write them; `read` shows them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RecordType(enum.IntEnum):
    """What kind of transaction a record describes (numbers are on disk)."""

    UDP_INVALID = 0
    UDP_QUERY_RESPONSE = 1
    UDP_UNANSWERED_QUERY = 2
    UDP_UNSOLICITED_RESPONSE = 3
    TCP = 4
    ICMP = 5
    UDP_QUERY_ONLY = 6
    UDP_RESPONSE_ONLY = 7


# Hot paths bind the members they use to module names (`_PAIR =
# RecordType.UDP_QUERY_RESPONSE` in the matcher): looking a member up on
# its class is a class attribute lookup each time, several times slower
# than reading a module global, and the matcher does it for most packets.


class UdpChecksum(enum.IntEnum):
    """Verdict on the response datagram's UDP checksum (numbers are on disk)."""

    ERROR = 0
    ABSENT = 1
    INCORRECT = 2
    CORRECT = 3


class Field:
    """CBOR map keys of a record: nmsg base:dnsqr's protobuf field numbers."""

    TYPE = 1
    QUERY_IP = 2
    RESPONSE_IP = 3
    PROTO = 4
    QUERY_PORT = 5
    RESPONSE_PORT = 6
    ID = 7
    QNAME = 8
    QTYPE = 9
    QCLASS = 10
    RCODE = 11
    QUERY_PACKET = 12
    QUERY_TIME_SEC = 13
    QUERY_TIME_NSEC = 14
    RESPONSE_PACKET = 15
    RESPONSE_TIME_SEC = 16
    RESPONSE_TIME_NSEC = 17
    TCP = 18
    ICMP = 19
    TIMEOUT = 20
    UDP_CHECKSUM = 21
    RESOLVER_ADDRESS_ZEROED = 22


# Field number -> the name nmsgtool's JSON output uses for it.
FIELD_NAMES = {value: name.lower() for name, value in vars(Field).items() if not name.startswith("_")}

# The datagrams of one side of a transaction and their times.
QUERY_SIDE = (Field.QUERY_PACKET, Field.QUERY_TIME_SEC, Field.QUERY_TIME_NSEC)
RESPONSE_SIDE = (Field.RESPONSE_PACKET, Field.RESPONSE_TIME_SEC, Field.RESPONSE_TIME_NSEC)

# The common records in field order: a UDP pair with its question and one
# datagram each way, and an unanswered query with its question; the shapes
# the spool encoders write in C (_nmsgpack.c, _cborpack.c).
PAIR_FIELDS = (
    Field.TYPE, Field.QUERY_IP, Field.RESPONSE_IP, Field.PROTO, Field.QUERY_PORT, Field.RESPONSE_PORT,
    Field.ID, Field.QNAME, Field.QTYPE, Field.QCLASS, Field.RCODE, Field.QUERY_PACKET, Field.QUERY_TIME_SEC,
    Field.QUERY_TIME_NSEC, Field.RESPONSE_PACKET, Field.RESPONSE_TIME_SEC, Field.RESPONSE_TIME_NSEC,
    Field.UDP_CHECKSUM,
)
UNANSWERED_FIELDS = (
    Field.TYPE, Field.QUERY_IP, Field.RESPONSE_IP, Field.PROTO, Field.QUERY_PORT, Field.RESPONSE_PORT,
    Field.ID, Field.QNAME, Field.QTYPE, Field.QCLASS, Field.QUERY_PACKET, Field.QUERY_TIME_SEC,
    Field.QUERY_TIME_NSEC, Field.TIMEOUT,
)


def check_compiled(module) -> None:
    """ImportError unless a compiled encoder was built for this record.

    The C encoders restate the field numbers, the record types they take
    (their TYPE_* constants) and the shapes above, which they expose; a
    module built from other sources would write records that read back as
    something else, so the sensor refuses to start with it instead.
    """
    fields = {name: number for name, number in vars(Field).items() if not name.startswith("_")}
    expected = {"FIELDS": fields, "FIELD_COUNT": max(fields.values()) + 1, "PAIR_FIELDS": PAIR_FIELDS,
                "UNANSWERED_FIELDS": UNANSWERED_FIELDS}
    expected |= {name: RecordType[name[len("TYPE_"):]] for name in dir(module) if name.startswith("TYPE_")}
    wrong = sorted(name for name, value in expected.items() if getattr(module, name, None) != value)
    if wrong:
        raise ImportError(f"{module.__name__} was built for another record layout ({', '.join(wrong)}): rebuild it")


_INT, _BYTES, _NUMBER, _SECONDS, _NANOS, _BYTES_LIST = (
    "an integer of 0 to 2**32-1", "bytes", "a number", "integers of 64 bits", "integers of 32 bits", "bytes list")
_KINDS = {
    Field.TYPE: _INT, Field.QUERY_IP: _BYTES, Field.RESPONSE_IP: _BYTES, Field.PROTO: _INT,
    Field.QUERY_PORT: _INT, Field.RESPONSE_PORT: _INT, Field.ID: _INT, Field.QNAME: _BYTES,
    Field.QTYPE: _INT, Field.QCLASS: _INT, Field.RCODE: _INT, Field.QUERY_PACKET: _BYTES_LIST,
    Field.QUERY_TIME_SEC: _SECONDS, Field.QUERY_TIME_NSEC: _NANOS, Field.RESPONSE_PACKET: _BYTES_LIST,
    Field.RESPONSE_TIME_SEC: _SECONDS, Field.RESPONSE_TIME_NSEC: _NANOS, Field.TCP: _BYTES, Field.ICMP: _BYTES,
    Field.TIMEOUT: _NUMBER, Field.UDP_CHECKSUM: _INT, Field.RESOLVER_ADDRESS_ZEROED: _INT,
}
# Values a list field may hold: a side's datagram pieces are at most
# fragments.MAX_PIECES (64); a list of thousands is a bomb, not a record.
MAX_LIST = 1024
# Integers as wide as dnsqr's wire types carry them (uint32 and enums, int64 seconds, sfixed32
# nanoseconds, a double): a CBOR bignum (or a long varint) past them was taken, and then `read`
# died on it (an OverflowError in float(), a struct.error packing it for NMSG).
_FITS = {
    _INT: lambda v: isinstance(v, int) and 0 <= v <= 0xFFFFFFFF,
    _BYTES: lambda v: isinstance(v, bytes),
    _NUMBER: lambda v: isinstance(v, float) or (isinstance(v, int) and -(1 << 63) <= v < 1 << 63),
    _SECONDS: lambda v: isinstance(v, list) and len(v) <= MAX_LIST
    and all(isinstance(x, int) and -(1 << 63) <= x < 1 << 63 for x in v),
    _NANOS: lambda v: isinstance(v, list) and len(v) <= MAX_LIST
    and all(isinstance(x, int) and -(1 << 31) <= x < 1 << 31 for x in v),
    _BYTES_LIST: lambda v: isinstance(v, list) and len(v) <= MAX_LIST and all(isinstance(x, bytes) for x in v),
}


def check(item) -> dict:
    """The item if it is a well-formed record, else ValueError saying why.

    Every reader (both spool formats, `read`, recovery) passes records
    through here, so a damaged or hostile file is refused at the first bad
    record instead of surfacing later as a KeyError or TypeError.
    """
    if not isinstance(item, dict):
        raise ValueError(f"a record is a {type(item).__name__}, not a map")
    for key, value in item.items():
        kind = _KINDS.get(key)
        if kind is None:
            raise ValueError(f"unknown field {key!r}")
        if not _FITS[kind](value):
            if isinstance(value, list) and len(value) > MAX_LIST:
                raise ValueError(f"field {key} holds {len(value)} values (a record holds at most {MAX_LIST})")
            raise ValueError(f"field {key} is not {kind}")
    for field in (Field.TYPE, Field.QUERY_IP, Field.RESPONSE_IP):
        if field not in item:
            raise ValueError(f"required field {field} is missing")
    for packets, secs, nsecs in (QUERY_SIDE, RESPONSE_SIDE):
        if len(item.get(secs, ())) != len(item.get(nsecs, ())) or (
            packets in item and len(item[packets]) != len(item.get(secs, ()))
        ):
            raise ValueError("packets and their times do not line up")
    return item


def elapsed(sec: int, nsec: int, later_sec: int, later_nsec: int) -> float:
    """Seconds from one packet time to a later one, as nmsg computes them
    (borrowing a second before dividing), so `timeout` and `delay` are the
    reference's doubles to the last bit."""
    seconds, nanos = later_sec - sec, later_nsec - nsec
    if nanos < 0:
        seconds -= 1
        nanos += 1_000_000_000
    return seconds + nanos / 1e9


@dataclass
class Envelope:
    """What an NMSG payload carries around the message (None: not known).

    A CBOR spool record has none of it: its time then comes from its first
    packet, as the reference sets it, and the payload length is computed.
    """

    time: tuple[int, int] | None = None
    source: int | None = None
    operator: int | None = None
    group: int | None = None
    payload_len: int | None = None


def record_time(record: dict) -> tuple[int, int]:
    """(sec, nsec) of the record: its first query packet, else its first
    response packet, as the reference stamps its NMSG payloads."""
    secs = record.get(Field.QUERY_TIME_SEC)
    if secs:
        return secs[0], record[Field.QUERY_TIME_NSEC][0]
    secs = record.get(Field.RESPONSE_TIME_SEC)
    if secs:
        return secs[0], record[Field.RESPONSE_TIME_NSEC][0]
    return 0, 0
