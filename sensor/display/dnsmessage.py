"""A DNS message read from the wire by wdns's rules, as far as it goes.

`read` is compared with nmsgtool, and nmsgtool shows what its DNS library
(wdns 0.12, `wdns_parse_message`) makes of the bytes. A general-purpose
decoder reads differently: dnspython refuses a TSIG it has no key for, a
LOC or SVCB whose lengths do not fit, an EDNS option it cannot parse, drops
a dynamic UPDATE's empty delete RRs and turns a TTL above 2^31-1 into 0.
wdns does none of that, so the message is read here the way wdns reads it:

- the header, then each section's RRs; a message that ends exactly where
  an RR would start is complete (the counts promised more than was sent);
- names are decompressed, pointers going strictly backwards, 255 octets
  at most: owner names, and the name fields of the types wdns describes
  (`DESCRIPTORS`), so their rdata holds uncompressed names;
- the rdata of a described type is checked field by field and may stop at
  a field boundary; every other type (TSIG, LOC, ...), and an IN-only type
  in another class, is kept as it is on the wire;
- the first OPT, in whatever section, is the EDNS header; a later one is
  an ordinary RR.

wdns gives up on the whole message at the first RR it cannot read;
`decode` keeps what came before and says where and why it stopped
(`Fault`), for callers that want as much as there is. Where wdns would
read past the end of its buffer (a name whose last octet is the message's
last), the message is refused: what lies beyond is not ours to guess.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from sensor.records.wire import DNS_HEADER_LEN, MAX_NAME_LEN

QUESTION, ANSWER, AUTHORITY, ADDITIONAL = range(4)
TYPE_OPT = 41
_HEADER = struct.Struct("!6H")
_TYPE_CLASS = struct.Struct("!HH")
_TTL_RDLEN = struct.Struct("!IH")


class Res(enum.IntEnum):
    """wdns's result codes (`wdns_res`), the numbers nmsgtool prints."""

    INVALID_COMPRESSION_POINTER = 2
    INVALID_LENGTH_OCTET = 3
    LEN = 6
    NAME_LEN = 8
    NAME_OVERFLOW = 9
    OUT_OF_BOUNDS = 10
    OVERFLOW = 11
    PARSE_ERROR = 12


@dataclass
class Rr:
    """One RR (or question) as wdns holds it: names uncompressed."""

    name: bytes
    rrtype: int
    rrclass: int
    ttl: int = 0
    rdata: bytes = b""


@dataclass
class Edns:
    """The first OPT RR; `options` is None when it came as a question."""

    version: int
    flags: int
    size: int
    options: bytes | None


@dataclass
class Message:
    id: int
    flags: int
    rcode: int
    edns: Edns | None
    sections: list[list[Rr]] = field(default_factory=lambda: [[], [], [], []])


@dataclass
class Fault:
    """Why reading stopped (wdns's result) and where: the RR's offset and section."""

    res: Res
    offset: int
    section: int


@dataclass
class Decoded:
    """What was read (None when not even the header is there) and the fault, if any."""

    message: Message | None
    fault: Fault | None


class _Stop(Exception):
    def __init__(self, res: Res) -> None:
        super().__init__(res)
        self.res = res


def decode(wire: bytes) -> Decoded:
    """The message as far as wdns would read it (never raises)."""
    if len(wire) < DNS_HEADER_LEN:
        return Decoded(None, Fault(Res.LEN, 0, QUESTION))
    msg_id, flags, *counts = _HEADER.unpack_from(wire)
    message = Message(msg_id, flags, flags & 0xF, None)
    pos = DNS_HEADER_LEN
    for section, count in enumerate(counts):
        for _ in range(count):
            if pos == len(wire):
                return Decoded(message, None)
            try:
                rr, after = _read_rr(wire, pos, section)
            except _Stop as stop:
                return Decoded(message, Fault(stop.res, pos, section))
            if rr.rrtype == TYPE_OPT and message.edns is None:
                _apply_edns(message, rr, section)
            else:
                message.sections[section].append(rr)
            pos = after
    return Decoded(message, None)


def _apply_edns(message: Message, opt: Rr, section: int) -> None:
    # The extended rcode counts from bit 4 (wdns shifts it by 8: README,
    # "Where we differ from nmsg on purpose").
    options = None if section == QUESTION else opt.rdata
    message.edns = Edns((opt.ttl >> 16) & 0xFF, opt.ttl & 0xFFFF, opt.rrclass, options)
    message.rcode |= (opt.ttl >> 24) << 4


def _read_rr(wire: bytes, pos: int, section: int) -> tuple[Rr, int]:
    name, pos = unpack_name(wire, pos)
    if pos + (_TYPE_CLASS.size if section == QUESTION else 10) > len(wire):
        raise _Stop(Res.PARSE_ERROR)
    rrtype, rrclass = _TYPE_CLASS.unpack_from(wire, pos)
    if section == QUESTION:
        return Rr(name, rrtype, rrclass), pos + _TYPE_CLASS.size
    ttl, rdlen = _TTL_RDLEN.unpack_from(wire, pos + 4)
    start = pos + 10
    if start + rdlen > len(wire):
        raise _Stop(Res.OVERFLOW)
    return Rr(name, rrtype, rrclass, ttl, _read_rdata(wire, start, start + rdlen, rrtype, rrclass)), start + rdlen


def unpack_name(wire: bytes, pos: int) -> tuple[bytes, int]:
    """(the name at `pos`, uncompressed; the offset just after it in place).

    wdns_unpack_name and wdns_skip_name: a pointer must point before
    itself, so names cannot loop.
    """
    out = bytearray()
    after = None
    while True:
        if pos >= len(wire):
            raise _Stop(Res.OUT_OF_BOUNDS)
        length = wire[pos]
        if length == 0:
            break
        if length >= 0xC0:
            if pos + 1 >= len(wire):
                raise _Stop(Res.OUT_OF_BOUNDS)
            target = (length & 0x3F) << 8 | wire[pos + 1]
            if target >= pos:
                raise _Stop(Res.INVALID_COMPRESSION_POINTER)
            after = pos + 2 if after is None else after
            pos = target
        elif length <= 63:
            if len(out) + 1 + length >= MAX_NAME_LEN:
                raise _Stop(Res.NAME_OVERFLOW)
            if pos + 1 + length > len(wire):
                raise _Stop(Res.OUT_OF_BOUNDS)
            out += wire[pos : pos + 1 + length]
            pos += 1 + length
        else:
            raise _Stop(Res.INVALID_LENGTH_OCTET)
    out.append(0)
    return bytes(out), pos + 1 if after is None else after


# ------------------------------------------------------------------ rdata
# wdns's record descriptors: which fields make up the rdata of a type.
(NAME, BYTES, B64, BYTES_STR, INT8, INT16, INT32, IPV4, IPV6, IPV6PREFIX, EUI48, EUI64,
 STRING, REPSTRING, RRTYPE, BITMAP, SALT, HASH, SVCPARAMS, EDNS_OPTS) = range(20)
ANY_CLASS, IN_CLASS = 0, 1
_DNSKEY = (ANY_CLASS, (INT16, INT8, INT8, B64))
_DS = (ANY_CLASS, (INT16, INT8, INT8, BYTES))
_SVCB = (IN_CLASS, (INT16, NAME, SVCPARAMS))
DESCRIPTORS = {
    1: (IN_CLASS, (IPV4,)), 2: (ANY_CLASS, (NAME,)), 3: (ANY_CLASS, (NAME,)),
    4: (ANY_CLASS, (NAME,)), 5: (ANY_CLASS, (NAME,)),
    6: (ANY_CLASS, (NAME, NAME, INT32, INT32, INT32, INT32, INT32)),
    7: (ANY_CLASS, (NAME,)), 8: (ANY_CLASS, (NAME,)), 9: (ANY_CLASS, (NAME,)),
    10: (ANY_CLASS, (BYTES,)), 11: (IN_CLASS, (INT32, INT8, BYTES)), 12: (ANY_CLASS, (NAME,)),
    13: (ANY_CLASS, (STRING, STRING)), 14: (ANY_CLASS, (NAME, NAME)),
    15: (ANY_CLASS, (INT16, NAME)), 16: (ANY_CLASS, (REPSTRING,)), 17: (ANY_CLASS, (NAME, NAME)),
    18: (ANY_CLASS, (INT16, NAME)), 19: (ANY_CLASS, (STRING,)), 20: (ANY_CLASS, (STRING, STRING)),
    21: (ANY_CLASS, (INT16, NAME)),
    24: (ANY_CLASS, (INT16, INT8, INT8, INT32, INT32, INT32, INT16, NAME, BYTES)),
    26: (IN_CLASS, (INT16, NAME, NAME)), 28: (IN_CLASS, (IPV6,)), 30: (ANY_CLASS, (NAME, BYTES)),
    33: (IN_CLASS, (INT16, INT16, INT16, NAME)),
    35: (IN_CLASS, (INT16, INT16, STRING, STRING, STRING, NAME)), 36: (IN_CLASS, (INT16, NAME)),
    38: (IN_CLASS, (IPV6PREFIX, NAME)), 39: (ANY_CLASS, (NAME,)), 41: (ANY_CLASS, (EDNS_OPTS,)),
    43: _DS, 46: (ANY_CLASS, (RRTYPE, INT8, INT8, INT32, INT32, INT32, INT16, NAME, B64)),
    47: (ANY_CLASS, (NAME, BITMAP)), 48: _DNSKEY,
    50: (ANY_CLASS, (INT8, INT8, INT16, SALT, HASH, BITMAP)),
    51: (ANY_CLASS, (INT8, INT8, INT16, SALT)), 52: (ANY_CLASS, (INT8, INT8, INT8, BYTES)),
    59: _DS, 60: _DNSKEY, 61: (ANY_CLASS, (B64,)), 62: (ANY_CLASS, (INT32, INT16, BITMAP)),
    64: _SVCB, 65: _SVCB, 99: (ANY_CLASS, (REPSTRING,)), 108: (ANY_CLASS, (EUI48,)),
    109: (ANY_CLASS, (EUI64,)), 256: (ANY_CLASS, (INT16, INT16, BYTES_STR)),
    257: (IN_CLASS, (INT8, STRING, BYTES_STR)),
}  # every type not here (TSIG, LOC, ...) is generic: its rdata is opaque to wdns


def _read_rdata(wire: bytes, pos: int, end: int, rrtype: int, rrclass: int) -> bytes:
    """The rdata with its names decompressed, checked as _wdns_parse_rdata checks it."""
    klass, kinds = DESCRIPTORS.get(rrtype, (ANY_CLASS, ()))
    if not kinds or (klass == IN_CLASS and rrclass != 1):
        return wire[pos:end]
    out = bytearray()
    for kind in kinds:
        if pos == end:
            break
        pos = _FIELD_READERS[kind](wire, pos, end, out)
    if pos != end:
        raise _Stop(Res.OUT_OF_BOUNDS)
    return bytes(out)


def _take(wire: bytes, pos: int, end: int, size: int, out: bytearray) -> int:
    if end - pos < size:
        raise _Stop(Res.PARSE_ERROR)
    out += wire[pos : pos + size]
    return pos + size


def _fixed(size: int):
    def read(wire: bytes, pos: int, end: int, out: bytearray) -> int:
        return _take(wire, pos, end, size, out)
    return read


def _rest(wire: bytes, pos: int, end: int, out: bytearray) -> int:
    out += wire[pos:end]
    return end


def _name(wire: bytes, pos: int, end: int, out: bytearray) -> int:
    name, after = unpack_name(wire, pos)
    if after > end:
        raise _Stop(Res.OUT_OF_BOUNDS)
    out += name
    return after


def _counted(wire: bytes, pos: int, end: int, out: bytearray) -> int:
    return _take(wire, pos, end, 1 + wire[pos], out)


def _counted_strings(wire: bytes, pos: int, end: int, out: bytearray) -> int:
    while pos < end:
        pos = _counted(wire, pos, end, out)
    return pos


def _ipv6_prefix(wire: bytes, pos: int, end: int, out: bytearray) -> int:
    prefix = wire[pos]
    if prefix > 128:
        raise _Stop(Res.OUT_OF_BOUNDS)
    return _take(wire, pos, end, 1 + (128 - prefix + 7) // 8, out)


def _bitmap(wire: bytes, pos: int, end: int, out: bytearray) -> int:
    while end - pos >= 2:
        length = wire[pos + 1]
        if not 1 <= length <= 32 or length > end - pos - 2:
            raise _Stop(Res.OUT_OF_BOUNDS)
        pos = _take(wire, pos, end, 2 + length, out)
    return pos


def _svcparams(wire: bytes, pos: int, end: int, out: bytearray) -> int:
    while pos < end:
        if end - pos < 4:
            raise _Stop(Res.PARSE_ERROR)
        key, length = _TYPE_CLASS.unpack_from(wire, pos)
        if 4 + length > end - pos:
            raise _Stop(Res.OUT_OF_BOUNDS)
        if not _svcparam_fits(key, wire[pos + 4 : pos + 4 + length]):
            raise _Stop(Res.PARSE_ERROR)
        pos = _take(wire, pos, end, 4 + length, out)
    return pos


def _svcparam_fits(key: int, value: bytes) -> bool:
    """wdns's svcparam_key_validate: lengths only (key order is not checked)."""
    if key == 1:  # alpn: one or more length-prefixed ids, filling the value exactly
        pos = 0
        while pos < len(value):
            pos += 1 + value[pos]
        return bool(value) and pos == len(value)
    sizes = {0: 2, 4: 4, 6: 16}  # mandatory, ipv4hint, ipv6hint: whole items
    if key in sizes:
        return len(value) % sizes[key] == 0
    if key == 2:  # no-default-alpn
        return not value
    if key == 3:  # port
        return len(value) == 2
    return key != 65535


_FIELD_READERS = {
    NAME: _name, BYTES: _rest, B64: _rest, BYTES_STR: _rest, EDNS_OPTS: _rest,
    INT8: _fixed(1), INT16: _fixed(2), RRTYPE: _fixed(2), INT32: _fixed(4), IPV4: _fixed(4),
    IPV6: _fixed(16), EUI48: _fixed(6), EUI64: _fixed(8),
    STRING: _counted, SALT: _counted, HASH: _counted, REPSTRING: _counted_strings,
    IPV6PREFIX: _ipv6_prefix, BITMAP: _bitmap, SVCPARAMS: _svcparams,
}
