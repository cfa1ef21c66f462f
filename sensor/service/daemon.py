"""Running as a service: detaching, the pidfile, privileges, the memory cap.

Done here rather than by each init system (start-stop-daemon is Debian's,
daemon() is Red Hat's, daemon(8) FreeBSD's) so one SysV script works on
all of them and systemd can run the same command in the foreground.
The capture is opened as root (it needs CAP_NET_RAW); everything after,
every packet included, runs as the unprivileged service user. Before that,
a file in a folder that user owns (the log file) is opened by a child that
has become that user (opened_as), never by root.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import pwd
import resource
import socket
import stat
import sys
import tempfile
from collections.abc import Callable

from sensor.service import capabilities

SERVICE_USER = "sie-dns-sensor"

log = logging.getLogger(__name__)


class DaemonError(RuntimeError):
    """The service cannot start as asked (pidfile taken, user missing...)."""


READY = b"\0"  # the final child's "start-up went well" to the waiting parent


class Detached:
    """The detached daemon's line back to the terminal that started it.

    Until `ready()`, the daemon's stderr is a pipe to the original process,
    which waits and copies what comes through to its own stderr: a start-up
    failure after detaching (pidfile taken, spool locked, no such user) is
    printed on the terminal of `service ... start`, and its exit status says
    whether the start worked.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def ready(self) -> None:
        """Start-up is over: the parent exits 0; stderr goes to /dev/null."""
        if self.fd < 0:
            return
        sys.stderr.flush()
        os.write(self.fd, READY)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 2)
        os.close(null)
        os.close(self.fd)
        self.fd = -1


def detach() -> Detached:
    """Become a background daemon: double fork, new session, no terminal.

    The first process stays until the daemon is ready (see Detached) and
    exits with 0 if it is, 1 if it ended during start-up.
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child > 0:
        os.close(write_end)
        status = _relay_start_up(read_end)
        os.waitpid(child, 0)  # the middle process, gone at once: no zombie
        os._exit(status)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    os.dup2(write_end, 2)
    os.close(null)
    return Detached(write_end)


def _relay_start_up(fd: int) -> int:
    said = b""
    while chunk := os.read(fd, 4096):
        said += chunk
    ready = said.endswith(READY)
    message = said[:-1] if ready else said
    if message:
        os.write(2, message)
    if not ready and not message:
        os.write(2, b"the daemon ended during start-up (see its log)\n")
    return 0 if ready else 1


def close_inherited_fds() -> None:
    """Close the file descriptors the starting shell left open to us.

    Python opens every file close-on-exec (PEP 446), so a descriptor past
    stderr without that flag came through exec from whoever started us: a
    daemon must not keep it (it would hold a terminal, a pipe or a deleted
    file open for as long as it runs).
    """
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for fd in sorted(int(name) for name in names):
        if fd <= 2:
            continue
        with contextlib.suppress(OSError):
            if os.get_inheritable(fd):
                os.close(fd)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


class PidFile:
    """`path` holds our pid while we run; a stale one (dead pid) is replaced.

    It is written as root, so nothing in its folder is followed: the pid
    goes to a fresh name made with O_CREAT|O_EXCL|O_NOFOLLOW (mkstemp) that
    is then renamed over `path`, and an old pidfile is read without
    following a link. Even in a folder the service user can write, a link
    planted there cannot make root write through it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = 0

    def claim(self) -> None:
        old = _read_pid(self.path)
        if old and old != os.getpid() and _running(old) and _started_with(old, self.path):
            raise DaemonError(f"already running as pid {old} ({self.path})")
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.", dir=directory)
        try:
            os.fchmod(fd, 0o644)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.close(fd)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self.pid = os.getpid()

    def release(self) -> None:
        """Remove the file if it is still ours (not a successor's).

        After the privilege drop this fails in a root-owned folder; the
        init script removes the file once the process has gone.
        """
        if self.pid != os.getpid():
            return
        if _read_pid(self.path) == self.pid:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def _started_with(pid: int, path: str) -> bool:
    """Whether process `pid` was started with this pidfile on its command
    line: after a crash and a reboot the old pid may belong to anything,
    and that must not keep the service from starting (the init scripts
    make the same check before they signal). True when /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            args = handle.read().split(b"\0")
    except OSError:
        return not os.path.isdir("/proc/self")  # no /proc: assume the worst
    wanted = os.fsencode(path)
    return wanted in args or b"--pidfile=" + wanted in args


def _read_pid(path: str) -> int:
    """The pid in a pidfile, 0 if none; never follows a link or blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return 0
        return int(os.read(fd, 32).strip() or 0)
    except (OSError, ValueError):
        return 0
    finally:
        os.close(fd)


def limit_memory(kbytes: int) -> None:
    """Hard cap on address space (RLIMIT_AS); it can only be lowered later."""
    limit = kbytes * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY and hard < limit:
        limit = hard
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def service_user(name: str = SERVICE_USER) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def drop_privileges(name: str = SERVICE_USER, keep: tuple[int, ...] = ()) -> bool:
    """As root, become `name` for good (if it exists); True when dropped.

    `keep`: capabilities left dormant in the permitted set (see capabilities.py).
    """
    if os.geteuid() != 0:
        return False
    entry = service_user(name)
    if entry is None:
        log.warning("user %s does not exist: running as root", name)
        return False
    os.setgroups([g.gr_gid for g in grp.getgrall() if name in g.gr_mem])
    os.setgid(entry.pw_gid)
    if keep:
        capabilities.keep_across_setuid(True)
    os.setuid(entry.pw_uid)
    if keep:
        capabilities.keep_across_setuid(False)
        capabilities.limit_to(*keep)
    os.environ["HOME"] = entry.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = name
    if os.geteuid() == 0 or os.getuid() == 0:
        raise DaemonError("could not give up root")  # setuid must be irreversible
    return True


def opened_as(uid: int, gid: int, opener: Callable[[], tuple[int, str]]) -> tuple[int, str]:
    """Run `opener` (it returns a descriptor and a note) in a child process
    that has become user `uid` (group `gid`, and the user's other groups)
    for good, and take the descriptor back.

    Why: root must not open a name in a folder another user can change (a
    link or a hard link planted there would make root write wherever it
    points). Opened by a process with that user's rights, the name can only
    lead to files that user could write anyway. A child rather than a
    passing seteuid: seteuid is process-wide, other threads would run as
    that user meanwhile. The descriptor comes back over a socket pair
    (SCM_RIGHTS); the child's OSError comes back as an OSError here.
    """
    entry = _passwd_entry(uid)
    groups = os.getgrouplist(entry.pw_name, gid) if entry else [gid]
    # SEQPACKET: one message, and an end (not a wait) if the child dies without one
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child = os.fork()
    if child == 0:
        ours.close()
        _open_in_child(theirs, uid, gid, groups, opener)
    theirs.close()
    try:
        said, fds, _, _ = socket.recv_fds(ours, 4096, 1)
    finally:
        ours.close()
        with contextlib.suppress(ChildProcessError):  # already reaped (SIGCHLD ignored)
            os.waitpid(child, 0)
    kind, _, rest = said.decode("utf-8", "surrogateescape").partition(" ")
    if kind == "ok" and fds:
        return fds[0], rest
    for fd in fds:
        os.close(fd)
    number, _, message = rest.partition(" ")
    raise OSError(int(number) if number.isdigit() else errno.EIO, message or "the opening process failed")


def _open_in_child(channel: socket.socket, uid: int, gid: int, groups: list[int],
                   opener: Callable[[], tuple[int, str]]) -> None:
    """The child of opened_as: drop to uid for good, open, send, exit (never returns)."""
    try:
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
        fd, note = opener()
        socket.send_fds(channel, [f"ok {note}".encode("utf-8", "surrogateescape")], [fd])
    except OSError as exc:
        said = f"error {exc.errno or errno.EIO} {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        with contextlib.suppress(OSError):
            channel.send(said.encode("utf-8", "surrogateescape"))
    finally:
        os._exit(0)


def _passwd_entry(uid: int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


def service_owner(name: str = SERVICE_USER) -> tuple[int, int] | None:
    """(uid, gid) to give files root makes for the service (the upload key),
    or None when not root or the user does not exist."""
    entry = service_user(name)
    if entry is None or os.geteuid() != 0:
        return None
    return entry.pw_uid, entry.pw_gid


def foreground() -> bool:
    return sys.stderr.isatty()
