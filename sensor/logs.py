"""Where log lines go, so that they always reach the operator.

Operators grep syslog for the sensor (tag `sie`, facility.level from
syslog_priority), as they did for the C one. But a machine may have no
syslog daemon (no /dev/log: containers, minimal installs), and a daemon
whose lines vanish is a daemon nobody can see failing. So, by where the
process runs:

- under systemd (JOURNAL_STREAM or INVOCATION_ID set): stderr, which
  journald captures, each line prefixed with its syslog priority `<N>`
  so `journalctl -p` works;
- detached by `--daemon` (the SysV script): syslog when /dev/log exists,
  else LOG_FILE, which the shipped logrotate file rotates;
- in the foreground: stderr, and syslog too when /dev/log exists.
"""

from __future__ import annotations

import logging
import logging.handlers
import os

SYSLOG_SOCKET = "/dev/log"
SYSLOG_TAG = "sie"  # as the C sensor logged
# the package makes this folder for the service user; tests point it elsewhere
LOG_DIR = os.environ.get("SIE_DNS_SENSOR_LOG_DIR", "/var/log/sie-dns-sensor")
LOG_FILE = os.path.join(LOG_DIR, "sie-dns-sensor.log")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO,
    "warning": logging.WARNING,
    "err": logging.ERROR,
    "crit": logging.ERROR,
    "alert": logging.ERROR,
    "emerg": logging.ERROR,
}
# Python level -> syslog severity, for the journal's `<N>` prefix
_SEVERITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def under_systemd(environ: os._Environ | dict | None = None) -> bool:
    """True when systemd started us: our stderr is then the journal."""
    environ = os.environ if environ is None else environ
    return bool(environ.get("JOURNAL_STREAM") or environ.get("INVOCATION_ID"))


class JournalFormatter(logging.Formatter):
    """`<priority>message`: journald reads the priority from the prefix."""

    def __init__(self, facility: int) -> None:
        super().__init__("%(message)s")
        self.facility = facility

    def format(self, record: logging.LogRecord) -> str:
        severity = _SEVERITY.get(record.levelno, 6)
        return f"<{self.facility * 8 + severity}>{super().format(record)}"


def setup(priority: str, foreground: bool, detached: bool = False, program: str = "sie-dns-sensor") -> str:
    """Configure the root logger once for the process; return where lines go.

    `detached`: the process is about to lose its terminal (`--daemon`).
    """
    facility_name, _, level_name = priority.partition(".")
    facility = logging.handlers.SysLogHandler.facility_names[facility_name]
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(_LEVELS.get(level_name, logging.INFO))
    # paramiko narrates every connection at INFO; the uploader logs its own lines
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    if under_systemd() and not detached:
        handler = logging.StreamHandler()
        handler.setFormatter(JournalFormatter(facility))
        root.addHandler(handler)
        return "the journal"
    where = []
    if os.path.exists(SYSLOG_SOCKET):
        handler = logging.handlers.SysLogHandler(address=SYSLOG_SOCKET, facility=facility)
        handler.setFormatter(logging.Formatter(f"{SYSLOG_TAG}[%(process)d]: %(message)s"))
        root.addHandler(handler)
        where.append(f"syslog (tag {SYSLOG_TAG}, {priority})")
    elif detached:
        handler = _log_file(program)
        if handler is not None:
            root.addHandler(handler)
            where.append(LOG_FILE)
    if (foreground and not detached) or not root.handlers:
        stderr = logging.StreamHandler()
        stderr.setFormatter(logging.Formatter(f"{SYSLOG_TAG}: %(levelname)s %(message)s"))
        root.addHandler(stderr)
        where.append("stderr")
    return " and ".join(where)


class _LogFile(logging.handlers.WatchedFileHandler):
    """WatchedFileHandler whose reopen check cannot raise out of a log call
    (in Python 3.11 it runs outside emit's error handling: a log folder the
    service user cannot read would stop the daemon at its next log line)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)
        except Exception:
            self.handleError(record)


def _log_file(program: str) -> logging.Handler | None:
    """LOG_FILE, reopened when logrotate has moved it (WatchedFileHandler)."""
    try:
        os.makedirs(LOG_DIR, mode=0o750, exist_ok=True)
        handler = _LogFile(LOG_FILE, encoding="utf-8")
    except OSError:
        return None
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {program}[%(process)d]: %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
    )
    return handler
