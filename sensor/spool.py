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

from . import _cborpack
from .record import PAIR_FIELDS, RecordType, check

# The C encoder knows the pair by its type number and size.
if (RecordType.UDP_QUERY_RESPONSE, len(PAIR_FIELDS)) != (_cborpack.TYPE_UDP_QUERY_RESPONSE, _cborpack.PAIR_SIZE):
    raise ImportError("sensor._cborpack was built for another record layout: rebuild it")
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
    (`_cborpack`, README "Benchmark"), every other record by cbor2."""
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


def read_items(stream: io.BufferedIOBase, allow_cut: bool = False) -> Iterator[object]:
    """Every CBOR item of a gzip stream, one at a time, within bounds.

    Inflating proceeds a step at a time and no item may grow past
    MAX_ITEM, so a bomb or a lying length costs bounded memory and time;
    the caller checks each item as it comes and can stop at the first bad
    one. A stream that ends inside a member raises SpoolError ("cut
    short") unless `allow_cut` (recovery of a crashed file); bytes after a
    member that do not start another one, or a bad checksum, always do.
    """
    inflater = zlib.decompressobj(GZIP_WBITS)
    pending = b""
    count = 0
    carried = b""  # what followed the member that just ended
    while True:
        chunk = carried or inflater.unconsumed_tail or stream.read(READ_CHUNK)
        carried = b""
        if not chunk:
            break
        try:
            data = inflater.decompress(chunk, INFLATE_STEP)
        except zlib.error as exc:
            raise SpoolError(f"damaged after item {count}: compressed data ({exc})") from None
        pending += data
        if len(pending) > MAX_ITEM:
            raise SpoolError(f"damaged after item {count}: an item of more than {MAX_ITEM} bytes")
        decoder = cbor2.CBORDecoder(io.BytesIO(pending))
        consumed = 0
        while consumed < len(pending):
            try:
                item = decoder.decode()
            except (cbor2.CBORDecodeEOF, EOFError):
                break
            except cbor2.CBORDecodeError as exc:
                raise SpoolError(f"damaged at item {count + 1}: {exc}") from None
            consumed = decoder.fp.tell()
            count += 1
            yield item
        pending = pending[consumed:]
        if inflater.eof:  # a member ended: the file ends here, or the next member starts
            carried = inflater.unused_data or stream.read(READ_CHUNK)
            if not carried:
                if pending:
                    raise SpoolError(f"damaged after item {count}: the stream ends inside an item")
                return
            inflater = zlib.decompressobj(GZIP_WBITS)
    if not allow_cut:
        raise SpoolError(f"cut short after item {count}")


def read_spool(path: str, allow_cut: bool = False) -> tuple[dict, Iterator[dict]]:
    """The header and an iterator over the records of one spool file.

    Each record is checked (`record.check`) as it is read; the first bad
    one raises SpoolError naming the file and its position.
    """
    stream = open(path, "rb")  # noqa: SIM115 - closed by the generator below
    items = read_items(stream, allow_cut)
    try:
        header = next(items)
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
        number = 0
        with stream:
            try:
                for item in items:
                    number += 1
                    yield check(item)
            except ValueError as exc:  # SpoolError included
                raise SpoolError(f"{path}: record {number}: {exc}" if not isinstance(exc, SpoolError)
                                 else f"{path}: {exc}") from None

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
