"""The spool directory: its folders, its file names and its locks.

One definition for the sensor, the uploader and the tests; the package
scripts make `PACKAGE_FOLDERS` under DEFAULT_ROOT and name the state files
as `state_name` does (tests/test_package.py reads the scripts against
this module):

    <spooldir>/new/<channel>/       the file being written
    <spooldir>/waiting/<channel>/   finished files, for the uploader
    <spooldir>/archive/<channel>/   hard links of finished files (archive="yes")
    <spooldir>/locks/               sensor-<channel>.lock, upload-<channel>.lock,
                                    each daemon's <program>-<channel>.state, and
                                    dnstap-<channel>.table (the dnstap table kept
                                    across a restart)
    <spooldir>/damaged/<channel>/   what a crash left that could not be read
    <spooldir>/keys/                the upload key and known_hosts (packages only)

A spool file is named `<host>.<epoch seconds>.<microseconds>.<ext>` after
the packet time at which its first record was made, so names sort by time.
"""

from __future__ import annotations

import fcntl
import os
import re

DEFAULT_ROOT = "/var/spool/sie"  # the configuration's default `spooldir`, the packages' spool
NEW = "new"
WAITING = "waiting"
ARCHIVE = "archive"
LOCKS = "locks"
DAMAGED = "damaged"  # spool files recovery could not use, set aside (made when needed)
KEYS = "keys"
FOLDERS = (NEW, WAITING, ARCHIVE, LOCKS)
PACKAGE_FOLDERS = (*FOLDERS, KEYS)  # what the packages make, owned by the service user
UPLOAD_KEY = "upload"  # in keys/: the configuration's default `uploadkey` (sie-gen-key writes it)
KNOWN_HOSTS = "known_hosts"  # in keys/: the default `knownhosts` (the packages install it)

# Who holds a lock and writes a state file in locks/, by role.
SENSOR = "sensor"
UPLOADER = "upload"
DNSTAP = "dnstap"  # the dnstap edge's table file
LOCK, STATE, TABLE = "lock", "state", "table"  # the kinds of file in locks/, by their extension

_TIME_IN_NAME = re.compile(r"\.(\d+)\.(\d{6})\.[A-Za-z0-9.]+$")


class Busy(RuntimeError):
    """Another process holds this lock."""


def folder(spooldir: str, kind: str, channel: str) -> str:
    """new/, waiting/, archive/ or damaged/ of one channel."""
    return os.path.join(spooldir, kind, channel)


def locks_name(role: str, channel: str, kind: str) -> str:
    """`sensor-ch202.lock`: the name of a file in locks/ (`role` and
    `channel` may be shell patterns, as the package scripts use them)."""
    return f"{role}-{channel}.{kind}"


def in_locks(spooldir: str, role: str, channel: str, kind: str) -> str:
    """The path of a lock, state or table file (`locks_name`)."""
    return os.path.join(spooldir, LOCKS, locks_name(role, channel, kind))


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
    os.makedirs(os.path.join(spooldir, LOCKS), exist_ok=True)
    return hold(in_locks(spooldir, role, channel, LOCK))


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
