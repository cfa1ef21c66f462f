"""Rotated spool files: new/ while open, waiting/ (and archive/) when done.

The open file lives in new/<channel>/. Every `interval` seconds of packet
time (boundaries at multiples of the interval, so files line up across
restarts and replays) it is finished, fsynced and renamed into
waiting/<channel>/, where the uploader takes it; rename is atomic, so the
uploader never sees half a file. With archive="yes" a hard link is made in
archive/<channel>/ first. A file left in new/ by a crash is finished at
the next start from whatever records it holds.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time

from .constants import SPOOL_EXT
from .spool import BackgroundCompressor, Compressor, SpoolError, encode_header, encode_record, read_spool

log = logging.getLogger(__name__)

SYNC_SECONDS = 1.0  # how much a crash may cost of the open file, at most
INFINITY = float("inf")
RECOVERING = ".recovering"


class SpoolBusy(RuntimeError):
    """Another sensor already writes this channel."""


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
        spooldir: str,
        channel: str,
        host: str,
        interval: int,
        archive: bool,
        upload: bool,
    ) -> None:
        self.host = host
        self.channel = channel
        self.interval = interval
        self.archive = archive
        self.upload = upload
        self.dirs = {
            name: os.path.join(spooldir, name, channel) for name in ("new", "waiting", "archive")
        }
        for path in self.dirs.values():
            os.makedirs(path, exist_ok=True)
        locks = os.path.join(spooldir, "locks")
        os.makedirs(locks, exist_ok=True)
        self._lock = self._take_lock(os.path.join(locks, f"sensor-{channel}.lock"))
        self.deadline = INFINITY
        self._file = None
        self._compressor: BackgroundCompressor | None = None
        self._name = ""
        self._last_sync = 0.0
        self.files_done = 0
        self.records_written = 0
        self.bytes_written = 0

    @staticmethod
    def _take_lock(path: str) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolBusy(f"another sensor holds {path}") from None
        return fd

    # --------------------------------------------------------------- writing
    def write(self, records: list[dict], sec: int, nsec: int) -> None:
        """Append records that were made at packet time (sec, nsec)."""
        if not records:
            return
        if sec >= self.deadline:
            self.finish()
        if self._file is None:
            self._open(sec, nsec // 1000)
        compressor = self._compressor
        compressor.write(b"".join([encode_record(r) for r in records]))
        self.records_written += len(records)
        now = time.monotonic()
        if now - self._last_sync >= SYNC_SECONDS:
            compressor.sync()
            self._last_sync = now

    def boundary_after(self, sec: int) -> int:
        """When a file opened at `sec` would be finished."""
        return (sec // self.interval + 1) * self.interval

    def advance(self, sec: int) -> None:
        """The clock moved on: finish the open file if its interval is over."""
        if sec >= self.deadline:
            self.finish()

    def _open(self, sec: int, usec: int) -> None:
        while True:
            name = f"{self.host}.{sec}.{usec:06d}.{SPOOL_EXT}"
            if not any(os.path.exists(os.path.join(d, name)) for d in self.dirs.values()):
                break
            usec += 1
        self._name = name
        self._file = open(os.path.join(self.dirs["new"], name), "xb")  # noqa: SIM115
        self._compressor = BackgroundCompressor(self._file)
        self._compressor.write(encode_header(self.host, self.channel, sec, usec))
        self.deadline = self.boundary_after(sec)
        self._last_sync = time.monotonic()

    def finish(self) -> None:
        """Close the open file durably and hand it on (waiting/, archive/)."""
        if self._file is None:
            return
        self._compressor.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self.bytes_written += self._file.tell()
        self._file.close()
        self._file = None
        self._compressor = None
        self.deadline = INFINITY
        self._hand_on(self._name)

    def _hand_on(self, name: str) -> None:
        source = os.path.join(self.dirs["new"], name)
        if self.archive:
            os.link(source, os.path.join(self.dirs["archive"], name))
            _fsync_dir(self.dirs["archive"])
        if self.upload:
            os.rename(source, os.path.join(self.dirs["waiting"], name))
            _fsync_dir(self.dirs["waiting"])
        else:
            os.unlink(source)
        _fsync_dir(self.dirs["new"])
        self.files_done += 1
        log.debug("spool file %s finished", name)

    def close(self) -> None:
        self.finish()
        os.close(self._lock)

    # -------------------------------------------------------------- recovery
    def recover(self) -> list[str]:
        """Finish files a crash left in new/, keeping every complete record."""
        recovered = []
        for name in sorted(os.listdir(self.dirs["new"])):
            path = os.path.join(self.dirs["new"], name)
            if name.endswith(RECOVERING) and os.path.isfile(path):
                os.unlink(path)  # a recovery that was itself cut short; redone below
                continue
            if not name.endswith(SPOOL_EXT) or not os.path.isfile(path):
                continue
            try:
                count = self._rewrite(path)
            except (SpoolError, OSError) as exc:
                log.warning("spool file %s could not be recovered (%s); removed", name, exc)
                os.unlink(path)
                continue
            self._hand_on(name)
            log.warning("spool file %s recovered after a crash: %d records", name, count)
            recovered.append(name)
        return recovered

    def _rewrite(self, path: str) -> int:
        """Re-encode a cut-short file as a complete one, in place (atomically)."""
        header, records = read_spool(path)
        temporary = path + RECOVERING
        count = 0
        with open(temporary, "wb") as out:
            compressor = Compressor(out)
            compressor.write(
                encode_header(
                    header.get("host", self.host),
                    header.get("channel", self.channel),
                    *header.get("start", [0, 0]),
                )
            )
            try:
                for record in records:
                    compressor.write(encode_record(record))
                    count += 1
            except SpoolError as exc:
                log.warning("%s: damaged after %d records (%s)", path, count, exc)
            compressor.finish()
            out.flush()
            os.fsync(out.fileno())
        os.rename(temporary, path)
        return count
