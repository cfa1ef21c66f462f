"""The uploader process: oldest file first, a few per connection, never lose one.

A file leaves waiting/ only after the collector holds it whole under its
final name. Any failure leaves it where it is for the next try. A file
that fails on its own (unreadable here, refused there) is passed over and
retried later with its own backoff, so it never holds up the files behind
it; rounds back off exponentially (capped) while the collector is
unreachable. Only regular files owned by the uploader's user are sent
(see localfiles). One uploader per channel: a flock on
locks/upload-<channel>.lock, which the kernel releases when a crashed
uploader's process goes away. Before each
round waiting/ is trimmed to max_spool_size_kbytes, oldest first, so a
long outage cannot fill the disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterator

import paramiko

from sensor.config import Config

from . import localfiles
from .sftp import Collector, FileRefused, UploadError, reason

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


def survey(directory: str) -> tuple[list[str], dict[str, str]]:
    """(files to send, oldest first; {path: why not} for the others).

    Hidden names are skipped silently; links, non-files and files of
    another owner are refused (lstat: a link is never followed).
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return [], {}
    entries, refused = [], {}
    for name in names:
        if name.startswith("."):
            continue
        path = os.path.join(directory, name)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        why = localfiles.refusal(info)
        if why:
            if not stat.S_ISDIR(info.st_mode):
                refused[path] = why
            continue
        entries.append((_order(name, path), path))
    return [path for _, path in sorted(entries)], refused


def pending(directory: str) -> list[str]:
    """Finished spool files we may send, oldest first."""
    return survey(directory)[0]


def check_key_mode(path: str) -> None:
    """Refuse a private key others can read, as OpenSSH does."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return  # missing or unreadable: loading it says so
    if mode & 0o077:
        raise UploadError(
            f"upload key {path} is readable by others (mode {mode:04o}); not used, as OpenSSH "
            f"would not use it either: chmod 600 {path}"
        )


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
        self.should_stop: Callable[[], bool] = lambda: False
        self._retry: dict[str, tuple[float, float]] = {}  # path -> (next try, its backoff)
        self._refused: set[str] = set()  # said once each

    def round(self) -> bool:
        """Trim, then upload everything due; False if anything failed."""
        return self._round()[0]

    def _round(self) -> tuple[bool, bool]:
        """(nothing failed, the collector was reached)."""
        trim(self.directory, self.config.max_spool_size_kbytes)
        files, refused = survey(self.directory)
        self._say_refused(refused)
        now = time.monotonic()
        self._retry = {path: due for path, due in self._retry.items() if path in files}
        queue = [path for path in files if self._retry.get(path, (0.0, 0.0))[0] <= now]
        all_sent = True
        while queue and not self.should_stop():
            batch, queue = queue[: self.config.maxper], queue[self.config.maxper :]
            sent_all, connected = self._session(batch)
            all_sent = all_sent and sent_all
            if not connected:
                return False, False  # the rest waits for the next round
        return all_sent, True

    def _say_refused(self, refused: dict[str, str]) -> None:
        for path, why in refused.items():
            if path not in self._refused:
                log.warning("not uploading %s: %s", path, why)
        self._refused = set(refused)

    def _session(self, files: list[str]) -> tuple[bool, bool]:
        """Send `files` over one connection: (all sent, connection held)."""
        host, port = self.config.submitserver
        all_sent = True
        try:
            check_key_mode(self.config.uploadkey)
            with self.connect(
                host, port, self.config.login, self.config.uploadkey, self.config.knownhosts,
                cancelled=self.should_stop,
            ) as c:
                c.ensure_directory(self.remote_dir)
                for path in files:
                    if self.should_stop():
                        break
                    if not os.path.lexists(path):
                        continue  # trimmed meanwhile
                    all_sent = self._send(c, path, host, port) and all_sent
        except (UploadError, OSError, EOFError, paramiko.SSHException) as exc:
            # anything else from a dying connection is a failed round too
            if self.should_stop():
                log.info("stopping: %s; unsent files stay in %s", reason(exc), self.directory)
            else:
                self.failures += 1
                log.error("upload failed: %s", reason(exc))
            return False, False
        return all_sent, True

    def _send(self, c: Collector, path: str, host: str, port: int) -> bool:
        """One file; a failure of this file alone defers it and returns False."""
        started = time.monotonic()
        try:
            size = c.upload(path, self.remote_dir)
        except FileRefused as exc:
            self.failures += 1
            backoff = min(self._retry.get(path, (0.0, BACKOFF_FIRST / 2))[1] * 2, BACKOFF_MAX)
            self._retry[path] = (time.monotonic() + backoff, backoff)
            log.error("upload failed: %s; next try of this file in %.0f s, the others go on",
                      reason(exc), backoff)
            return False
        os.unlink(path)
        self._retry.pop(path, None)
        self.uploaded += 1
        log.info("uploaded %s (%d bytes, %.1f s) to %s:%d/%s",
                 os.path.basename(path), size, time.monotonic() - started, host, port, self.remote_dir)
        return True

    def run(self, once: bool, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Upload until stopped (or one round with `once`); True if all went."""
        self.should_stop = should_stop
        backoff = BACKOFF_FIRST
        while True:
            ok, reached = self._round()
            if once or should_stop():
                return ok
            if reached:
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
