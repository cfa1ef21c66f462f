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
At a stop (`drain`) every connection is read dry and answered with FINISH.

Idle and slowloris connections must not keep a resolver out (`Limits`):
a newcomer is never refused, it evicts the connection least likely to be
a resolver, and deadlines close handshakes and frames that never finish.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import selectors
import socket
import stat
import struct
import time

from sensor.edges import activation
from sensor.edges.dnstap import Decoder
from sensor.edges.framestream import Control, Reader, State, control_frame
from sensor.edges.libpcap import CaptureError, Datagram
from sensor.service import daemon
from sensor.service.config import dnstap_endpoint

log = logging.getLogger(__name__)

RECV_BYTES = 256 * 1024
FILE_READ_BYTES = 1024 * 1024
QUIET_SECONDS = 0.2  # as capture.LIVE_TIMEOUT_MS: how often a quiet sensor ticks
LISTEN_BACKLOG = 64
# Accepts per round, at most Limits.per_peer: a newcomer's first bytes are
# read (at its accept, or first thing next round) before enough newer
# connections from its peer arrive to make it the oldest and evict it.
ACCEPTS_PER_ROUND = 8
SOCKET_MODE = 0o660  # the resolver's user joins the service user's group
SEND_TIMEOUT = 2.0
DRAIN_SECONDS = 2.0  # at a stop, the longest spent reading the connections dry
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_HANDSHAKING = (State.WAITING, State.READY)


@dataclasses.dataclass(frozen=True)
class Limits:
    """How the listener keeps room for a resolver among idle and slowloris
    connections.

    A resolver with nothing to report sends nothing, for hours (Frame
    Streams has no keepalive), so time alone never closes an established
    connection: it only orders them for eviction. Time does close a
    handshake (READY, ACCEPT, START) not done `handshake_seconds` after
    the accept, and a frame begun and not finished within `idle_seconds`
    (a resolver writes a frame whole). A newcomer is never refused: one
    whose peer (unix: uid, tcp: address) already has `per_peer`
    connections evicts one of that peer's, so a crowd from one peer only
    displaces itself; else, with `connections` open, it evicts one of
    anybody's (`_Connection.eviction_order`).
    """

    connections: int = 64
    per_peer: int = 16
    handshake_seconds: float = 5.0
    idle_seconds: float = 10.0


DEFAULT_LIMITS = Limits()


class _Connection:
    """One resolver's stream, and the times that decide when it goes."""

    def __init__(self, sock: socket.socket, peer: str, owner: str, now: float) -> None:
        self.sock = sock
        self.peer = peer  # for the log
        self.owner = owner  # whose connections count together: "uid N" or the address
        self.reader = Reader(bidirectional=True)
        self.accepted = now
        self.last_frame = now  # the last complete frame, or the end of the handshake
        self.frame_begun: float | None = None  # since when a partial frame is held

    @property
    def established(self) -> bool:
        return self.reader.state not in _HANDSHAKING

    def eviction_order(self) -> tuple[int, float]:
        """Lowest goes first: connections short of READY (where an idle or
        slowloris one stays), oldest first; then those with READY answered
        but no START; then established ones, longest without a frame
        first."""
        state = self.reader.state
        if state is State.WAITING:
            return (0, self.accepted)
        if state is State.READY:
            return (1, self.accepted)
        return (2, self.last_frame)

    def overdue(self, now: float, limits: Limits) -> str | None:
        """The counter to close it under when a deadline has passed."""
        if not self.established:
            return "dnstap_handshake_timeout" if now - self.accepted >= limits.handshake_seconds else None
        if self.frame_begun is not None and now - self.frame_begun >= limits.idle_seconds:
            return "dnstap_idle_timeout"
        return None

    def fed(self, frames: int, was_established: bool, now: float) -> None:
        """Move the clocks after the reader took a chunk."""
        progressed = frames > 0 or (self.established and not was_established)
        if progressed:
            self.last_frame = now
        if self.reader.idle:
            self.frame_begun = None
        elif progressed or self.frame_begun is None:
            self.frame_begun = now


class DnstapListener:
    """A listening socket that resolvers connect to and send dnstap."""

    live = True
    not_ip = 0

    def __init__(self, sock: socket.socket, description: str, decoder: Decoder, path: str | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self.sock = sock
        self.description = description
        self.decoder = decoder
        self.path = path  # the unix socket's file, removed at close
        self.limits = limits
        self.frames = 0
        self.connections: dict[int, _Connection] = {}
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ, None)

    @classmethod
    def open(cls, spec: str, decoder: Decoder, limits: Limits = DEFAULT_LIMITS,
             passed: list[socket.socket] | tuple = ()) -> DnstapListener:
        """Listen at `unix:/PATH` or `tcp:HOST:PORT` (config.dnstap_endpoint),
        on the socket systemd passed for it (`passed`, activation.py) if one
        is bound there: that socket outlives this process, so it is neither
        made nor removed here."""
        try:
            kind, where = dnstap_endpoint(spec)
        except (TypeError, ValueError) as exc:
            raise CaptureError(f"dnstap socket: {exc}") from None
        for sock in passed:
            if activation.bound_to(sock, kind, where):
                sock.setblocking(False)
                return cls(sock, f"dnstap socket {spec} (from systemd)", decoder, limits=limits)
        try:
            if kind == "unix":
                sock = _unix_listener(where)
                return cls(sock, f"dnstap socket {spec}", decoder, path=where, limits=limits)
            sock = _tcp_listener(*where)
        except OSError as exc:
            raise CaptureError(f"cannot listen for dnstap at {spec}: {exc}") from None
        return cls(sock, f"dnstap socket {spec}", decoder, limits=limits)

    # ------------------------------------------------------------ batches
    def read_batch(self) -> list[Datagram]:
        """What the resolvers sent since the last call; [] after a quiet
        QUIET_SECONDS. The deadlines are checked here: the pipeline calls
        at least every QUIET_SECONDS."""
        batch: list[Datagram] = []
        incoming = False
        events = self.selector.select(QUIET_SECONDS)
        now = time.monotonic()
        for key, _ in events:
            if key.data is None:
                incoming = True
            else:
                self._receive(key.data, batch, now)
        if incoming:  # after the reads: those connections' bytes count before newcomers can evict them
            self._accept(batch, now)
        self._expire(now)
        return batch

    def _accept(self, batch: list, now: float) -> None:
        for _ in range(ACCEPTS_PER_ROUND):
            try:
                sock, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("dnstap: accept failed: %s", exc)
                return
            sock.setblocking(False)
            peer, owner = _identify(sock, address)
            self._make_room(owner)
            connection = _Connection(sock, peer, owner, now)
            self.connections[sock.fileno()] = connection
            self.selector.register(sock, selectors.EVENT_READ, connection)
            log.debug("dnstap: %s (%s) accepted", peer, owner)
            # a resolver sends READY on connecting: answered now, it ranks
            # above every connection still silent
            self._receive(connection, batch, now)

    def _make_room(self, owner: str) -> None:
        """Room for one more connection from `owner`: evict, never refuse,
        so no crowd of idle connections keeps a resolver out."""
        table = self.connections.values()
        same = [c for c in table if c.owner == owner]
        if len(same) >= self.limits.per_peer:
            self._dismiss(min(same, key=_Connection.eviction_order), "dnstap_peer_limit",
                          f"{owner} has {len(same)} connections")
        elif len(self.connections) >= self.limits.connections:
            victim = min(table, key=_Connection.eviction_order)
            reason = "dnstap_evicted_idle" if victim.established else "dnstap_evicted_unfinished"
            self._dismiss(victim, reason, f"{len(self.connections)} connections open")

    def _expire(self, now: float) -> None:
        for connection in list(self.connections.values()):
            reason = connection.overdue(now, self.limits)
            if reason == "dnstap_handshake_timeout":
                self._dismiss(connection, reason, f"no handshake in {self.limits.handshake_seconds:g} s")
            elif reason is not None:
                self._dismiss(connection, reason, f"a frame unfinished for {self.limits.idle_seconds:g} s")

    def _receive(self, connection: _Connection, batch: list, now: float) -> None:
        try:
            data = connection.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(connection, "dnstap_connection_error", f"receive failed: {exc}")
            return
        if not data:
            if not connection.reader.idle:
                self._drop(connection, "dnstap_truncated_frame", "closed in the middle of a frame")
            else:
                self._close(connection, "closed")
            return
        self._take(connection, data, batch, now)

    def _take(self, connection: _Connection, data: bytes, batch: list, now: float) -> bool:
        """Feed what arrived, decode the frames it completed, answer control
        frames; False once the connection is closed (a violation, or STOP
        answered)."""
        reader = connection.reader
        was_established = connection.established
        frames = reader.feed(data)
        connection.fed(len(frames), was_established, now)
        if connection.established and not was_established and reader.error is None:
            log.info("dnstap: %s connected (%s)", connection.peer, connection.owner)
        self.frames += len(frames)
        decode = self.decoder.decode
        for payload in frames:
            if not decode(payload, batch):
                self._drop(connection, None, "sent a payload that is not a Dnstap message")
                return False
        if reader.error is None and reader.state is State.STOPPED:
            # STOP: FINISH goes back, but a resolver may close without
            # waiting for it (unbound does at times): that ends the stream
            # just as well, so it is no error
            self._send_if_there(connection, reader.take_outgoing())
            self._close(connection, "finished")
            return False
        if reader.outgoing and not self._send(connection, reader.take_outgoing()):
            return False
        if reader.error is not None:
            self._drop(connection, reader.error, f"Frame Streams violation ({reader.error})")
            return False
        return True

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

    def _send_if_there(self, connection: _Connection, data: bytes) -> None:
        """A last control frame (FINISH): a peer already gone is no error."""
        sock = connection.sock
        try:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendall(data)
        except OSError as exc:
            log.debug("dnstap: %s gone before FINISH (%s)", connection.peer, exc)

    def _drop(self, connection: _Connection, reason: str | None, why: str) -> None:
        if reason:
            self._count(reason)
        log.warning("dnstap: %s %s: connection closed", connection.peer, why)
        self._forget(connection)

    def _dismiss(self, connection: _Connection, reason: str, why: str) -> None:
        """Closed to make room or at a deadline: a warning when it was an
        established stream (maybe a resolver's), else only counted (a
        flood of idle connections must not flood the log too)."""
        self._count(reason)
        level = logging.WARNING if connection.established else logging.DEBUG
        log.log(level, "dnstap: %s (%s) %s: connection closed (%s)", connection.peer, connection.owner, why, reason)
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

    # ------------------------------------------------------------- a stop
    def drain(self, seconds: float = DRAIN_SECONDS) -> list[Datagram]:
        """At a stop: every frame the resolvers wrote before it, then FINISH.

        Each connection is shut for reading first: on a unix socket the
        resolver's next write then fails at once (it reconnects; unbound
        drops the one message it was writing, libfstrm the batch it had
        not flushed) while all it wrote before stays readable; then it is
        read to its end, FINISH goes back on a stream that has begun, and
        it is closed. `seconds` bounds the whole (a tcp peer can go on
        writing after the shutdown).
        """
        batch: list[Datagram] = []
        deadline = time.monotonic() + seconds
        for connection in list(self.connections.values()):
            self._drain_one(connection, batch, deadline)
        return batch

    def _drain_one(self, connection: _Connection, batch: list, deadline: float) -> None:
        sock = connection.sock
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)
        while time.monotonic() < deadline:
            try:
                data = sock.recv(RECV_BYTES)
            except OSError:  # nothing more (EAGAIN), or the peer is gone
                break
            if not data:
                break
            if not self._take(connection, data, batch, time.monotonic()):
                return  # closed: STOP answered, or a violation
        if not connection.reader.idle:
            log.info("dnstap: %s: the frame it was writing at the stop is not taken", connection.peer)
        if connection.reader.state is State.DATA:
            self._send_if_there(connection, control_frame(Control.FINISH))
        self._close(connection, "closed at the stop")

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


def _identify(sock: socket.socket, address: object) -> tuple[str, str]:
    """(name for the log, whose connections count together): on a unix
    socket the peer's uid as the kernel saw it at connect (SO_PEERCRED),
    on tcp the address (the port is the client's to choose)."""
    if sock.family != socket.AF_UNIX:
        return str(address), str(address[0])  # type: ignore[index]
    try:
        _, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    except OSError:
        return "local peer", "uid unknown"
    return "local peer", f"uid {uid}"


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
    sock.listen(LISTEN_BACKLOG)
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
        sock.listen(LISTEN_BACKLOG)
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
