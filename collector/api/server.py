"""Running the query server: uvicorn (ASGI) on a socket bound beforehand.

Why Starlette on uvicorn: SQLite's calls block, and an answer can be a
million rows long. The app makes each chunk of an answer in the thread
pool and writes it from the event loop, so a slow client holds a
coroutine, not a thread, and the threads go to whoever has rows to make;
a thread-per-connection (WSGI) server would give each slow reader a
thread for the whole answer. httptools parses HTTP (uvicorn's fast
parser); uvicorn answers 503 past `api_max_connections`.

The socket is bound before privileges are dropped (any port works) and
its address printed, so a caller that asked for port 0 learns the port.
uvicorn's own X-Forwarded-For trust is off: the client address is the
one per-address limits count, and a header must not choose it.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..cli import engine
from ..config import Config
from ..keys import KeyRing
from .app import QueryServer

log = logging.getLogger("collector.api")
MAX_HEAD = 65536  # octets of a request's line and headers
KEEP_ALIVE_SECONDS = 5


class HeadDeadline(HttpToolsProtocol):
    """uvicorn's HTTP protocol with a deadline and a size cap on each
    request's head: without them a client that sends its headers a byte at
    a time, or never ends them, holds a connection (and its slot in
    `api_max_connections`) for as long as it likes."""

    seconds = 10.0  # a request's line and headers must arrive within this
    head_timer: asyncio.TimerHandle | None = None
    head_octets = 0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.head_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        if self.cycle is not None and _has_body(self.headers):
            # The API takes no body: answered, the connection closes. Kept open, a body sent a
            # byte at a time held it for ever (no deadline runs inside a body, and each byte
            # put off uvicorn's keep-alive timeout), and 500 of them, with no key, every slot.
            self.cycle.keep_alive = False

    def data_received(self, data: bytes) -> None:
        if self.head_timer is not None:
            self.head_octets += len(data)
            if self.head_octets > MAX_HEAD:
                self._cut(f"sent a request head over {MAX_HEAD} octets")
                return
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self.head_octets = 0
        self.head_timer = self.loop.call_later(self.seconds, self._cut, f"sent no whole request in {self.seconds:g} s")

    def _disarm(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _cut(self, why: str) -> None:
        self._disarm()
        log.info("client %s %s: connection closed", self.client[0] if self.client else "unknown", why)
        self.transport.close()


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request's headers announce a body (a length other than 0, or chunks)."""
    return any(name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0")
               for name, value in headers)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (OSError when it cannot be had)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # Nagle holds a keep-alive answer's body until the client's delayed ACK (40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def serve(cfg: Config, sock: socket.socket) -> None:
    """Answer on `sock` until SIGTERM or SIGINT (uvicorn's handlers: answers under way get 5 s)."""
    store = engine(cfg, query_timeout=cfg.api_timeout)
    app = QueryServer(store, KeyRing(cfg.api_keys_path), cfg).app()

    class Protocol(HeadDeadline):
        seconds = float(cfg.api_send_timeout)  # as long as an answer may wait for its reader

    config = uvicorn.Config(app, http=Protocol, lifespan="off", access_log=False, log_config=None,
                            proxy_headers=False, server_header=False, timeout_keep_alive=KEEP_ALIVE_SECONDS,
                            limit_concurrency=cfg.api_max_connections, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        store.close()
