"""One SSH/SFTP connection to the collector, with strict host key checking.

The transport is built by hand rather than through paramiko's SSHClient so
that nothing is ever sent before the server's key has been compared with
`knownhosts`: an unknown or changed key ends the connection right after
key exchange, before authentication. Each file goes to a hidden temporary
name, its size is checked on the server, and only then is it renamed
(atomically, replacing a leftover of an earlier try) to its final name.

Every network wait ends. paramiko leaves some without a timeout (the
subsystem request, and the SFTP version exchange until the channel's
timeout can be set), so a watchdog thread shuts the socket down when a
step of setting up outlives its deadline or the uploader is told to stop;
every wait inside paramiko then ends at once with an error. During a
transfer the deadline is the channel's own timeout, which counts silence
(TRANSFER_TIMEOUT without a reply or a window update), not total time, and
a timed-out connection is dropped at once rather than closed politely
(which would wait as long again).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import math
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator

import paramiko

from . import knownhosts, localfiles

CONNECT_TIMEOUT = 20.0  # each step of setting up: resolve, connect, key exchange, login, SFTP start
HANDSHAKE_GRACE = 2.0  # the watchdog's margin over paramiko's own banner and key exchange timeouts
TRANSFER_TIMEOUT = 60.0  # longest silence from the server during a transfer
CLOSE_TIMEOUT = 5.0
WATCH_INTERVAL = 0.1  # how soon the watchdog sees a deadline or a stop
WINDOW = 8 * 1024 * 1024
MAX_PACKET = 32768
CHUNK = 32768 * 8
DISCONNECT_BY_APPLICATION = 11  # RFC 4253 reason code


class _TransportErrors(logging.Filter):
    """Drops what paramiko's transport thread logs at ERROR (a traceback,
    line by line, for a banner that never came): it also keeps the error,
    which start_client or the next wait raises here, and the uploader logs
    that in one line of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


TRANSPORT_LOG = "paramiko.transport.upload"  # the log channel of the uploader's transports
logging.getLogger(TRANSPORT_LOG).addFilter(_TransportErrors())


class UploadError(RuntimeError):
    """The collector could not be reached, or the session broke: the round ends."""


class HostKeyError(UploadError):
    """The collector's host key is unknown or has changed: nothing was sent."""


class FileRefused(UploadError):
    """This one file could not be sent (unreadable here, refused there); the
    session is still good for the next file."""


def reason(exc: BaseException) -> str:
    """An exception in words: timeouts and EOF come with an empty message."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror  # without the errno and file name str() adds
    text = str(exc).strip()
    if text:
        return text
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, EOFError):
        return "the connection was closed"
    return type(exc).__name__


def _read_known_hosts(path: str) -> list[knownhosts.Entry]:
    """The file's usable lines (a line it cannot use is skipped and logged, as ssh does)."""
    try:
        return knownhosts.read(path)
    except FileNotFoundError:
        raise HostKeyError(f"knownhosts file {path} does not exist") from None
    except OSError as exc:
        raise HostKeyError(f"cannot read knownhosts file {path}: {reason(exc)}") from None


def _disconnect(transport: paramiko.Transport) -> None:
    """Send SSH_MSG_DISCONNECT "by application" (paramiko's close() sends
    nothing; its message sender is private but has been stable for years)."""
    if not transport.is_active():
        return
    message = paramiko.Message()
    message.add_byte(paramiko.common.cMSG_DISCONNECT)
    message.add_int(DISCONNECT_BY_APPLICATION)
    message.add_string("done")
    message.add_string("")
    transport._send_user_message(message)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's form (`ssh-keygen -lf`): SHA256:base64, without padding."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode("ascii").rstrip("=")


def _host_entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _Watchdog:
    """Calls `abort` (again every tick) once a deadline passes or `cancelled()`."""

    def __init__(self, abort: Callable[[], None], cancelled: Callable[[], bool]) -> None:
        self._abort, self._cancelled = abort, cancelled
        self._deadline = math.inf
        self._done = False
        self.fired: str | None = None  # "deadline" or "stop"

    def start(self) -> None:
        threading.Thread(target=self._watch, name="upload-watchdog", daemon=True).start()

    def arm(self, seconds: float | None) -> None:
        """The step now starting must end within `seconds` (None: no limit)."""
        self._deadline = math.inf if seconds is None else time.monotonic() + seconds

    def finish(self) -> None:
        self._done = True

    def _watch(self) -> None:
        while not self._done:
            time.sleep(WATCH_INTERVAL)
            if self.fired is None:
                if self._cancelled():
                    self.fired = "stop"
                elif time.monotonic() > self._deadline:
                    self.fired = "deadline"
            if self.fired is not None:
                self._abort()


class Collector:
    """Context manager: an authenticated SFTP session to the collector.

    `cancelled` is polled from a thread: once it returns True, whatever the
    session is waiting for ends within WATCH_INTERVAL with an UploadError.
    """

    def __init__(
        self,
        host: str,
        port: int,
        login: str,
        key_path: str,
        known_hosts: str,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        self.host, self.port, self.login = host, port, login
        self.key_path, self.known_hosts = key_path, known_hosts
        self.cancelled = cancelled
        self.transport: paramiko.Transport | None = None
        self.sftp: paramiko.SFTPClient | None = None
        self._sock: socket.socket | None = None
        self._aborted = False
        self._watchdog = _Watchdog(self.abort, cancelled)

    def __enter__(self) -> Collector:
        known = _read_known_hosts(self.known_hosts)
        key = self._load_key()
        self._watchdog.start()
        try:
            self._open(known, key)
        except BaseException:
            self.close()
            raise
        return self

    def _open(self, known: list[knownhosts.Entry], key: paramiko.PKey) -> None:
        where = f"{self.host} port {self.port}"
        with self._step(CONNECT_TIMEOUT, f"connecting to {where}", failed=f"cannot connect to {where}"):
            sock = self._connect()
        # paramiko's own timeouts end this step (and say which part was missing);
        # the watchdog's deadline, a little later, is for when they do not
        with self._step(CONNECT_TIMEOUT + HANDSHAKE_GRACE, f"exchanging keys with {where}"):
            transport = paramiko.Transport(sock, default_window_size=WINDOW, default_max_packet_size=MAX_PACKET)
            transport.set_log_channel(TRANSPORT_LOG)
            self.transport = transport
            transport.banner_timeout = transport.handshake_timeout = CONNECT_TIMEOUT
            transport.auth_timeout = CONNECT_TIMEOUT
            self._start_ssh(transport, where)
        self._check_host_key(known, transport.get_remote_server_key())
        with self._step(CONNECT_TIMEOUT, f"logging in to {where} as {self.login}"):
            transport.auth_publickey(self.login, key)
        with self._step(CONNECT_TIMEOUT, f"starting SFTP on {where}"):
            # SFTPClient.from_transport, with a timeout on every wait in it
            channel = transport.open_session(
                window_size=WINDOW, max_packet_size=MAX_PACKET, timeout=CONNECT_TIMEOUT
            )
            channel.settimeout(CONNECT_TIMEOUT)
            try:
                channel.invoke_subsystem("sftp")
                self.sftp = paramiko.SFTPClient(channel)
            except (EOFError, OSError, paramiko.SSHException) as exc:
                if isinstance(exc, TimeoutError) or self._watchdog.fired is not None:
                    raise  # said by _step
                raise self._no_sftp(channel, where, exc) from None
            channel.settimeout(TRANSFER_TIMEOUT)

    def _no_sftp(self, channel: paramiko.Channel, where: str, exc: BaseException) -> UploadError:
        """Logged in, and the session closed where SFTP should have started:
        the collector runs something else for this login whatever is asked,
        as SIE's does (a forced `rsync --server`, rrsync). paramiko's own
        words ("EOF during negotiation", "Channel closed.") do not say that."""
        said = b""
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            while channel.recv_stderr_ready() and len(said) < 400:
                said += channel.recv_stderr(400)
        told = said.decode("utf-8", "replace").strip()
        return UploadError(
            f"starting SFTP on {where}: the collector closed the session ({reason(exc)}"
            + (f"; it said: {told[:400]}" if told else "")
            + f"); it forces a command for {self.login} instead of SFTP, as a collector that takes rsync only "
            'does: try upload_method="rsync"'
        )

    def _start_ssh(self, transport: paramiko.Transport, where: str) -> None:
        """Banner and key exchange, each within CONNECT_TIMEOUT.

        A port that accepts and never says a word (not an SSH server, or
        one too busy to answer) is said in one line of our own: paramiko's
        transport thread would log its traceback (see _TransportErrors).
        """
        try:
            transport.start_client(timeout=CONNECT_TIMEOUT)
        except paramiko.SSHException as exc:
            # paramiko's banner timeout: its "Error reading SSH protocol banner", raised from a timeout
            silent = not transport.remote_version and isinstance(exc.__context__, TimeoutError)
            if not silent or self._watchdog.fired is not None or self.cancelled():
                raise  # said by _step
            finished = False
        else:
            finished = transport.initial_kex_done  # start_client returns at its timeout, unfinished
        if not finished:
            self.abort()
            doing = "exchanging keys with" if transport.remote_version else "waiting for the SSH banner of"
            raise UploadError(f"no answer from the collector for {CONNECT_TIMEOUT:.0f} s while {doing} {where} "
                              "(is it an SSH server?); connection dropped")

    def _connect(self) -> socket.socket:
        """A TCP connection the watchdog can end at any moment (see abort)."""
        last: OSError = OSError(f"no address for {self.host}")
        for family, kind, proto, _, address in self._resolve():
            sock = socket.socket(family, kind, proto)
            self._sock = sock
            sock.settimeout(CONNECT_TIMEOUT)
            try:
                if self._aborted:
                    raise OSError("aborted")
                sock.connect(address)
                return sock
            except OSError as exc:
                last = exc
                sock.close()
                if self._aborted:
                    break
        raise last

    def _resolve(self) -> list:
        """getaddrinfo in a thread: it cannot be interrupted, but it can be left."""
        found: list = []

        def lookup() -> None:
            try:
                found.append(socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM))
            except OSError as exc:
                found.append(exc)

        threading.Thread(target=lookup, name="upload-resolve", daemon=True).start()
        while not found:
            if self._aborted:
                raise OSError(f"name lookup of {self.host} abandoned")
            time.sleep(WATCH_INTERVAL / 2)
        if isinstance(found[0], OSError):
            raise found[0]
        return found[0]

    def _load_key(self) -> paramiko.PKey:
        try:
            return paramiko.PKey.from_path(self.key_path)
        except FileNotFoundError:
            raise UploadError(f"upload key {self.key_path} does not exist (run sie-gen-key)") from None
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise UploadError(f"cannot load upload key {self.key_path}: {exc}") from None

    def _check_host_key(self, known: list[knownhosts.Entry], offered: paramiko.PKey) -> None:
        entry = _host_entry(self.host, self.port)
        said, line = knownhosts.verdict(known, entry, offered.asbytes())
        what = f"{offered.get_name()} {fingerprint(offered)}"
        if said is knownhosts.Verdict.REVOKED:
            raise HostKeyError(
                f"host key of {entry} ({what}) is revoked (@revoked in {self.known_hosts} line {line}): "
                "refused; nothing sent"
            )
        if said is knownhosts.Verdict.UNKNOWN:
            raise HostKeyError(f"host key of {entry} is not in {self.known_hosts} (offered {what}); nothing sent")
        if said is knownhosts.Verdict.CHANGED:
            raise HostKeyError(
                f"host key of {entry} does not match {self.known_hosts} line {line}: it has changed, or this "
                f"is not the collector (offered {what}); nothing sent"
            )

    def __exit__(self, *exc) -> None:
        self.close()

    def abort(self) -> None:
        """End every wait of this session now; safe from any thread."""
        self._aborted = True
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Tear down; a dead connection may fail to close, which changes nothing.

        On a live connection the SFTP channel is closed first and the server
        told we are done (SSH_MSG_DISCONNECT, what OpenSSH's client sends), so
        the collector logs a clean disconnect rather than "Connection reset by
        peer"; within CLOSE_TIMEOUT, else the watchdog drops it.
        """
        self._watchdog.arm(CLOSE_TIMEOUT)
        sftp, transport = self.sftp, self.transport
        self.sftp = self.transport = None
        if sftp is not None:
            with contextlib.suppress(Exception):
                sftp.close()
        if transport is not None and not self._aborted:
            with contextlib.suppress(Exception):
                _disconnect(transport)
        for closeable in (transport, self._sock):
            if closeable is not None:
                with contextlib.suppress(Exception):
                    closeable.close()
        self._watchdog.finish()

    @contextlib.contextmanager
    def _step(
        self, seconds: float | None, doing: str, per_file: bool = False, failed: str = ""
    ) -> Iterator[None]:
        """One network step with its deadline; its errors said in words."""
        self._watchdog.arm(seconds)
        try:
            yield
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._failure(exc, doing, seconds, per_file, failed) from None
        finally:
            self._watchdog.arm(None)

    def _failure(
        self, exc: BaseException, doing: str, seconds: float | None, per_file: bool, failed: str
    ) -> UploadError:
        fired = self._watchdog.fired
        if fired == "stop" or self.cancelled():
            self.abort()
            return UploadError(f"stopped while {doing}")
        if fired == "deadline" or isinstance(exc, TimeoutError):
            self.abort()
            limit = TRANSFER_TIMEOUT if seconds is None else seconds
            return UploadError(f"no answer from the collector for {limit:.0f} s while {doing}; connection dropped")
        if per_file and self._alive():
            if isinstance(exc, PermissionError):
                return FileRefused(f"{doing}: permission denied on the collector")
            return FileRefused(f"{doing}: refused by the collector ({reason(exc)})")
        exc = self._cause(exc)
        self.abort()
        if per_file:
            return UploadError(f"{doing}: connection lost ({reason(exc)})")
        return UploadError(f"{failed or doing + ' failed'}: {reason(exc)}")

    def _cause(self, exc: BaseException) -> BaseException:
        """The transport thread's own error, when that is what ended the
        session: what fails here is only its echo ("Server connection
        dropped"), and the thread's log lines are dropped (_TransportErrors)."""
        transport = self.transport
        saved = transport.get_exception() if transport is not None else None
        return saved if saved is not None else exc

    def _alive(self) -> bool:
        transport, sftp = self.transport, self.sftp
        return (
            not self._aborted and transport is not None and transport.is_active()
            and sftp is not None and not sftp.get_channel().closed
        )

    # --------------------------------------------------------------- files
    def ensure_directory(self, path: str) -> None:
        """mkdir -p on the server."""
        sftp = self._session()
        built = ""
        with self._step(None, f"making {path} on the collector"):
            for part in path.strip("/").split("/"):
                built = f"{built}/{part}" if built else part
                try:
                    if not stat.S_ISDIR(sftp.stat(built).st_mode):
                        raise UploadError(f"{built} on the collector is not a directory")
                except FileNotFoundError:
                    try:
                        sftp.mkdir(built)
                    except OSError as exc:
                        if not self._alive():
                            raise
                        raise UploadError(f"cannot create {built} on the collector: {reason(exc)}") from None

    def send(self, paths: list[str], remote_dir: str, sent: Callable[[str, int], None],
             refused: Callable[[str, str], None]) -> None:
        """Deliver the files one by one: `sent(path, size)` after each,
        `refused(path, why)` for one that failed alone (the others go on).
        UploadError when the session is over."""
        self.ensure_directory(remote_dir)
        for path in paths:
            if self.cancelled():
                raise UploadError("stopped between files")
            if not os.path.lexists(path):
                continue  # trimmed meanwhile
            try:
                size = self.upload(path, remote_dir)
            except FileRefused as exc:
                refused(path, str(exc))
                continue
            os.unlink(path)
            sent(path, size)

    def upload(self, local_path: str, remote_dir: str) -> int:
        """Send one file; return its size.

        FileRefused: this file failed and the session goes on (the local
        file is not ours or cannot be read, or the collector refused it);
        UploadError: the session is over.
        """
        sftp = self._session()
        name = os.path.basename(local_path)
        temporary = f"{remote_dir}/.{name}.part"
        final = f"{remote_dir}/{name}"
        try:
            source = localfiles.open_for_upload(local_path)
        except localfiles.NotSendable as exc:
            raise FileRefused(f"{name}: not sent: {local_path} is {exc}") from None
        except OSError as exc:
            raise FileRefused(f"{name}: cannot read the local file {local_path}: {reason(exc)}") from None
        with source:
            size = os.fstat(source.fileno()).st_size
            with self._step(None, f"sending {name}", per_file=True):
                self._send(sftp, source, temporary, local_path)
            with self._step(None, f"checking {name} on the collector", per_file=True):
                written = sftp.stat(temporary).st_size
                if written != size:
                    self._forget(temporary)
                    raise FileRefused(f"{name}: the collector kept {written} of {size} bytes (is its disk full?)")
                sftp.posix_rename(temporary, final)
                if sftp.stat(final).st_size != size:
                    raise FileRefused(f"{name}: size changed after rename")
        return size

    def _send(self, sftp: paramiko.SFTPClient, source, temporary: str, local_path: str) -> None:
        target = sftp.open(temporary, "wb")
        try:
            target.set_pipelined(True)
            while True:
                try:
                    chunk = source.read(CHUNK)
                except OSError as exc:
                    raise FileRefused(f"cannot read the local file {local_path}: {reason(exc)}") from None
                if not chunk:
                    break
                target.write(chunk)
        except BaseException as exc:
            self._abandon(target, temporary, exc)
            raise
        try:
            target.close()  # waits for every pipelined write's answer
        except BaseException as exc:
            self._abandon(target, temporary, exc)
            raise

    def _abandon(self, target: paramiko.SFTPFile, temporary: str, exc: BaseException) -> None:
        """After a failed transfer: drop a silent or dead connection at once
        (closing the file would wait for it as long again, and removing the
        partial file as long once more); on a live one, free the space the
        partial file holds (a full disk must not stay full for the next),
        within one TRANSFER_TIMEOUT in all."""
        if isinstance(exc, TimeoutError) or not self._alive():
            self.abort()
            return
        self._watchdog.arm(TRANSFER_TIMEOUT)
        with contextlib.suppress(Exception):
            target.close()
        self._forget(temporary)

    def _forget(self, path: str) -> None:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self._session().remove(path)

    def _session(self) -> paramiko.SFTPClient:
        if self.sftp is None:
            raise UploadError("not connected")
        return self.sftp
