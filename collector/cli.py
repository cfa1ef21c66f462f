"""`sie-dns-collector`: register sensors, ingest their uploads, ask the database."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import sys
import time

import click

from sensor.service import daemon, logs
from sensor.service.daemonstate import StateFile, read_state

from . import config as configuration
from . import incoming, keys, present, roothints, sensors
from .api import lookup as lookups
from .chain import Chain
from .ingest import Ingester
from .sqlite_store import SqliteStore
from .store import STORE_PROBLEMS, Fences, Store, StoreUnavailable

log = logging.getLogger("collector")
STATE_NAME = "ingest.state"
EXIT_PROBLEM = 1


def config_option(function):
    return click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
                        help=f"configuration file (default {configuration.DEFAULT_CONFIG_PATH})")(function)


def load(config_path: str | None) -> configuration.Config:
    try:
        return configuration.load(config_path)
    except configuration.ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None


def engine(cfg: configuration.Config, query_timeout: float | None = None, ingest: bool = False,
           busy_timeout: float = 5.0) -> Store:
    """The store the `store` setting names: the embedded file, or ClickHouse (`ingest`: opened by the
    ingester, which finishes a batch its last run left and keeps the knowledge cache; `busy_timeout`:
    seconds a write to the embedded file, or to ClickHouse's knowledge cache, waits for the ingester's batch)."""
    if cfg.on_clickhouse:
        from .clickhouse.store import ClickHouseStore

        return ClickHouseStore(cfg.store, cfg.collector_dir, query_timeout=query_timeout, ingest=ingest,
                               busy_timeout=busy_timeout)
    return SqliteStore(cfg.store_path, query_timeout=query_timeout, busy_timeout=busy_timeout)


def store_text(cfg: configuration.Config) -> str:
    """Where the store is, for the log (never a password)."""
    if cfg.on_clickhouse:
        from .clickhouse.location import parse

        return parse(cfg.store).text()
    return cfg.store_path


_INGEST_BUSY_WAIT = 60.0  # seconds the ingester's writes wait for another process's (an `expire`: 5.6 s at 1M RRsets)


def open_store(cfg: configuration.Config) -> Store:
    """The store for the ingester, seeded with the root hints the first time it is opened."""
    store = engine(cfg, ingest=True, busy_timeout=_INGEST_BUSY_WAIT)
    if not store.directory.db.execute("SELECT EXISTS (SELECT 1 FROM zone_server)").fetchone()[0]:
        try:
            roothints.seed(store.directory, roothints.read(cfg.root_hints))
        except roothints.RootHintsError as exc:
            store.close()
            raise click.ClickException(f"root_hints: {exc}") from None
        store.commit([])
    return store


@click.group()
def main() -> None:
    """Passive DNS collector: receives the sensors' uploads and keeps a
    passive DNS database of what authoritative servers answered."""


@main.command("check-config")
@config_option
def check_config(config_path: str | None) -> None:
    """Validate the configuration and print the effective settings."""
    cfg = load(config_path)
    for line in cfg.as_text_lines():
        click.echo(line)
    try:
        roothints.read(cfg.root_hints)
    except roothints.RootHintsError as exc:
        raise click.ClickException(f"root_hints: {exc}") from None
    problem = _sandbox_problem(cfg)
    if problem:
        raise click.ClickException(problem)


_DROP_IN = "systemctl edit sie-dns-collector"


def _sandbox_problem(cfg: configuration.Config) -> str | None:
    """What the service's sandbox (check-config runs in it first, ExecStartPre) keeps the
    configuration from doing, said before the start rather than as an ingester that backs off
    or dies: a ClickHouse store with no network, a folder it may not write."""
    if cfg.on_clickhouse:
        try:
            socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        except OSError:
            return ("store: ClickHouse is reached over the network, and this service may not open a network "
                    f"socket (its unit's PrivateNetwork=yes, RestrictAddressFamilies=AF_UNIX): `{_DROP_IN}`, "
                    "and add [Service] PrivateNetwork=no and RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6")
    owner = daemon.service_user(configuration.SERVICE_USER)
    if os.geteuid() not in (0, owner.pw_uid if owner else 0):
        return None  # another user's check: what it may write says nothing of the service
    written = [("collector_dir", cfg.collector_dir)]
    if not cfg.on_clickhouse:
        written.append(("store", os.path.dirname(cfg.store_path)))
    for variable, folder in written:
        if os.path.isdir(folder) and not os.access(folder, os.W_OK):
            return (f"{variable}: {folder} may not be written by this service (its unit's ReadWritePaths names "
                    f"/var/lib/sie-dns-collector): `{_DROP_IN}`, and add [Service] ReadWritePaths={folder}")
    return None


# ----------------------------------------------------------------- sensors
def _owner(cfg: configuration.Config) -> tuple[int, int] | None:
    return daemon.service_owner(configuration.SERVICE_USER)


@main.command("add-sensor")
@config_option
@click.argument("name")
@click.argument("keyfile", type=click.Path(exists=True, dir_okay=False))
@click.option("--from", "addresses", default="", help="the sensor's addresses or prefixes, comma separated")
@click.option("--host", default=None, help="this collector's name as sensors reach it (default: hostname -f)")
@click.option("--port", default=configuration.SUBMIT_PORT, show_default=True, help="the port sensors connect to")
@click.option("--login", default=configuration.SERVICE_USER, show_default=True, help="the collector's SSH user")
def add_sensor(config_path, name, keyfile, addresses, host, port, login) -> None:
    """Let the sensor NAME, with the public key in KEYFILE, upload here."""
    cfg = load(config_path)
    try:
        added = sensors.add(cfg.collector_dir, cfg.authorized_keys_path, name, keyfile, addresses, _owner(cfg))
    except (sensors.SensorError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    host = host or socket.getfqdn()
    read = _sshd_authorized_keys()
    if read and read != cfg.authorized_keys_path:
        click.echo(f"warning: the sensors' sshd reads {read} (AuthorizedKeysFile in {PACKAGED_SSHD_CONFIG}), "
                   f"not {cfg.authorized_keys_path}: change one of them, or this sensor's key is refused", err=True)
    click.echo(f"sensor {name} registered (key {added.fingerprint()}"
               f"{', from ' + added.addresses if added.addresses else ''}).")
    click.echo("In the sensor's /etc/default/sie-dns-sensor:")
    click.echo(f'  login="{login}"')
    click.echo(f'  submitserver="{submit_server(host, port)}"')
    click.echo("In the sensor's known_hosts (/var/spool/sie/keys/known_hosts):")
    for line in host_key_lines(host, port):
        click.echo(f"  {line}")


PACKAGED_SSHD_CONFIG = "/etc/sie-dns-collector/sshd_config"  # the package's sshd for the sensors


def _sshd_authorized_keys(path: str = PACKAGED_SSHD_CONFIG) -> str | None:
    """The AuthorizedKeysFile the package's sshd reads (None: no such sshd here, or it names none)."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                words = line.split()
                if len(words) == 2 and words[0].lower() == "authorizedkeysfile":
                    return words[1]
    except OSError:
        return None
    return None


def submit_server(host: str, port: int) -> str:
    """The sensor's `submitserver` for `host` on `port`: an IPv6 address with a port in brackets
    (else the sensor reads the port as the address's last group)."""
    if port == configuration.SUBMIT_PORT:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def host_key_lines(host: str, port: int, folder: str = "/etc/ssh") -> list[str]:
    """This host's SSH host keys as known_hosts lines for `host:port`."""
    pattern = host if port == 22 else f"[{host}]:{port}"
    lines = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.startswith("ssh_host_") and name.endswith("_key.pub"):
            with open(os.path.join(folder, name), encoding="ascii") as handle:
                key_type, key = handle.read().split()[:2]
            lines.append(f"{pattern} {key_type} {key}")
    return lines


@main.command("remove-sensor")
@config_option
@click.argument("name")
def remove_sensor(config_path, name) -> None:
    """Take the sensor's key out (its folder and what it sent stay)."""
    cfg = load(config_path)
    if not sensors.remove(cfg.authorized_keys_path, name, _owner(cfg)):
        raise click.ClickException(f"no sensor named {name} is registered")
    click.echo(f"sensor {name} removed: its key can no longer upload")


@main.command("list-sensors")
@config_option
def list_sensors(config_path) -> None:
    """The registered sensors: name, key fingerprint, allowed addresses."""
    cfg = load(config_path)
    for sensor in sensors.registered(cfg.authorized_keys_path):
        click.echo(f"{sensor.name}  {sensor.fingerprint()}  from {sensor.addresses or 'anywhere'}")


# ------------------------------------------------------------- daemons
def _logging_daemon(config_path: str | None, daemon_mode: bool) -> configuration.Config:
    """The configuration of `ingest` or `serve`, and their logging set up from it (inherited
    descriptors closed first when detaching: the init script's are not ours)."""
    if daemon_mode:
        daemon.close_inherited_fds()
    cfg = load(config_path)
    logs.setup(cfg.syslog_priority, foreground=daemon.foreground(), detached=daemon_mode,
               program="sie-dns-collector")
    return cfg


def service_options(function):
    """--user, --daemon and --pidfile: how `ingest` and `serve` run as services (_become_service)."""
    user = f"as root, run as this user (default {configuration.SERVICE_USER})"
    for option in reversed((click.option("--user", default=None, help=user),
                            click.option("--daemon", "daemon_mode", is_flag=True,
                                         help="detach into the background (init scripts)"),
                            click.option("--pidfile", type=click.Path(dir_okay=False),
                                         help="write the process id here"))):
        function = option(function)
    return function


def _become_service(daemon_mode: bool, pidfile: str | None, user: str | None) -> daemon.Detached | None:
    """Detach (start-up errors still reach `service ... start` until `ready()`), claim the pidfile,
    and as root become the service user (or `user`)."""
    detached = daemon.detach() if daemon_mode else None
    user = user or configuration.SERVICE_USER
    try:
        if pidfile:
            daemon.PidFile(pidfile).claim()
        if os.geteuid() == 0 and user != "root":
            daemon.drop_privileges(user)
    except daemon.DaemonError as exc:
        raise click.ClickException(str(exc)) from None
    return detached


# ------------------------------------------------------------------ ingest
@main.command()
@config_option
@click.option("--once", is_flag=True, help="ingest what is there, then exit")
@service_options
def ingest(config_path, once, user, daemon_mode, pidfile) -> None:
    """Ingest uploads into the store until SIGTERM (or once, --once)."""
    cfg = _logging_daemon(config_path, daemon_mode)
    detached = _become_service(daemon_mode, pidfile, user)
    daemon.limit_memory(cfg.memory_ulimit_kbytes)
    incoming.make_folders(cfg.collector_dir)
    try:
        lock = incoming.lock(cfg.collector_dir)
    except incoming.Busy as exc:
        raise click.ClickException(str(exc)) from None
    state = StateFile(os.path.join(cfg.collector_dir, incoming.LOCKS, STATE_NAME))
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    log.info("ingesting %s into %s", os.path.join(cfg.collector_dir, incoming.INCOMING), store_text(cfg))
    if detached:
        detached.ready()
    try:
        store = _open_when_ready(cfg, state, stopping, once)
        if store is None:
            return
        ingester = Ingester(cfg.collector_dir, store, Chain(store.directory, cfg.dedup_max_entries),
                            keep=cfg.keep_days > 0, window=cfg.dedup_window)
        _ingest(ingester, store, state, stopping, once, cfg.retention_days)
    except Exception as exc:  # detached, stderr is /dev/null: say it in the log, once, never a bare traceback
        log.critical("stopped by an unexpected error: %s", exc, exc_info=True)
        sys.exit(70)
    state.write(_state(ingester, store))
    store.close()
    os.close(lock)
    log.info("stopped: %s", _summary(ingester))


_BACKOFF_MAX = 60.0  # seconds between two tries of a store that does not answer


def _open_when_ready(cfg: configuration.Config, state: StateFile, stopping: list, once: bool) -> Store | None:
    """The store, tried again with growing pauses while it does not answer (None: stopped meanwhile)."""
    pause, since = 1.0, int(time.time())
    while not stopping:
        try:
            return open_store(cfg)
        except STORE_PROBLEMS as exc:
            pause = _unavailable(exc, state, {"store_problem_since": since}, pause, once)
    return None


_EXPIRE_EVERY = 86400.0  # seconds between two expiries by the ingester (retention_days set)


def _ingest(ingester: Ingester, store: Store, state: StateFile, stopping: list, once: bool,
            retention_days: int = 0) -> None:
    """Step until stopped (or, --once, until nothing is left), expiring the store when due; while
    the store does not answer, the batch under way is let go (its files stay claimed in work/) and
    taken again once it does."""
    pause, since = 1.0, None
    recovering = True
    expiry_due = time.monotonic()
    while not stopping:
        try:
            if recovering:
                ingester.recover()
                recovering, pause, since = False, 1.0, None
            expiry_due = _expire_when_due(ingester, store, retention_days, expiry_due)
            taken = ingester.step()
        except STORE_PROBLEMS as exc:
            ingester.abandon()
            recovering, since = True, since or int(time.time())
            pause = _unavailable(exc, state, {**_state(ingester, store), "store_problem_since": since}, pause, once)
            continue
        if state.due() or once:
            state.write(_state(ingester, store))
        if once and not taken:
            break
        if not taken:
            time.sleep(1.0)
    try:
        ingester.commit()
    except STORE_PROBLEMS as exc:
        ingester.abandon()
        log.warning("stopping with the last batch not in the store (%s): its files stay in work/", exc)


def _expire_when_due(ingester: Ingester, store: Store, retention_days: int, due: float) -> float:
    """Expire the store at start and once a day (retention_days set); when next. Done here, between
    batches, because the ingester's batches hold the embedded store's write lock nearly all the time
    on a busy collector (an `expire` command could wait for ever); its batch is committed first,
    since expire commits what the store holds."""
    if not retention_days or time.monotonic() < due:
        return due
    ingester.commit()
    try:
        rrsets, rdata = store.expire(int(time.time()) - retention_days * 86400)
    except StoreUnavailable:
        raise  # the loop backs off, and expires once the store answers again
    except Exception as exc:  # a chore: ingest goes on without it, and it is tried again tomorrow
        log.error("expire failed, tried again in a day: %s", exc)
    else:
        log.info("expired %d RRsets and %d index rows last seen over %d days ago", rrsets, rdata, retention_days)
    return time.monotonic() + _EXPIRE_EVERY


def _unavailable(exc: Exception, state: StateFile, report: dict, pause: float, once: bool) -> float:
    """Say so (log, state for `status`), wait; the next pause. --once gives up instead."""
    log.warning("the store does not answer, files kept, trying again in %.0f s: %s", pause, exc)
    state.write({**report, "store_problem": str(exc), "store_problem_since": report.get("store_problem_since")
                 or int(time.time())})
    if once:
        raise click.ClickException(f"the store does not answer ({exc}); the files stay in work/ for the next run")
    time.sleep(pause)
    return min(pause * 2, _BACKOFF_MAX)


def _state(ingester: Ingester, store: Store) -> dict:
    totals = ingester.totals
    try:
        size = store.size()
    except StoreUnavailable:
        size = None
    files_per_second, records_per_second = totals.per_second(time.monotonic())
    return {"files": totals.files, "damaged": totals.damaged, "duplicates": totals.duplicates,
            "records": totals.records, "errors": totals.errors, "last_file": totals.last_file,
            "files_per_second": files_per_second, "records_per_second": records_per_second,
            "counts": dict(ingester.counts), "store_bytes": size,
            "unlisted": {folder: why for folder, (_, why) in sorted(ingester.unlisted.items())}}


def _summary(ingester: Ingester) -> str:
    totals = ingester.totals
    counts = " ".join(f"{key}={value}" for key, value in sorted(ingester.counts.items()))
    return f"files={totals.files} damaged={totals.damaged} records={totals.records} {counts}"


# ------------------------------------------------------------------- query
def _fences(first_after, first_before, last_after, last_before) -> Fences:
    """Fences from the options; a negative value is that many seconds before now (as DNSDB's)."""
    now = int(time.time())
    return Fences(*(now + value if value is not None and value < 0 else value
                    for value in (first_after, first_before, last_after, last_before)))


_MOST = 10**lookups.NUMBER_DIGITS - 1  # a number's bound, the HTTP API's: SQLite's integers stop at 2**63
_TIME = click.IntRange(-_MOST, _MOST)


def query_options(function):
    for option in (
        click.option("--json", "as_json", is_flag=True, help="one JSON object a line (DNSDB's fields)"),
        click.option("--summarize", is_flag=True, help="count, num_results and times of the lookup instead"),
        click.option("--limit", type=click.IntRange(1, _MOST), default=None, help="at most this many results"),
        click.option("--offset", type=click.IntRange(0, _MOST), default=0, help="skip this many results first"),
        click.option("--first-after", type=_TIME, help="time_first at or after (epoch seconds; negative: ago)"),
        click.option("--first-before", type=_TIME, help="time_first at or before"),
        click.option("--last-after", type=_TIME, help="time_last at or after"),
        click.option("--last-before", type=_TIME, help="time_last at or before"),
    ):
        function = option(function)
    return config_option(function)


def _lookup(segments: list[str]) -> lookups.Lookup:
    try:
        return lookups.parse_lookup(segments)
    except lookups.BadRequest as exc:
        raise click.BadParameter(str(exc)) from None


@main.group()
def query() -> None:
    """Look up the database (the store file, read-only), as the HTTP API does."""


@query.command("rrset")
@query_options
@click.argument("name")
@click.option("--type", "rrtype", default="ANY", help="only this record type (A, NS, ..., ANY-DNSSEC)")
@click.option("--bailiwick", default=None, help="only entries with this bailiwick")
@click.option("--raw", is_flag=True, help="NAME is a wire-form name in hex")
def query_rrset(config_path, as_json, summarize, limit, offset, first_after, first_before, last_after, last_before,
                name, rrtype, bailiwick, raw) -> None:
    """RRsets owned by NAME (`*.NAME`: NAME and every name under it; `NAME.*`: every name beginning with NAME)."""
    found = _lookup(["rrset", "raw" if raw else "name", name, rrtype, *([bailiwick] if bailiwick else [])])
    _answer(load(config_path), found, _fences(first_after, first_before, last_after, last_before), limit, offset,
            summarize, as_json)


@query.command("rdata")
@query_options
@click.argument("value")
@click.option("--type", "rrtype", default="ANY", help="only this record type (names, raw data)")
@click.option("--raw", is_flag=True, help="VALUE is record data in hex")
def query_rdata(config_path, as_json, summarize, limit, offset, first_after, first_before, last_after, last_before,
                value, rrtype, raw) -> None:
    """Records whose data is VALUE: an address, prefix or range (FIRST-LAST), a name (wildcards as for rrset)."""
    try:
        lookups.parse_addresses(value)
        by = "raw" if raw else "ip"
    except lookups.BadRequest:
        by = "raw" if raw else "name"
    found = _lookup(["rdata", by, value, *([rrtype] if by != "ip" else [])])
    _answer(load(config_path), found, _fences(first_after, first_before, last_after, last_before), limit, offset,
            summarize, as_json)


def _answer(cfg: configuration.Config, found: lookups.Lookup, fences: Fences, limit: int | None, offset: int,
            summarize: bool, as_json: bool) -> None:
    if not cfg.on_clickhouse and not os.path.exists(cfg.store_path):
        # opened, it would be made: empty, with no answer, and (run as root) a file the ingester cannot write
        raise click.ClickException(f"store: no database at {cfg.store_path} (the ingester makes it)")
    try:
        store = engine(cfg)
    except StoreUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    if summarize:
        summary = found.summarize(store, fences, limit, offset, None)
        click.echo(json.dumps(present.summary_json(summary)) if as_json else present.summary_text(summary), nl=as_json)
    elif found.kind == "rrset":
        _print(found.rows(store, fences, limit, offset), as_json, present.entry_json, present.entry_text)
    else:
        _print(found.rows(store, fences, limit, offset), as_json, present.rdata_entry_json, present.rdata_entry_text)
    store.close()


def _print(found, as_json: bool, to_json, to_text) -> None:
    first = True
    for entry in found:
        if as_json:
            click.echo(json.dumps(to_json(entry)))
        else:
            click.echo(("" if first else "\n") + to_text(entry), nl=False)
        first = False


# ------------------------------------------------------------- HTTP API
@main.command()
@config_option
@click.option("--listen", default=None, help="HOST:PORT to answer on (default api_listen; port 0: any)")
@service_options
def serve(config_path, listen, user, daemon_mode, pidfile) -> None:
    """Answer DNSDB API v2 and COF queries over HTTP until SIGTERM."""
    from .api import server  # the web stack only for the command that needs it

    cfg = _logging_daemon(config_path, daemon_mode)
    try:
        host, port = configuration.host_port(listen or cfg.api_listen)
        sock = server.listen(host, port)
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"cannot answer on {listen or cfg.api_listen}: {exc}") from None
    detached = _become_service(daemon_mode, pidfile, user)
    bound = sock.getsockname()
    log.info("answering on http://%s:%d/ (DNSDB API v2 under /dnsdb/v2/, COF under /pdns/query/), keys in %s",
             f"[{bound[0]}]" if ":" in bound[0] else bound[0], bound[1], cfg.api_keys_path)
    if detached:
        detached.ready()
    try:
        server.serve(cfg, sock)
    except Exception as exc:  # detached, stderr is /dev/null: say it in the log, once, never a bare traceback
        log.critical("stopped by an unexpected error: %s", exc, exc_info=True)
        sys.exit(70)


@main.command("add-key")
@config_option
@click.argument("name")
@click.option("--results-max", type=click.IntRange(1), default=None, help="this key's most results a lookup")
@click.option("--burst-size", type=click.IntRange(1), default=None, help="this key's requests a window")
@click.option("--burst-window", type=click.IntRange(1), default=None, help="this key's window, seconds")
@click.option("--lookups", type=click.IntRange(1), default=None, help="this key's lookups under way at once")
def add_key(config_path, name, results_max, burst_size, burst_window, lookups) -> None:
    """Make an API key NAME for the HTTP API; it is printed once, only its hash is kept."""
    cfg = load(config_path)
    try:
        secret = keys.add(cfg.api_keys_path, name, _owner(cfg), results_max=results_max, burst_size=burst_size,
                          burst_window=burst_window, lookups=lookups)
    except (keys.KeyProblem, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(secret)
    click.echo(f"key {name} added: give it as X-API-Key (DNSDB API) or as the password of user {name} (COF); "
               "it is not shown again.", err=True)


@main.command("remove-key")
@config_option
@click.argument("name")
def remove_key(config_path, name) -> None:
    """Take the API key NAME out (a running server refuses it within a second)."""
    cfg = load(config_path)
    try:
        removed = keys.remove(cfg.api_keys_path, name, _owner(cfg))
    except (keys.KeyProblem, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if not removed:
        raise click.ClickException(f"no API key named {name}")
    click.echo(f"key {name} removed")


@main.command("list-keys")
@config_option
def list_keys(config_path) -> None:
    """The API keys: name and limits (never the keys, which are not kept)."""
    found, problems = keys.read(load(config_path).api_keys_path)
    for key in found:
        click.echo(f"{key.name}  {key.limits_text()}")
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)


# ----------------------------------------------------------- maintenance
@main.command("init-store")
@config_option
@click.option("--on-cluster/--each-server", default=None,
              help="ON CLUSTER DDL (needs ZooKeeper), or each server in turn (default: ON CLUSTER when the "
                   "servers have ZooKeeper)")
def init_store(config_path, on_cluster) -> None:
    """Create the ClickHouse store's database and tables (idempotent): the `store` setting says where."""
    cfg = load(config_path)
    if not cfg.on_clickhouse:
        raise click.ClickException("store is the embedded file, made when first opened: nothing to create")
    from .clickhouse.location import parse
    from .clickhouse.store import init

    try:
        for statement in init(parse(cfg.store), on_cluster=on_cluster):
            click.echo(statement + ";")
    except StoreUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # the server refused a statement (no ZooKeeper for ON CLUSTER, no rights): say so
        said = [line for line in str(getattr(exc, "message", exc)).splitlines() if line.strip()]
        raise click.ClickException(f"ClickHouse refused the schema: {said[0] if said else exc}") from None
    click.echo(f"store ready at {store_text(cfg)}", err=True)


@main.command()
@config_option
@click.option("--days", type=click.IntRange(1), default=None, help="override retention_days")
def expire(config_path, days) -> None:
    """Remove entries not seen for `retention_days` days."""
    cfg = load(config_path)
    days = days or cfg.retention_days
    if not days:
        raise click.ClickException("retention_days is 0 (keep forever): give --days to expire anyway")
    waited = 2 * cfg.dedup_window + 10  # an ingester commits its batch about every dedup_window seconds
    try:
        # not as the ingester: a ClickHouse ingester's journal and knowledge file are its own (it reads
        # the file again at its daily expire)
        store = engine(cfg, ingest=False, busy_timeout=waited)
        rrsets, rdata = store.expire(int(time.time()) - days * 86400)
    except StoreUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        raise click.ClickException(f"the store stayed busy for {waited:.0f} s (a running ingester's batches); "
                                   "the ingester expires it by itself once a day when retention_days is set") from None
    except Exception as exc:  # a ClickHouse server's refusal, said in a line, not a traceback
        if not cfg.on_clickhouse:
            raise
        said = str(exc).strip().splitlines() or [type(exc).__name__]
        raise click.ClickException(f"the store refused the expire: {said[0][:300]}") from None
    store.close()
    click.echo(f"removed {rrsets} RRsets and {rdata} index rows last seen over {days} days ago")


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="the report as JSON")
def status(config_path, as_json) -> None:
    """Backlog, what was ingested, the store's size; exit 1 on a problem."""
    cfg = load(config_path)
    report = _status(cfg)
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
    else:
        for key, value in report.items():
            click.echo(f"{key}: {value}")
    sys.exit(EXIT_PROBLEM if report["problems"] else 0)


# seconds without a report before `status` says the ingester is not running: it reports between steps
# (10 s and the file under way; a sensor's minute at 20,000 records a second takes a minute to ingest)
_STATE_STALE = 120


def _arrived(path: str) -> float | None:
    """When the upload arrived: its inode's change time, which the uploader's closing rename sets
    (its modification time is the sensor's, which rsync --times keeps: after a sensor's outage
    every file looked old at once); None when the ingester took it since it was listed."""
    try:
        return os.stat(path).st_ctime
    except FileNotFoundError:
        return None


def _status(cfg: configuration.Config) -> dict:
    waiting = incoming.waiting(cfg.collector_dir)
    oldest = min(filter(None, (_arrived(os.path.join(cfg.collector_dir, incoming.INCOMING, s, incoming.UP, c, n))
                               for s, c, n, _ in waiting)), default=None)
    state = read_state(os.path.join(cfg.collector_dir, incoming.LOCKS, STATE_NAME)) or {}
    problems = []
    if not state or time.time() - state.get("updated", 0) > _STATE_STALE:
        problems.append("the ingester is not running (no fresh state)")
    if oldest is not None and time.time() - oldest > 600:
        problems.append(f"the oldest upload has waited {int(time.time() - oldest)} s")
    for folder, why in state.get("unlisted", {}).items():
        problems.append(f"the ingester cannot list {folder} ({why}): its uploads wait unseen")
    if state.get("store_problem"):
        problems.append(f"the store has not answered for {int(time.time() - state['store_problem_since'])} s, "
                        f"ingest keeps its files and tries again: {state['store_problem']}")
    return {
        "store": store_text(cfg),
        "backlog_files": len(waiting),
        "backlog_oldest_seconds": None if oldest is None else int(time.time() - oldest),
        "ingested_files": state.get("files"),
        "files_per_second": state.get("files_per_second"),
        "records_per_second": state.get("records_per_second"),
        "damaged_files": state.get("damaged"),
        "errors": state.get("errors"),
        "last_file": state.get("last_file", {}),
        "store_bytes": state.get("store_bytes"),
        "counts": state.get("counts", {}),
        "problems": problems,
    }
