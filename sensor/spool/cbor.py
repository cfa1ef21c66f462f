"""The spool file format: a gzip stream of CBOR items.

The first item is a header map (format name, version, host, channel, start
time); each following item is one record, a map keyed by the field numbers
in `record.Field`. gzip because every operator's machine can open it
(`zcat`) and because a stream cut short by a crash still inflates up to
where it stops, so a reader recovers every record before the cut. The
stream is a run of gzip members (see `Deflater`), which gzip readers read
as one stream (RFC 1952, 2.2: a file is a series of members).

Encoding: cbor2 handles any record, but its encoder costs about 5 µs per
record, most of the sensor's budget per packet. The dominant shape (a UDP
query and its response, one datagram each) is therefore written in C
(`_cborpack.c`): the same CBOR data model, with fixed-width integer heads
(valid CBOR that every decoder reads; only "preferred serialization" would
pick shorter heads). Decoding always uses cbor2.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator

import cbor2
import deflate

from sensor.records.record import FIELD_NAMES, MAX_LIST, check, check_compiled
from sensor.spool import _cborpack

check_compiled(_cborpack)  # the C encoder restates field numbers, the pair's type and shape
_encode = _cborpack.encode

SPOOL_FORMAT = "sie-dnsqr"
SPOOL_VERSION = 1
EXT = "cbor.gz"
# Keys of the header item that opens every spool file.
HEADER_FORMAT = "format"
HEADER_VERSION = "version"
HEADER_HOST = "host"
HEADER_CHANNEL = "channel"
HEADER_START = "start"

GZIP_WBITS = 31  # zlib's value for a gzip wrapper
COMPRESSION_LEVEL = 2  # libdeflate's level (see Deflater)
MEMBER_SIZE = 1 << 20  # CBOR bytes a gzip member holds, unless a sync ends it early
READ_CHUNK = 1 << 16
INFLATE_STEP = 1 << 18  # inflate at most this much per step (bombs)
MAX_ITEM = 16 << 20  # no record is larger: 64 fragments of 64 KiB each way
MAX_PAIRS = len(FIELD_NAMES)  # a record maps each field at most once; the header has fewer keys


class SpoolError(ValueError):
    """A spool file that is not in this format."""


def encode_header(host: str, channel: str, start_sec: int, start_usec: int) -> bytes:
    return cbor2.dumps(
        {
            HEADER_FORMAT: SPOOL_FORMAT,
            HEADER_VERSION: SPOOL_VERSION,
            HEADER_HOST: host,
            HEADER_CHANNEL: channel,
            HEADER_START: [start_sec, start_usec],
        }
    )


def encode_records(records: list[dict]) -> bytes:
    """Records as CBOR maps, one after another: the common pair in C
    (`_cborpack`, bench/RESULTS.md), every other record by cbor2."""
    return _encode(records, _general)


def encode_record(record: dict) -> bytes:
    """One record as a CBOR map."""
    return _encode([record], _general)


def _general(record: dict) -> bytes:
    return cbor2.dumps({int(k): _plain(v) for k, v in record.items()})


def _plain(value):
    """IntEnum values become plain ints so the CBOR is the same either way."""
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    return int(value)


class _Short(Exception):
    """The buffer ends inside the item: it needs at least `need` bytes."""

    def __init__(self, need: int) -> None:
        self.need = need


_KINDS = {0: "an unsigned integer", 1: "a negative integer", 2: "a byte string", 3: "a text string",
          4: "an array", 5: "a map", 6: "a tag", 7: "a simple value or float"}


def _head(buf: bytearray, pos: int) -> tuple[int, int, int]:
    """(major type, argument, next position) of the CBOR head at `pos`;
    _Short when the buffer ends inside it, ValueError for an
    indefinite length (the writer never makes one) or a reserved head."""
    if pos >= len(buf):
        raise _Short(pos + 1)
    first = buf[pos]
    info = first & 0x1F
    if info < 24:
        return first >> 5, info, pos + 1
    if info > 27:
        raise ValueError(f"{_KINDS[first >> 5]} of indefinite or reserved length")
    end = pos + 1 + (1 << (info - 24))
    if end > len(buf):
        raise _Short(end)
    return first >> 5, int.from_bytes(buf[pos + 1 : end], "big"), end


# Both ways of decoding an item (one step's bytes at once, or measured by item_end first) take
# the same items, so where an inflate step falls never changes whether a record is taken: the
# same nesting bound, and no tag anywhere. Our writer never writes one, and cbor2 would build
# what a tag names (a regular expression of 16 MiB compiled: 6.6 CPU-s for one of 1 MiB that
# compresses to 1.5 KB), so every tag, known to cbor2 or not, is refused before its value is read.
_DEPTH = 2
_NO_TAG = "a tag (a record has none)"


def _no_tag(*_) -> None:
    raise cbor2.CBORDecodeError(_NO_TAG)


class _EveryTag(dict):
    """cbor2's semantic_decoders for every tag: each refused."""

    def __contains__(self, tag) -> bool:
        return True

    def __getitem__(self, tag):
        return _no_tag

    def get(self, tag, default=None):
        return _no_tag


_DECODING = {"max_depth": _DEPTH, "allow_indefinite": False, "semantic_decoders": _EveryTag(), "tag_hook": _no_tag}
_SMALL_MAP = 0xA0  # the head of a map of 0 to 23 pairs is one byte: 0xa0 + pairs


def _map_head(buf: bytearray, pos: int) -> None:
    """Refuse at its first bytes an item that is no record: every item
    (the header too) is a map of at most MAX_PAIRS pairs, so an array
    claiming millions of items costs nothing."""
    if pos < len(buf) and buf[pos] >> 5 != 5:
        raise ValueError(f"not a record: {_KINDS[buf[pos] >> 5]}, not a map")
    _, pairs, _ = _head(buf, pos)
    if pairs > MAX_PAIRS:
        raise ValueError(f"not a record: a map of {pairs} pairs (a record has at most {MAX_PAIRS} fields)")


def item_end(buf: bytearray, pos: int) -> int:
    """Where the item at `pos` ends, reading only its heads: a map of
    scalars and of lists of at most MAX_LIST scalars (a record's shape).
    _Short when the buffer ends first; ValueError for any other shape. The
    cost is bounded by the counts, whatever the lengths declare."""
    _, pairs, pos = _head(buf, pos)
    for _ in range(2 * pairs):
        major, value, pos = _head(buf, pos)
        if major in (2, 3):
            pos += value
        elif major == 4:
            if value > MAX_LIST:
                raise ValueError(f"not a record: a list of {value} values (at most {MAX_LIST})")
            for _ in range(value):
                major, length, pos = _head(buf, pos)
                if major in (2, 3):
                    pos += length
                elif major in (4, 5, 6):
                    raise ValueError(f"not a record: {_KINDS[major]} inside a list")
        elif major in (5, 6):
            raise ValueError(f"not a record: {_KINDS[major]} inside a map")
    if pos > len(buf):
        raise _Short(pos)
    return pos


def read_items(stream: io.BufferedIOBase, allow_cut: bool = False) -> Iterator[tuple[int, object]]:
    """(offset in the inflated stream, item) for every CBOR item of a gzip
    stream, one at a time, within bounds (see `Items`)."""
    return iter(Items(stream, allow_cut))


class Items:
    """The CBOR items of a run of gzip members, inflated a step at a time.

    Bounds, so a bomb or a lying length costs little memory and time: every
    item must open as a map of at most MAX_PAIRS pairs (else it is refused
    at its first byte); cbor2 decodes items that lie whole in the bytes of
    one step (at most INFLATE_STEP, depth 2, no indefinite lengths, no tags); an
    item that does not fit is measured by `item_end` (which bounds the
    counts, and refuses one larger than MAX_ITEM as soon as a length says
    so) before cbor2 sees it whole. Errors name the item and its byte in
    the inflated stream (`zcat FILE | tail -c +BYTE+1` shows it), or the
    file byte of the gzip member whose compressed data is damaged.

    A stream that ends inside a member raises SpoolError ("cut short")
    unless `allow_cut` (recovery of a crashed file); bytes after a member
    that do not start another one, or a bad checksum, always do.
    """

    def __init__(self, stream: io.BufferedIOBase, allow_cut: bool) -> None:
        self.stream = stream
        self.allow_cut = allow_cut
        self.inflater = zlib.decompressobj(GZIP_WBITS)
        self.read = 0  # file bytes read so far
        self.member = 0  # file byte where the current gzip member starts
        self.carried = b""  # what followed the member that just ended
        self.buf = bytearray()  # inflated bytes not yet decoded
        self.base = 0  # offset of buf[0] in the inflated stream
        self.index = 0  # the next item's number: 0 is the header
        self.need = 0  # bytes the item at buf[0] needs before it is measured again (0: none pending)

    def __iter__(self) -> Iterator[tuple[int, object]]:
        while True:
            chunk = self._next_input()
            data = self._inflate(chunk)
            self.buf += data
            yield from self._decode()
            if self.inflater.eof:
                if not self._next_member():
                    if self.buf:
                        raise SpoolError(f"damaged: the stream ends inside {self._item()}")
                    return
            elif not chunk and not data:
                break
        if not self.allow_cut:
            raise SpoolError(f"cut short inside {self._item()}: the file ends in the gzip member at file byte "
                             f"{self.member}")

    def _item(self, pos: int = 0) -> str:
        """The next item (at buf[pos]), as errors name it."""
        name = "the header" if self.index == 0 else f"record {self.index}"
        return f"{name} at byte {self.base + pos} of the inflated stream"

    def _read(self) -> bytes:
        data = self.stream.read(READ_CHUNK)
        self.read += len(data)
        return data

    def _next_input(self) -> bytes:
        if self.inflater.unconsumed_tail:
            return self.inflater.unconsumed_tail
        if self.carried:
            carried, self.carried = self.carried, b""
            return carried
        return self._read()

    def _inflate(self, chunk: bytes) -> bytes:
        """At most INFLATE_STEP bytes; b"" as input drains what zlib holds."""
        try:
            return self.inflater.decompress(chunk, INFLATE_STEP)
        except zlib.error as exc:
            raise SpoolError(f"damaged before {self._item()}: the compressed data of the gzip member at file "
                             f"byte {self.member} ({exc})") from None

    def _next_member(self) -> bool:
        """A member ended: start the next one; False at the end of the file."""
        carried = self.inflater.unused_data or self._read()
        if not carried:
            return False
        self.member = self.read - len(carried)
        self.carried = carried
        self.inflater = zlib.decompressobj(GZIP_WBITS)
        return True

    def _decode(self) -> Iterator[tuple[int, object]]:
        """Every whole item in the buffer; what is left is the next item's start."""
        buf = self.buf
        pos = 0
        decoder = None
        try:
            while pos < len(buf) and len(buf) >= self.need:
                if not _SMALL_MAP <= buf[pos] <= _SMALL_MAP + MAX_PAIRS:  # the usual head, checked inline
                    _map_head(buf, pos)
                if self.need:  # an item that did not fit in one step: measured, then decoded whole
                    end = item_end(buf, pos)
                    item = cbor2.loads(bytes(buf[pos:end]), **_DECODING)
                    self.need = 0
                else:
                    if decoder is None:
                        decoder = cbor2.CBORDecoder(io.BytesIO(bytes(buf[pos:])), **_DECODING)
                        start = pos
                    try:
                        item = decoder.decode()
                    except cbor2.CBORDecodeEOF:
                        raise _Short(len(buf) + 1) from None
                    end = start + decoder.fp.tell()
                offset, pos = self.base + pos, end
                self.index += 1
                yield offset, item
        except _Short as short:
            self.need = short.need - pos
        except (ValueError, cbor2.CBORDecodeError) as exc:  # CBORDecodeError is one
            raise SpoolError(f"{self._item(pos)}: {exc}") from None
        finally:
            del buf[:pos]
            self.base += pos
        if self.need > MAX_ITEM:
            raise SpoolError(f"{self._item()}: an item of more than {MAX_ITEM} bytes")


def read_spool(path: str, allow_cut: bool = False, stream: io.BufferedIOBase | None = None
               ) -> tuple[dict, Iterator[dict]]:
    """The header and an iterator over the records of one spool file
    (`stream`: the file already open, else it is opened here).

    Each record is checked (`record.check`) as it is read; the first bad
    one raises SpoolError naming the file, the record and its byte.
    """
    stream = stream or open(path, "rb")  # noqa: SIM115 - closed by the generator below
    items = read_items(stream, allow_cut)
    try:
        _, header = next(items)
    except StopIteration:
        stream.close()
        raise SpoolError(f"{path}: no header (empty or not a spool file)") from None
    except SpoolError as exc:
        stream.close()
        raise SpoolError(f"{path}: {exc}") from None
    if not isinstance(header, dict) or header.get(HEADER_FORMAT) != SPOOL_FORMAT:
        stream.close()
        raise SpoolError(f"{path}: not a {SPOOL_FORMAT} spool file")

    def records() -> Iterator[dict]:
        with stream:
            try:
                for number, (offset, item) in enumerate(items, 1):
                    try:
                        record = check(item)
                    except ValueError as exc:
                        raise SpoolError(f"record {number} at byte {offset} of the inflated stream: {exc}") from None
                    yield record
            except SpoolError as exc:
                raise SpoolError(f"{path}: {exc}") from None

    return header, records()


class Deflater:
    """One gzip stream, in pieces: what `Compressor` writes to a file, and
    what the background writer (spoolfile.py) deflates on its own thread.

    The stream is a run of gzip members of MEMBER_SIZE bytes of CBOR each,
    compressed whole by libdeflate, as NMSG containers are (nmsg.py); a
    sync ends the open member early, so what was fed is readable. Against
    zlib's streaming deflater at level 4, on the benchmark's 138 MB of CBOR
    in 1 MiB members: 0.72 against 1.97 CPU-s, 47.79 against 47.83 bytes a
    packet (zlib's level 1: 1.41 CPU-s, 52.3 bytes).
    """

    def __init__(self, level: int = COMPRESSION_LEVEL) -> None:
        self.level = level
        self._pending = bytearray()

    def feed(self, data: bytes) -> bytes:
        self._pending += data
        return self.sync() if len(self._pending) >= MEMBER_SIZE else b""

    def sync(self) -> bytes:
        """Everything fed so far, made readable: the open member, ended."""
        if not self._pending:
            return b""
        member = deflate.gzip_compress(self._pending, self.level)
        self._pending = bytearray()
        return member

    def finish(self) -> bytes:
        return self.sync()


class Compressor:
    """A gzip stream writer that can be flushed to a readable point."""

    def __init__(self, sink: io.RawIOBase | io.BufferedIOBase, level: int = COMPRESSION_LEVEL) -> None:
        self.sink = sink
        self.deflater = Deflater(level)

    def write(self, data: bytes) -> None:
        out = self.deflater.feed(data)
        if out:
            self.sink.write(out)

    def sync(self) -> None:
        """Everything written so far becomes readable from the file."""
        self.sink.write(self.deflater.sync())

    def finish(self) -> None:
        self.sink.write(self.deflater.finish())
