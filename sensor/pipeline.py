"""capture -> matcher -> writer: the loop that `sie-dns-sensor run` drives.

Data flows one way. The loop owns the clock decisions: packet time for
everything that came from a packet, wall time only when a live capture is
quiet (so queries still time out and files still rotate at night).
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import time
from collections.abc import Callable

from .capture import Capture
from .matcher import Matcher
from .writer import INFINITY, SpoolWriter

log = logging.getLogger(__name__)

STATS_SECONDS = 300
FLUSH_CHUNK = 1024  # records made at a time at shutdown (bounds memory)


@dataclasses.dataclass
class Summary:
    """What one run did, for the log and for benchmarks."""

    packets: int = 0
    records: int = 0
    pairs: int = 0
    files: int = 0
    bytes_written: int = 0
    not_ip: int = 0
    unwritten: int = 0
    max_rss_kb: int = 0
    counters: dict = dataclasses.field(default_factory=dict)
    kernel: tuple = (0, 0, 0)

    def line(self) -> str:
        problems = ", ".join(f"{k}={v}" for k, v in sorted(self.counters.items())) or "none"
        received, dropped, ifdropped = self.kernel
        return (
            f"packets={self.packets} records={self.records} pairs={self.pairs} files={self.files} "
            f"bytes={self.bytes_written} unwritten={self.unwritten} max_rss_kb={self.max_rss_kb} "
            f"not_ip={self.not_ip} "
            f"kernel_received={received} kernel_dropped={dropped} if_dropped={ifdropped} "
            f"skipped: {problems}"
        )


def peak_rss_kb() -> int:
    """This process's peak resident set since it started its program.

    VmHWM, not getrusage: Linux carries the parent's peak across fork and
    exec into ru_maxrss, so a sensor started by a large process would
    report that process's memory.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class Sensor:
    """Runs until the capture ends (a file) or `stop()` is called (a signal)."""

    def __init__(
        self,
        capture: Capture,
        matcher: Matcher,
        writer: SpoolWriter,
        reload: Callable[[Sensor], None] | None = None,
    ) -> None:
        self.capture = capture
        self.matcher = matcher
        self.writer = writer
        self.reload = reload
        self.summary = Summary()
        self._stopping = False
        self._hangup = False

    def stop(self) -> None:
        """Safe from a signal handler: the loop notices within one batch."""
        self._stopping = True

    def hangup(self) -> None:
        """SIGHUP: at the next batch, finish the open file and re-read the
        configuration (safe from a signal handler)."""
        self._hangup = True

    def run(self) -> Summary:
        recovered = self.writer.recover()
        if recovered:
            log.warning("finished %d spool file(s) left by an earlier crash", len(recovered))
        next_stats = time.monotonic() + STATS_SECONDS
        while not self._stopping:
            batch = self.capture.read_batch()
            if batch is None:
                break
            if batch:
                self._process(batch)
            else:
                self._quiet()
            if self._hangup:
                self._hangup = False
                self.writer.finish()
                if self.reload is not None:
                    self.reload(self)
            if time.monotonic() >= next_stats:
                next_stats += STATS_SECONDS
                log.info("%s", self._snapshot().line())
        self._shutdown()
        return self.summary

    def _process(self, batch: list) -> None:
        """Feed one batch, writing records into the file of their interval."""
        feed = self.matcher.feed
        writer = self.writer
        records: list = []
        first_sec = first_nsec = 0
        deadline = writer.deadline
        for packet, sec, nsec in batch:
            if sec >= deadline:
                if records:
                    writer.write(records, first_sec, first_nsec)
                    records = []
                writer.advance(sec)
                deadline = writer.deadline
            made = feed(packet, sec, nsec)
            if made:
                if not records:
                    first_sec, first_nsec = sec, nsec
                    if deadline == INFINITY:
                        deadline = writer.boundary_after(sec)
                records += made
        if records:
            writer.write(records, first_sec, first_nsec)
        self.summary.packets += len(batch)

    def _quiet(self) -> None:
        """No packets for a while: let wall time expire queries and rotate."""
        now = time.time()
        sec, nsec = int(now), int((now % 1) * 1e9)
        records = self.matcher.tick(sec, nsec)
        self.writer.write(records, sec, nsec)
        self.writer.advance(sec)
        self.writer.sync()  # what came before the quiet spell reaches the disk

    def _shutdown(self) -> None:
        """Every outstanding query leaves as unanswered; the file is finished."""
        matcher = self.matcher
        while matcher.table:
            self.writer.write(matcher.flush(FLUSH_CHUNK), matcher.now_sec, matcher.now_nsec)
        self.writer.close()
        summary = self._snapshot()
        self.capture.close()
        log.info("stopped: %s", summary.line())

    def _snapshot(self) -> Summary:
        summary = self.summary
        summary.records = self.writer.records_written
        summary.pairs = self.matcher.paired
        summary.files = self.writer.files_done
        summary.bytes_written = self.writer.bytes_written
        summary.unwritten = self.writer.unwritten
        summary.max_rss_kb = peak_rss_kb()
        summary.not_ip = self.capture.not_ip
        summary.counters = dict(self.matcher.counters)
        if self.capture.live:
            summary.kernel = self.capture.kernel_stats()
        return summary
