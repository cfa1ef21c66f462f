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
import sys

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
    """`path` holds our pid while we run; a stale one (dead pid) is replaced."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = 0

    def claim(self) -> None:
        try:
            with open(self.path) as handle:
                old = int(handle.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            old = 0
        if old and old != os.getpid() and _running(old):
            raise DaemonError(f"already running as pid {old} ({self.path})")
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, exist_ok=True)
        temporary = f"{self.path}.{os.getpid()}"
        with open(temporary, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        os.replace(temporary, self.path)
        self.pid = os.getpid()

    def release(self) -> None:
        """Remove the file if it is still ours (not a successor's)."""
        if self.pid != os.getpid():
            return
        with contextlib.suppress(OSError), open(self.path) as handle:
            if int(handle.read().strip() or 0) == self.pid:
                os.unlink(self.path)


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


def chown_to_service_user(path: str, name: str = SERVICE_USER) -> None:
    """Let the service user own a file root made for it (e.g. the upload key)."""
    entry = service_user(name)
    if entry is not None and os.geteuid() == 0:
        os.chown(path, entry.pw_uid, entry.pw_gid)


def foreground() -> bool:
    return sys.stderr.isatty()
