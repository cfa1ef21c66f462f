"""Running as a service: detaching, the pidfile, privileges, the memory cap.

Done here rather than by each init system (start-stop-daemon is Debian's,
daemon() is Red Hat's, daemon(8) FreeBSD's) so one SysV script works on
all of them and systemd can run the same command in the foreground.
The capture is opened as root (it needs CAP_NET_RAW); everything after,
every packet included, runs as the unprivileged service user.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import pwd
import resource
import stat
import sys
import tempfile

SERVICE_USER = "sie-dns-sensor"

log = logging.getLogger(__name__)


class DaemonError(RuntimeError):
    """The service cannot start as asked (pidfile taken, user missing...)."""


def detach() -> None:
    """Become a background daemon: double fork, new session, no terminal."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


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
        if old and old != os.getpid() and _running(old):
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


def drop_privileges(name: str = SERVICE_USER) -> bool:
    """As root, become `name` for good (if it exists); True when dropped."""
    if os.geteuid() != 0:
        return False
    entry = service_user(name)
    if entry is None:
        log.warning("user %s does not exist: running as root", name)
        return False
    os.setgroups([g.gr_gid for g in grp.getgrall() if name in g.gr_mem])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ["HOME"] = entry.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = name
    if os.geteuid() == 0 or os.getuid() == 0:
        raise DaemonError("could not give up root")  # setuid must be irreversible
    return True


def service_owner(name: str = SERVICE_USER) -> tuple[int, int] | None:
    """(uid, gid) to give files root makes for the service (the upload key),
    or None when not root or the user does not exist."""
    entry = service_user(name)
    if entry is None or os.geteuid() != 0:
        return None
    return entry.pw_uid, entry.pw_gid


def foreground() -> bool:
    return sys.stderr.isatty()
