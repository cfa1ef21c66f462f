"""The dnstap edge: a listening socket (or a file) in, datagram batches out.

It stands where `capture.Capture` stands: `read_batch()` returns a list of
(IP datagram, sec, nsec), [] when nothing came for a while, None at the end
of a file; `close()`, `live`, `not_ip`, `description`, `kernel_stats()` as
there. So `pipeline.Sensor` drives it unchanged. Frame Streams is
`framestream.Reader`'s business and the messages `dnstap.Decoder`'s; this
module only moves bytes: one non-blocking listening socket, any number of
resolver connections (a selector, no threads), each with its own reader.

A connection that breaks the protocol (garbage, an oversized frame, a
content type other than dnstap's, a payload that is not a Dnstap protobuf)
is counted under the reason and closed; the frames it sent before are
kept and the sensor goes on. A resolver that reconnects starts afresh.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import stat

from . import daemon
from .capture import CaptureError, Datagram
from .config import dnstap_endpoint
from .dnstap import Decoder
from .framestream import Reader, State

log = logging.getLogger(__name__)

RECV_BYTES = 256 * 1024
FILE_READ_BYTES = 1024 * 1024
QUIET_SECONDS = 0.2  # as capture.LIVE_TIMEOUT_MS: how often a quiet sensor ticks
MAX_CONNECTIONS = 64
SOCKET_MODE = 0o660  # the resolver's user joins the service user's group
SEND_TIMEOUT = 2.0


class _Connection:
    """One resolver's stream."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.reader = Reader(bidirectional=True)


class DnstapListener:
    """A listening socket that resolvers connect to and send dnstap."""

    live = True
    not_ip = 0

    def __init__(self, sock: socket.socket, description: str, decoder: Decoder, path: str | None = None) -> None:
        self.sock = sock
        self.description = description
        self.decoder = decoder
        self.path = path  # the unix socket's file, removed at close
        self.frames = 0
        self.connections: dict[int, _Connection] = {}
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ, None)

    @classmethod
    def open(cls, spec: str, decoder: Decoder) -> DnstapListener:
        """Listen at `unix:/PATH` or `tcp:HOST:PORT` (config.dnstap_endpoint)."""
        try:
            kind, where = dnstap_endpoint(spec)
        except (TypeError, ValueError) as exc:
            raise CaptureError(f"dnstap socket: {exc}") from None
        try:
            if kind == "unix":
                sock = _unix_listener(where)
                return cls(sock, f"dnstap socket {spec}", decoder, path=where)
            sock = _tcp_listener(*where)
        except OSError as exc:
            raise CaptureError(f"cannot listen for dnstap at {spec}: {exc}") from None
        return cls(sock, f"dnstap socket {spec}", decoder)

    # ------------------------------------------------------------ batches
    def read_batch(self) -> list[Datagram]:
        """What the resolvers sent since the last call; [] after a quiet
        QUIET_SECONDS."""
        batch: list[Datagram] = []
        for key, _ in self.selector.select(QUIET_SECONDS):
            if key.data is None:
                self._accept()
            else:
                self._receive(key.data, batch)
        return batch

    def _accept(self) -> None:
        try:
            sock, address = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("dnstap: accept failed: %s", exc)
            return
        if len(self.connections) >= MAX_CONNECTIONS:
            self._count("dnstap_too_many_connections")
            sock.close()
            return
        sock.setblocking(False)
        peer = str(address) if address else "local peer"
        connection = _Connection(sock, peer)
        self.connections[sock.fileno()] = connection
        self.selector.register(sock, selectors.EVENT_READ, connection)
        log.info("dnstap: %s connected", peer)

    def _receive(self, connection: _Connection, batch: list) -> None:
        try:
            data = connection.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(connection, "dnstap_connection_error", f"receive failed: {exc}")
            return
        reader = connection.reader
        if not data:
            if not reader.idle:
                self._drop(connection, "dnstap_truncated_frame", "closed in the middle of a frame")
            else:
                self._close(connection, "closed")
            return
        frames = reader.feed(data)
        self.frames += len(frames)
        decode = self.decoder.decode
        for payload in frames:
            if not decode(payload, batch):
                self._drop(connection, None, "sent a payload that is not a Dnstap message")
                return
        if reader.outgoing and not self._send(connection, reader.take_outgoing()):
            return
        if reader.error is not None:
            self._drop(connection, reader.error, f"Frame Streams violation ({reader.error})")
        elif reader.state is State.STOPPED:
            self._close(connection, "finished")

    def _send(self, connection: _Connection, data: bytes) -> bool:
        """Control frames (ACCEPT, FINISH): a few dozen bytes, sent whole."""
        sock = connection.sock
        try:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendall(data)
            sock.setblocking(False)
        except OSError as exc:
            self._drop(connection, "dnstap_connection_error", f"send failed: {exc}")
            return False
        return True

    def _drop(self, connection: _Connection, reason: str | None, why: str) -> None:
        if reason:
            self._count(reason)
        log.warning("dnstap: %s %s: connection closed", connection.peer, why)
        self._forget(connection)

    def _close(self, connection: _Connection, how: str) -> None:
        log.info("dnstap: %s %s", connection.peer, how)
        self._forget(connection)

    def _forget(self, connection: _Connection) -> None:
        self.selector.unregister(connection.sock)
        self.connections.pop(connection.sock.fileno(), None)
        connection.sock.close()

    def _count(self, reason: str) -> None:
        counters = self.decoder.counters
        counters[reason] = counters.get(reason, 0) + 1

    # ------------------------------------------------------------- rest
    def kernel_stats(self) -> tuple[int, int, int]:
        """(dnstap frames received, 0, 0): what the stats line reports as
        received; drops happen in the resolver, which does not tell."""
        return (self.frames, 0, 0)

    def close(self) -> None:
        for connection in list(self.connections.values()):
            self._forget(connection)
        self.selector.unregister(self.sock)
        self.selector.close()
        self.sock.close()
        if self.path:
            with contextlib.suppress(OSError):  # as the service user it may lack the right
                os.unlink(self.path)


def _unix_listener(path: str) -> socket.socket:
    """Bind `path` (replacing a stale socket, never another file or a live
    listener), mode SOCKET_MODE, owned by the service user when root."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise OSError(errno.EEXIST, "exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens: left by a crash
        else:
            raise OSError(errno.EADDRINUSE, "another program is listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o777 & ~SOCKET_MODE)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(umask)
    os.chmod(path, SOCKET_MODE)
    owner = daemon.service_owner()
    if owner is not None:  # as root: the service user (and its group) own it; never through a link
        os.chown(path, *owner, follow_symlinks=False)
    sock.listen(16)
    sock.setblocking(False)
    return sock


def _tcp_listener(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(16)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class DnstapFile:
    """A Frame Streams file (fstrm_capture, `dnstap -w`) replayed as a stream."""

    live = False
    not_ip = 0

    def __init__(self, path: str, decoder: Decoder) -> None:
        try:
            self.handle = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise CaptureError(f"cannot read {path}: {exc}") from None
        self.description = f"dnstap file {path}"
        self.decoder = decoder
        self.reader = Reader(bidirectional=False)
        self.frames = 0
        self._done = False

    def read_batch(self) -> list[Datagram] | None:
        """The datagrams of the next chunk of the file; never [] (that
        would mean "quiet" and let wall time in), None at the end."""
        batch: list[Datagram] = []
        reader = self.reader
        while not batch and not self._done:
            data = self.handle.read(FILE_READ_BYTES)
            if not data:
                if not reader.idle:
                    self._count("dnstap_truncated_frame")
                    log.warning("%s: ends in the middle of a frame", self.description)
                self._done = True
                break
            frames = reader.feed(data)
            self.frames += len(frames)
            for payload in frames:
                if not self.decoder.decode(payload, batch):
                    log.warning("%s: a payload is not a Dnstap message: the rest is not read", self.description)
                    self._done = True
                    break
            if reader.error is not None and not self._done:
                self._count(reader.error)
                log.warning("%s: Frame Streams violation (%s): the rest is not read", self.description,
                            reader.error)
                self._done = True
            elif reader.state is State.STOPPED:
                self._done = True
        return batch or None

    def _count(self, reason: str) -> None:
        counters = self.decoder.counters
        counters[reason] = counters.get(reason, 0) + 1

    def kernel_stats(self) -> tuple[int, int, int]:
        return (self.frames, 0, 0)

    def close(self) -> None:
        self.handle.close()
