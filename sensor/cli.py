"""`sie-dns-sensor`: run, read, check-config."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys

import click

from . import config as configuration
from . import daemon, logs, render
from .bpf import Vantage, build_filter
from .capture import Capture, CaptureError
from .linklayer import UnsupportedLinkType
from .matcher import Matcher, Settings
from .options import config_option, load_config
from .pipeline import Sensor
from .spool import SpoolError, read_spool
from .writer import SpoolBusy, SpoolWriter

log = logging.getLogger("sensor")


@click.group()
def main() -> None:
    """Passive DNS sensor: pairs a resolver's queries to authoritative
    servers with their responses and spools them for upload."""


@main.command()
@config_option
@click.option("--pcap", "pcap_path", type=click.Path(exists=True, dir_okay=False),
              help="replay this capture file instead of capturing live")
@click.option("--interface", help="capture on this interface (overrides `interface`)")
@click.option("--spooldir", type=click.Path(file_okay=False), help="overrides `spooldir`")
@click.option("--daemon", "daemon_mode", is_flag=True, help="detach into the background (init scripts)")
@click.option("--pidfile", type=click.Path(dir_okay=False), help="write the process id here")
@click.option("--user", default=daemon.SERVICE_USER, show_default=True,
              help="as root: after opening the capture, run as this user (if it exists)")
def run(
    config_path: str | None,
    pcap_path: str | None,
    interface: str | None,
    spooldir: str | None,
    daemon_mode: bool,
    pidfile: str | None,
    user: str,
) -> None:
    """Capture (or replay) until stopped, writing spool files."""
    cfg = _configured(config_path, interface, spooldir)
    _refuse_incomplete(cfg, live=pcap_path is None)
    logs.setup(cfg.syslog_priority, foreground=not daemon_mode and (daemon.foreground() or pcap_path is not None))
    bpf = build_filter(cfg.res_addrs, cfg.auth_addrs, cfg.capture_qr)
    try:
        if pcap_path:
            capture = Capture.open_file(pcap_path, bpf)
        else:
            capture = Capture.open_live(cfg.device, cfg.promiscuous, bpf)
    except (CaptureError, UnsupportedLinkType) as exc:
        raise click.ClickException(str(exc)) from None
    if daemon_mode:
        daemon.detach()
    claimed = daemon.PidFile(pidfile) if pidfile else None
    try:
        if claimed:
            claimed.claim()
        if not pcap_path:
            # the service's cap; a replay is a tool run (often in-process in tests)
            daemon.limit_memory(cfg.memory_ulimit_kbytes)
        daemon.drop_privileges(user)  # before the first packet is read
        writer = SpoolWriter(
            cfg.spooldir, cfg.channel, socket.gethostname(), cfg.interval, cfg.archive, cfg.upload
        )
    except (daemon.DaemonError, SpoolBusy, OSError) as exc:
        log.error("cannot start: %s", exc)
        raise click.ClickException(str(exc)) from None
    sensor = Sensor(capture, Matcher(matcher_settings(cfg)), writer, reload=_reloader(config_path, cfg))
    signal.signal(signal.SIGTERM, lambda *_: sensor.stop())
    signal.signal(signal.SIGINT, lambda *_: sensor.stop())
    signal.signal(signal.SIGHUP, lambda *_: sensor.hangup())
    if not cfg.res_addrs and not cfg.auth_addrs:
        log.info("no address filter is set (DNSQR_RES_ADDRS, DNSQR_AUTH_ADDRS): every DNS exchange "
                 "in %s is recorded, direction taken from the QR bit", pcap_path)
    log.info("capturing from %s as uid %d with filter: %s", capture.description, os.getuid(), bpf)
    try:
        sensor.run()
    finally:
        if claimed:
            claimed.release()


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


def _configured(config_path: str | None, interface: str | None, spooldir: str | None) -> configuration.Config:
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
    return cfg.with_overrides(**changes)


def _refuse_incomplete(cfg: configuration.Config, live: bool) -> None:
    """Say now, in words, what would otherwise fail later or silently.

    Live capture needs an address list: without one it would record end
    users' queries to the resolver. A replay (`--pcap`) may go without, as
    the reference does, to pair every DNS exchange in a file.
    """
    if live:
        try:
            cfg.require_capture_addresses()
        except configuration.ConfigError as exc:
            raise click.ClickException(f"configuration: {exc}") from None
    if live and cfg.upload and not os.path.exists(cfg.uploadkey):
        raise click.ClickException(
            f'upload key {cfg.uploadkey} is missing: run sie-gen-key first (or set upload="no")'
        )


# Settings that a SIGHUP can change; the rest need a restart.
RESTART_ONLY = ("interface", "res_addrs", "auth_addrs", "capture_qr", "spooldir", "channel")


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
                log.warning("SIGHUP: %s changed; it takes effect at the next restart", name)
                cfg = cfg.with_overrides(**{name: getattr(current[0], name)})
        sensor.matcher.apply(matcher_settings(cfg))
        sensor.writer.interval, sensor.writer.archive, sensor.writer.upload = cfg.interval, cfg.archive, cfg.upload
        current[0] = cfg
        log.info("SIGHUP: spool file finished, configuration re-read")

    return reload


@main.command()
@click.option("--format", "fmt", type=click.Choice(["json", "text"]), default="json",
              show_default=True)
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def read(fmt: str, files: tuple[str, ...]) -> None:
    """Print the records of spool files, one per line."""
    show = render.to_json if fmt == "json" else render.to_text
    failed = False
    for path in files:
        try:
            _, records = read_spool(path)
            for record in records:
                click.echo(show(record))
        except SpoolError as exc:
            click.echo(f"sie-dns-sensor: {exc}", err=True)
            failed = True
    if failed:
        sys.exit(1)


@main.command("check-config")
@config_option
def check_config(config_path: str | None) -> None:
    """Validate the configuration and print the effective settings."""
    cfg = load_config(config_path)
    for line in cfg.as_text_lines():
        click.echo(line)
    problems = []
    for check in (cfg.require_capture_addresses, cfg.require_upload_settings):
        try:
            if check is cfg.require_upload_settings and not cfg.upload:
                continue
            check()
        except configuration.ConfigError as exc:
            problems.append(str(exc))
    click.echo(f"# capture filter: {build_filter(cfg.res_addrs, cfg.auth_addrs, cfg.capture_qr)}")
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if problems:
        sys.exit(1)
