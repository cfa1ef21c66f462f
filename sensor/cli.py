"""`sie-dns-sensor`: run, read, check-config, status.

The commands parse their options and print; `run` hands what it was
asked to do (a startup.Plan) to startup.run, which opens the edge and
runs the pipeline, and turns what comes back into messages and exit
codes.
"""

from __future__ import annotations

import grp
import json
import os
import sys

import click

from sensor import startup
from sensor.edges.libpcap import device_exists
from sensor.matching.bpf import build_filter
from sensor.service import clock, daemon
from sensor.service import config as configuration
from sensor.service import status as status_report
from sensor.service.cli_options import ConfigProblem, NotPermitted, as_this_user, config_option, load_config
from sensor.spool import formats as spoolfile
from sensor.spool import spooldir
from sensor.spool.cbor import SpoolError


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
    cfg = _configured(config_path, interface, spooldir, dnstap_spec)
    edge, replay_path = _edge_asked(cfg, pcap_path, dnstap_path)
    plan = startup.Plan(cfg, config_path, edge, replay_path, daemon_mode, pidfile, user, print_format)
    _refuse_incomplete(plan)
    try:
        startup.run(plan)
    except startup.RunFailed as exc:
        raise click.ClickException(str(exc)) from None
    except startup.EndedBadly as exc:
        sys.exit(exc.status)


def _edge_asked(
    cfg: configuration.Config, pcap_path: str | None, dnstap_path: str | None
) -> tuple[startup.Edge, str | None]:
    """The edge the options name, and the file it replays: a file given on
    the command line, else dnstap_socket if set (by --dnstap or the
    configuration, and not unset by --interface), else the interface."""
    if pcap_path:
        return startup.Edge.PCAP_FILE, pcap_path
    if dnstap_path:
        return startup.Edge.DNSTAP_FILE, dnstap_path
    return (startup.Edge.DNSTAP_SOCKET if cfg.dnstap_socket else startup.Edge.INTERFACE), None


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


def _refuse_incomplete(plan: startup.Plan) -> None:
    """Say now, in words, what would otherwise fail later or silently.

    Live capture needs an address list: without one it would record end
    users' queries to the resolver. A replay (`--pcap`) may go without, as
    the reference does, to pair every DNS exchange in a file; so may
    dnstap, where the resolver reports only its own upstream traffic and
    client-side messages are dropped by type.
    """
    if plan.edge is startup.Edge.INTERFACE:
        try:
            plan.cfg.require_capture_addresses()
        except configuration.ConfigError as exc:
            raise ConfigProblem(f"configuration: {exc}") from None
    if plan.live and plan.cfg.upload:
        try:
            plan.cfg.require_upload_key()
        except configuration.ConfigError as exc:
            raise ConfigProblem(str(exc)) from None


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
    running sensor started with (startup.RESTART_ONLY): on the terminal of
    `service ... reload`, not only in the log."""
    try:
        with open(started_with, encoding="utf-8") as handle:
            before = configuration.parse_lines(handle.read(), started_with)
        now = configuration.parse_lines("\n".join(cfg.as_text_lines()), "now")
    except (OSError, configuration.ConfigError) as exc:
        click.echo(f"warning: cannot compare with the settings the sensor started with: {exc}", err=True)
        return False
    changed = [configuration.variable_name(attr) for attr in startup.RESTART_ONLY]
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
