"""A real OpenSSH sshd on loopback, as the collector, for tests and benchmarks.

`Sshd` gets its own config, host key, port and a system user whose home is
a temporary folder; `close()` stops it and removes the user. The user is
SFTP-only (`mode="sftp"`), or, as the SIE collector does it, forced to
`rrsync` in its home (`mode="rsync"`: authorized_keys' command= option,
so nothing but rsync --server runs).

`ShippedSshd` runs the project's own etc/sie-dns-collector.sshd_config,
changed only on the command line where a test must (port, address, pid
file, user, authorized_keys), so the shipped file is what is tested.
"""

from __future__ import annotations

import glob
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
SHIPPED_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "etc",
                              "sie-dns-collector.sshd_config")


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


def add_user(home: str, shell: str = "/bin/sh") -> str:
    """A new system user whose home is `home` (made, and given to it): its
    name. No password, but not locked: sshd refuses a locked account even
    its keys. A forced command runs through the shell, so keys need one."""
    name = f"sieup{uuid.uuid4().hex[:6]}"
    os.makedirs(home, exist_ok=True)
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", home, "--shell", shell, name],
                   check=True, capture_output=True)
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    return name


def remove_user(name: str) -> None:
    """Stop what still runs as `name` (sessions outlive their sshd), then remove it."""
    subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
    time.sleep(0.1)
    subprocess.run(["userdel", name], capture_output=True)


def wait_listening(process: subprocess.Popen, address: str, port: int, log: str, seconds: float = 10) -> None:
    """Until `address:port` takes connections (RuntimeError with the log if not)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection((address, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    with open(log) as handle:
        raise RuntimeError(f"sshd did not start: {handle.read()}")


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
        self.home = os.path.join(workdir, "home")
        self.port = free_port()
        self.config = os.path.join(workdir, "sshd_config")
        self.log = os.path.join(workdir, "sshd.log")
        self.process: subprocess.Popen | None = None
        os.makedirs("/run/sshd", exist_ok=True)
        self.user = add_user(self.home, "/usr/sbin/nologin" if mode == "sftp" and not sftp_script else "/bin/sh")
        entry = pwd.getpwnam(self.user)
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


def shipped_available() -> str | None:
    """None when the shipped sshd configuration can be run here, else why not."""
    reason = available()
    if reason:
        return reason
    if not os.path.exists(RRSYNC):
        return "needs rsync (rrsync)"
    if not glob.glob("/etc/ssh/ssh_host_*_key"):
        return "needs this machine's SSH host keys (/etc/ssh/ssh_host_*_key: openssh-server makes them)"
    return None


class ShippedSshd:
    """etc/sie-dns-collector.sshd_config with test overrides on the command
    line only: the port (-p, which sets the file's Port aside), loopback,
    a pid file of its own, the user it admits (AllowUsers adds to the
    file's) and that user's authorized_keys. Everything else (keys only, no
    forwarding, no tty, PAM, the machine's host keys) is the shipped file's."""

    def __init__(self, user: str, authorized_keys: str, address: str = "127.0.0.1") -> None:
        self.user, self.address = user, address
        self.workdir = tempfile.mkdtemp(prefix="sie-sshd-", dir="/tmp")
        self.port = free_port()
        self.log = os.path.join(self.workdir, "sshd.log")
        self.options = ["-f", SHIPPED_CONFIG, "-p", str(self.port), "-o", f"ListenAddress={address}",
                        "-o", f"PidFile={self.workdir}/sshd.pid", "-o", f"AllowUsers={user}",
                        "-o", f"AuthorizedKeysFile={authorized_keys}"]
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        os.makedirs("/run/sshd", exist_ok=True)
        checked = subprocess.run([SSHD, "-t", *self.options], capture_output=True, text=True)
        if checked.returncode:
            raise RuntimeError(f"sshd -t refuses the shipped configuration: {checked.stderr}")
        log = open(self.log, "a")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen([SSHD, "-D", "-e", *self.options], stderr=log)
        wait_listening(self.process, self.address, self.port, self.log)

    def read_log(self) -> str:
        with open(self.log) as handle:
            return handle.read()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)
