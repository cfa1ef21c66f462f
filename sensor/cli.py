"""`sie-dns-sensor`: run, read, check-config."""

from __future__ import annotations

import dataclasses
import grp
import json
import logging
import os
import signal
import socket
import sys
import time

import click

from sensor.edges import activation, fanout
from sensor.edges import workers as workers_mod
from sensor.edges.libpcap import Capture, CaptureError, device_exists
from sensor.edges.linklayer import UnsupportedLinkType
from sensor.matching.bpf import Vantage, build_filter
from sensor.matching.matcher import Matcher, Settings
from sensor.service import capabilities, clock, daemon, logs
from sensor.service import config as configuration
from sensor.service import status as status_report
from sensor.service.cli_options import ConfigProblem, NotPermitted, as_this_user, config_option, load_config
from sensor.service.daemonstate import StateFile, read_state, state_path, worker_state_name
from sensor.spool import formats as spoolfile
from sensor.spool import spooldir
from sensor.spool.cbor import SpoolError
from sensor.spool.formats import CborFormat, NmsgFormat
from sensor.spool.writer import SpoolBusy, SpoolWriter

from .pipeline import Sensor, Summary, finish_crashed_files

log = logging.getLogger("sensor")


@click.group()
def main() -> None:
    """Passive DNS sensor: pairs a resolver's queries to authoritative
    servers with their responses and spools them for upload."""


@main.command()
@config_option
@click.option("--pcap", "pcap_path", type=click.Path(exists=True, dir_okay=False),
              help="replay this capture file instead of capturing live")
@click.option("--dnstap", "dnstap_spec", metavar="unix:/PATH|tcp:HOST:PORT",
              help="take dnstap from resolvers at this socket instead of capturing (overrides `dnstap_socket`)")
@click.option("--dnstap-file", "dnstap_path", type=click.Path(exists=True, dir_okay=False),
              help="replay this dnstap (Frame Streams) file instead of capturing live")
@click.option("--interface", help="capture on this interface (overrides `interface` and `dnstap_socket`)")
@click.option("--spooldir", type=click.Path(file_okay=False), help="overrides `spooldir`")
@click.option("--daemon", "daemon_mode", is_flag=True, help="detach into the background (init scripts)")
@click.option("--pidfile", type=click.Path(dir_okay=False), help="write the process id here")
@click.option("--user", default=None,
              help=f"as root: after opening the capture, run as this user if it exists "
                   f"(default for live capture: {daemon.SERVICE_USER}; a --pcap replay keeps its user)")
@click.option("--print", "print_format", type=click.Choice(["json", "text"]),
              help="also print each record on stdout as it goes to the spool, as `read` prints it")
def run(
    config_path: str | None,
    dnstap_spec: str | None,
    dnstap_path: str | None,
    pcap_path: str | None,
    interface: str | None,
    spooldir: str | None,
    daemon_mode: bool,
    pidfile: str | None,
    user: str | None,
    print_format: str | None,
) -> None:
    """Capture (or replay) until stopped, writing spool files."""
    if pcap_path and dnstap_path:
        raise click.UsageError("--pcap and --dnstap-file exclude each other")
    if print_format and daemon_mode:
        raise click.UsageError("--print writes to stdout, which --daemon closes")
    passed = activation.passed_sockets()  # before close_inherited_fds: systemd's, kept open across restarts
    if daemon_mode:
        daemon.close_inherited_fds()
    replay = pcap_path or dnstap_path
    cfg = _configured(config_path, interface, spooldir, dnstap_spec)
    dnstap_live = not replay and bool(cfg.dnstap_socket)
    _refuse_incomplete(cfg, live=not replay, dnstap=dnstap_live)
    logs.setup(cfg.syslog_priority, foreground=daemon.foreground() or replay is not None, detached=daemon_mode)
    bpf = build_filter(cfg.res_addrs, cfg.auth_addrs, cfg.capture_qr)
    dnstap = dnstap_path or dnstap_live
    if dnstap:  # here: protobuf and the dnstap schema (11 MB) are for dnstap runs only
        from sensor.edges.dnstap import DnstapMatcher
        from sensor.edges.dnstap_socket import DnstapFile, DnstapListener
    matcher = (DnstapMatcher if dnstap else Matcher)(matcher_settings(cfg))
    workers = 1 if replay or dnstap_live else cfg.capture_workers
    group = fanout.group_id(os.getpid()) if workers > 1 else None

    def open_live() -> Capture:
        with capabilities.raised(capabilities.CAP_NET_RAW):
            return Capture.open_live(cfg.device, cfg.promiscuous, bpf, group)

    try:
        if pcap_path:
            captures = [Capture.open_file(pcap_path, bpf)]
        elif dnstap_path:
            captures = [DnstapFile(dnstap_path, _decoder(cfg, matcher))]
        elif dnstap_live:
            captures = [DnstapListener.open(cfg.dnstap_socket, _decoder(cfg, matcher), passed=passed)]
        else:
            captures = [open_live() for _ in range(workers)]  # every worker's, while CAP_NET_RAW is up
    except (CaptureError, UnsupportedLinkType) as exc:
        raise click.ClickException(str(exc)) from None
    capture = captures[0]
    _close_unused(passed, capture)
    detached = daemon.detach() if daemon_mode else None
    claimed = daemon.PidFile(pidfile) if pidfile else None
    try:
        if claimed:
            claimed.claim()
        if not replay:
            # The service's cap and identity; a replay is a tool run, run as
            # whoever runs it (often in-process in tests: a setuid there
            # would change the test process itself).
            daemon.limit_memory(cfg.memory_ulimit_kbytes)
        # before the first packet is read; CAP_NET_RAW stays dormant to reopen a lost interface
        if replay:
            if user:
                daemon.drop_privileges(user)
        else:
            keep = () if dnstap_live else (capabilities.CAP_NET_RAW,)
            daemon.drop_privileges(user or daemon.SERVICE_USER, keep=keep)
        writer = _spool_writer(cfg)
    except (daemon.DaemonError, SpoolBusy, OSError) as exc:
        log.error("cannot start: %s", exc)
        raise click.ClickException(str(exc)) from None

    def sensor_for(number: int) -> Sensor:
        for other, each in enumerate(captures, 1):  # a worker maps only its own ring (64 MiB each)
            if other != number and workers > 1:
                each.close()
        return Sensor(
            captures[number - 1],
            matcher,
            writer if number == 1 else _spool_writer(cfg, lock=False),
            reload=_reloader(config_path, cfg),
            reopen=None if replay or dnstap_live else open_live,
            state=None if replay else StateFile(state_path(cfg.spooldir, worker_state_name(number), cfg.channel)),
            progress=_ProgressBar(pcap_path) if pcap_path and sys.stderr.isatty() and not print_format else None,
            worker=(number, workers),
            carry=_table_carry(cfg, matcher, capture) if dnstap_live else None,
            # each worker's own (a thread does not outlive a fork)
            printer=_printer(print_format, cfg, wait=replay is not None) if print_format else None,
        )

    sensor, family = _start_workers(sensor_for, workers, writer)
    if not cfg.res_addrs and not cfg.auth_addrs:
        log.info("no address filter is set (DNSQR_RES_ADDRS, DNSQR_AUTH_ADDRS): every DNS exchange "
                 "in %s is recorded, direction taken from the QR bit", replay or capture.description)
    if isinstance(capture, Capture):
        log.info("capturing from %s as uid %d with filter: %s%s", capture.description, os.getuid(), bpf,
                 f" ({workers} workers, fanout group {group})" if workers > 1 else "")
    else:
        log.info("capturing from %s as uid %d", capture.description, os.getuid())
    if detached:
        detached.ready()
    try:
        summary = sensor.run()
    except Exception as exc:  # a bug: say so in the log, once, and exit non-zero (no bare traceback)
        log.critical("stopped by an unexpected error: %s", exc, exc_info=True)
        family.signal(signal.SIGTERM)
        sys.exit(70)
    finally:
        if claimed and not family.children:
            claimed.release()
    if workers > 1:
        _stop_workers(family, summary, cfg, claimed)
    if sensor.progress is not None:
        sensor.progress.finish(summary)
    if pcap_path and capture.damaged:  # a replay that did not reach the file's end is not a success
        raise click.ClickException(f"{capture.damaged}; the {summary.records} records from the packets before it "
                                   f"were written to the spool {cfg.spooldir} as usual")


def _close_unused(passed: list[socket.socket], capture) -> None:
    """Sockets systemd passed that the configuration does not listen on
    (sie-dns-sensor.socket enabled for another path, or packet capture)."""
    for sock in passed:
        if sock is not getattr(capture, "sock", None):
            log.warning("systemd passed a socket (%s) that dnstap_socket does not name: not used",
                        sock.getsockname() or "unnamed")
            sock.close()


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


def _spool_writer(cfg: configuration.Config, lock: bool = True) -> SpoolWriter:
    return SpoolWriter(cfg.spooldir, cfg.channel, socket.gethostname(), cfg.interval, cfg.archive, cfg.upload,
                       spool_format(cfg), lock=lock)


def _start_workers(sensor_for, workers: int, writer: SpoolWriter) -> tuple[Sensor, workers_mod.Family]:
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


def _stop_workers(family: workers_mod.Family, summary, cfg: configuration.Config, claimed) -> None:
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
        sys.exit(1)


class _ProgressBar:
    """`run --pcap` on a terminal: bytes of the file read, then a summary."""

    def __init__(self, path: str) -> None:
        self.started = time.monotonic()
        self.bar = click.progressbar(length=os.path.getsize(path), label="replaying", file=sys.stderr,
                                     show_eta=True, show_percent=True)
        self.bar.__enter__()

    def __call__(self, capture: Capture) -> None:
        position = capture.position()
        if position > self.bar.pos:
            self.bar.update(position - self.bar.pos)

    def finish(self, summary) -> None:
        self.bar.update(self.bar.length - self.bar.pos)
        self.bar.__exit__(None, None, None)
        seconds = max(time.monotonic() - self.started, 1e-9)
        click.echo(
            f"{summary.packets} packets in {seconds:.1f} s ({summary.packets / seconds:.0f} packets/s): "
            f"{summary.records} records ({summary.pairs} pairs), {summary.files} files, "
            f"{summary.bytes_written} bytes",
            err=True,
        )


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


def _decoder(cfg: configuration.Config, matcher: Matcher):
    """dnstap's decoder counts into the matcher's counters: one stats line."""
    from sensor.edges.dnstap import Decoder

    return Decoder(matcher.counters, query_timeout=cfg.query_timeout, seen_max=cfg.state_table_max,
                   on_tcp=matcher.saw_tcp)


def _configured(
    config_path: str | None, interface: str | None, spooldir: str | None, dnstap_spec: str | None = None
) -> configuration.Config:
    """The configuration with the command line's overrides, checked as the
    file's and the environment's values are (a relative --spooldir would
    land at / once --daemon has changed to it)."""
    cfg = load_config(config_path)
    changes = {}
    for name, option, value in (("interface", "--interface", interface), ("spooldir", "--spooldir", spooldir)):
        if value:
            variable = configuration.VARIABLES[name]
            try:
                changes[variable.attr] = variable.parse(value)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint=option) from None
    if interface:
        changes["dnstap_socket"] = ""  # an explicit interface means packet capture
    if dnstap_spec:
        try:
            configuration.dnstap_endpoint(dnstap_spec)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--dnstap") from None
        changes["dnstap_socket"] = dnstap_spec
    return cfg.with_overrides(**changes)


def _refuse_incomplete(cfg: configuration.Config, live: bool, dnstap: bool = False) -> None:
    """Say now, in words, what would otherwise fail later or silently.

    Live capture needs an address list: without one it would record end
    users' queries to the resolver. A replay (`--pcap`) may go without, as
    the reference does, to pair every DNS exchange in a file; so may
    dnstap, where the resolver reports only its own upstream traffic and
    client-side messages are dropped by type.
    """
    if live and not dnstap:
        try:
            cfg.require_capture_addresses()
        except configuration.ConfigError as exc:
            raise ConfigProblem(f"configuration: {exc}") from None
    if live and cfg.upload:
        try:
            cfg.require_upload_key()
        except configuration.ConfigError as exc:
            raise ConfigProblem(str(exc)) from None


# Settings that a SIGHUP cannot change (they need a restart), by their attribute.
RESTART_ONLY = ("interface", "res_addrs", "auth_addrs", "capture_qr", "spooldir", "channel", "dnstap_socket",
                "capture_workers")


def _reloader(config_path: str | None, started: configuration.Config):
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


@main.command()
@click.option("--format", "fmt", type=click.Choice(["json", "pres", "text"]), default="json",
              show_default=True)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def read(fmt: str, paths: tuple[str, ...]) -> None:
    """Print the records of spool files (NMSG or CBOR), one per line.

    A directory is read as a spool: the finished files under its waiting/
    and archive/ folders (or the files in it), oldest first; what is not a
    regular file there (a FIFO, a symbolic link) is reported and skipped.
    A file that cannot be read is reported and the others are still read;
    the exit status is then 1.
    """
    from sensor.display import render  # here: dnspython (11 MB) is for reading, not for the capture

    show = {"json": render.to_json, "pres": render.to_pres, "text": render.to_text}[fmt]
    files, skipped = _spool_files(paths)
    for problem in skipped:
        click.echo(f"sie-dns-sensor: {problem}", err=True)
    failed = bool(skipped)
    for path, given in files:
        try:
            for record, envelope in spoolfile.read(path, follow_symlinks=given):
                click.echo(show(record, envelope))
        except BrokenPipeError:
            # the reader went away (`read ... | head`): stop quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1 if failed else 0)
        except (SpoolError, OSError) as exc:
            click.echo(f"sie-dns-sensor: {exc}", err=True)
            failed = True
    if failed:
        sys.exit(1)


def _spool_files(paths: tuple[str, ...]) -> tuple[list[tuple[str, bool]], list[str]]:
    """(path, given on the command line) of the files to read, directories
    expanded into their finished spool files; and what was skipped there,
    in words: in a spool directory, only regular files are read (lstat:
    a FIFO would block, a symbolic link points anywhere)."""
    files: list[tuple[str, bool]] = []
    skipped: list[str] = []
    for path in paths:
        if not os.path.isdir(path):
            files.append((path, True))
            continue
        # a spool root: waiting/ and archive/ together (a file in both is one
        # file, hard-linked); any other folder: the spool files below it
        tops = [os.path.join(path, kind) for kind in (spooldir.WAITING, spooldir.ARCHIVE)]
        tops = [top for top in tops if os.path.isdir(top)] or [path]
        found: dict[str, str] = {}
        for top in tops:
            for root, folders, names in os.walk(top):
                skipped += [f"{os.path.join(root, name)}: a symbolic link to a folder: not followed"
                            for name in folders if os.path.islink(os.path.join(root, name))]
                for name in names:
                    if spooldir.name_time(name) is None or name in found:
                        continue
                    problem = spoolfile.not_regular(os.path.join(root, name))
                    if problem:
                        skipped.append(problem)
                    else:
                        found[name] = os.path.join(root, name)
        files += [(found[name], False) for name in sorted(found, key=lambda n: (spooldir.name_time(n), n))]
    return files, skipped


RESTART_NEEDED = 3  # check-config --started-with: the file is good, but a reload would not apply all of it


@main.command("check-config")
@config_option
@click.option("--quiet", "-q", is_flag=True, help="print only problems (init scripts, before a restart or reload)")
@click.option("--started-with", "started_with", type=click.Path(dir_okay=False), default=None,
              help="the settings the running sensor started with, as check-config printed them (the SysV "
                   f"script's reload): a changed setting that needs a restart is said, exit {RESTART_NEEDED}")
def check_config(config_path: str | None, quiet: bool, started_with: str | None) -> None:
    """Validate the configuration and print the effective settings.

    Exits non-zero on anything that would stop `run` or `sie-upload` from
    starting, so the init scripts can refuse a restart or reload while the
    running sensor is left as it is: 1 for such a problem, 78 for a value
    that cannot be read, 77 when this user cannot look at what it must
    check (the upload key in a spool it may not enter), 3 (with
    --started-with) when a setting changed that only a restart applies.
    """
    cfg = load_config(config_path)
    if not quiet:
        for line in cfg.as_text_lines():
            click.echo(line)
    found, unchecked = problems(cfg), _unchecked(cfg)
    for problem in found:
        click.echo(f"error: {problem}", err=True)
    if not quiet and cfg.dnstap_socket:
        click.echo(f"# input: dnstap at {cfg.dnstap_socket} (no packet capture)")
    elif not quiet:
        click.echo(f"# capture filter: {build_filter(cfg.res_addrs, cfg.auth_addrs, cfg.capture_qr)}")
    unsynchronized = None if quiet else clock.unsynchronized()
    if unsynchronized:
        click.echo(f"warning: {unsynchronized}", err=True)
    if found:
        sys.exit(1)
    if unchecked:
        raise NotPermitted(f"{unchecked} (check-config needs root, or the user the sensor runs as)")
    if started_with and _restart_needed(cfg, started_with):
        sys.exit(RESTART_NEEDED)


def problems(cfg: configuration.Config) -> list[str]:
    """What would stop a live start with this configuration."""
    # dnstap: the resolver reports only its own upstream traffic, no address list needed
    checks = [] if cfg.dnstap_socket else [cfg.require_capture_addresses, lambda: _require_interface(cfg)]
    if cfg.upload:
        checks.append(cfg.require_upload_settings)
        if not _unchecked(cfg):
            checks.append(cfg.require_upload_key)
    found = []
    for check in checks:
        try:
            check()
        except configuration.ConfigError as exc:
            found.append(str(exc))
    return found


def _require_interface(cfg: configuration.Config) -> None:
    """A typo'd interface must fail here, before `restart` stops the running
    sensor, not in the start that follows (capture down, nothing logged)."""
    if not device_exists(cfg.device):
        raise configuration.ConfigError(f"{cfg.origins.get('interface', 'default')}: interface: {cfg.device!r} "
                                        "names no network device (`ip link` lists them)")


def _unchecked(cfg: configuration.Config) -> str | None:
    """What this user cannot look at (the key in a spool it may not enter): not
    "missing", which would send an operator to make a key that exists."""
    if not cfg.upload:
        return None
    try:
        os.stat(cfg.uploadkey)
    except PermissionError as exc:
        return as_this_user("check the upload key", exc)
    except OSError:
        pass  # missing: require_upload_key says so
    return None


def _restart_needed(cfg: configuration.Config, started_with: str) -> bool:
    """Say each setting a reload cannot apply that differs from what the
    running sensor started with (RESTART_ONLY): on the terminal of `service
    ... reload`, not only in the log."""
    try:
        with open(started_with, encoding="utf-8") as handle:
            before = configuration.parse_lines(handle.read(), started_with)
        now = configuration.parse_lines("\n".join(cfg.as_text_lines()), "now")
    except (OSError, configuration.ConfigError) as exc:
        click.echo(f"warning: cannot compare with the settings the sensor started with: {exc}", err=True)
        return False
    changed = [configuration.variable_name(attr) for attr in RESTART_ONLY]
    changed = [name for name in changed if name in before and before[name][0] != now[name][0]]
    for name in changed:
        click.echo(f'warning: {name} changed ("{before[name][0]}" -> "{now[name][0]}"): a reload does not apply '
                   "it; the sensor keeps the old value until it is restarted", err=True)
    return bool(changed)


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="one JSON object (for monitoring systems)")
@click.option("--stall-intervals", type=click.IntRange(min=1), default=status_report.STALL_INTERVALS,
              show_default=True, help="no upload success for this many intervals while files wait is a problem")
def status(config_path: str | None, as_json: bool, stall_intervals: int) -> None:
    """Say whether capture and upload are running and what is wrong.

    Exit status 0 when all is well, 3 when the sensor is not running,
    1 for any other problem (upload stalled, capture lost, drops rising),
    4 when this user cannot read the spool (nothing can be judged).
    """
    cfg = load_config(config_path)
    try:
        found = status_report.report(cfg, stall_intervals)
    except status_report.SpoolUnreadable as exc:
        found = _unknown(cfg, exc.error)
    if as_json:
        click.echo(json.dumps(found, sort_keys=True))
    else:
        unknown = found["exit_status"] == status_report.UNKNOWN
        for line in [f"UNKNOWN:  {found['problems'][0]}"] if unknown else status_report.text_lines(found):
            click.echo(line)
    sys.exit(found["exit_status"])


def _unknown(cfg: configuration.Config, error: OSError) -> dict:
    """`status` for a user who cannot read the spool: no guess, a status of its own."""
    said = f"{as_this_user('read the spool', error)} (status needs root or a member of {_group_of(cfg.spooldir)})"
    return {"ok": False, "exit_status": status_report.UNKNOWN, "problems": [said]}


def _group_of(path: str) -> str:
    try:
        gid = os.stat(path).st_gid
        return f"group {grp.getgrgid(gid).gr_name}"
    except (OSError, KeyError):
        return "the spool's group"
