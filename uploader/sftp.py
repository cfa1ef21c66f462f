"""One SSH/SFTP connection to the collector, with strict host key checking.

The transport is built by hand rather than through paramiko's SSHClient so
that nothing is ever sent before the server's key has been compared with
`knownhosts`: an unknown or changed key ends the connection right after
key exchange, before authentication. Each file goes to a hidden temporary
name, its size is checked on the server, and only then is it renamed
(atomically, replacing a leftover of an earlier try) to its final name.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import stat

import paramiko

CONNECT_TIMEOUT = 20.0
TRANSFER_TIMEOUT = 60.0  # longest silence from the server during a transfer
WINDOW = 8 * 1024 * 1024
MAX_PACKET = 32768
CHUNK = 32768 * 8
DISCONNECT_BY_APPLICATION = 11  # RFC 4253 reason code


class UploadError(RuntimeError):
    """The collector could not be reached, or refused a file."""


class HostKeyError(UploadError):
    """The collector's host key is unknown or has changed: nothing was sent."""


def _load_known_hosts(known_hosts: str) -> paramiko.HostKeys:
    try:
        keys = paramiko.HostKeys(known_hosts)
    except FileNotFoundError:
        raise HostKeyError(f"knownhosts file {known_hosts} does not exist") from None
    except (OSError, paramiko.SSHException) as exc:
        raise HostKeyError(f"cannot read knownhosts file {known_hosts}: {exc}") from None
    return keys


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


class Collector:
    """Context manager: an authenticated SFTP session to the collector."""

    def __init__(self, host: str, port: int, login: str, key_path: str, known_hosts: str) -> None:
        self.host, self.port, self.login = host, port, login
        self.key_path, self.known_hosts = key_path, known_hosts
        self.transport: paramiko.Transport | None = None
        self.sftp: paramiko.SFTPClient | None = None

    def __enter__(self) -> Collector:
        known = _load_known_hosts(self.known_hosts)
        key = self._load_key()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise UploadError(f"cannot connect to {self.host} port {self.port}: {exc}") from None
        try:
            transport = paramiko.Transport(sock, default_window_size=WINDOW, default_max_packet_size=MAX_PACKET)
            self.transport = transport
            transport.banner_timeout = CONNECT_TIMEOUT
            transport.start_client(timeout=CONNECT_TIMEOUT)
            self._check_host_key(known, transport.get_remote_server_key())
            transport.auth_publickey(self.login, key)
            self.sftp = paramiko.SFTPClient.from_transport(
                transport, window_size=WINDOW, max_packet_size=MAX_PACKET
            )
            self.sftp.get_channel().settimeout(TRANSFER_TIMEOUT)
        except HostKeyError:
            self.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise UploadError(f"SSH session with {self.host} port {self.port} failed: {exc}") from None
        return self

    def _load_key(self) -> paramiko.PKey:
        try:
            return paramiko.PKey.from_path(self.key_path)
        except FileNotFoundError:
            raise UploadError(f"upload key {self.key_path} does not exist (run sie-gen-key)") from None
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise UploadError(f"cannot load upload key {self.key_path}: {exc}") from None

    def _check_host_key(self, known: paramiko.HostKeys, offered: paramiko.PKey) -> None:
        entry = _host_entry(self.host, self.port)
        expected = known.lookup(entry)
        if not expected:
            raise HostKeyError(
                f"host key of {entry} is not in {self.known_hosts} "
                f"(offered {offered.get_name()} {fingerprint(offered)}); nothing sent"
            )
        match = expected.get(offered.get_name())
        if match is None or match != offered:
            raise HostKeyError(
                f"host key of {entry} does not match {self.known_hosts}: it has changed, or this is "
                f"not the collector (offered {offered.get_name()} {fingerprint(offered)}); "
                "nothing sent"
            )

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Tear down; a dead connection may fail to close, which changes nothing.

        The SFTP channel is closed first and the server told we are done
        (SSH_MSG_DISCONNECT, what OpenSSH's client sends), so the collector
        logs a clean disconnect rather than "Connection reset by peer".
        """
        sftp, transport = self.sftp, self.transport
        self.sftp = self.transport = None
        if sftp is not None:
            with contextlib.suppress(Exception):
                sftp.close()
        if transport is not None:
            with contextlib.suppress(Exception):
                _disconnect(transport)
            with contextlib.suppress(Exception):
                transport.close()

    # --------------------------------------------------------------- files
    def ensure_directory(self, path: str) -> None:
        """mkdir -p on the server."""
        sftp = self._session()
        built = ""
        for part in path.strip("/").split("/"):
            built = f"{built}/{part}" if built else part
            try:
                if not stat.S_ISDIR(sftp.stat(built).st_mode):
                    raise UploadError(f"{built} on the collector is not a directory")
            except FileNotFoundError:
                try:
                    sftp.mkdir(built)
                except OSError as exc:
                    raise UploadError(f"cannot create {built} on the collector: {exc}") from None

    def send(self, paths: list[str], remote_dir: str, sent) -> None:
        """Deliver the files one by one; `sent(path, size)` after each."""
        self.ensure_directory(remote_dir)
        for path in paths:
            if not os.path.exists(path):
                continue  # trimmed meanwhile
            size = self.upload(path, remote_dir)
            os.unlink(path)
            sent(path, size)

    def upload(self, local_path: str, remote_dir: str) -> int:
        """Send one file; return its size. Raises UploadError on any doubt."""
        sftp = self._session()
        name = os.path.basename(local_path)
        temporary = f"{remote_dir}/.{name}.part"
        final = f"{remote_dir}/{name}"
        size = os.path.getsize(local_path)
        try:
            with open(local_path, "rb") as source, sftp.open(temporary, "wb") as target:
                target.set_pipelined(True)
                while chunk := source.read(CHUNK):
                    target.write(chunk)
            written = sftp.stat(temporary).st_size
            if written != size:
                self._forget(temporary)
                raise UploadError(f"{name}: collector has {written} bytes of {size}")
            sftp.posix_rename(temporary, final)
            if sftp.stat(final).st_size != size:
                raise UploadError(f"{name}: size changed after rename")
        except PermissionError as exc:
            raise UploadError(f"{name}: permission denied on the collector ({exc})") from None
        except (TimeoutError, OSError, paramiko.SSHException, EOFError) as exc:
            raise UploadError(f"{name}: transfer failed ({exc or type(exc).__name__})") from None
        return size

    def _forget(self, path: str) -> None:
        with contextlib.suppress(OSError):
            self._session().remove(path)

    def _session(self) -> paramiko.SFTPClient:
        if self.sftp is None:
            raise UploadError("not connected")
        return self.sftp
