"""The collector's folders, and how a file moves through them.

One definition for the ingester, `add-sensor`, `status`, the tests and the
package scripts:

    <root>/incoming/<sensor>/up/<channel>/<file>   where a sensor's uploads land
                                                  (its key is forced into incoming/<sensor>)
    <root>/work/<sensor>/<channel>/<file>          claimed by the ingester, not yet committed
    <root>/done/<sensor>/<channel>/<file>          ingested, kept `keep_days`
    <root>/damaged/<sensor>/<channel>/<file>       ingested as far as it decoded, set aside
    <root>/locks/ingest.lock                       one ingester at a time

A sensor's identity is the folder its key writes into, never anything a
file says. Only complete files are claimed: rsync and the SFTP uploader
write under a name starting with a dot and rename when whole. Only regular
files are claimed (never a link, a FIFO or a folder a sensor made), by a
rename into work/ on the same file system, so a file is either still the
sensor's or wholly the ingester's.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from dataclasses import dataclass

from sensor.spool.spooldir import Busy, hold

__all__ = ["Busy", "Claimed", "claim", "claimed", "finish", "lock", "waiting"]

INCOMING, WORK, DONE, DAMAGED, LOCKS = "incoming", "work", "done", "damaged", "locks"
UP = "up"  # what the sensors' uploaders name as their destination: up/<channel>/
FOLDERS = (INCOMING, WORK, DONE, DAMAGED, LOCKS)
SENSOR_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
CHANNEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TIME_IN_NAME = re.compile(r"\.(\d+)\.(\d{6})\.")


@dataclass(frozen=True)
class Claimed:
    """A file the ingester holds: its sensor, channel and name, and where it is now."""

    sensor: str
    channel: str
    name: str
    path: str
    size: int

    @property
    def ledger_name(self) -> str:
        """The file's identity within its sensor, as the store records it."""
        return f"{self.channel}/{self.name}"


def sensor_folder(root: str, sensor: str) -> str:
    """What a sensor's key is confined to (rrsync's or the chroot's root)."""
    if not SENSOR_NAME.fullmatch(sensor):
        raise ValueError(f"{sensor!r} is not a sensor name (a-z, 0-9, '.', '_', '-'; up to 64)")
    return os.path.join(root, INCOMING, sensor)


def lock(root: str) -> int:
    """Hold locks/ingest.lock: one ingester a collector (Busy otherwise)."""
    return hold(os.path.join(root, LOCKS, "ingest.lock"))


def make_folders(root: str) -> None:
    for name in FOLDERS:
        os.makedirs(os.path.join(root, name), mode=0o750, exist_ok=True)


def _order(name: str) -> tuple:
    match = _TIME_IN_NAME.search(name)
    return (int(match.group(1)), int(match.group(2)), name) if match else (1 << 62, 0, name)


def _entries(folder: str, unreadable: list[tuple[str, OSError]] | None) -> list[os.DirEntry]:
    """What `folder` holds; none when it is gone meanwhile, or cannot be listed (then said in
    `unreadable`, with why)."""
    try:
        return list(os.scandir(folder))
    except FileNotFoundError:
        return []
    except OSError as exc:
        if unreadable is not None:
            unreadable.append((folder, exc))
        return []


def _regular_files(folder: str, unreadable: list[tuple[str, OSError]] | None = None) -> list[tuple[str, int]]:
    """(name, size) of the complete regular files in `folder`, oldest first."""
    found = []
    for entry in _entries(folder, unreadable):
        if entry.name.startswith("."):
            continue
        with contextlib.suppress(OSError):
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode):
                found.append((entry.name, info.st_size))
    found.sort(key=lambda item: _order(item[0]))
    return found


def _folders(parent: str, pattern: re.Pattern, unreadable: list[tuple[str, OSError]] | None = None) -> list[str]:
    """Names of the real folders (not links) in `parent` that fit `pattern`."""
    names = []
    for entry in _entries(parent, unreadable):
        with contextlib.suppress(OSError):
            if pattern.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                names.append(entry.name)
    return sorted(names)


def waiting(root: str, unreadable: list[tuple[str, OSError]] | None = None) -> list[tuple[str, str, str, int]]:
    """(sensor, channel, name, size) of every complete upload not yet claimed; the folders that
    could not be listed (a sensor's SFTP login left its folder without the set-group-ID bit, say)
    added to `unreadable` with why: their uploads wait unseen, which the ingester must say."""
    found = []
    for sensor in _folders(os.path.join(root, INCOMING), SENSOR_NAME, unreadable):
        up = os.path.join(root, INCOMING, sensor, UP)
        for channel in _folders(up, CHANNEL_NAME, unreadable):
            for name, size in _regular_files(os.path.join(up, channel), unreadable):
                found.append((sensor, channel, name, size))
    return found


def claim(root: str, sensor: str, channel: str, name: str, size: int) -> Claimed | None:
    """Move an upload into work/ (None when it went away in the meantime, or when a copy of that
    name already waits there for its batch's commit: a sensor sent it again after a broken
    connection; it is taken after that commit, and the ledger then knows it. Renamed over the
    first copy, it would take that copy's only file with it when found a duplicate)."""
    source = os.path.join(root, INCOMING, sensor, UP, channel, name)
    target_dir = os.path.join(root, WORK, sensor, channel)
    os.makedirs(target_dir, mode=0o750, exist_ok=True)
    target = os.path.join(target_dir, name)
    if os.path.lexists(target):  # only this ingester (it holds the lock) writes work/: no race
        return None
    try:
        os.rename(source, target)
    except FileNotFoundError:
        return None
    return Claimed(sensor, channel, name, target, size)


def claimed(root: str) -> list[Claimed]:
    """What a previous run claimed and may not have committed (at start-up)."""
    found = []
    work = os.path.join(root, WORK)
    for sensor in _folders(work, SENSOR_NAME):
        for channel in _folders(os.path.join(work, sensor), CHANNEL_NAME):
            folder = os.path.join(work, sensor, channel)
            for name, size in _regular_files(folder):
                found.append(Claimed(sensor, channel, name, os.path.join(folder, name), size))
    return found


def finish(root: str, item: Claimed, damaged: bool, keep: bool) -> None:
    """After the commit: to damaged/, to done/ when kept, else deleted."""
    if not damaged and not keep:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(item.path)
        return
    target_dir = os.path.join(root, DAMAGED if damaged else DONE, item.sensor, item.channel)
    os.makedirs(target_dir, mode=0o750, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.rename(item.path, os.path.join(target_dir, item.name))


def expire_done(root: str, before: float) -> int:
    """Remove kept files whose modification time is before `before`."""
    removed = 0
    done = os.path.join(root, DONE)
    for sensor in _folders(done, SENSOR_NAME):
        for channel in _folders(os.path.join(done, sensor), CHANNEL_NAME):
            folder = os.path.join(done, sensor, channel)
            for name, _ in _regular_files(folder):
                path = os.path.join(folder, name)
                with contextlib.suppress(OSError):
                    if os.lstat(path).st_mtime < before:
                        os.unlink(path)
                        removed += 1
    return removed
