"""systemd's part in socket activation, played by a test: hold a listening
socket and start programs with it as fd 3 (`LISTEN_FDS=1`, `LISTEN_PID`
their own pid), as `sie-dns-sensor.socket` makes systemd do. The socket
stays open while the programs come and go, so a client can connect
between two of them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

# exec'd in the child: put the socket at fd 3 and name the pid, which exec keeps
_LAUNCH = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "if fd != 3:\n"
    "    os.dup2(fd, 3)\n"
    "    os.close(fd)\n"
    "os.set_inheritable(3, True)\n"
    "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


class HeldSocket:
    """A unix listening socket at `path`, held for as long as the object lives."""

    def __init__(self, path: str, mode: int = 0o666) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, mode)
        self.sock.listen(64)

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start `argv` (argv[0] an absolute path) with the socket as fd 3."""
        fd = self.sock.fileno()
        return subprocess.Popen([sys.executable, "-c", _LAUNCH, str(fd), *argv], pass_fds=(fd,), **kwargs)

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)
