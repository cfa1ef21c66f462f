"""The uploader process: oldest file first, a few per connection, never lose one.

A file leaves waiting/ only after the collector holds it whole under its
final name. Any failure leaves it where it is for the next round; rounds
back off exponentially (capped) while the collector is unreachable. One
uploader per channel: a flock on locks/upload-<channel>.lock, which the
kernel releases when a crashed uploader's process goes away. Before each
round waiting/ is trimmed to max_spool_size_kbytes, oldest first, so a
long outage cannot fill the disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from collections.abc import Callable, Iterator

import paramiko

from sensor.config import Config

from .sftp import Collector, UploadError

log = logging.getLogger("uploader")

REMOTE_ROOT = "up"
POLL_SECONDS = 2.0
BACKOFF_FIRST = 2.0
BACKOFF_MAX = 300.0

_TIME_IN_NAME = re.compile(r"\.(\d+)\.(\d{6})\.[^/]*$")


class UploaderBusy(RuntimeError):
    """Another uploader already serves this channel."""


def waiting_dir(config: Config) -> str:
    return os.path.join(config.spooldir, "waiting", config.channel)


def _order(name: str, path: str) -> tuple:
    """Spool names carry their start time; anything else sorts by mtime."""
    match = _TIME_IN_NAME.search(name)
    if match:
        return (int(match.group(1)), int(match.group(2)), name)
    try:
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        mtime = 0.0
    return (int(mtime), 0, name)


def pending(directory: str) -> list[str]:
    """Finished spool files, oldest first (hidden and non-files skipped)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    entries = []
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith(".") or not os.path.isfile(path):
            continue
        entries.append((_order(name, path), path))
    return [path for _, path in sorted(entries)]


def trim(directory: str, max_kbytes: int) -> list[str]:
    """Remove the oldest files until the directory fits; return what went."""
    files = pending(directory)
    sizes = {}
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            sizes[path] = os.path.getsize(path)
    total = sum(sizes.values())
    removed = []
    for path in files:
        if total <= max_kbytes * 1024:
            break
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            log.warning("spool over %d KiB: removed %s (%d bytes) without uploading it",
                        max_kbytes, os.path.basename(path), sizes.get(path, 0))
            removed.append(path)
        total -= sizes.get(path, 0)
    return removed


@contextlib.contextmanager
def channel_lock(config: Config) -> Iterator[None]:
    """Hold the channel's upload lock, or raise UploaderBusy."""
    locks = os.path.join(config.spooldir, "locks")
    os.makedirs(locks, exist_ok=True)
    path = os.path.join(locks, f"upload-{config.channel}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UploaderBusy(f"another uploader holds {path}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


class Uploader:
    """Rounds of uploads for one channel."""

    def __init__(self, config: Config, connect: Callable[..., Collector] = Collector) -> None:
        config.require_upload_settings()
        self.config = config
        self.connect = connect
        self.directory = waiting_dir(config)
        self.remote_dir = f"{REMOTE_ROOT}/{config.channel}"
        self.uploaded = 0
        self.failures = 0
        # for `sie-dns-sensor status` (written out by watch.py)
        self.last_success: float | None = None  # wall time the last file arrived
        self.last_error: str | None = None
        self.last_error_time: float | None = None

    def round(self) -> bool:
        """Trim, then upload everything waiting; False if anything failed."""
        trim(self.directory, self.config.max_spool_size_kbytes)
        files = pending(self.directory)
        per = self.config.maxper
        # stop at the first failed session: the next round starts over, oldest first
        return all(self._session(files[start : start + per]) for start in range(0, len(files), per))

    def _session(self, files: list[str]) -> bool:
        host, port = self.config.submitserver
        try:
            with self.connect(host, port, self.config.login, self.config.uploadkey, self.config.knownhosts) as c:
                c.ensure_directory(self.remote_dir)
                for path in files:
                    if not os.path.exists(path):
                        continue  # trimmed meanwhile
                    started = time.monotonic()
                    size = c.upload(path, self.remote_dir)
                    os.unlink(path)
                    self.uploaded += 1
                    self.last_success = time.time()
                    seconds = time.monotonic() - started
                    log.info("uploaded %s (%d bytes, %.1f s) to %s:%d/%s",
                             os.path.basename(path), size, seconds, host, port, self.remote_dir)
        except (UploadError, OSError, EOFError, paramiko.SSHException) as exc:
            # anything else from a dying connection is a failed round too
            self.failures += 1
            self.last_error, self.last_error_time = str(exc or type(exc).__name__), time.time()
            log.error("upload failed: %s", self.last_error)
            return False
        return True

    def run(self, once: bool, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Upload until stopped (or one round with `once`); True if all went."""
        backoff = BACKOFF_FIRST
        while True:
            ok = self.round()
            if once or should_stop():
                return ok
            if ok:
                backoff = BACKOFF_FIRST
                wait = POLL_SECONDS
            else:
                wait = backoff
                log.info("next try in %.0f s", wait)
                backoff = min(backoff * 2, BACKOFF_MAX)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if should_stop():
                    return ok
                time.sleep(min(0.2, wait))
