"""NMSG files as `nmsgtool -V base -T dnsqr -w FILE` writes them.

A file is a run of containers. Each starts with a 10-byte header: the
magic `NMSG`, a flags octet (0x01 zlib, 0x02 fragment), the version (2)
and the big-endian length of what follows. What follows is a serialized
`Nmsg` message: its payloads (`NmsgPayload`: vendor 1 = base, type 9 =
dnsqr, the record's time, the serialized `DnsQR`, optional source,
operator and group ids), then one CRC32C per payload. Compressed, the
body is the uncompressed length (4 bytes, big-endian) and a zlib stream.
An oversized container is split into `NmsgFragment`s; nmsgtool writes them
only for a payload over its 1 MiB container size, which one DNS record
never is, so this writer never fragments, but the reader reassembles.

Facts from nmsg 1.3.3 (nmsg.proto, container.c, output_nmsg.c, zbuf.c):
containers of NMSG_WBUFSZ_MAX (1 MiB) for files, the "full" rule of
`nmsg_container_add`, CRCs stored as htonl(crc32c(payload)), no sequence
numbers in files, zlib at its default level (here: libdeflate, see
COMPRESSION_LEVEL).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import deflate
import google_crc32c

from sensor.records.record import Envelope, check, check_compiled, record_time
from sensor.spool import _nmsgpack, dnsqr
from sensor.spool.dnsqr import DecodeError, fields, tag, varint

MAGIC = b"NMSG"
VERSION = 2
FLAG_ZLIB = 0x01
FLAG_FRAGMENT = 0x02
HEADER = struct.Struct(">4sBBI")  # magic, flags, version, length
CONTAINER_SIZE = 1 << 20  # NMSG_WBUFSZ_MAX: what nmsgtool uses for files
VENDOR_BASE = 1
MSGTYPE_DNSQR = 9
EXT = "nmsg"

# Reading hostile files: no container (or its inflated body) may claim more.
MAX_CONTAINER = 16 << 20
MAX_INFLATED = 64 << 20
MAX_FRAGMENTS = 1024
# ... nor hold more payloads: nmsgtool's 1 MiB containers hold about 35,000
# of the smallest dnsqr payloads; a container of millions is filler.
MAX_PAYLOADS = 1 << 16
MAX_OTHER_FIELDS = 1024  # fields a container's body may hold besides payloads and CRCs (its own: sequence, id)
MAX_OTHER_PAYLOADS = 1024  # payloads of other types a file may hold (read shows base:dnsqr only)
MAX_PENDING_PIECES = 4 * MAX_FRAGMENTS  # fragments waiting for the rest of their containers
INFLATE_STEP = 1 << 20  # a compressed body is inflated this much at a time

# Containers are deflated by libdeflate (the `deflate` package), whose
# output is an ordinary zlib stream any zlib inflates; libdeflate
# compresses whole buffers, which is what a container is (the CBOR
# format's gzip members too: spool.Deflater). The level is the setting
# nmsg_compress_level. Its default, 6, keeps files at the size of
# `nmsgtool -z`'s (0.998-1.0003x on three kinds of traffic,
# bench/compression_bench.py) for 1.8-2.0 CPU-s of compression per
# million packets, against zlib 6's (nmsgtool's) 6.4-6.9; 7 is never
# larger (0.992-0.995x) but takes 3.1-3.3, which puts the whole sensor at
# the reference's CPU; 2 was 1.04-1.08x. zlib-ng cannot be bundled (its
# strings are zlib's: a lintian embedded-library error); ISA-L (59.2
# bytes a packet at its level 2 on the benchmark) compresses less.
COMPRESSION_LEVEL = 6

_ZLIB_LENGTH = struct.Struct(">I")
_FIXED32 = struct.Struct("<I")
_PAYLOAD_TAG = tag(1, 2)  # Nmsg.payloads
_CRC_TAG = tag(2, 0)  # Nmsg.payload_crcs
_PAYLOAD_HEAD = tag(1, 0) + varint(VENDOR_BASE) + tag(2, 0) + varint(MSGTYPE_DNSQR) + tag(3, 0)
_NSEC_TAG = tag(4, 5)
_DATA_TAG = tag(5, 2)
_ID_TAGS = (tag(7, 0), tag(8, 0), tag(9, 0))  # source, operator, group


check_compiled(_nmsgpack)  # the C packer restates field numbers, the two types and shapes it encodes
_PACK, _FULL, _ODD = _nmsgpack.pack, _nmsgpack.FULL, _nmsgpack.ODD


class NmsgError(ValueError):
    """A file, container or payload that is not well-formed NMSG."""


def payload_trailer(source: int | None, operator: int | None, group: int | None) -> bytes:
    """The id fields every payload of a file ends with (the same for all)."""
    return b"".join(t + varint(v) for t, v in zip(_ID_TAGS, (source, operator, group), strict=True) if v is not None)


def wrap(message: bytes, sec: int, nsec: int, trailer: bytes) -> bytes:
    """One NmsgPayload around a serialized DnsQR message."""
    return b"".join(
        (_PAYLOAD_HEAD, varint(sec), _NSEC_TAG, _FIXED32.pack(nsec), _DATA_TAG, varint(len(message)), message,
         trailer)
    )


def payload_crc(message: bytes) -> int:
    """nmsg's payload CRC: CRC32C of the DnsQR bytes, stored byte-swapped (htonl)."""
    return int.from_bytes(google_crc32c.value(message).to_bytes(4, "little"), "big")


class Container:
    """Payloads gathered until the container is full, as nmsgtool fills it.

    The serialized payload entries and CRC entries accumulate in two byte
    arrays, not lists of small bytes objects: a full container is then
    about 1 MiB in memory, not that plus thousands of object headers and
    a joined copy (max RSS on the benchmark: see bench/RESULTS.md).
    """

    def __init__(self, size: int = CONTAINER_SIZE) -> None:
        self.size = size
        self.entries = bytearray()
        self.crcs = bytearray()
        self.count = 0
        self.estimate = HEADER.size  # nmsg_container's running size estimate

    def __len__(self) -> int:
        return self.count

    def fits(self, payload_len: int) -> bool:
        """False when this payload must open the next container."""
        return not self.count or self.estimate + payload_len + 32 < self.size

    def add_message(self, message: bytes, sec: int, nsec: int, trailer: bytes) -> bool:
        """Wrap a DnsQR message as a payload and add it with its CRC; False
        (nothing added) when it must open the next container.

        The Python statement of what `_nmsgpack.pack` does for pairs and
        unanswered queries (tests hold the two together), and the path of
        every other record: those are few, so this is written to be read,
        not for speed.
        """
        payload = wrap(message, sec, nsec, trailer)
        if not self.fits(len(payload)):
            return False
        self.add(payload, payload_crc(message))
        return True

    def add_records(self, records: list[dict], start: int, trailer: bytes) -> tuple[int, bool]:
        """Add records[start:] until they end or the container is full;
        (index of the first record not added, whether the container is full).

        Pairs and unanswered queries, nearly every record, are packed in C
        (`_nmsgpack`: the same bytes as `add_message(dnsqr.encode(record),
        ...)`); any other record goes that way here.
        """
        end = len(records)
        while start < end:
            start, self.count, self.estimate, status = _PACK(
                records, start, self.entries, self.crcs, trailer, self.count, self.estimate, self.size
            )
            if status == _FULL:
                return start, True
            if status == _ODD:
                record = records[start]
                if not self.add_message(dnsqr.encode(record), *record_time(record), trailer):
                    return start, True
                start += 1
        return start, False

    def add(self, payload: bytes, crc: int) -> None:
        n = len(payload)
        self.count += 1
        self.entries += _PAYLOAD_TAG + varint(n) + payload
        self.crcs += _CRC_TAG + varint(crc)
        self.estimate += n + 2 + (n >= 1 << 7) + (n >= 1 << 14) + (n >= 1 << 21) + 6

    def serialize(self, compress: bool, level: int = COMPRESSION_LEVEL) -> bytes:
        """Header and body, ready to be appended to a file; `level` is libdeflate's (1-12)."""
        body = self.entries + self.crcs
        if compress:
            deflated = deflate.zlib_compress(body, level)
            return HEADER.pack(MAGIC, FLAG_ZLIB, VERSION, 4 + len(deflated)) + _ZLIB_LENGTH.pack(len(body)) + deflated
        return HEADER.pack(MAGIC, 0, VERSION, len(body)) + body


# ------------------------------------------------------------------ reading
class Payload:
    """One NmsgPayload as read from a file, and where it was (for errors)."""

    __slots__ = ("data", "group", "msgtype", "nsec", "operator", "place", "sec", "source", "vid")

    def __init__(self, place: tuple[str, int, int] = ("", 0, 0)) -> None:
        self.vid = self.msgtype = self.sec = self.nsec = 0
        self.data = b""
        self.source = self.operator = self.group = None
        self.place = place  # (its container, its number there, its byte in the container's body)

    def envelope(self) -> Envelope:
        """Time, ids and size, as nmsgtool's output shows them."""
        return Envelope((self.sec, self.nsec), self.source, self.operator, self.group, len(self.data))

    def where(self) -> str:
        container, number, offset = self.place
        return f"{container}, payload {number} at byte {offset} of its body"


def is_nmsg(first_bytes: bytes) -> bool:
    return first_bytes[:4] == MAGIC


def containers(stream, allow_cut: bool = True) -> Iterator[tuple[int, bytes, int]]:
    """(flags, body, end offset) of each whole container.

    A header that is not NMSG raises NmsgError. A final container cut short
    (a crash while writing) ends the iteration quietly when `allow_cut`,
    so recovery keeps everything before it (`end offset` tells how far the
    file is whole); otherwise it raises NmsgError too.
    """
    offset = 0
    number = 0
    while True:
        head = stream.read(HEADER.size)
        if not head:
            return
        number += 1
        where = f"container {number} at byte {offset}"
        if len(head) < HEADER.size:
            if allow_cut:
                return
            raise NmsgError(f"cut short: {where} ends inside its header")
        magic, flags, version, length = HEADER.unpack(head)
        if magic != MAGIC:
            raise NmsgError(f"{where}: no NMSG container starts there (magic {magic!r})")
        if version != VERSION:
            raise NmsgError(f"{where} has version {version}, not {VERSION}")
        if length > MAX_CONTAINER:
            raise NmsgError(f"{where} declares {length} bytes (limit {MAX_CONTAINER})")
        body = stream.read(length)
        if len(body) < length:
            if allow_cut:
                return
            raise NmsgError(f"cut short: {where} declares {length} bytes and has {len(body)}")
        offset += HEADER.size + length
        yield flags, body, offset


def inflate(body: bytes) -> bytes:
    """A zlib container body (4-byte length, then the stream), bounded."""
    reader = _Body(FLAG_ZLIB, body, "a compressed container")
    while reader.more():
        pass
    reader.check_end()
    return bytes(reader.buf)


class _Short(Exception):
    """The bytes at hand end inside a field."""


def _varint_at(buf, pos: int) -> tuple[int, int]:
    """(value, next position); _Short at the end of `buf`, DecodeError past 10 bytes."""
    result = shift = 0
    while shift < 70:
        if pos >= len(buf):
            raise _Short
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise DecodeError("a varint of more than 10 bytes")


class _Body:
    """A container's body, read field by field; a zlib body is inflated
    INFLATE_STEP at a time as the fields are read, so a body that
    inflates to MAX_INFLATED bytes of nothing costs one step before its
    first bad payload is refused. Errors name `where` and the body's byte.
    """

    def __init__(self, flags: int, body: bytes, where: str) -> None:
        self.where = where
        self.buf: bytes | bytearray = body
        self.base = 0  # offset of buf[0] in the (inflated) body
        self.pos = 0
        self.inflater = None
        if flags & FLAG_ZLIB:
            if len(body) < 4:
                raise NmsgError(f"{where}: compressed body shorter than its length prefix")
            (self.declared,) = _ZLIB_LENGTH.unpack_from(body)
            if self.declared > MAX_INFLATED:
                raise NmsgError(f"{where}: compressed body declares {self.declared} bytes (limit {MAX_INFLATED})")
            self.inflater = zlib.decompressobj()
            self.input = body[4:]
            self.buf = bytearray()
            self.inflated = 0

    def more(self) -> bool:
        """Inflate another step; False when the whole body is at hand."""
        if self.inflater is None or self.inflater.eof:
            return False
        chunk, self.input = self.input or self.inflater.unconsumed_tail, b""
        try:
            data = self.inflater.decompress(chunk, INFLATE_STEP)
        except zlib.error as exc:
            raise NmsgError(f"{self.where}: compressed body damaged after {self.inflated} inflated bytes ({exc})"
                            ) from None
        self.inflated += len(data)
        if self.inflated > self.declared:
            raise NmsgError(f"{self.where}: compressed body inflates to more than the declared {self.declared} bytes")
        if not data and not self.inflater.eof:
            raise NmsgError(f"{self.where}: compressed body ends after {self.inflated} of its declared "
                            f"{self.declared} bytes")
        if self.pos > INFLATE_STEP:  # let go of what was read
            del self.buf[: self.pos]
            self.base += self.pos
            self.pos = 0
        self.buf += data
        return True

    def check_end(self) -> None:
        if self.inflater is not None and self.inflated != self.declared:
            raise NmsgError(f"{self.where}: compressed body inflates to {self.inflated} bytes, not the declared "
                            f"{self.declared}")

    def fields(self) -> Iterator[tuple[int, int, object, int]]:
        """(field, wire type, value, byte in the body) of each field."""
        while True:
            if self.pos >= len(self.buf) and not self.more():
                self.check_end()
                return
            start = self.pos
            try:
                field, wire, value, self.pos = self._field_at(start)
            except _Short:
                if not self.more():
                    raise NmsgError(f"{self.where}: the body ends inside its field at byte {self.base + start}"
                                    ) from None
                continue
            except DecodeError as exc:
                raise NmsgError(f"{self.where}: damaged at byte {self.base + start} of the body ({exc})") from None
            yield field, wire, value, self.base + start

    def _field_at(self, pos: int) -> tuple[int, int, object, int]:
        buf = self.buf
        key, pos = _varint_at(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise DecodeError("field number 0")
        if wire == 0:
            value, pos = _varint_at(buf, pos)
            return field, wire, value, pos
        if wire == 2:
            length, pos = _varint_at(buf, pos)
            end = pos + length
            if self.base + end > (self.declared if self.inflater is not None else len(buf)):
                raise DecodeError(f"field {field} declares {length} bytes past the end")
            if end > len(buf):
                raise _Short
            return field, wire, bytes(buf[pos:end]), end
        size = {5: 4, 1: 8}.get(wire)
        if size is None:
            raise DecodeError(f"field {field} has wire type {wire}")
        if pos + size > len(buf):
            raise _Short
        return field, wire, bytes(buf[pos : pos + size]), pos + size


class Defragmenter:
    """Joins NmsgFragments back into the container they were cut from,
    holding at most MAX_PENDING_PIECES pieces and MAX_CONTAINER bytes."""

    def __init__(self) -> None:
        self.pending: dict[int, dict[int, bytes]] = {}
        self.first: dict[int, str] = {}  # where each pending container's first piece came
        self.lasts: dict[int, int] = {}  # the last piece's number each pending container's first piece gave
        self.pieces = 0
        self.held = 0

    def add(self, body: bytes, where: str = "a fragment") -> bytes | None:
        """The whole serialized container once its last piece is in."""
        try:
            values = _values(body, _FRAGMENT_WIRES)
        except DecodeError as exc:
            raise NmsgError(f"{where}: damaged fragment ({exc})") from None
        try:
            ident, current, last, piece = values[1], values[2], values[3], values[4]
        except KeyError:
            raise NmsgError(f"{where}: fragment without id, position or data") from None
        if last >= MAX_FRAGMENTS or current > last:
            raise NmsgError(f"{where}: fragment {current} of {last} is out of bounds")
        if self.lasts.setdefault(ident, last) != last:  # else the join looked for a piece no fragment had
            raise NmsgError(f"{where}: fragment {current} of {last} of a container whose first fragment "
                            f"said {self.lasts[ident]}")
        pieces = self.pending.setdefault(ident, {})
        self.first.setdefault(ident, where)
        old = pieces.get(current)
        self.pieces += old is None
        self.held += len(piece) - len(old or b"")
        if self.pieces > MAX_PENDING_PIECES or self.held > MAX_CONTAINER:
            raise NmsgError(f"{where}: more than {MAX_PENDING_PIECES} fragments or {MAX_CONTAINER} bytes wait for "
                            "the rest of their containers")
        pieces[current] = bytes(piece)
        if len(pieces) <= last:
            return None
        del self.pending[ident], self.first[ident], self.lasts[ident]
        self.pieces -= len(pieces)
        self.held -= sum(map(len, pieces.values()))
        return b"".join(pieces[i] for i in range(last + 1))

    def check_complete(self) -> None:
        """At the end of the file: fragments whose containers never completed are an error."""
        if self.pending:
            first = next(iter(self.first.values()))
            raise NmsgError(f"{len(self.pending)} fragmented containers never completed "
                            f"({self.pieces} fragments; the first from {first})")


_FRAGMENT_WIRES = {1: 0, 2: 0, 3: 0, 4: 2}  # NmsgFragment's fields (id, current, last, fragment) and their wire types
_PAYLOAD_WIRES = {1: 0, 2: 0, 3: 0, 4: 5, 5: 2, 7: 0, 8: 0, 9: 0}  # NmsgPayload's fields and their wire types


def _values(data: bytes, wires: dict[int, int]) -> dict[int, object]:
    """A small message's fields by number (the last of each); DecodeError for one whose wire
    type is not the one `wires` gives it."""
    values = {}
    for field, wire, value in fields(data):
        expected = wires.get(field)
        if expected is not None and wire != expected:
            raise DecodeError(f"field {field} has wire type {wire}")
        values[field] = value
    return values


def _payload(data: bytes, place: tuple[str, int, int]) -> Payload:
    """An NmsgPayload; NmsgError for one without its required vendor, type
    and time (an empty entry is filler, not a payload)."""
    payload = Payload(place)
    try:
        values = _values(data, _PAYLOAD_WIRES)
    except DecodeError as exc:
        raise NmsgError(f"{payload.where()}: damaged ({exc})") from None
    try:
        payload.vid, payload.msgtype, sec, nsec = values[1], values[2], values[3], values[4]
    except KeyError:
        raise NmsgError(f"{payload.where()}: not an NmsgPayload (no vendor, type or time)") from None
    payload.sec = sec - (1 << 64) if sec >= 1 << 63 else sec
    payload.nsec = _FIXED32.unpack(nsec)[0]
    payload.data = bytes(values.get(5, b""))
    payload.source, payload.operator, payload.group = values.get(7), values.get(8), values.get(9)
    return payload


class Reader:
    """The containers of an NMSG stream, read within bounds: fragments
    joined, bodies inflated a step at a time, payloads refused at the
    first one that is not a payload."""

    def __init__(self, stream, allow_cut: bool = False) -> None:
        self.stream = stream
        self.allow_cut = allow_cut
        self.defragmenter = Defragmenter()
        self.others = 0  # payloads of other types than base:dnsqr so far

    def containers(self) -> Iterator[tuple[int, list[Payload]]]:
        """(end offset, CRC-checked payloads) of each whole container.

        At the end, fragments left waiting are an error unless `allow_cut`
        (recovery keeps only what comes before them: `usable_length`)."""
        for number, (flags, body, end) in enumerate(containers(self.stream, self.allow_cut), 1):
            where = f"container {number} at byte {end - HEADER.size - len(body)}"
            if flags & FLAG_FRAGMENT:
                body = self.defragmenter.add(body, where)
                if body is None:
                    continue
                where += " (joined from its fragments)"
            yield end, self._payloads(_Body(flags, body, where))
        if not self.allow_cut:
            self.defragmenter.check_complete()

    def _payloads(self, body: _Body) -> list[Payload]:
        """The payloads of one container, each refused at once if it is no
        NmsgPayload, then checked against its CRC32C when the container
        carries them (nmsgtool's files do; they follow the payloads, so a
        container's payloads are held until then: at most MAX_PAYLOADS)."""
        entries: list[Payload] = []
        crcs: list[int] = []
        others = 0
        for field, wire, value, offset in body.fields():
            if field not in (1, 2):
                others += 1
                if others > MAX_OTHER_FIELDS:  # filler: 64 MiB of it cost minutes, field by field
                    raise NmsgError(f"{body.where}: more than {MAX_OTHER_FIELDS} fields that are neither "
                                    f"payloads nor CRCs (byte {offset} of its body)")
            elif field == 1:
                if wire != 2 or len(entries) == MAX_PAYLOADS:
                    raise NmsgError(f"{body.where}, payload {len(entries) + 1} at byte {offset} of its body: "
                                    + ("not a payload" if wire != 2 else f"more than {MAX_PAYLOADS} in a container"))
                entry = _payload(value, (body.where, len(entries) + 1, offset))
                self._count_other(entry)
                entries.append(entry)
            elif field == 2:
                if wire != 0 or len(crcs) == MAX_PAYLOADS:
                    raise NmsgError(f"{body.where}: byte {offset} of its body: a CRC field that is not one")
                crcs.append(value)
        if crcs and len(crcs) != len(entries):
            raise NmsgError(f"{body.where}: {len(entries)} payloads but {len(crcs)} CRCs")
        for entry, crc in zip(entries, crcs, strict=False):
            if payload_crc(entry.data) != crc:
                raise NmsgError(f"{entry.where()}: fails its CRC32C")
        return entries

    def _count_other(self, payload: Payload) -> None:
        """Payloads of other types are skipped, up to MAX_OTHER_PAYLOADS in a
        file: more is not a dnsqr file but filler, refused before it is
        crawled through."""
        if payload.vid != VENDOR_BASE or payload.msgtype != MSGTYPE_DNSQR:
            self.others += 1
            if self.others > MAX_OTHER_PAYLOADS:
                raise NmsgError(f"{payload.where()}: more than {MAX_OTHER_PAYLOADS} payloads that are not "
                                "base:dnsqr (this reader shows only those)")


def payloads(stream, allow_cut: bool = False) -> Iterator[Payload]:
    """Every payload in an NMSG stream, in order; NmsgError on damage."""
    for _, entries in Reader(stream, allow_cut).containers():
        yield from entries


def records(stream, allow_cut: bool = False) -> Iterator[tuple[dict, Envelope]]:
    """(record, envelope) for every base:dnsqr payload (others are skipped,
    within bounds: `Reader`).

    Each record is checked (`record.check`); NmsgError names the first bad
    payload: its container, its number and its byte."""
    number = 0
    for payload in payloads(stream, allow_cut):
        if payload.vid != VENDOR_BASE or payload.msgtype != MSGTYPE_DNSQR:
            continue
        number += 1
        try:
            record = check(dnsqr.decode(payload.data))
        except ValueError as exc:  # DecodeError included
            raise NmsgError(f"{payload.where()}: record {number}: undecodable dnsqr payload ({exc})") from None
        yield record, payload.envelope()


def usable_length(path: str) -> tuple[int, str]:
    """How many bytes at the start of the file are whole containers whose
    every payload passes its CRC and decodes, with no fragment left
    waiting: what recovery keeps of a crashed or damaged file; and why
    what follows is not kept ("" when the file ends there)."""
    usable = 0
    with open(path, "rb") as stream:
        reader = Reader(stream, allow_cut=True)
        try:
            for end, entries in reader.containers():
                for payload in entries:
                    try:
                        check(dnsqr.decode(payload.data))
                    except ValueError as exc:
                        raise NmsgError(f"{payload.where()}: undecodable dnsqr payload ({exc})") from None
                if not reader.defragmenter.pending:
                    usable = end
        except NmsgError as exc:  # the damage starts in this container
            return usable, str(exc)
    return usable, ""


def whole_length(path: str) -> int:
    """How many bytes at the start of the file are whole containers."""
    whole = 0
    with open(path, "rb") as stream:
        for _, _, end in containers(stream, allow_cut=True):
            whole = end
    return whole
