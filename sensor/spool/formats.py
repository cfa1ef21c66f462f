"""Spool files of either format: written on a second thread, read alike.

`nmsg` (what the SIE collector ingests; `nmsg.py`, `dnsqr.py`) and `cbor`
(a gzip stream of CBOR items; `spool.py`) share one shape here: a format
opens a stream on a file, the writer hands it lists of records, syncs it
(so a crash costs at most the time since) and finishes it; a file left
cut short by a crash is finished in place from what it holds. Readers
tell the formats apart by their first bytes.

The encoding of records (CPU in the main thread) is done by the caller
of `write`; compressing and writing happen on the stream's thread: zlib
and file writes release the GIL, so on a two-core resolver they overlap
with decoding and matching instead of adding to them. Order is kept (one
queue, one thread); an error there (a full disk) is raised at the next
call.
"""

from __future__ import annotations

import errno
import io
import os
import queue
import stat
import threading
import time
import zlib
from collections.abc import Iterator

from sensor.records.record import Envelope
from sensor.spool import cbor as spool
from sensor.spool import nmsg
from sensor.spool.cbor import (
    Compressor,
    Deflater,
    SpoolError,
    encode_header,
    encode_record,
    encode_records,
    read_spool,
)

GZIP_MAGIC = b"\x1f\x8b"


class BackgroundWriter:
    """Turns queued chunks into bytes (compression) and writes them, on a thread.

    `codec` has `feed(chunk) -> bytes`, `sync() -> bytes` and `finish() ->
    bytes`: spool.Deflater for CBOR, container serialization for NMSG.
    """

    _SYNC = object()
    _FINISH = object()

    def __init__(self, sink: io.BufferedIOBase, codec, depth: int = 16) -> None:
        """`depth`: chunks that may wait for the thread (memory, when it lags)."""
        self.sink = sink
        self.codec = codec
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self.lost_records = 0  # records in chunks that could not be written
        self.cpu_seconds = 0.0  # the thread's own CPU (compression, writes), once it has ended
        # What the file surely holds: the bytes and records of every output
        # written and flushed whole. After a failed write the file is cut
        # back to saved_bytes (writer.py), so a recovery finds saved_records.
        self.saved_bytes = 0
        self.saved_records = 0
        self._unsaved = 0  # records fed to the codec since its last output
        self._thread = threading.Thread(target=self._work, name="spool-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._FINISH:
                self.cpu_seconds = time.thread_time()  # the thread serves this one file
                return
            records = 0
            if isinstance(item, tuple):
                item, records = item
            if self._error is not None:
                self.lost_records += records  # drain after a failure; the caller hears of it
                continue
            try:
                if item is self._SYNC:
                    self._write(self.codec.sync())
                else:
                    self._unsaved += records
                    self._write(self.codec.feed(item))
            except BaseException as exc:  # handed to the caller
                self._error = exc
                self.lost_records += records

    def _write(self, output: bytes) -> None:
        """Write and flush one output of the codec: a whole gzip member or
        NMSG container, which holds every record fed before it."""
        if output:
            self.sink.write(output)
            self.sink.flush()
            self.saved_bytes += len(output)
            self.saved_records += self._unsaved
            self._unsaved = 0

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def put(self, chunk, records: int = 0) -> None:
        """Queue a chunk holding `records` records (for the loss count)."""
        self._raise_pending()
        self._queue.put((chunk, records))

    def sync(self) -> None:
        self._raise_pending()
        self._queue.put(self._SYNC)

    def finish(self) -> None:
        """Wait for every queued chunk, then end the file's stream."""
        self.stop()
        self._raise_pending()
        self._write(self.codec.finish())

    def stop(self) -> None:
        """End the thread once the queue is drained (written or not)."""
        if self._thread.is_alive():
            self._queue.put(self._FINISH)
            self._thread.join()


class _Stream:
    """What the writer reads of either format's open file: its background writer's figures."""

    _writer: BackgroundWriter

    @property
    def lost_records(self) -> int:
        return self._writer.lost_records

    @property
    def cpu_seconds(self) -> float:
        return self._writer.cpu_seconds

    @property
    def saved(self) -> tuple[int, int]:
        """(bytes, records) the file surely holds: see BackgroundWriter."""
        return self._writer.saved_bytes, self._writer.saved_records


# ------------------------------------------------------------------- CBOR
class CborStream(_Stream):
    def __init__(self, sink, host: str, channel: str, sec: int, usec: int) -> None:
        self._writer = BackgroundWriter(sink, Deflater())
        self._writer.put(encode_header(host, channel, sec, usec))

    def write(self, records: list[dict]) -> None:
        self._writer.put(encode_records(records), len(records))

    def sync(self) -> None:
        self._writer.sync()

    def finish(self) -> None:
        self._writer.finish()

    def stop(self) -> None:
        self._writer.stop()


class CborFormat:
    ext = spool.EXT

    def open(self, sink, host: str, channel: str, sec: int, usec: int) -> CborStream:
        return CborStream(sink, host, channel, sec, usec)

    def recover(self, path: str, host: str, channel: str) -> int:
        """Re-encode a cut-short file as a complete one, in place (atomically);
        SpoolError for a damaged one."""
        header, records = read_spool(path, allow_cut=True)
        temporary = path + RECOVERING
        count = 0
        with open(temporary, "wb") as out:
            compressor = Compressor(out)
            start = header.get("start", [0, 0])
            compressor.write(encode_header(header.get("host", host), header.get("channel", channel), *start))
            # A cut (the crash) ends the records quietly; damage raises: a bit
            # flipped in a gzip stream may inflate to valid but wrong records
            # before anything notices, so such a file is set aside whole.
            for record in records:
                compressor.write(encode_record(record))
                count += 1
            compressor.finish()
            out.flush()
            os.fsync(out.fileno())
        os.rename(temporary, path)
        return count


RECOVERING = ".recovering"


# ------------------------------------------------------------------- NMSG
class _Containers:
    """The NMSG stream's codec: each full container serialized on its own,
    deflated at `level` (nmsg_compress_level) when compressed."""

    def __init__(self, compress: bool, level: int = nmsg.COMPRESSION_LEVEL) -> None:
        self.compress = compress
        self.level = level

    def feed(self, container: nmsg.Container) -> bytes:
        return container.serialize(self.compress, self.level)

    def sync(self) -> bytes:
        return b""

    def finish(self) -> bytes:
        return b""


class NmsgStream(_Stream):
    """Fills containers as nmsgtool does; a sync closes the open one early."""

    def __init__(self, sink, compress: bool, trailer: bytes, level: int = nmsg.COMPRESSION_LEVEL) -> None:
        # containers are 1 MiB each: at most four wait for the compressor
        self._writer = BackgroundWriter(sink, _Containers(compress, level), depth=4)
        self._trailer = trailer
        self._container = nmsg.Container()

    def write(self, records: list[dict]) -> None:
        start, full = self._container.add_records(records, 0, self._trailer)
        while full:
            self._writer.put(self._container, len(self._container))
            self._container = nmsg.Container()
            start, full = self._container.add_records(records, start, self._trailer)

    def _hand_over(self) -> None:
        if len(self._container):
            self._writer.put(self._container, len(self._container))
            self._container = nmsg.Container()

    def sync(self) -> None:
        self._hand_over()
        self._writer.sync()

    def finish(self) -> None:
        self._hand_over()
        self._writer.finish()

    def stop(self) -> None:
        self._writer.stop()


class NmsgFormat:
    ext = nmsg.EXT

    def __init__(self, compress: bool = True, source: int | None = None, operator: int | None = None,
                 group: int | None = None, level: int = nmsg.COMPRESSION_LEVEL) -> None:
        """`level`: libdeflate's, 1-12, for compressed containers (nmsg.COMPRESSION_LEVEL says why the default)."""
        self.compress = compress
        self.level = level
        self.trailer = nmsg.payload_trailer(source, operator, group)

    def open(self, sink, host: str, channel: str, sec: int, usec: int) -> NmsgStream:
        return NmsgStream(sink, self.compress, self.trailer, self.level)

    def recover(self, path: str, host: str, channel: str) -> int:
        """Cut the file after its last usable container; count its records."""
        whole, why = nmsg.usable_length(path)
        if whole == 0:
            raise SpoolError(f"{path}: not one usable NMSG container ({why or 'no whole one'})")
        with open(path, "r+b") as handle:
            handle.truncate(whole)
            handle.flush()
            os.fsync(handle.fileno())
        return sum(1 for _ in read(path, allow_cut=True))


# ---------------------------------------------------------------- reading
def read(path: str, allow_cut: bool = False, follow_symlinks: bool = True) -> Iterator[tuple[dict, Envelope]]:
    """(record, envelope) for every record of a spool file of either format.

    The envelope has, from NMSG, the payload's time, source/operator/group
    ids and size; a CBOR record has none of those. SpoolError names the
    file and what is wrong (not a regular file, not a spool file, damaged
    at some record or container and byte, cut short unless `allow_cut`);
    records before the damage have been yielded by then. Every declared
    length and count is bounded, so a hostile file costs bounded memory
    and time.
    """
    stream = open_regular(path, follow_symlinks)
    with stream:
        first = stream.read(4)
        stream.seek(0)
        if nmsg.is_nmsg(first):
            try:
                yield from nmsg.records(stream, allow_cut)
            except (nmsg.NmsgError, zlib.error) as exc:
                raise SpoolError(f"{path}: {exc}") from None
            return
        if first[:2] != GZIP_MAGIC:
            raise SpoolError(f"{path}: not a spool file (neither NMSG nor gzip-compressed CBOR)")
        _, records = read_spool(path, allow_cut, stream)
        for record in records:
            yield record, Envelope()


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link"))


def kind_of(mode: int) -> str:
    """What a file that is not a regular one is, in words."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def not_regular(path: str) -> str | None:
    """Why a file found in a spool directory is skipped (lstat: a symbolic
    link is not followed), or None to read it."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        return f"{path}: {exc.strerror}: skipped"
    return None if stat.S_ISREG(mode) else f"{path}: {kind_of(mode)}, not a regular file: skipped"


def open_regular(path: str, follow_symlinks: bool = True) -> io.BufferedReader:
    """A file opened for reading only if it is a regular file, else
    SpoolError saying what it is. Opened non-blocking and checked on its
    descriptor: a FIFO would block the open until some writer came, and a
    file swapped in after a check would not be the file checked. Without
    `follow_symlinks` a symbolic link is refused (spool directories)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise SpoolError(f"{path}: a symbolic link, not a regular file: skipped") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise SpoolError(f"{path}: {kind_of(mode)}, not a regular file: skipped")
    return os.fdopen(fd, "rb")


def records(path: str, allow_cut: bool = False) -> list[dict]:
    """Every record of a spool file (tests, tools)."""
    return [record for record, _ in read(path, allow_cut)]
