"""Files to the collector with the system rsync over the OpenSSH client.

This is how the SIE collector takes files: its sshd forces `rsync
--server` (rrsync) in a chroot for the sensor's login. One rsync run per
batch of at most `maxper` files:

    rsync --remove-source-files --times --timeout=60 -e "ssh ..." FILES login@host:up/<channel>/

as the reference package runs it: rsync creates `<channel>/` when missing
(one level), `up/` is the collector's; no `--mkpath`, which a collector's
older rsync refuses.

- ssh runs with no user or system configuration (`-F /dev/null`), the
  upload key only, no agent, no forwarding, batch mode, and host keys
  checked strictly against `knownhosts` alone: an unknown or changed key
  ends the connection before anything is sent, and the error names the
  key offered (type and SHA256 fingerprint, as for SFTP).
- rsync writes each file to a temporary name beside the final one and
  renames it when complete, so the collector never sees half a file.
- `--remove-source-files` makes rsync delete a local file only after the
  receiver has it whole (checksum verified); a file still here afterwards
  was not delivered and waits for the next round.
- `--timeout` ends a transfer that stalls; the whole run also has a
  deadline, so nothing waits forever, and a stop (SIGTERM) kills rsync and
  its ssh at once.
- Only files the uploader has checked (regular, its own, no links: see
  localfiles.py) are named; rsync without `--links` would skip a link
  swapped in afterwards. A file rsync leaves behind in a run that
  otherwise worked (exit 23 or 24) failed alone: it is retried later with
  its own backoff while the others go on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable

from .sftp import HostKeyError, UploadError

CONNECT_TIMEOUT = 20
STALL_TIMEOUT = 60  # rsync --timeout: longest silence during a transfer
SLOWEST_RATE = 256 * 1024  # bytes/s below which a whole run is given up (deadline)
POLL = 0.1  # how soon a stop is seen while rsync runs
PER_FILE_EXITS = (23, 24)  # partial transfer, vanished files: the run worked, some files did not

log = logging.getLogger("uploader")

# rsync's exit codes, in words (rsync(1), "EXIT VALUES")
EXIT_REASONS = {
    1: "syntax or usage error",
    2: "protocol incompatibility",
    3: "errors selecting input/output files or directories",
    5: "error starting the client-server protocol",
    10: "error in socket I/O",
    11: "error in file I/O",
    12: "error in the rsync protocol data stream",
    20: "interrupted",
    23: "partial transfer due to an error",
    24: "some files vanished before they could be transferred",
    30: "timeout in data send/receive",
    35: "timeout waiting for the daemon connection",
    255: "the SSH connection failed",
}


def ssh_command(port: int, key_path: str, known_hosts: str) -> list[str]:
    """The OpenSSH client, locked down to what an upload needs."""
    options = {
        "BatchMode": "yes",
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": known_hosts,
        "GlobalKnownHostsFile": "/dev/null",
        "IdentitiesOnly": "yes",
        "IdentityAgent": "none",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "ForwardAgent": "no",
        "ForwardX11": "no",
        "ClearAllForwardings": "yes",
        "ConnectTimeout": str(CONNECT_TIMEOUT),
        "ServerAliveInterval": "15",
        "ServerAliveCountMax": "4",
        # DEBUG1: the one level at which ssh names the key it was offered
        # ("Server host key: TYPE SHA256:..."); an unknown key is otherwise
        # refused without its fingerprint. Debug lines are read for that
        # line alone and never logged (printed_lines).
        "LogLevel": "DEBUG1",
    }
    command = ["ssh", "-F", "/dev/null", "-p", str(port), "-i", key_path]
    for name, value in options.items():
        command += ["-o", f"{name}={value}"]
    return command


class RsyncCollector:
    """One collector reached by rsync; the same interface as the SFTP one.

    `cancelled` is polled while rsync runs: once it returns True, rsync
    and its ssh are killed and the round ends (SIGTERM stops the uploader
    within a second whatever the collector does).
    """

    def __init__(self, host: str, port: int, login: str, key_path: str, known_hosts: str,
                 cancelled: Callable[[], bool] = lambda: False) -> None:
        self.host, self.port, self.login = host, port, login
        self.key_path, self.known_hosts = key_path, known_hosts
        self.cancelled = cancelled

    def __enter__(self) -> RsyncCollector:
        if not os.path.exists(self.key_path):
            raise UploadError(f"upload key {self.key_path} does not exist (run sie-gen-key)")
        if not os.path.exists(self.known_hosts):
            raise HostKeyError(f"knownhosts file {self.known_hosts} does not exist")
        return self

    def __exit__(self, *exc) -> None:
        return None

    def close(self) -> None:
        return None

    def send(self, paths: list[str], remote_dir: str, sent: Callable[[str, int], None],
             refused: Callable[[str, str], None]) -> None:
        """Deliver the files; `sent(path, size)` for each one delivered.

        After a run that worked but left some files (rsync's exit 23 or 24:
        those files alone failed), `refused(path, why)` for each of them;
        UploadError (HostKeyError for a host key problem) when the run
        failed as a whole; files delivered before that have been reported.
        """
        sizes = {}
        for path in paths:
            try:
                sizes[path] = os.lstat(path).st_size
            except FileNotFoundError:
                continue  # trimmed meanwhile
        if not sizes:
            return
        destination = f"{self.login}@{_host(self.host)}:{remote_dir}/"
        command = [
            "rsync", "--remove-source-files", "--times", f"--timeout={STALL_TIMEOUT}",
            "-e", shlex.join(ssh_command(self.port, self.key_path, self.known_hosts)),
            "--", *sizes, destination,
        ]
        deadline = CONNECT_TIMEOUT + STALL_TIMEOUT + sum(sizes.values()) / SLOWEST_RATE
        returncode, stderr = self._run(command, deadline, sizes, sent)
        self._report(sizes, sent)
        if returncode in PER_FILE_EXITS:
            for path in sizes:
                if os.path.lexists(path):
                    refused(path, _about(path, stderr, returncode))
            return
        if returncode != 0:
            raise _failure(returncode, stderr, self.host, self.port, self.known_hosts)

    def _run(self, command: list[str], deadline: float, sizes: dict[str, int], sent) -> tuple[int, str]:
        """rsync's exit status and stderr; it is killed (with its ssh) at the
        deadline or when the uploader is told to stop."""
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True, start_new_session=True)
        except FileNotFoundError:
            raise UploadError("rsync or ssh is not installed") from None
        ends = time.monotonic() + deadline
        while True:
            try:
                _, stderr = process.communicate(timeout=POLL)
                return process.returncode, stderr
            except subprocess.TimeoutExpired:
                pass
            if self.cancelled() or time.monotonic() > ends:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
                self._report(sizes, sent)
                if self.cancelled():
                    raise UploadError(f"stopped while sending to {self.host} port {self.port}")
                raise UploadError(f"rsync to {self.host} port {self.port} did not finish within {deadline:.0f} s")

    @staticmethod
    def _report(sizes: dict[str, int], sent: Callable[[str, int], None]) -> None:
        for path in list(sizes):
            if not os.path.lexists(path):  # rsync removes a file only once it is delivered
                sent(path, sizes.pop(path))


def _about(path: str, stderr: str, returncode: int) -> str:
    """Why rsync left this one file: its own lines that name it, if any."""
    name = os.path.basename(path)
    said = [line for line in printed_lines(stderr) if name in line]
    reason = " / ".join(said[-2:]) or EXIT_REASONS[returncode]
    return f"{name}: not delivered by rsync ({reason})"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


_OFFERED = re.compile(r"^debug1: Server host key: (\S+) (SHA256:\S+)$", re.MULTILINE)


def offered_key(stderr: str) -> str | None:
    """"TYPE SHA256:..." of the host key ssh was offered (its debug1 line), as
    SFTP names it and `ssh-keygen -lf` prints it."""
    found = _OFFERED.findall(stderr.replace("\r", ""))
    return " ".join(found[-1]) if found else None


# what ssh says at DEBUG1 beyond its errors: its debug lines and the
# session's narration (VERBOSE level, unprefixed)
_NARRATION = re.compile(r"debug\d: |Authenticated to |Transferred: sent |Bytes per second: ")


def printed_lines(stderr: str) -> list[str]:
    """What rsync and ssh printed, without ssh's narration."""
    lines = (line.strip() for line in stderr.replace("\r", "").splitlines())
    return [line for line in lines if line and not _NARRATION.match(line)]


def _failure(returncode: int, stderr: str, host: str, port: int, known_hosts: str) -> UploadError:
    """rsync's exit status and ssh's own words, as one error.

    When ssh could not connect, rsync exits with a protocol error (12):
    ssh's line ("ssh: connect to host ...") is the reason then.
    """
    lines = printed_lines(stderr)
    ssh_said = [line for line in lines if line.startswith("ssh:") or "Permission denied" in line]
    said = " / ".join(ssh_said[-2:] or lines[-3:])
    reason = EXIT_REASONS.get(returncode, f"exit status {returncode}")
    if ssh_said:
        reason = EXIT_REASONS[255]
    text = f"rsync to {host} port {port} failed: {reason}" + (f" ({said})" if said else "")
    if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        offered = offered_key(stderr)
        return HostKeyError(f"host key of [{host}]:{port} is unknown or has changed (checked against "
                            f"{known_hosts}{f'; offered {offered}' if offered else ''}); nothing sent ({said})")
    return UploadError(text)
