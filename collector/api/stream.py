"""Answers as they come out of the store, never built whole.

A lookup's rows become lines in chunks of about 64 KiB, made by a plain
generator that the response runs a chunk at a time in the thread pool
(SQLite's calls block; the event loop never waits on one). Between two
chunks no thread is held: a client that reads slowly costs a coroutine
and its SQLite reader, and one that reads nothing for `send_timeout`
seconds is cut off, its reader closed (a reader left open would keep
SQLite's write-ahead log from being checkpointed).

DNSDB's Streaming API Framing: `{"cond":"begin"}`, a line `{"obj":...}`
a row, then `succeeded`, `limited` (the limit cut the answer short) or
`failed` with a message (the deadline passed, the store failed). A
client that sees none of the three knows the answer was truncated. COF
has no framing: there, a failure cuts the connection (no final chunk),
which HTTP clients report as a truncated answer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..store import LookupTimeout, Summary

log = logging.getLogger("collector.api")
CHUNK = 65536
CUT = object()  # yielded by a COF stream: end the answer without completing it

_BEGIN = b'{"cond":"begin"}\n'
_SUCCEEDED = b'{"cond":"succeeded"}\n'
_LIMITED = b'{"cond":"limited","msg":"Result limit reached"}\n'


def _line(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _failed(message: str) -> bytes:
    return _line({"cond": "failed", "msg": message})


def saf_lookup(rows: Iterable, to_obj: Callable, limit: int, deadline: float) -> Iterator[bytes]:
    """SAF lines of `rows` (the store was asked for limit + 1: one more means `limited`)."""
    chunk = [_BEGIN]
    size = sent = 0
    try:
        for row in rows:
            if sent == limit:
                yield Last(b"".join(chunk) + _LIMITED)
                return
            line = _line({"obj": to_obj(row)})
            chunk.append(line)
            size += len(line)
            sent += 1
            if size >= CHUNK:
                _check(deadline)
                yield b"".join(chunk)
                chunk, size = [], 0
    except LookupTimeout as exc:
        yield Last(b"".join(chunk) + _failed(str(exc)))
        return
    except Exception as exc:  # the store failed (a damaged file, a disk error): say so, in the answer and the log
        log.error("lookup failed: %s", exc)
        yield Last(b"".join(chunk) + _failed("the database could not answer"))
        return
    yield Last(b"".join(chunk) + _SUCCEEDED)


def saf_summary(summarize: Callable[[], Summary], to_obj: Callable) -> Iterator[bytes]:
    """The three SAF lines of a summarize (computed in the thread pool, like a lookup)."""
    try:
        summary = summarize()
    except LookupTimeout as exc:
        yield Last(_BEGIN + _failed(str(exc)))
        return
    except Exception as exc:  # as in saf_lookup
        log.error("summarize failed: %s", exc)
        yield Last(_BEGIN + _failed("the database could not answer"))
        return
    yield Last(_BEGIN + _line({"obj": to_obj(summary)}) + _SUCCEEDED)


def cof_lines(lookups: Iterable[Iterable], to_objs: list[Callable], limit: int, deadline: float) -> Iterator:
    """COF lines, a JSON object each, of several lookups in turn (at most `limit` rows in all)."""
    chunk: list[bytes] = []
    size = sent = 0
    try:
        for rows, to_obj in zip(lookups, to_objs, strict=True):
            for row in rows:
                if sent == limit:
                    break
                sent += 1
                for obj in _as_list(to_obj(row)):
                    line = _line(obj)
                    chunk.append(line)
                    size += len(line)
                if size >= CHUNK:
                    _check(deadline)
                    yield b"".join(chunk)
                    chunk, size = [], 0
    except Exception as exc:  # LookupTimeout or the store: COF cannot say so but by cutting the answer
        log.error("COF lookup failed: %s", exc)
        yield b"".join(chunk)
        yield CUT
        return
    yield Last(b"".join(chunk))


def _as_list(objs) -> list[dict]:
    return objs if isinstance(objs, list) else [objs]


def _check(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise LookupTimeout("the answer ran past its time")


class Last(bytes):
    """An answer's final chunk: seeing it, the response knows there is no more
    without asking the generator again (one thread hop less a request)."""


class Streamed(StreamingResponse):
    """An answer made by a blocking chunk generator: each chunk made in the
    thread pool, each write bounded by `send_timeout`, the generator
    closed however the answer ends (`on_close` then runs). An answer made
    in one chunk goes out with its length; a longer one is chunked, and
    stops being made as soon as the client is gone."""

    def __init__(self, chunks: Iterator, media_type: str, send_timeout: float, client: str,
                 on_close: Callable[[], None] = lambda: None) -> None:
        self.chunks = chunks
        self.done = False
        self.send_timeout = send_timeout
        self.client = client
        self.on_close = on_close
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers()

    def _next(self):
        """The next chunk (in a worker thread); the generator closed here when it was the last."""
        chunk = next(self.chunks, None)
        if chunk is None or chunk is CUT or isinstance(chunk, Last):
            self.done = True
            self.chunks.close()
        return chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            first = await run_in_threadpool(self._next)
            if self.done and first is not CUT:
                await self._whole(send, first or b"")
                return
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch, receive, group.cancel_scope)
                await self._stream(send, first)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):  # a client gone (cancelled) still gets its reader closed
                if not self.done:
                    await run_in_threadpool(self.chunks.close)
            self.on_close()

    async def _whole(self, send: Send, body: bytes) -> None:
        headers = [*self.raw_headers, (b"content-length", str(len(body)).encode())]
        try:
            with anyio.fail_after(self.send_timeout):
                await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
                await send({"type": "http.response.body", "body": body, "more_body": False})
        except TimeoutError:
            self._cut_off()

    async def _stream(self, send: Send, chunk) -> None:
        try:
            with anyio.fail_after(self.send_timeout):
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            while chunk is not CUT:  # CUT: end without completing the answer (the client sees it truncated)
                if chunk:
                    with anyio.fail_after(self.send_timeout):
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if self.done:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                chunk = await run_in_threadpool(self._next)
        except TimeoutError:
            self._cut_off()

    async def _watch(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    def _cut_off(self) -> None:
        log.warning("client %s read nothing for %g s: its answer is cut off", self.client, self.send_timeout)
