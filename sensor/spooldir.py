"""The spool directory: its folders, its file names and its locks.

One definition for the sensor, the uploader, the tests and the package
scripts (which create `FOLDERS` under the spool root):

    <spooldir>/new/<channel>/       the file being written
    <spooldir>/waiting/<channel>/   finished files, for the uploader
    <spooldir>/archive/<channel>/   hard links of finished files (archive="yes")
    <spooldir>/locks/               sensor-<channel>.lock, upload-<channel>.lock
    <spooldir>/damaged/<channel>/   what a crash left that could not be read

A spool file is named `<host>.<epoch seconds>.<microseconds>.<ext>` after
the packet time at which its first record was made, so names sort by time.
"""

from __future__ import annotations

import fcntl
import os
import re

NEW = "new"
WAITING = "waiting"
ARCHIVE = "archive"
LOCKS = "locks"
DAMAGED = "damaged"  # spool files recovery could not use, set aside (made when needed)
FOLDERS = (NEW, WAITING, ARCHIVE, LOCKS)

_TIME_IN_NAME = re.compile(r"\.(\d+)\.(\d{6})\.[A-Za-z0-9.]+$")


class Busy(RuntimeError):
    """Another process holds this lock."""


def folder(spooldir: str, kind: str, channel: str) -> str:
    """new/, waiting/ or archive/ of one channel."""
    return os.path.join(spooldir, kind, channel)


def file_name(host: str, sec: int, usec: int, ext: str) -> str:
    return f"{host}.{sec}.{usec:06d}.{ext}"


def name_time(name: str) -> tuple[int, int] | None:
    """(seconds, microseconds) a spool file's name carries, else None."""
    match = _TIME_IN_NAME.search(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def lock(spooldir: str, role: str, channel: str) -> int:
    """Hold locks/<role>-<channel>.lock (flock); Busy if another holds it.

    The kernel drops the lock with the process, so a crash never leaves
    it stuck. Returns the descriptor; closing it releases the lock.
    """
    locks = os.path.join(spooldir, LOCKS)
    os.makedirs(locks, exist_ok=True)
    return hold(os.path.join(locks, f"{role}-{channel}.lock"))


def hold(path: str) -> int:
    """Hold the lock file at `path` (flock, pid written in it); Busy if taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Busy(f"another process holds {path}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
