"""A real OpenSSH sshd on loopback, as the collector, for tests and benchmarks.

It gets its own config, host key, port and a system user whose home is a
temporary folder; `close()` stops it and removes the user. The user is
SFTP-only (`mode="sftp"`), or, as the SIE collector does it, forced to
`rrsync` in its home (`mode="rsync"`: authorized_keys' command= option,
so nothing but rsync --server runs).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

SSHD = "/usr/sbin/sshd"


def available() -> str | None:
    """None when a private sshd can be run here, else why not."""
    if os.geteuid() != 0:
        return "needs root to run sshd and add its user"
    for tool in (SSHD, shutil.which("ssh-keygen"), shutil.which("useradd")):
        if not tool or not os.path.exists(tool):
            return "needs openssh-server, openssh-client and useradd"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


RRSYNC = "/usr/bin/rrsync"


class Sshd:
    """One sshd process serving one user on `address` (127.0.0.1).

    `sftp_script` (shell script text, sftp mode) replaces OpenSSH's own SFTP
    server, run as the user: a collector that misbehaves on purpose.
    """

    def __init__(self, authorized_key: str, mode: str = "sftp", address: str = "127.0.0.1",
                 sftp_script: str | None = None) -> None:
        self.mode, self.address = mode, address
        # Its own folder under /tmp, readable on the way down: sshd reads
        # authorized_keys and the session writes the home as the user.
        workdir = tempfile.mkdtemp(prefix="sie-sshd-", dir="/tmp")
        os.chmod(workdir, 0o755)
        self.workdir = workdir
        self.user = f"sieup{uuid.uuid4().hex[:6]}"
        self.home = os.path.join(workdir, "home")
        self.port = free_port()
        self.config = os.path.join(workdir, "sshd_config")
        self.log = os.path.join(workdir, "sshd.log")
        self.process: subprocess.Popen | None = None
        os.makedirs(self.home)
        os.makedirs("/run/sshd", exist_ok=True)
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", self.home, "--shell",
             "/usr/sbin/nologin" if mode == "sftp" and not sftp_script else "/bin/sh", self.user],
            check=True, capture_output=True,
        )
        subprocess.run(["usermod", "-p", "*", self.user], check=True, capture_output=True)  # no password, not locked
        entry = pwd.getpwnam(self.user)
        os.chown(self.home, entry.pw_uid, entry.pw_gid)
        if mode == "rsync":  # the SIE collector's layout: up/ is there, channels are made by rsync
            os.mkdir(os.path.join(self.home, "up"))
            os.chown(os.path.join(self.home, "up"), entry.pw_uid, entry.pw_gid)
        self.host_key = os.path.join(workdir, "host_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.host_key], check=True)
        self.authorized_keys = os.path.join(workdir, "authorized_keys")
        with open(self.authorized_keys, "w") as handle:
            if mode == "rsync":
                handle.write(f'command="{RRSYNC} {self.home}",restrict {authorized_key}')
            else:
                handle.write(authorized_key)
        forced = "Subsystem sftp internal-sftp\nForceCommand internal-sftp\n" if mode == "sftp" else ""
        if sftp_script:
            script = os.path.join(workdir, "sftp-server")
            with open(script, "w") as handle:
                handle.write(sftp_script)
            os.chmod(script, 0o755)
            forced = f"Subsystem sftp {script}\n"
        with open(self.config, "w") as handle:
            handle.write(
                f"Port {self.port}\nListenAddress {address}\nHostKey {self.host_key}\n"
                f"PidFile {workdir}/sshd.pid\nAuthorizedKeysFile {self.authorized_keys}\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
                "UsePAM no\nStrictModes no\nPermitRootLogin no\n"
                f"AllowUsers {self.user}\n{forced}"
                "LogLevel VERBOSE\nMaxStartups 100\n"
            )

    def known_hosts_line(self) -> str:
        with open(self.host_key + ".pub") as handle:
            kind, blob = handle.read().split()[:2]
        return f"[{self.address}]:{self.port} {kind} {blob}\n"

    def start(self, wrap: list[str] = ()) -> None:
        """Start it (`wrap`: e.g. ["ip", "netns", "exec", NAME] to run it in a namespace)."""
        log = open(self.log, "a")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen([*wrap, SSHD, "-D", "-e", "-f", self.config], stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if wrap:
                if os.path.exists(os.path.join(self.workdir, "sshd.pid")):
                    return
                time.sleep(0.05)
                continue
            try:
                socket.create_connection((self.address, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        with open(self.log) as handle:
            raise RuntimeError(f"sshd did not start: {handle.read()}")

    def kill(self) -> None:
        """Stop the listener and every session at once, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        subprocess.run(["pkill", "-KILL", "-u", self.user], capture_output=True)
        self.process = None

    def accepted_sessions(self) -> int:
        with open(self.log) as handle:
            return handle.read().count("Accepted publickey")

    def path(self, *parts: str) -> str:
        return os.path.join(self.home, *parts)

    def close(self) -> None:
        self.kill()
        time.sleep(0.1)
        subprocess.run(["userdel", self.user], capture_output=True)
        shutil.rmtree(self.workdir, ignore_errors=True)
