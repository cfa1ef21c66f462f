"""Starting a run: choose and open the edge, build the matcher and the
writer, fork the workers, run, stop.

`sie-dns-sensor run` parses its options into a Plan and hands it to
`run`; from here the data path reads one way: the edge, the matcher and
the writer are built here and given to pipeline.Sensor, which never calls
back into the command line. What goes wrong comes back as RunFailed (one
line for the terminal) or EndedBadly (the log has said why; an exit
status), which the command turns into its message and exit code.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable

from sensor.display.progress import ProgressBar
from sensor.edges import activation, fanout
from sensor.edges import workers as workers_mod
from sensor.edges.libpcap import Capture, CaptureError
from sensor.edges.linklayer import UnsupportedLinkType
from sensor.matching.bpf import Vantage, build_filter
from sensor.matching.matcher import Matcher, Settings
from sensor.service import capabilities, daemon, logs
from sensor.service import config as configuration
from sensor.service.daemonstate import StateFile, read_state, state_path, worker_state_name
from sensor.spool.formats import CborFormat, NmsgFormat
from sensor.spool.writer import SpoolBusy, SpoolWriter

from .pipeline import Sensor, Summary, finish_crashed_files

log = logging.getLogger("sensor")

# Settings that a SIGHUP cannot change (they need a restart), by their attribute.
RESTART_ONLY = ("interface", "res_addrs", "auth_addrs", "capture_qr", "spooldir", "channel", "dnstap_socket",
                "capture_workers")


class Edge(enum.Enum):
    """Where a run's datagrams come from."""

    INTERFACE = "interface"
    PCAP_FILE = "pcap file"
    DNSTAP_SOCKET = "dnstap socket"
    DNSTAP_FILE = "dnstap file"


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `run` was asked to do, parsed and checked; nothing opened yet."""

    cfg: configuration.Config  # with the command line's overrides
    config_path: str | None  # re-read at SIGHUP
    edge: Edge
    replay_path: str | None = None  # the file of a PCAP_FILE or DNSTAP_FILE run
    daemon: bool = False
    pidfile: str | None = None
    user: str | None = None
    print_format: str | None = None  # "json" or "text": `run --print`

    def __post_init__(self) -> None:
        if (self.replay_path is None) != self.live:
            raise ValueError(f"{self.edge.value}: replay_path names the file of a pcap or dnstap file run, "
                             "and only of those")

    @property
    def live(self) -> bool:
        """A service's run (an interface or resolvers' dnstap), not a tool's replay of a file."""
        return self.edge in (Edge.INTERFACE, Edge.DNSTAP_SOCKET)

    @property
    def dnstap(self) -> bool:
        return self.edge in (Edge.DNSTAP_SOCKET, Edge.DNSTAP_FILE)

    @property
    def workers(self) -> int:
        """Processes that capture: capture_workers share a live interface; every other edge has one."""
        return self.cfg.capture_workers if self.edge is Edge.INTERFACE else 1


class RunFailed(Exception):
    """The edge, the identity or the spool could not be taken, or a replay
    did not reach its file's end: one line for the terminal (exit 1)."""


class EndedBadly(Exception):
    """The run ended wrong and the log has said why: exit with `status`
    (70 for an unexpected error, 1 when a worker ended unasked)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"exit status {status}")
        self.status = status


def run(plan: Plan) -> None:
    """Open what the plan names, run until stopped (or the file ends), stop."""
    passed = activation.passed_sockets()  # before close_inherited_fds: systemd's, kept open across restarts
    if plan.daemon:
        daemon.close_inherited_fds()
    cfg = plan.cfg
    logs.setup(cfg.syslog_priority, foreground=daemon.foreground() or not plan.live, detached=plan.daemon)
    bpf = build_filter(cfg.res_addrs, cfg.auth_addrs, cfg.capture_qr)
    matcher = _matcher(plan)
    group = fanout.group_id(os.getpid()) if plan.workers > 1 else None
    open_live = _live_opener(cfg, bpf, group)
    captures = _open_edge(plan, matcher, bpf, open_live, passed)
    _close_unused(passed, captures[0])
    detached = daemon.detach() if plan.daemon else None
    claimed = daemon.PidFile(plan.pidfile) if plan.pidfile else None
    writer = _take_over(plan, claimed)
    sensor_for = _sensor_maker(plan, captures, matcher, writer, open_live)
    sensor, family = _start_workers(sensor_for, plan.workers, writer)
    _say_started(plan, captures[0], bpf, group)
    if detached:
        detached.ready()
    summary = _run_first(sensor, family, claimed)
    if plan.workers > 1:
        _stop_workers(family, summary, cfg, claimed)
    if sensor.progress is not None:
        sensor.progress.finish(summary)
    if plan.edge is Edge.PCAP_FILE and captures[0].damaged:  # a replay that did not reach the file's end
        raise RunFailed(f"{captures[0].damaged}; the {summary.records} records from the packets before it "
                        f"were written to the spool {cfg.spooldir} as usual")


# --------------------------------------------------------------- the parts
def matcher_settings(cfg: configuration.Config) -> Settings:
    """What the matcher needs from the configuration (the core never reads it)."""
    return Settings(
        vantage=Vantage(cfg.res_addrs, cfg.auth_addrs),
        zero_resolver_address=cfg.zero_resolver_address,
        table_max=cfg.state_table_max,
        query_timeout=cfg.query_timeout,
        capture_rd=cfg.capture_rd,
        capture_qr=cfg.capture_qr,
        qnames_include=frozenset(cfg.qnames_include),
        qnames_exclude=frozenset(cfg.qnames_exclude),
    )


def spool_format(cfg: configuration.Config) -> CborFormat | NmsgFormat:
    """The spool file format the configuration asks for."""
    if cfg.spool_format == "cbor":
        return CborFormat()
    return NmsgFormat(cfg.nmsg_compress, cfg.nmsg_source, cfg.nmsg_operator, cfg.nmsg_group, cfg.nmsg_compress_level)


def spool_writer(cfg: configuration.Config, lock: bool = True) -> SpoolWriter:
    """A worker's writer: the first takes the spool's lock, the others (lock=False) write under it."""
    return SpoolWriter(cfg.spooldir, cfg.channel, socket.gethostname(), cfg.interval, cfg.archive, cfg.upload,
                       spool_format(cfg), lock=lock)


def _matcher(plan: Plan) -> Matcher:
    """dnstap's matcher for dnstap edges, the packet matcher for the others."""
    if not plan.dnstap:
        return Matcher(matcher_settings(plan.cfg))
    from sensor.edges.dnstap import DnstapMatcher  # here: protobuf and the dnstap schema (11 MB) are dnstap's

    return DnstapMatcher(matcher_settings(plan.cfg))


def _decoder(cfg: configuration.Config, matcher: Matcher):
    """dnstap's decoder counts into the matcher's counters: one stats line."""
    from sensor.edges.dnstap import Decoder

    return Decoder(matcher.counters, query_timeout=cfg.query_timeout, seen_max=cfg.state_table_max,
                   on_tcp=matcher.saw_tcp)


def _table_carry(cfg: configuration.Config, matcher: Matcher, capture):
    """dnstap: the query table kept across a planned restart (carryover.py)."""
    from sensor.edges.carryover import TableCarry, table_path

    return TableCarry(table_path(cfg.spooldir, cfg.channel), matcher, capture.decoder)


def _printer(print_format: str, cfg: configuration.Config, wait: bool):
    """`run --print`: lines as `read --format` prints them from this spool's files."""
    from sensor.display import render  # here: dnspython is for printing, not for the capture
    from sensor.display.liveprint import LivePrinter
    from sensor.records.record import Envelope

    show = {"json": render.to_json, "text": render.to_text}[print_format]
    envelope = Envelope()
    if cfg.spool_format != "cbor":  # an NMSG payload carries the ids; a CBOR record has none
        envelope = Envelope(source=cfg.nmsg_source, operator=cfg.nmsg_operator, group=cfg.nmsg_group)
    return LivePrinter(show, envelope, wait=wait)


# ------------------------------------------------------------ the edge
def _live_opener(cfg: configuration.Config, bpf: str, group: int | None) -> Callable[[], Capture]:
    """How to open the interface, at the start and again after it is lost."""

    def open_live() -> Capture:
        with capabilities.raised(capabilities.CAP_NET_RAW):
            return Capture.open_live(cfg.device, cfg.promiscuous, bpf, group)

    return open_live


def _open_edge(plan: Plan, matcher: Matcher, bpf: str, open_live: Callable[[], Capture],
               passed: list[socket.socket]) -> list:
    """The edge the plan names: one capture a worker, opened before privileges are dropped."""
    try:
        if plan.edge is Edge.PCAP_FILE:
            return [Capture.open_file(plan.replay_path, bpf)]
        if plan.edge is Edge.DNSTAP_FILE:
            from sensor.edges.dnstap_socket import DnstapFile

            return [DnstapFile(plan.replay_path, _decoder(plan.cfg, matcher))]
        if plan.edge is Edge.DNSTAP_SOCKET:
            from sensor.edges.dnstap_socket import DnstapListener

            return [DnstapListener.open(plan.cfg.dnstap_socket, _decoder(plan.cfg, matcher), passed=passed)]
        return [open_live() for _ in range(plan.workers)]  # every worker's, while CAP_NET_RAW is up
    except (CaptureError, UnsupportedLinkType) as exc:
        raise RunFailed(str(exc)) from None


def _close_unused(passed: list[socket.socket], capture) -> None:
    """Sockets systemd passed that the configuration does not listen on
    (sie-dns-sensor.socket enabled for another path, or packet capture)."""
    for sock in passed:
        if sock is not getattr(capture, "sock", None):
            log.warning("systemd passed a socket (%s) that dnstap_socket does not name: not used",
                        sock.getsockname() or "unnamed")
            sock.close()


def _take_over(plan: Plan, claimed: daemon.PidFile | None) -> SpoolWriter:
    """The pidfile, the service's memory cap and identity, then the spool as that identity."""
    cfg = plan.cfg
    try:
        if claimed:
            claimed.claim()
        # before the first packet is read; CAP_NET_RAW stays dormant to reopen a lost interface
        if plan.live:
            daemon.limit_memory(cfg.memory_ulimit_kbytes)
            keep = () if plan.edge is Edge.DNSTAP_SOCKET else (capabilities.CAP_NET_RAW,)
            daemon.drop_privileges(plan.user or daemon.SERVICE_USER, keep=keep)
        elif plan.user:
            # no memory cap, no service user: a replay is a tool run, run as
            # whoever runs it (often in-process in tests: a setuid there would
            # change the test process itself) unless --user names another
            daemon.drop_privileges(plan.user)
        return spool_writer(cfg)
    except (daemon.DaemonError, SpoolBusy, OSError) as exc:
        log.error("cannot start: %s", exc)
        raise RunFailed(str(exc)) from None


def _say_started(plan: Plan, capture, bpf: str, group: int | None) -> None:
    """The log's start lines: what is captured, as whom, through which filter."""
    cfg = plan.cfg
    if not cfg.res_addrs and not cfg.auth_addrs:
        log.info("no address filter is set (DNSQR_RES_ADDRS, DNSQR_AUTH_ADDRS): every DNS exchange "
                 "in %s is recorded, direction taken from the QR bit", plan.replay_path or capture.description)
    if isinstance(capture, Capture):
        log.info("capturing from %s as uid %d with filter: %s%s", capture.description, os.getuid(), bpf,
                 f" ({plan.workers} workers, fanout group {group})" if plan.workers > 1 else "")
    else:
        log.info("capturing from %s as uid %d", capture.description, os.getuid())


# --------------------------------------------------------- the workers
def _sensor_maker(plan: Plan, captures: list, matcher: Matcher, writer: SpoolWriter,
                  open_live: Callable[[], Capture]) -> Callable[[int], Sensor]:
    """Worker `number`'s Sensor, made in its own process (after the fork)."""
    cfg, workers = plan.cfg, plan.workers

    def sensor_for(number: int) -> Sensor:
        for other, each in enumerate(captures, 1):  # a worker maps only its own ring (64 MiB each)
            if other != number and workers > 1:
                each.close()
        return Sensor(
            captures[number - 1],
            matcher,
            writer if number == 1 else spool_writer(cfg, lock=False),
            reload=_reloader(plan.config_path, cfg),
            reopen=open_live if plan.edge is Edge.INTERFACE else None,
            state=StateFile(state_path(cfg.spooldir, worker_state_name(number), cfg.channel)) if plan.live else None,
            progress=_progress_bar(plan),
            worker=(number, workers),
            carry=_table_carry(cfg, matcher, captures[0]) if plan.edge is Edge.DNSTAP_SOCKET else None,
            # each worker's own (a thread does not outlive a fork)
            printer=_printer(plan.print_format, cfg, wait=not plan.live) if plan.print_format else None,
        )

    return sensor_for


def _progress_bar(plan: Plan) -> ProgressBar | None:
    """A pcap replay on a terminal shows its progress (not over --print's lines)."""
    if plan.edge is Edge.PCAP_FILE and sys.stderr.isatty() and not plan.print_format:
        return ProgressBar(plan.replay_path)
    return None


def _start_workers(sensor_for: Callable[[int], Sensor], workers: int,
                   writer: SpoolWriter) -> tuple[Sensor, workers_mod.Family]:
    """The first worker's sensor and signals; with capture_workers > 1, the others started."""
    family = workers_mod.Family()
    if workers > 1:
        finish_crashed_files(writer)  # before any other worker has a file open in new/
        for number in range(2, workers + 1):
            family.fork(number, lambda number=number: _work(sensor_for(number)))
    first = sensor_for(1)

    def passed_on(handler, signum: int):
        def handle(*_) -> None:
            handler()
            family.signal(signum)
        return handle

    def child_ended(*_) -> None:
        if family.reap() and not first.stopping:
            family.unasked = True
            first.stop()

    signal.signal(signal.SIGTERM, passed_on(first.stop, signal.SIGTERM))
    signal.signal(signal.SIGINT, passed_on(first.stop, signal.SIGTERM))
    signal.signal(signal.SIGHUP, passed_on(first.hangup, signal.SIGHUP))
    if workers > 1:
        signal.signal(signal.SIGCHLD, child_ended)
        child_ended()  # one that ended before the handler was set
    return first, family


def _work(sensor: Sensor) -> int:
    """A worker process after the fork: its own signals, its own run."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, lambda *_: sensor.stop())
    signal.signal(signal.SIGINT, lambda *_: sensor.stop())
    signal.signal(signal.SIGHUP, lambda *_: sensor.hangup())
    sensor.run()
    return 0


def _run_first(sensor: Sensor, family: workers_mod.Family, claimed: daemon.PidFile | None) -> Summary:
    """The first worker's run; the pidfile let go once no other worker holds the service."""
    try:
        return sensor.run()
    except Exception as exc:  # a bug: say so in the log, once, and exit non-zero (no bare traceback)
        log.critical("stopped by an unexpected error: %s", exc, exc_info=True)
        family.signal(signal.SIGTERM)
        raise EndedBadly(workers_mod.EXIT_SOFTWARE) from None
    finally:
        if claimed and not family.children:
            claimed.release()


def _stop_workers(family: workers_mod.Family, summary: Summary, cfg: configuration.Config,
                  claimed: daemon.PidFile | None) -> None:
    """Stop the other workers, then log what all of them did together."""
    family.signal(signal.SIGTERM)
    ended = family.wait()
    if claimed:
        claimed.release()
    found = [dataclasses.asdict(summary)]
    for number in sorted(ended):
        state = read_state(state_path(cfg.spooldir, worker_state_name(number), cfg.channel)) or {}
        found.append(state.get("summary") or {})
    log.info("stopped: workers=%d %s", len(found), Summary.total(found).line())
    failed = {number: code for number, code in ended.items() if code != 0}
    if failed or family.unasked:
        log.error("capture workers ended unasked (exit codes by worker: %s): the service stops whole",
                  failed or {n: 0 for n in ended})
        raise EndedBadly(1)


# ------------------------------------------------------------- SIGHUP
def _reloader(config_path: str | None, started: configuration.Config) -> Callable[[Sensor], None]:
    """What SIGHUP does after the open file is finished: re-read the file."""
    current = [started]

    def reload(sensor: Sensor) -> None:
        try:
            cfg = configuration.load(config_path)
        except configuration.ConfigError as exc:
            log.error("SIGHUP: configuration not reloaded: %s", exc)
            return
        for name in RESTART_ONLY:
            if getattr(cfg, name) != getattr(current[0], name):
                log.warning("SIGHUP: %s changed; it takes effect at the next restart",
                            configuration.variable_name(name))
                cfg = cfg.with_overrides(**{name: getattr(current[0], name)})
        sensor.matcher.apply(matcher_settings(cfg))
        sensor.writer.interval, sensor.writer.archive, sensor.writer.upload = cfg.interval, cfg.archive, cfg.upload
        sensor.writer.format = spool_format(cfg)  # the next file is written in it
        current[0] = cfg
        log.info("SIGHUP: spool file finished, configuration re-read")

    return reload
