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

Whatever the handler, a line is one line of printable text: file names
and other outside text reach the log (a spool file named "x\\nroot::0:0"
would otherwise write a line of its choosing), so every formatter escapes
what it formats (OneLine).

The log folder belongs to the service user (the daemons write there after
dropping root; logrotate works there as that user), so root never opens
the file itself: a child process that has become the folder's owner does
(daemon.opened_as), without following a link, so the first file is that
user's, 0640, as logrotate makes the next ones. A name there that is not
a plain file of the opener's own is set aside and a new file begun.
"""

from __future__ import annotations

import errno
import logging
import logging.handlers
import os
import stat
import time

from sensor.service import daemon

# tests point both elsewhere: the machine's own syslog may or may not be there
SYSLOG_SOCKET = os.environ.get("SIE_DNS_SENSOR_SYSLOG_SOCKET", "/dev/log")
SYSLOG_TAG = "sie"  # as the C sensor logged
# each package makes its folder for its service user; tests point them elsewhere
LOG_DIR = os.environ.get("SIE_DNS_SENSOR_LOG_DIR", "/var/log/sie-dns-sensor")
LOG_FILE = os.path.join(LOG_DIR, "sie-dns-sensor.log")
COLLECTOR = "sie-dns-collector"
COLLECTOR_LOG_DIR = os.environ.get("SIE_DNS_COLLECTOR_LOG_DIR", "/var/log/sie-dns-collector")

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
SYSLOG_FACILITIES = (
    "auth", "authpriv", "cron", "daemon", "ftp", "kern", "lpr", "mail", "news", "syslog", "user", "uucp",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)
SYSLOG_LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


def syslog_priority(text: str) -> str:
    """`facility.level` as the configuration files give it (ValueError if not)."""
    facility, _, level = text.partition(".")
    if facility not in SYSLOG_FACILITIES or level not in SYSLOG_LEVELS:
        raise ValueError(f"{text!r} is not facility.level (e.g. local5.info)")
    return text


# Python level -> syslog severity, for the journal's `<N>` prefix
_SEVERITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def under_systemd(environ: os._Environ | dict | None = None) -> bool:
    """True when systemd started us: our stderr is then the journal."""
    environ = os.environ if environ is None else environ
    return bool(environ.get("JOURNAL_STREAM") or environ.get("INVOCATION_ID"))


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def escaped(text: str) -> str:
    """`text` as one line of printable characters: a newline shows as `\\n`,
    other control and invisible characters as `\\xNN`/`\\uNNNN`, a byte that
    was not UTF-8 in a file name (a surrogate escape) as `\\xNN`, and a
    backslash as `\\\\` so the escapes cannot be forged."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(char if char.isprintable() and char != "\\" else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for an undecodable byte
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class OneLine(logging.Formatter):
    """The formatter of every handler: the whole formatted line (message,
    arguments, a traceback) escaped, so no record can start a line of its own."""

    def format(self, record: logging.LogRecord) -> str:
        return escaped(super().format(record))


class JournalFormatter(OneLine):
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
        handler.setFormatter(OneLine(f"{SYSLOG_TAG}[%(process)d]: %(message)s"))
        root.addHandler(handler)
        where.append(f"syslog (tag {SYSLOG_TAG}, {priority})")
    elif detached:
        handler = _log_file(program)
        if handler is not None:
            root.addHandler(handler)
            where.append(handler.baseFilename)
    if (foreground and not detached) or not root.handlers:
        stderr = _Stderr()
        stderr.setFormatter(OneLine(f"{SYSLOG_TAG}: %(levelname)s %(message)s"))
        root.addHandler(stderr)
        where.append("stderr")
    return " and ".join(where)


class _Stderr(logging.StreamHandler):
    """stderr. On a terminal a line first clears the line the cursor is on:
    `run --pcap`'s progress bar is drawn there without a newline, and a log
    line would run on from it ("replaying [---] 0%sie: INFO ..."); the bar
    is drawn again below at its next update."""

    def __init__(self) -> None:
        super().__init__()
        try:
            self.terminal = self.stream.isatty()
        except (AttributeError, ValueError):  # no stderr, or a closed one
            self.terminal = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.terminal:
            self.stream.write("\r\x1b[K")
        super().emit(record)


class _LogFile(logging.handlers.WatchedFileHandler):
    """LOG_FILE, reopened when logrotate has moved it, opened safely (open_log_file).

    Its reopen check runs outside emit's error handling in Python 3.11: it is
    caught here, or a log folder the service user cannot read would stop
    the daemon at its next log line. A name set aside on opening is said
    in the file itself, right after the line that caused the opening.
    """

    def __init__(self, path: str) -> None:
        self.notes: list[str] = []
        super().__init__(path, encoding="utf-8", errors="backslashreplace")

    def _open(self):
        fd, note = open_log_file(self.baseFilename)
        if note:
            self.notes.append(note)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)
            while self.notes:
                note = self.notes.pop(0)
                super().emit(logging.makeLogRecord({"name": __name__, "levelno": logging.WARNING,
                                                    "levelname": "WARNING", "msg": "%s", "args": (note,)}))
        except Exception:
            self.handleError(record)


def log_file(program: str) -> str:
    """Where a detached `program` logs when there is no syslog: the sensor's
    daemons share LOG_FILE; the collector, another package with another
    service user, has its own folder."""
    if program == COLLECTOR:
        return os.path.join(COLLECTOR_LOG_DIR, f"{COLLECTOR}.log")
    return LOG_FILE


def _log_file(program: str) -> logging.Handler | None:
    """log_file(program), or None when it cannot be opened (the caller falls back to stderr)."""
    path = log_file(program)
    try:
        os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
        handler = _LogFile(path)
    except OSError:
        return None
    handler.setFormatter(
        OneLine(f"%(asctime)s {program}[%(process)d]: %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
    )
    return handler


_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
LOG_MODE = 0o640  # as logrotate's `create` makes the next one
_LINK = (errno.ELOOP, errno.EMLINK)  # O_NOFOLLOW met a link: Linux says ELOOP, FreeBSD EMLINK


def open_log_file(path: str) -> tuple[int, str]:
    """(descriptor to append to `path`, a note if something was set aside).

    As root in a folder someone else owns, the opening is done as that
    owner, with the folder's group (see the module's docstring); otherwise
    by this process, which then owns the folder or is the user whose
    rights the folder is for.
    """
    folder = os.stat(os.path.dirname(path) or ".")
    if os.geteuid() == 0 and folder.st_uid != 0:
        return daemon.opened_as(folder.st_uid, folder.st_gid, lambda: _open_own(path))
    return _open_own(path)


def _open_own(path: str) -> tuple[int, str]:
    """Append to `path` if it is a plain file of ours with no other name;
    anything else found there (a link, a hard link, a FIFO, another user's
    file) is renamed aside and a new file is made."""
    try:
        fd = os.open(path, _APPEND, LOG_MODE)
    except OSError as exc:
        if exc.errno not in (*_LINK, errno.EACCES, errno.EPERM, errno.ENXIO, errno.EISDIR):
            raise
        problem = "a symbolic link" if exc.errno in _LINK else f"not for uid {os.geteuid()} to write ({exc.strerror})"
    else:
        problem = _not_ours(os.fstat(fd))
        if not problem:
            os.fchmod(fd, LOG_MODE)
            return fd, ""
        os.close(fd)
    aside = f"{path}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}.set-aside"
    os.rename(path, aside)
    fd = os.open(path, _APPEND | os.O_EXCL, LOG_MODE)
    os.fchmod(fd, LOG_MODE)
    return fd, f"the log file {path} was {problem}: moved to {aside}, a new log file begun"


def _not_ours(info: os.stat_result) -> str:
    """Why an open log file must not be written to, or "" if it may."""
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_uid != os.geteuid():
        return f"owned by uid {info.st_uid}, not by uid {os.geteuid()}"
    if info.st_nlink != 1:
        return f"a file with {info.st_nlink} names (hard links)"
    return ""
