"""The small state file each running daemon rewrites every few seconds.

`sie-dns-sensor status` reads these instead of asking the processes, so it
works the same under SysV and systemd and needs no socket. They live in
the spool's locks/ folder, next to the channel locks: both daemons can
already write there under every init system (the systemd units make only
/var/spool/sie writable; /run/sie-dns-sensor exists only under the SysV
script), and a second channel or a test's private spool gets its own.
Each is JSON, replaced atomically (written aside, then renamed), so a
reader never sees half of one. A crashed daemon leaves its file behind:
the reader checks the pid and the age, never the file's mere presence.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

from sensor.spool import spooldir

STATE_SECONDS = 5.0  # how often a daemon rewrites its state file
STALE_SECONDS = 4 * STATE_SECONDS  # a file older than this belongs to a hung or dead daemon

# The programs that write a state file, as spooldir names their files.
SENSOR, UPLOADER = spooldir.SENSOR, spooldir.UPLOADER


def worker_state_name(number: int) -> str:
    """The sensor's state file is the first capture worker's; the others
    (capture_workers > 1) have one each beside it."""
    return SENSOR if number == 1 else f"{SENSOR}.{number}"


def state_path(root: str, program: str, channel: str) -> str:
    return spooldir.in_locks(root, program, channel, spooldir.STATE)


def write_state(path: str, state: dict[str, Any]) -> None:
    """Replace `path` with `state` as JSON (atomic rename; no fsync: it is
    rewritten in a few seconds, and a stale one is recognised as such)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(state, handle, sort_keys=True)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read_state(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


class StateFile:
    """A daemon's state file, rewritten at most every STATE_SECONDS."""

    def __init__(self, path: str, every: float = STATE_SECONDS) -> None:
        self.path = path
        self.every = every
        self.started = time.time()
        self._next = 0.0
        self.failed = False

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def write(self, state: dict[str, Any]) -> None:
        """Write now; a failure (full disk) is logged once by the caller's
        `failed` check and never stops the daemon."""
        self._next = time.monotonic() + self.every
        state = dict(state, pid=os.getpid(), updated=time.time(), started=self.started)
        try:
            write_state(self.path, state)
        except OSError:
            self.failed = True
            return
        self.failed = False
