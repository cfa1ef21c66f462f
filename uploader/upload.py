"""The uploader process: oldest file first, a few per connection, never lose one.

A file leaves waiting/ only after the collector holds it whole under its
final name. Any failure leaves it where it is for the next round; rounds
back off exponentially (capped) while the collector is unreachable. A file
that fails alone (unreadable here, refused there) waits with a backoff of
its own while the files behind it go on. Only regular files of the
uploader's own user are sent, never through a link (localfiles.py); others
are left where they are and named once in the log. One
uploader per channel: a flock on locks/upload-<channel>.lock, which the
kernel releases when a crashed uploader's process goes away. Before each
round waiting/ is trimmed to max_spool_size_kbytes, oldest first, so a
long outage cannot fill the disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator

import paramiko

from sensor.service.cli_options import as_this_user
from sensor.service.config import Config
from sensor.spool import spooldir

from . import discovery, keys, localfiles
from .rsync import RsyncCollector
from .sftp import Collector, HostKeyError, UploadError, reason

METHODS = {"rsync": RsyncCollector, "sftp": Collector}

log = logging.getLogger("uploader")

REMOTE_ROOT = "up"
POLL_SECONDS = 2.0
BACKOFF_FIRST = 2.0
BACKOFF_MAX = 300.0

UploaderBusy = spooldir.Busy  # another uploader already serves this channel


def waiting_dir(config: Config) -> str:
    return spooldir.folder(config.spooldir, spooldir.WAITING, config.channel)


def _order(name: str, path: str) -> tuple:
    """Spool names carry their start time; anything else sorts by mtime."""
    when = spooldir.name_time(name)
    if when is not None:
        return (*when, name)
    try:
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        mtime = 0.0
    return (int(mtime), 0, name)


def survey(directory: str) -> tuple[list[str], dict[str, str]]:
    """(files that may be sent, oldest first; {path: why not} for the rest).

    Hidden names are skipped; everything else is judged by lstat, so a
    symbolic link is seen as one and never followed.
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
            why = localfiles.refusal(os.lstat(path))
        except FileNotFoundError:
            continue
        if why:
            refused[path] = why
        else:
            entries.append((_order(name, path), path))
    return [path for _, path in sorted(entries)], refused


def pending(directory: str) -> list[str]:
    """The files that may be sent, oldest first."""
    return survey(directory)[0]


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


class SpoolForbidden(RuntimeError):
    """The uploader's user cannot use the spool: it is another user's (a
    spool made by hand as root, or an older layout without locks/)."""


@contextlib.contextmanager
def channel_lock(config: Config) -> Iterator[None]:
    """Hold the channel's upload lock (spooldir's), or raise UploaderBusy
    (another uploader has it) or SpoolForbidden."""
    try:
        fd = spooldir.lock(config.spooldir, spooldir.UPLOADER, config.channel)
    except PermissionError as exc:
        raise SpoolForbidden(f"{as_this_user('take the upload lock', exc)} (the spool must belong to the user "
                             "the uploader runs as)") from None
    try:
        yield
    finally:
        os.close(fd)


class Uploader:
    """Rounds of uploads for one channel."""

    def __init__(self, config: Config, connect: Callable[..., Collector] | None = None) -> None:
        config.require_upload_settings()
        self.config = config
        self._connect = connect  # tests' own; else upload_method's, looked up for every session
        self.directory = waiting_dir(config)
        self.remote_dir = f"{REMOTE_ROOT}/{config.channel}"
        self.uploaded = 0
        self.failures = 0
        self.should_stop: Callable[[], bool] = lambda: False
        self._retry: dict[str, tuple[float, float]] = {}  # path -> (next try, its backoff): files that failed alone
        self._refused: set[str] = set()  # files not ours to send, said once each
        self.reached = False  # the last round's sessions all went (files may still have failed alone)
        self._alone = 0  # files of this round that failed alone
        # for `sie-dns-sensor status` (written out by watch.py)
        self.last_success: float | None = None  # wall time the last file arrived
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self.rounds = 0  # rounds ended since the start (status does not judge a stall before the first)
        self._reconfigured = False  # a reload came: the next round starts now, backoff forgotten

    def reconfigure(self, config: Config) -> None:
        """A reload's settings, from the next round, which starts at once:
        a fixed login or server must not wait out a backoff built up while
        it was wrong. upload_method applies too (each session looks it up)."""
        if config.upload_method != self.config.upload_method:
            log.info("upload_method is now %s (was %s)", config.upload_method, self.config.upload_method)
        self.config = config
        self._reconfigured = True

    def round(self) -> bool:
        """Trim, then upload everything due; False if anything failed."""
        try:
            return self._round()
        finally:
            self.rounds += 1

    def _round(self) -> bool:
        try:
            trim(self.directory, self.config.max_spool_size_kbytes)
            files, refused = survey(self.directory)
        except PermissionError as exc:  # waiting/ left root's: said each round, never a traceback
            self._failed(as_this_user("use the spool", exc))
            return False
        self._say_refused(refused)
        now = time.monotonic()
        self._retry = {path: due for path, due in self._retry.items() if path in files}
        due = [path for path in files if self._retry.get(path, (0.0, 0.0))[0] <= now]
        per = self.config.maxper
        self._alone = 0
        self.reached = False
        for start in range(0, len(due), per):
            if self.should_stop() or not self._session(due[start : start + per]):
                return False  # the collector is not there: the rest waits for the next round
        self.reached = True
        return self._alone == 0

    def _say_refused(self, refused: dict[str, str]) -> None:
        for path, why in refused.items():
            if path not in self._refused:
                log.warning("not uploading %s: %s", path, why)
        self._refused = set(refused)

    def _session(self, files: list[str]) -> bool:
        """One connection for a batch: the first collector that answers."""
        loose = keys.loose_mode(self.config.uploadkey)
        if loose:
            self._failed(loose)
            return False
        host, port = self.config.submitserver
        found = discovery.targets(host, port, self.config.upload_method)
        if not found:
            self._failed(f"no collector to try for {host}")
            return False
        for number, target in enumerate(found, 1):
            try:
                self._send(target, files)
                return True
            except HostKeyError as exc:
                self._failed(str(exc))
                return False  # never try the next one with a key that does not match
            except (UploadError, OSError, EOFError, paramiko.SSHException) as exc:
                # anything else from a dying connection is a failed round too
                if self.should_stop():
                    log.info("stopping: %s; unsent files stay in %s", reason(exc), self.directory)
                    return False
                more = f"; trying the next of {len(found)}" if number < len(found) else ""
                self._failed(f"{reason(exc)}{more}")
        return False

    def _failed(self, why: str) -> None:
        """Count, remember for `status`, and log one failure."""
        self.failures += 1
        self.last_error, self.last_error_time = why, time.time()
        log.error("upload failed: %s", why)

    def _refused_alone(self, path: str, why: str) -> None:
        """This file failed and the session goes on: it waits, with its own backoff."""
        self._alone += 1
        backoff = min(self._retry.get(path, (0.0, BACKOFF_FIRST / 2))[1] * 2, BACKOFF_MAX)
        self._retry[path] = (time.monotonic() + backoff, backoff)
        self._failed(f"{why}; next try of this file in {backoff:.0f} s, the others go on")

    def _send(self, target: discovery.Target, files: list[str]) -> None:
        config = self.config
        started = time.monotonic()

        def sent(path: str, size: int) -> None:
            self.uploaded += 1
            self.last_success = time.time()
            self._retry.pop(path, None)
            log.info("uploaded %s (%d bytes, %.1f s) to %s:%d/%s", os.path.basename(path), size,
                     time.monotonic() - started, target.host, target.port, self.remote_dir)

        connect = self._connect or METHODS[config.upload_method]
        with connect(target.host, target.port, config.login, config.uploadkey, config.knownhosts,
                     cancelled=self.should_stop) as collector:
            collector.send(files, self.remote_dir, sent, self._refused_alone)

    def run(self, once: bool, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Upload until stopped (or one round with `once`); True if all went."""
        self.should_stop = should_stop
        backoff = BACKOFF_FIRST
        while True:
            self._reconfigured = False
            ok = self.round()
            if once or should_stop():
                return ok
            if self._reconfigured:  # a reload during the round: its settings are tried now
                backoff = BACKOFF_FIRST
                continue
            if self.reached:  # files that failed alone have backoffs of their own
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
                if self._reconfigured:
                    backoff = BACKOFF_FIRST
                    break
                time.sleep(min(0.2, wait))
