"""`sie-dns-sensor status`: is the sensor capturing and are its files leaving?

Judged from what the daemons write (state.py) and what the spool holds.
The same judgements are what the daemons log as a warning every interval
while a problem lasts, so a monitoring system polling `status` and an
operator reading the log see one story. A sensor that stopped uploading
for two years without anyone noticing is the failure this exists for.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import os
import time
from typing import Any

from sensor.service import clock
from sensor.service.config import Config
from sensor.service.daemonstate import SENSOR, STALE_SECONDS, UPLOADER, read_state, state_path, worker_state_name
from sensor.spool import spooldir

STALL_INTERVALS = 5  # no upload success for this many intervals while files wait: a problem

# exit statuses, as LSB init scripts say them
PROBLEM = 1
NOT_RUNNING = 3
UNKNOWN = 4  # this user cannot read the spool: nothing can be judged


class SpoolUnreadable(Exception):
    """`status` cannot read what the daemons write as the user running it
    (a monitoring user outside the spool's group): it says so, rather than
    calling the sensor dead or showing a PermissionError."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def check_readable(cfg: Config) -> None:
    """SpoolUnreadable unless every folder and state file `report` reads can
    be read (a missing one is fine: `report` says what that means)."""
    folders = [os.path.join(cfg.spooldir, spooldir.LOCKS)]
    folders += [spooldir.folder(cfg.spooldir, kind, cfg.channel) for kind in (spooldir.WAITING, spooldir.NEW)]
    try:
        for path in folders:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(path):
                pass
        for program in (SENSOR, UPLOADER):
            with contextlib.suppress(FileNotFoundError), open(state_path(cfg.spooldir, program, cfg.channel), "rb"):
                pass
    except PermissionError as exc:
        raise SpoolUnreadable(exc) from None


@dataclasses.dataclass
class Backlog:
    """Finished files waiting for the uploader."""

    files: int = 0
    bytes: int = 0
    oldest_age: float = 0.0  # seconds since the oldest was finished


def backlog(directory: str, now: float | None = None) -> Backlog:
    now = time.time() if now is None else now
    found = Backlog()
    oldest = None
    for _, info in _visible_files(directory):
        found.files += 1
        found.bytes += info.st_size
        oldest = info.st_mtime if oldest is None else min(oldest, info.st_mtime)
    if oldest is not None:
        found.oldest_age = max(0.0, now - oldest)
    return found


def open_files(directory: str, now: float | None = None) -> list[dict[str, Any]]:
    """The file(s) the sensor is writing now (new/<channel>/)."""
    now = time.time() if now is None else now
    return [
        {"name": name, "bytes": info.st_size, "age": max(0.0, now - info.st_ctime)}
        for name, info in _visible_files(directory)
    ]


def _visible_files(directory: str) -> list[tuple[str, os.stat_result]]:
    """(name, stat) of a folder's files by name: hidden ones (temporaries)
    and ones gone meanwhile (uploaded, finished) left out; none if no folder."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            out.append((entry.name, entry.stat()))
        except FileNotFoundError:
            continue
    return out


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def running(state: dict | None, now: float | None = None) -> bool:
    """The daemon that wrote `state` is alive and still writing it."""
    if not state or state.get("stopped"):
        return False
    now = time.time() if now is None else now
    return _pid_alive(state.get("pid")) and now - float(state.get("updated", 0)) <= STALE_SECONDS


def capture_problems(state: dict) -> list[str]:
    """What is wrong with a running sensor's capture."""
    problems = []
    if not state.get("capturing", True):
        problems.append(f"capture lost: {state.get('capture_error') or 'unknown reason'}; reopening")
    dropped = state.get("dropped_last_interval", 0)
    if dropped:
        problems.append(f"the kernel dropped {dropped} packets in the last interval (drops rising)")
    return problems


def upload_problems(state: dict | None, waiting: Backlog, interval: int, now: float | None = None,
                    stall_intervals: int = STALL_INTERVALS) -> list[str]:
    """Files wait and no upload has succeeded for `stall_intervals` intervals.

    An uploader that has not finished its first round since it started is
    not judged yet: the files that waited while it was stopped are what
    that round is sending (its state says `rounds`: 0).
    """
    now = time.time() if now is None else now
    limit = stall_intervals * interval
    if not waiting.files or waiting.oldest_age <= limit:
        return []
    if (state or {}).get("rounds") == 0 and not state.get("stopped"):
        return []
    last = (state or {}).get("last_success")
    if last is not None and now - last <= limit:
        return []
    since = "never" if last is None else f"last {_ago(now - last)} ago"
    error = (state or {}).get("last_error")
    return [
        f"no upload succeeded for more than {stall_intervals} intervals ({since}) while {waiting.files} "
        f"files wait (oldest {_ago(waiting.oldest_age)})" + (f"; last error: {error}" if error else "")
    ]


# what each capture worker counts for itself, added up for the sensor as a whole
ADDED_UP = ("packets", "packets_per_second", "kernel_received", "kernel_dropped", "if_dropped",
            "dropped_last_interval", "table", "table_max", "records", "files", "unwritten")


def sensor_state(spooldir: str, channel: str, now: float) -> dict[str, Any] | None:
    """The sensor's state; with capture_workers > 1, the first worker's with
    every worker's counts added up (a worker not running is a problem)."""
    first = read_state(state_path(spooldir, SENSOR, channel))
    count = int(((first or {}).get("worker") or (1, 1))[1])
    if count <= 1:
        return first
    total = dict(first)
    by_type = collections.Counter(first.get("records_last_interval") or {})
    for number in range(2, count + 1):
        other = read_state(state_path(spooldir, worker_state_name(number), channel))
        if not running(other, now) and running(first, now):
            total["capturing"] = False
            total["capture_error"] = f"capture worker {number} of {count} is not running"
            continue
        for name in ADDED_UP:
            total[name] = total.get(name, 0) + (other or {}).get(name, 0)
        by_type.update((other or {}).get("records_last_interval") or {})
        if not other.get("capturing", True):
            total["capturing"], total["capture_error"] = False, other.get("capture_error")
    total["records_last_interval"] = dict(by_type)
    return total


def report(cfg: Config, stall_intervals: int = STALL_INTERVALS, now: float | None = None) -> dict[str, Any]:
    """Everything `status` shows, with the problems found and the exit status.

    SpoolUnreadable when this user cannot read the spool. With upload="no"
    the files still in waiting/ (made before it was set) are not a backlog:
    nothing will send them, and they are kept, not deleted (set upload="yes"
    again and they go); they are shown apart as `left_waiting`.
    """
    now = time.time() if now is None else now
    check_readable(cfg)
    sensor = sensor_state(cfg.spooldir, cfg.channel, now)
    uploader = read_state(state_path(cfg.spooldir, UPLOADER, cfg.channel))
    waiting = backlog(spooldir.folder(cfg.spooldir, spooldir.WAITING, cfg.channel), now)
    left_waiting = Backlog()
    if not cfg.upload:
        waiting, left_waiting = left_waiting, waiting
    problems = []
    sensor_running = running(sensor, now)
    upload_running = running(uploader, now)
    if sensor_running:
        problems += capture_problems(sensor)
    else:
        problems.append("the sensor is not running")
    if cfg.upload:
        if not upload_running:
            problems.append("the uploader is not running")
        problems += upload_problems(uploader, waiting, cfg.interval, now, stall_intervals)
    exit_status = 0
    if problems:
        exit_status = NOT_RUNNING if not sensor_running else PROBLEM
    unsynchronized = clock.unsynchronized()
    return {
        "ok": not problems,
        "exit_status": exit_status,
        "problems": problems,
        # not problems (the exit status stays): the records are still made, their times less right
        "warnings": [unsynchronized] if unsynchronized else [],
        "channel": cfg.channel,
        "upload_enabled": cfg.upload,
        "sensor": dict(sensor or {}, running=sensor_running),
        "uploader": dict(uploader or {}, running=upload_running),
        "backlog": dataclasses.asdict(waiting),
        "left_waiting": dataclasses.asdict(left_waiting),
        "open_files": open_files(spooldir.folder(cfg.spooldir, spooldir.NEW, cfg.channel), now),
    }


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"


def _when(stamp: float | None, now: float) -> str:
    if not stamp:
        return "never"
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(stamp))} ({_ago(now - stamp)} ago)"


def text_lines(found: dict[str, Any], now: float | None = None) -> list[str]:
    """The report for a person."""
    now = time.time() if now is None else now
    sensor, uploader = found["sensor"], found["uploader"]
    lines = []
    if sensor["running"]:
        capture = "capturing" if sensor.get("capturing", True) else "NOT capturing"
        lines.append(f"sensor:   running (pid {sensor['pid']}, up {_ago(now - sensor['started'])}), "
                     f"{capture} from {sensor.get('capture', '?')}")
        lines.append(f"          {sensor.get('packets_per_second', 0):.0f} packets/s, kernel drops "
                     f"{sensor.get('kernel_dropped', 0) + sensor.get('if_dropped', 0)} "
                     f"({sensor.get('dropped_last_interval', 0)} in the last interval), "
                     f"table {sensor.get('table', 0)}/{sensor.get('table_max', 0)}")
        kinds = sensor.get("records_last_interval") or {}
        shown = ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())) or "none"
        lines.append(f"          records in the last interval ({sensor.get('interval', '?')} s): {shown}")
    else:
        lines.append("sensor:   not running")
    for opened in found["open_files"]:
        lines.append(f"open file: {opened['name']} ({opened['bytes']} bytes, {_ago(opened['age'])})")
    if found["upload_enabled"]:
        state = f"running (pid {uploader['pid']})" if uploader["running"] else "not running"
        lines.append(f"uploader: {state}; last upload {_when(uploader.get('last_success'), now)}")
        if uploader.get("last_error"):
            when = _when(uploader.get("last_error_time"), now)
            lines.append(f"          last error: {uploader['last_error']} at {when}")
    else:
        lines.append('uploader: upload="no"')
    waiting = found["backlog"]
    oldest = f", oldest {_ago(waiting['oldest_age'])}" if waiting["files"] else ""
    lines.append(f"waiting:  {waiting['files']} files, {waiting['bytes']} bytes{oldest}")
    left = found.get("left_waiting") or {}
    if left.get("files"):
        lines.append(f"          and {left['files']} files ({left['bytes']} bytes) from before upload=\"no\": "
                     f"kept, not uploaded (upload=\"yes\" sends them)")
    if sensor.get("last_error"):
        lines.append(f"sensor's last error: {sensor['last_error']} at {_when(sensor.get('last_error_time'), now)}")
    for warning in found.get("warnings", []):
        lines.append(f"WARNING:  {warning}")
    for problem in found["problems"]:
        lines.append(f"PROBLEM:  {problem}")
    if not found["problems"]:
        lines.append("ok")
    return lines
