"""`run --print json|text`: the records, as they go to the spool, on stdout.

For an operator's `| grep` or `| jq` on a running sensor. The spool stays
the source of truth, so printing never holds the capture up: lines are
made and written by a thread of their own from a bounded queue. A live
capture that outruns the reader (or a paused pager) skips printing
records, counted and said at the stop; a replay waits for the reader
instead, so it prints every record. A closed pipe (`| head -1`) ends the
printing and nothing else: the capture goes on and the spool gets every
record.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from collections.abc import Callable

from sensor.records.record import Envelope

log = logging.getLogger(__name__)

QUEUE_BATCHES = 256  # lists of records waiting to be printed
_END = None


class LivePrinter:
    """Called with each list of records the writer gets; `close` at the end."""

    def __init__(self, show: Callable[[dict, Envelope], str], envelope: Envelope, wait: bool,
                 stream=None) -> None:
        """`show`: render.to_json or to_text; `envelope`: what the spool's
        format puts around each record, so lines equal `read`'s; `wait`:
        block when the queue is full (a replay) instead of skipping."""
        self.show = show
        self.envelope = envelope
        self.wait = wait
        self.stream = stream or sys.stdout
        self.skipped = 0
        self.closed = False  # the reader went away
        self._queue: queue.Queue = queue.Queue(QUEUE_BATCHES)
        self._thread = threading.Thread(target=self._print, name="print", daemon=True)
        self._thread.start()

    def __call__(self, records: list) -> None:
        if self.closed:
            return
        try:
            self._queue.put(records, block=self.wait)
        except queue.Full:
            self.skipped += len(records)

    def close(self) -> None:
        """Print what is queued (the pipe allowing), then say what was skipped."""
        self._queue.put(_END)
        self._thread.join()
        if self.skipped:
            log.warning("run --print: %d records not printed (the reader was slower than the capture); "
                        "the spool has every one", self.skipped)

    def _print(self) -> None:
        show, envelope = self.show, self.envelope
        while (records := self._queue.get()) is not _END:
            if self.closed:
                continue
            try:
                for record in records:
                    self._write_line((show(record, envelope) + "\n").encode())
            except OSError:  # EPIPE: `| head` has what it wanted
                self._stop_printing()
            except Exception as exc:  # a bug in rendering: say it once, and the capture goes on
                log.error("run --print: stopped printing: %s", exc, exc_info=True)
                self.closed = True

    def _write_line(self, line: bytes) -> None:
        """One write a line, straight to the descriptor: capture workers
        print to one stdout each from its own process, and a line up to
        PIPE_BUF (4 KiB) is never split by another's on a pipe."""
        fd = self.stream.fileno()
        while line:
            line = line[os.write(fd, line):]

    def _stop_printing(self) -> None:
        self.closed = True
        # the interpreter flushes stdout at exit: into /dev/null, not an error
        # about a closed pipe
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass
