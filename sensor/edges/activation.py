"""Listening sockets handed over by systemd (socket activation, `LISTEN_FDS`).

With `sie-dns-sensor.socket` enabled, systemd holds the dnstap socket
and passes it to every sensor process it starts: while the sensor
restarts, a resolver's reconnect is accepted by the kernel and waits in
the backlog instead of failing (BIND then waits 5 s before it tries
again, and keeps nothing meanwhile). The protocol is sd_listen_fds(3):
`LISTEN_PID` names this process, `LISTEN_FDS` how many descriptors from
3 on are its sockets. Read once at start; the variables are removed and
the descriptors made close-on-exec, so no child process takes them too
(and `daemon.close_inherited_fds` leaves them alone).
"""

from __future__ import annotations

import contextlib
import os
import socket

FIRST_FD = 3  # SD_LISTEN_FDS_START
_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def passed_sockets() -> list[socket.socket]:
    """The listening sockets systemd passed to this process ([] if none)."""
    pid, count = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS")
    for name in _VARIABLES:
        os.environ.pop(name, None)
    try:
        if pid is None or count is None or int(pid) != os.getpid():
            return []
        count_ = int(count)
    except ValueError:
        return []
    found = []
    for fd in range(FIRST_FD, FIRST_FD + max(count_, 0)):
        with contextlib.suppress(OSError):  # not open, or not a socket: nothing to take
            sock = socket.socket(fileno=fd)
            os.set_inheritable(fd, False)
            found.append(sock)
    return found


def bound_to(sock: socket.socket, kind: str, where: str | tuple[str, int]) -> bool:
    """Whether `sock` listens where the configuration says (`config.dnstap_endpoint`)."""
    try:
        name = sock.getsockname()
        if sock.type != socket.SOCK_STREAM:
            return False
        if kind == "unix":
            return sock.family == socket.AF_UNIX and name in (where, where.encode())
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        host, port = where
        wanted = {info[4][:2] for info in socket.getaddrinfo(host, port, sock.family, socket.SOCK_STREAM)}
    except OSError:
        return False
    return name[:2] in wanted
