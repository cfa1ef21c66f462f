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

from . import _nmsgpack, dnsqr
from .dnsqr import DecodeError, fields, tag, varint
from .record import Envelope, RecordType, check, record_time

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

# Containers are deflated by libdeflate (the `deflate` package), whose
# output is an ordinary zlib stream any zlib inflates, at its level 2:
# on the million-packet benchmark's containers 1.01 CPU-s per million
# packets for 54.3 bytes a packet, against zlib's 2.87 and 54.6 at level 4
# and 7.33 and 52.2 at level 6 (nmsgtool's default). zlib-ng (1.43 / 55.1
# at its level 3) cannot be bundled (its strings are zlib's: a lintian
# embedded-library error); ISA-L (0.37 / 59.2 at level 2) misses the
# 58-byte target. libdeflate compresses whole buffers, which is what a
# container is (the CBOR format's gzip members too: spool.Deflater).
COMPRESSION_LEVEL = 2

_ZLIB_LENGTH = struct.Struct(">I")
_FIXED32 = struct.Struct("<I")
_PAYLOAD_TAG = tag(1, 2)  # Nmsg.payloads
_CRC_TAG = tag(2, 0)  # Nmsg.payload_crcs
_PAYLOAD_HEAD = tag(1, 0) + varint(VENDOR_BASE) + tag(2, 0) + varint(MSGTYPE_DNSQR) + tag(3, 0)
_NSEC_TAG = tag(4, 5)
_DATA_TAG = tag(5, 2)
_ID_TAGS = (tag(7, 0), tag(8, 0), tag(9, 0))  # source, operator, group


# The C packer knows the two record types it encodes by number.
if (_nmsgpack.TYPE_UDP_QUERY_RESPONSE, _nmsgpack.TYPE_UDP_UNANSWERED_QUERY) != (
    RecordType.UDP_QUERY_RESPONSE, RecordType.UDP_UNANSWERED_QUERY
):
    raise ImportError("sensor._nmsgpack was built for other record type numbers: rebuild it")
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
    a joined copy (max RSS on the benchmark: see README, "Benchmark").
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
        every other record, which are few: no longer flattened for speed.
        """
        payload = wrap(message, sec, nsec, trailer)
        if not self.fits(len(payload)):
            return False
        self.add(payload, payload_crc(message))
        return True

    def add_records(self, records: list[dict], start: int, trailer: bytes) -> tuple[int, bool]:
        """Add records[start:] until they end or the container is full;
        (index of the first record not added, whether the container is full).

        Pairs and unanswered queries are packed in C (`_nmsgpack`: the same
        bytes as `add_message(dnsqr.encode(record), ...)`, 0.5 against 3.5 µs
        a record, README "Benchmark"); any other record goes that way here.
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

    def serialize(self, compress: bool) -> bytes:
        """Header and body, ready to be appended to a file."""
        body = self.entries + self.crcs
        if compress:
            deflated = deflate.zlib_compress(body, COMPRESSION_LEVEL)
            return HEADER.pack(MAGIC, FLAG_ZLIB, VERSION, 4 + len(deflated)) + _ZLIB_LENGTH.pack(len(body)) + deflated
        return HEADER.pack(MAGIC, 0, VERSION, len(body)) + body


# ------------------------------------------------------------------ reading
class Payload:
    """One NmsgPayload as read from a file."""

    __slots__ = ("data", "group", "msgtype", "nsec", "operator", "sec", "source", "vid")

    def __init__(self) -> None:
        self.vid = self.msgtype = self.sec = self.nsec = 0
        self.data = b""
        self.source = self.operator = self.group = None

    def envelope(self) -> Envelope:
        """Time, ids and size, as nmsgtool's output shows them."""
        return Envelope((self.sec, self.nsec), self.source, self.operator, self.group, len(self.data))


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
    while True:
        head = stream.read(HEADER.size)
        if not head:
            return
        if len(head) < HEADER.size:
            if allow_cut:
                return
            raise NmsgError(f"cut short at byte {offset}, inside a container header")
        magic, flags, version, length = HEADER.unpack(head)
        if magic != MAGIC:
            raise NmsgError(f"no NMSG container at byte {offset}")
        if version != VERSION:
            raise NmsgError(f"container at byte {offset} has version {version}, not {VERSION}")
        if length > MAX_CONTAINER:
            raise NmsgError(f"container at byte {offset} declares {length} bytes (limit {MAX_CONTAINER})")
        body = stream.read(length)
        if len(body) < length:
            if allow_cut:
                return
            raise NmsgError(f"cut short at byte {offset}: a container of {length} bytes has {len(body)}")
        offset += HEADER.size + length
        yield flags, body, offset


def inflate(body: bytes) -> bytes:
    """A zlib container body (4-byte length, then the stream), bounded."""
    if len(body) < 4:
        raise NmsgError("compressed container shorter than its length prefix")
    (declared,) = _ZLIB_LENGTH.unpack_from(body)
    if declared > MAX_INFLATED:
        raise NmsgError(f"compressed container declares {declared} bytes (limit {MAX_INFLATED})")
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(body[4:], declared + 1)
    except zlib.error as exc:
        raise NmsgError(f"compressed container is damaged ({exc})") from None
    if len(data) != declared or not inflater.eof:
        raise NmsgError(f"compressed container inflates to {len(data)} bytes, not the declared {declared}")
    return data


class Defragmenter:
    """Joins NmsgFragments back into the container they were cut from."""

    def __init__(self) -> None:
        self.pending: dict[int, dict[int, bytes]] = {}

    def add(self, body: bytes) -> bytes | None:
        """The whole serialized container once its last piece is in."""
        values = {field: value for field, _, value in fields(body)}
        try:
            ident, current, last, piece = values[1], values[2], values[3], values[4]
        except KeyError:
            raise NmsgError("fragment without id, position or data") from None
        if last >= MAX_FRAGMENTS or current > last:
            raise NmsgError(f"fragment {current} of {last} is out of bounds")
        pieces = self.pending.setdefault(ident, {})
        pieces[current] = bytes(piece)
        if len(pieces) <= last:
            return None
        del self.pending[ident]
        return b"".join(pieces[i] for i in range(last + 1))


def payloads(stream, allow_cut: bool = False) -> Iterator[Payload]:
    """Every payload in an NMSG stream, in order; NmsgError on damage."""
    defragmenter = Defragmenter()
    for flags, body, _ in containers(stream, allow_cut):
        yield from container_payloads(flags, body, defragmenter)


def container_payloads(flags: int, body: bytes, defragmenter: Defragmenter) -> list[Payload]:
    """The payloads of one container, each checked against its CRC32C
    when the container carries them (nmsgtool's files do)."""
    if flags & FLAG_FRAGMENT:
        body = defragmenter.add(body)
        if body is None:
            return []
    if flags & FLAG_ZLIB:
        body = inflate(body)
    entries, crcs = [], []
    try:
        for field, _, value in fields(body):
            if field == 1:
                entries.append(_payload(value))
            elif field == 2:
                crcs.append(value)
    except DecodeError as exc:
        raise NmsgError(str(exc)) from None
    if crcs and len(crcs) != len(entries):
        raise NmsgError(f"{len(entries)} payloads but {len(crcs)} CRCs in a container")
    for index, crc in enumerate(crcs):
        if payload_crc(entries[index].data) != crc:
            raise NmsgError(f"payload {index + 1} of a container fails its CRC32C")
    return entries


def _payload(data: bytes) -> Payload:
    payload = Payload()
    for field, wire, value in fields(data):
        if field == 1:
            payload.vid = value
        elif field == 2:
            payload.msgtype = value
        elif field == 3:
            payload.sec = value - (1 << 64) if value >= 1 << 63 else value
        elif field == 4 and wire == 5:
            payload.nsec = _FIXED32.unpack(value)[0]
        elif field == 5:
            payload.data = bytes(value)
        elif field == 7:
            payload.source = value
        elif field == 8:
            payload.operator = value
        elif field == 9:
            payload.group = value
    return payload


def records(stream, allow_cut: bool = False) -> Iterator[tuple[dict, Envelope]]:
    """(record, envelope) for every base:dnsqr payload; others are skipped.

    Each record is checked (`record.check`); NmsgError says which payload
    is the first bad one."""
    number = 0
    for payload in payloads(stream, allow_cut):
        if payload.vid != VENDOR_BASE or payload.msgtype != MSGTYPE_DNSQR:
            continue
        number += 1
        try:
            record = check(dnsqr.decode(payload.data))
        except ValueError as exc:  # DecodeError included
            raise NmsgError(f"record {number}: undecodable dnsqr payload ({exc})") from None
        yield record, payload.envelope()


def usable_length(path: str) -> int:
    """How many bytes at the start of the file are whole containers whose
    every payload passes its CRC and decodes: what recovery keeps of a
    crashed or damaged file."""
    usable = 0
    defragmenter = Defragmenter()
    with open(path, "rb") as stream:
        try:
            for flags, body, end in containers(stream, allow_cut=True):
                for payload in container_payloads(flags, body, defragmenter):
                    check(dnsqr.decode(payload.data))
                usable = end
        except ValueError:  # NmsgError, DecodeError: the damage starts in this container
            pass
    return usable


def whole_length(path: str) -> int:
    """How many bytes at the start of the file are whole containers."""
    whole = 0
    with open(path, "rb") as stream:
        for _, _, end in containers(stream, allow_cut=True):
            whole = end
    return whole
