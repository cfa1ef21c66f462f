"""capture -> matcher -> writer: the loop that `sie-dns-sensor run` drives.

startup.py opens the three parts and hands them over here. Data flows
one way. The loop owns the clock decisions: packet time for everything
that came from a packet, wall time only when a live capture is quiet (so
queries still time out and files still rotate at night).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import operator
import resource
import time
from collections.abc import Callable
from time import thread_time
from typing import TYPE_CHECKING

from sensor.edges.libpcap import Capture, CaptureError
from sensor.matching.matcher import Matcher
from sensor.records.record import Field, RecordType
from sensor.service.daemonstate import StateFile
from sensor.spool.writer import INFINITY, SpoolWriter

if TYPE_CHECKING:  # carryover imports the dnstap decoder (protobuf): for dnstap runs only
    from sensor.display.liveprint import LivePrinter
    from sensor.edges.carryover import TableCarry

log = logging.getLogger(__name__)

STATS_SECONDS = 300
FLUSH_CHUNK = 1024  # records made at a time at shutdown (bounds memory)
REOPEN_FIRST = 1.0  # seconds before the first try to reopen a lost capture
REOPEN_MAX = 30.0  # the longest wait between tries
LOST_POLL = 0.2  # while the capture is lost, the loop's pace (signals, rotation)

_record_type = operator.itemgetter(Field.TYPE)


@dataclasses.dataclass
class CpuSplit:
    """CPU seconds by step, for the stop line and the benchmark.

    Measured with the threads' own CPU clocks (time.thread_time): around
    each batch read (capture: libpcap, the link header, the datagram
    list), around each batch fed (matching; the writes inside it are
    taken out as encoding: DnsQR or CBOR, NMSG payloads), and the whole
    of each file's writer thread (compression and the file writes). Four
    clock reads a batch of up to 1,024 packets: nothing measurable.
    """

    capture: float = 0.0
    matching: float = 0.0
    encoding: float = 0.0
    compression: float = 0.0

    def line(self) -> str:
        return " ".join(f"cpu_{k}={v:.2f}" for k, v in dataclasses.asdict(self).items())


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
    cpu: CpuSplit = dataclasses.field(default_factory=CpuSplit)

    @classmethod
    def total(cls, summaries: list[dict]) -> Summary:
        """Several workers' summaries (as their state files hold them) added up;
        max_rss_kb too, since each worker is a process of its own."""
        total = cls()
        for found in summaries:
            for name in ("packets", "records", "pairs", "files", "bytes_written", "not_ip", "unwritten",
                         "max_rss_kb"):
                setattr(total, name, getattr(total, name) + int(found.get(name, 0)))
            total.counters = dict(collections.Counter(total.counters) + collections.Counter(found.get("counters", {})))
            total.kernel = tuple(a + b for a, b in zip(total.kernel, found.get("kernel", (0, 0, 0)), strict=True))
            for step, seconds in found.get("cpu", {}).items():
                setattr(total.cpu, step, getattr(total.cpu, step) + seconds)
        return total

    def line(self) -> str:
        problems = ", ".join(f"{k}={v}" for k, v in sorted(self.counters.items())) or "none"
        received, dropped, ifdropped = self.kernel
        return (
            f"packets={self.packets} records={self.records} pairs={self.pairs} files={self.files} "
            f"bytes={self.bytes_written} unwritten={self.unwritten} max_rss_kb={self.max_rss_kb} "
            f"not_ip={self.not_ip} {self.cpu.line()} "
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


def finish_crashed_files(writer: SpoolWriter) -> None:
    """Finish the files a crash left in new/ (with several capture workers,
    the first does it before it starts the others)."""
    recovered = writer.recover()
    if recovered:
        log.warning("finished %d spool file(s) left by an earlier crash", len(recovered))


class Sensor:
    """Runs until the capture ends (a file) or `stop()` is called (a signal)."""

    def __init__(
        self,
        capture: Capture,
        matcher: Matcher,
        writer: SpoolWriter,
        reload: Callable[[Sensor], None] | None = None,
        reopen: Callable[[], Capture] | None = None,
        state: StateFile | None = None,
        progress: Callable[[Capture], None] | None = None,
        worker: tuple[int, int] = (1, 1),
        carry: TableCarry | None = None,
        printer: LivePrinter | None = None,
    ) -> None:
        """`worker`: (this one, how many) with capture_workers > 1: only
        the first finishes a crash's files (before the others start), and
        each names itself in its log lines and state. `carry` (dnstap):
        the query table is kept across a planned restart instead of being
        flushed at the stop. `printer` (`run --print`): told every list of
        records handed to the writer, closed at the end."""
        self.capture = capture
        self.matcher = matcher
        self.writer = writer
        self.reload = reload
        self.reopen = reopen  # how to open the live capture again after it is lost
        self.state = state
        self.progress = progress  # told after every batch (a replay's progress bar)
        self.worker = worker
        self.carry = carry
        self.printer = printer
        self.label = f"worker {worker[0]} of {worker[1]} " if worker[1] > 1 else ""
        self.summary = Summary()
        self._stopping = False
        self._hangup = False
        self.lost_since: float | None = None  # wall time the capture was lost
        self.lost_reason = ""
        self._retry_at = 0.0
        self._backoff = REOPEN_FIRST
        self._kernel_before = (0, 0, 0)  # counters of captures closed since the start
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        # records by type in the current and the last interval, for `status`
        self.by_type: collections.Counter = collections.Counter()
        self.by_type_last: dict[str, int] = {}
        self._interval_ends = time.monotonic() + writer.interval
        self._dropped_before = 0
        self.dropped_last_interval = 0
        self._rate = (time.monotonic(), 0)
        self.packets_per_second = 0.0

    def stop(self) -> None:
        """Safe from a signal handler: the loop notices within one batch."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def hangup(self) -> None:
        """SIGHUP: at the next batch, finish the open file and re-read the
        configuration (safe from a signal handler)."""
        self._hangup = True

    def run(self) -> Summary:
        if self.worker[1] == 1:
            finish_crashed_files(self.writer)
        if self.carry is not None:
            self._write(self.carry.restore(), self.matcher.now_sec, self.matcher.now_nsec)
        next_stats = time.monotonic() + STATS_SECONDS
        while not self._stopping:
            batch = self._read()
            if self.progress is not None:
                self.progress(self.capture)
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
            now = time.monotonic()
            if now >= next_stats:
                next_stats += STATS_SECONDS
                log.info("%s%s", self.label, self._snapshot().line())
            if now >= self._interval_ends:
                self._end_interval(now)
            if self.state is not None and self.state.due():
                self._write_state()
        self._shutdown()
        return self.summary

    # ------------------------------------------------------ a lost capture
    def _read(self) -> list | None:
        """The next batch; [] while the capture is lost (the loop goes on)."""
        if self.lost_since is not None:
            self._try_reopen()
            return []
        started = thread_time()
        try:
            return self.capture.read_batch()
        except CaptureError as exc:
            self._lose(str(exc))
            return [] if self.reopen is not None else None
        finally:
            self.summary.cpu.capture += thread_time() - started

    def _lose(self, reason: str) -> None:
        """Log it, finish the open file, keep the table, and retry later."""
        self._error(f"capture lost: {reason}")
        if self.reopen is None:
            log.error("capture lost (%s): stopping", reason)
            return
        self._kernel_before = self._kernel_now()
        self.capture.close()
        self.writer.finish()
        self.lost_since, self.lost_reason = time.time(), reason
        self._backoff = REOPEN_FIRST
        self._retry_at = time.monotonic() + self._backoff
        log.error("capture lost (%s): the open spool file is finished, the query table kept; "
                  "reopening %s, first try in %.0f s", reason, self.capture.description, self._backoff)

    def _try_reopen(self) -> None:
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, LOST_POLL))
            return
        try:
            capture = self.reopen()
        except CaptureError as exc:
            self._backoff = min(self._backoff * 2, REOPEN_MAX)
            self._retry_at = time.monotonic() + self._backoff
            self.lost_reason = str(exc)
            log.info("capture still lost (%s): next try in %.0f s", exc, self._backoff)
            return
        log.warning("capture on %s again after %.0f s without it", capture.description, time.time() - self.lost_since)
        self.capture = capture
        self.lost_since = None
        self.lost_reason = ""

    def _error(self, message: str) -> None:
        self.last_error, self.last_error_time = message, time.time()

    def _kernel_now(self) -> tuple[int, int, int]:
        """Kernel counters summed over every capture this run has opened."""
        before = self._kernel_before
        if not self.capture.live or self.lost_since is not None:
            return before
        current = self.capture.kernel_stats()
        return tuple(a + b for a, b in zip(before, current, strict=True))

    # ------------------------------------------------------------- status
    def _end_interval(self, now: float) -> None:
        """Every interval: roll the per-interval figures, warn while something is wrong."""
        from sensor.service.status import capture_problems  # status reads the state this writes

        self._interval_ends = now + self.writer.interval
        self.by_type_last = {RecordType(k).name: v for k, v in sorted(self.by_type.items())}
        self.by_type.clear()
        dropped = sum(self._kernel_now()[1:])
        self.dropped_last_interval = dropped - self._dropped_before
        self._dropped_before = dropped
        for problem in capture_problems(self._state()):
            log.warning("%s", problem)

    def _state(self) -> dict:
        now = time.monotonic()
        since, packets = self._rate
        if now - since >= 1.0:
            self.packets_per_second = (self.summary.packets - packets) / (now - since)
            self._rate = (now, self.summary.packets)
        received, dropped, if_dropped = self._kernel_now()
        return {
            "worker": list(self.worker),
            "capture": self.capture.description,
            "capturing": self.lost_since is None,
            "capture_error": self.lost_reason or None,
            "capture_lost_since": self.lost_since,
            "packets": self.summary.packets,
            "packets_per_second": round(self.packets_per_second, 1),
            "kernel_received": received,
            "kernel_dropped": dropped,
            "if_dropped": if_dropped,
            "dropped_last_interval": self.dropped_last_interval,
            "table": len(self.matcher.table),
            "table_max": self.matcher.settings.table_max,
            "interval": self.writer.interval,
            "records_last_interval": self.by_type_last,
            "records": self.writer.records_written,
            "files": self.writer.files_done,
            "unwritten": self.writer.unwritten,
            "last_error": self.last_error,
            "last_error_time": self.last_error_time,
        }

    def _write_state(self, **extra) -> None:
        failed = self.state.failed
        self.state.write(dict(self._state(), **extra))
        if self.state.failed and not failed:
            log.warning("cannot write the state file %s (status will say the sensor is not running)",
                        self.state.path)

    def _write(self, records: list, sec: int, nsec: int) -> None:
        """Hand records to the writer, counted by type for `status`."""
        if records:
            started = thread_time()
            self.by_type.update(map(_record_type, records))
            self.writer.write(records, sec, nsec)
            self.summary.cpu.encoding += thread_time() - started
            if self.printer is not None:
                self.printer(records)

    def _process(self, batch: list) -> None:
        """Feed one batch, writing records into the file of their interval."""
        started = thread_time()
        encoding = self.summary.cpu.encoding
        feed = self.matcher.feed
        writer = self.writer
        write = self._write
        records: list = []
        first_sec = first_nsec = 0
        deadline = writer.deadline
        for packet, sec, nsec in batch:
            if sec >= deadline:
                if records:
                    write(records, first_sec, first_nsec)
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
            write(records, first_sec, first_nsec)
        self.summary.packets += len(batch)
        cpu = self.summary.cpu
        cpu.matching += thread_time() - started - (cpu.encoding - encoding)

    def _quiet(self) -> None:
        """No packets for a while: let wall time expire queries and rotate."""
        now = time.time()
        sec, nsec = int(now), int((now % 1) * 1e9)
        records = self.matcher.tick(sec, nsec)
        self._write(records, sec, nsec)
        self.writer.advance(sec)
        self.writer.sync()  # what came before the quiet spell reaches the disk

    def _shutdown(self) -> None:
        """What the capture still holds is read; every outstanding query
        leaves as unanswered (or, dnstap, is kept for the next start); the
        file is finished."""
        self._drain()
        matcher = self.matcher
        if self.carry is None or not self.carry.keep():
            while matcher.table:
                self._write(matcher.flush(FLUSH_CHUNK), matcher.now_sec, matcher.now_nsec)
        self.writer.close()
        if self.printer is not None:
            self.printer.close()
        summary = self._snapshot()
        if self.state is not None:
            self._write_state(stopped=time.time(), summary=dataclasses.asdict(summary))
        if self.lost_since is None:
            self.capture.close()
        log.info("%sstopped: %s", self.label, summary.line())

    def _drain(self) -> None:
        """A capture that can be read dry at a stop (dnstap: what sits in
        the resolvers' connections, each then answered with FINISH) gives
        its last batch here; a packet capture has no such step."""
        drain = getattr(self.capture, "drain", None)
        if drain is None or self.lost_since is not None:
            return
        started = thread_time()
        batch = drain()
        self.summary.cpu.capture += thread_time() - started
        if batch:
            self._process(batch)

    def _snapshot(self) -> Summary:
        summary = self.summary
        summary.records = self.writer.records_written
        summary.pairs = self.matcher.paired
        summary.files = self.writer.files_done
        summary.bytes_written = self.writer.bytes_written
        summary.unwritten = self.writer.unwritten
        summary.max_rss_kb = peak_rss_kb()
        summary.cpu.compression = self.writer.compression_cpu
        summary.not_ip = self.capture.not_ip
        summary.counters = dict(self.matcher.counters)
        if self.capture.live:
            summary.kernel = self._kernel_now()
        return summary
