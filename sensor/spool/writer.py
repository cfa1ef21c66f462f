"""Rotated spool files: new/ while open, waiting/ (and archive/) when done.

The open file lives in new/<channel>/. Every `interval` seconds of packet
time (boundaries at multiples of the interval, so files line up across
restarts and replays) it is finished, fsynced and renamed into
waiting/<channel>/, where the uploader takes it; rename is atomic, so the
uploader never sees half a file. With archive="yes" a hard link is made in
archive/<channel>/ first. A file left in new/ by a crash is finished at
the next start from whatever records it holds.

When the spool cannot be written (a full disk, a failing one), the sensor
does not stop: records are counted in `unwritten` and dropped, and every
RETRY_SECONDS a write is tried again. One log line opens the episode and
one closes it, when a whole file has been written and handed on again
(failures while retrying belong to the same episode). The file that was
open when it started is cut back to its last whole gzip member or NMSG
container, kept in new/ and finished from those records once writing
works again (or at the next start): they count as written, so what the
stop line says was written is what the files hold.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

from sensor.spool import spooldir
from sensor.spool.cbor import SpoolError
from sensor.spool.formats import RECOVERING, CborFormat

log = logging.getLogger(__name__)

SYNC_SECONDS = 1.0  # how much a crash may cost of the open file, at most
RETRY_SECONDS = 2.0  # while the spool cannot be written, how often to try again
INFINITY = float("inf")
SpoolBusy = spooldir.Busy  # another sensor already writes this channel


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolWriter:
    """Appends records to the open file and rotates it on packet time."""

    def __init__(
        self,
        root: str,
        channel: str,
        host: str,
        interval: int,
        archive: bool,
        upload: bool,
        spool_format=None,
        lock: bool = True,
    ) -> None:
        """`spool_format` is a `spoolfile` format (NmsgFormat, CborFormat).
        `lock`: hold the channel's sensor lock; False for the extra capture
        workers, whose first worker holds it for them all."""
        self.format = spool_format or CborFormat()
        self.root = root
        self.host = host
        self.channel = channel
        self.interval = interval
        self.archive = archive
        self.upload = upload
        self.dirs = {
            kind: spooldir.folder(root, kind, channel) for kind in (spooldir.NEW, spooldir.WAITING, spooldir.ARCHIVE)
        }
        for path in self.dirs.values():
            os.makedirs(path, exist_ok=True)
        self._lock = spooldir.lock(root, spooldir.SENSOR, channel) if lock else None
        self.deadline = INFINITY
        self._file = None
        self._compressor = None  # the open file's spoolfile stream
        self._name = ""
        self._last_sync = 0.0
        self.files_done = 0
        self.records_written = 0
        self.bytes_written = 0
        self.unwritten = 0  # records lost because the spool could not be written
        self.compression_cpu = 0.0  # CPU seconds of the finished files' compression threads
        self._trouble_since: float | None = None
        self._retry_at = 0.0
        self._broken: list[str] = []  # files in new/ abandoned in a failed write
        # Exact counts after a write failure: records_written holds only what
        # a file still holds. A file abandoned after a failed write is cut
        # back to its last whole gzip member or NMSG container: its records
        # there stay written, the rest are unwritten, and a recovery of the
        # file (later in this run or at the next start) finds exactly those.
        self._file_records = 0
        self._abandoned: dict[str, int] = {}  # this run's abandoned files: the records they hold

    # --------------------------------------------------------------- writing
    def write(self, records: list[dict], sec: int, nsec: int) -> None:
        """Append records that were made at packet time (sec, nsec)."""
        if not records:
            return
        now = time.monotonic()
        if self._trouble_since is not None and now < self._retry_at:
            self.unwritten += len(records)
            return
        try:
            if sec >= self.deadline:
                self._finish_file()
            if self._file is None:
                self._open(sec, nsec // 1000)
            self._compressor.write(records)
            self._sync_due(now)
        except OSError as exc:
            self._fail(exc, len(records))
            return
        self.records_written += len(records)
        self._file_records += len(records)

    def _fail(self, exc: OSError, records: int) -> None:
        """Writing failed: drop and count, keep what the file holds, retry later."""
        self.unwritten += records + self._abandon()
        now = time.monotonic()
        if self._trouble_since is None:
            self._trouble_since = now
            log.error("cannot write the spool (%s): dropping records until it can be written", exc)
        self._retry_at = now + RETRY_SECONDS

    def _abandon(self) -> int:
        """Let go of the open file after a failure, cut back to what it
        surely holds (`saved`: whole members or containers, written and
        flushed); return the records taken out of records_written."""
        if self._compressor is not None:
            self._compressor.stop()
        if self._file is None:
            self._compressor = None
            return 0
        saved_bytes, saved_records = self._compressor.saved if self._compressor is not None else (0, 0)
        lost = self._file_records - saved_records
        self.records_written -= lost
        self._file_records = 0
        with contextlib.suppress(OSError):
            self._file.close()  # may flush a piece of a failed write: the cut below removes it
        path = os.path.join(self.dirs[spooldir.NEW], self._name)
        try:
            os.truncate(path, saved_bytes)
            if saved_bytes == 0:
                os.unlink(path)  # nothing reached the disk whole: nothing to keep
        except OSError:
            pass  # kept as it is; what its recovery finds is counted back then
        if saved_bytes or os.path.exists(path):
            self._broken.append(self._name)
            self._abandoned[self._name] = saved_records
        self._file = None
        self._compressor = None
        self.deadline = INFINITY
        return lost

    def _writable_again(self) -> None:
        """A whole file went through: the episode is over; finish the rest."""
        seconds = time.monotonic() - self._trouble_since
        self._trouble_since = None
        log.warning("the spool can be written again after %.0f s; %d records could not be written",
                    seconds, self.unwritten)
        broken, self._broken = self._broken, []
        for name in broken:
            try:
                count = self._rewrite(os.path.join(self.dirs[spooldir.NEW], name))
                self._hand_on(name)
                self._count_back(name, count)
                log.warning("spool file %s finished after the write failure: %d records", name, count)
            except SpoolError as exc:
                log.warning("spool file %s lost after the write failure (%s)", name, exc)
                self._count_back(name, 0)
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.dirs[spooldir.NEW], name))
            except OSError as exc:
                self._broken.append(name)
                self._fail(exc, 0)

    def _count_back(self, name: str, count: int) -> None:
        """An abandoned file of this run recovered with `count` records: the
        records it was counted as holding are corrected to those (the same
        number, unless the file was damaged or could not be cut back)."""
        held = self._abandoned.pop(name, None)
        if held is not None:
            self.records_written += count - held
            self.unwritten -= count - held

    def boundary_after(self, sec: int) -> int:
        """When a file opened at `sec` would be finished."""
        return (sec // self.interval + 1) * self.interval

    def advance(self, sec: int) -> None:
        """The clock moved on: finish the open file if its interval is over."""
        if sec >= self.deadline:
            self.finish()
        elif self._trouble_since is not None and self._broken and time.monotonic() >= self._retry_at:
            self._retry_broken()

    def _retry_broken(self) -> None:
        """No traffic, but files wait to be finished: try the disk again."""
        probe = os.path.join(self.dirs[spooldir.NEW], ".probe")
        try:
            with open(probe, "wb") as handle:
                handle.write(b"\0" * 65536)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:
            self._retry_at = time.monotonic() + RETRY_SECONDS
            return
        finally:
            with contextlib.suppress(OSError):
                os.unlink(probe)
        self._writable_again()

    def sync(self) -> None:
        """Make what the open file holds readable on disk, if a second has
        passed since the last time: called on every write and, from the
        capture loop, when no packet comes, so records written before a
        quiet spell are not left in memory."""
        if self._compressor is None or self._trouble_since is not None:
            return
        try:
            self._sync_due(time.monotonic())
        except OSError as exc:
            self._fail(exc, 0)

    def _sync_due(self, now: float) -> None:
        """Sync the open file if a second has passed since the last sync."""
        if now - self._last_sync >= SYNC_SECONDS:
            self._compressor.sync()
            self._last_sync = now

    def _open(self, sec: int, usec: int) -> None:
        while True:  # capture workers open files at the same moments: names stay unique, in time order
            name = spooldir.file_name(self.host, sec, usec, self.format.ext)
            if not any(os.path.exists(os.path.join(d, name)) for d in self.dirs.values()):
                try:
                    self._file = open(os.path.join(self.dirs[spooldir.NEW], name), "xb")  # noqa: SIM115
                    break
                except FileExistsError:
                    pass
            usec += 1
        self._name = name
        self._compressor = self.format.open(self._file, self.host, self.channel, sec, usec)
        self.deadline = self.boundary_after(sec)
        self._last_sync = time.monotonic()

    def finish(self) -> None:
        """Close the open file durably and hand it on (waiting/, archive/)."""
        try:
            self._finish_file()
        except OSError as exc:
            self._fail(exc, 0)

    def _finish_file(self) -> None:
        if self._file is None:
            return
        self._compressor.finish()
        self.compression_cpu += self._compressor.cpu_seconds
        self._file.flush()
        os.fsync(self._file.fileno())
        self.bytes_written += self._file.tell()
        self._file.close()
        self._file = None
        self._file_records = 0
        self._compressor = None
        self.deadline = INFINITY
        try:
            self._hand_on(self._name)
        except OSError:
            self._broken.append(self._name)  # complete, but still in new/
            raise
        if self._trouble_since is not None:
            self._writable_again()

    def _hand_on(self, name: str) -> None:
        source = os.path.join(self.dirs[spooldir.NEW], name)
        if self.archive:
            with contextlib.suppress(FileExistsError):  # a retry after a failure
                os.link(source, os.path.join(self.dirs[spooldir.ARCHIVE], name))
            _fsync_dir(self.dirs[spooldir.ARCHIVE])
        if self.upload:
            os.rename(source, os.path.join(self.dirs[spooldir.WAITING], name))
            _fsync_dir(self.dirs[spooldir.WAITING])
        else:
            os.unlink(source)
        _fsync_dir(self.dirs[spooldir.NEW])
        self.files_done += 1
        log.debug("spool file %s finished", name)

    def close(self) -> None:
        self.finish()
        if self._broken:
            self._retry_broken()  # one last try; else the next start finishes them
        if self._lock is not None:
            os.close(self._lock)

    # -------------------------------------------------------------- recovery
    def recover(self) -> list[str]:
        """Finish files a crash left in new/, keeping every complete record."""
        recovered = []
        for name in sorted(os.listdir(self.dirs[spooldir.NEW])):
            path = os.path.join(self.dirs[spooldir.NEW], name)
            if name.endswith(RECOVERING) and os.path.isfile(path):
                os.unlink(path)  # a recovery that was itself cut short; redone below
                continue
            if not name.endswith("." + self.format.ext) or not os.path.isfile(path):
                continue
            try:
                count = self._rewrite(path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(path + RECOVERING)  # do not hold the last free space
                log.error("spool file %s not recovered now (%s); kept for later", name, exc)
                self._broken.append(name)
                self._fail(exc, 0)
                continue
            except Exception as exc:  # anything a damaged or hostile file makes the decoder say
                with contextlib.suppress(OSError):
                    os.unlink(path + RECOVERING)
                self._set_aside(path, name, exc)
                continue
            self._hand_on(name)
            log.warning("spool file %s recovered after a crash: %d records", name, count)
            recovered.append(name)
        return recovered

    def _set_aside(self, path: str, name: str, reason: Exception) -> None:
        """A file recovery cannot use: moved to damaged/ (an empty one is
        removed), logged, and start-up goes on."""
        if os.path.getsize(path) == 0:
            os.unlink(path)
            log.warning("spool file %s was empty (a crash before its first write); removed", name)
            return
        damaged = spooldir.folder(self.root, spooldir.DAMAGED, self.channel)
        os.makedirs(damaged, exist_ok=True)
        os.rename(path, os.path.join(damaged, name))
        # str() of some errors is empty (MemoryError): the log line always says what happened
        log.error("spool file %s could not be recovered (%s); moved to %s", name, str(reason) or repr(reason),
                  damaged)

    def _rewrite(self, path: str) -> int:
        """Finish a cut-short file in place, keeping every whole record."""
        return self.format.recover(path, self.host, self.channel)
