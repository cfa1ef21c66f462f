"""`sie-upload` and `sie-gen-key`."""

from __future__ import annotations

import logging
import signal
import sys

import click

from sensor.service import config as configuration
from sensor.service import daemon, logs
from sensor.service.cli_options import ConfigProblem, NotPermitted, config_option, load_config

from . import keys
from .upload import SpoolForbidden, Uploader, UploaderBusy, channel_lock
from .watch import Watch


@click.command()
@config_option
@click.option("--once", is_flag=True, help="one round over waiting/, then exit (status 1 if anything failed)")
@click.option("--daemon", "daemon_mode", is_flag=True, help="detach into the background (init scripts)")
@click.option("--pidfile", type=click.Path(dir_okay=False), help="write the process id here")
@click.option("--user", default=daemon.SERVICE_USER, show_default=True,
              help="as root: run as this user (if it exists)")
def upload_main(config_path: str | None, once: bool, daemon_mode: bool, pidfile: str | None, user: str) -> None:
    """Ship finished spool files to the collector over SSH: with rsync
    (upload_method="rsync", the default, what the SIE collector takes) or
    SFTP (upload_method="sftp")."""
    if daemon_mode:
        daemon.close_inherited_fds()
    cfg = load_config(config_path)
    if not cfg.upload:
        click.echo('upload="no" in the configuration: nothing to do', err=True)
        return
    try:
        uploader = Uploader(cfg)
    except configuration.ConfigError as exc:
        raise ConfigProblem(f"configuration: {exc}") from None
    logs.setup(cfg.syslog_priority, foreground=daemon.foreground() or once, detached=daemon_mode,
               program="sie-upload")
    detached = daemon.detach() if daemon_mode else None
    claimed = daemon.PidFile(pidfile) if pidfile else None
    stopping = []
    hangup = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    signal.signal(signal.SIGHUP, lambda *_: hangup.append(True))

    def should_stop() -> bool:
        if hangup:
            hangup.clear()
            _reload(config_path, uploader)
        return bool(stopping)

    watch = None
    try:
        if claimed:
            claimed.claim()
        daemon.drop_privileges(user)
        with channel_lock(cfg):
            if not once:
                watch = Watch(uploader)
                watch.beat()
                watch.start()
            if detached:
                detached.ready()
            ok = uploader.run(once, should_stop=should_stop)
    except (UploaderBusy, daemon.DaemonError) as exc:
        logging.getLogger("uploader").error("cannot start: %s", exc)
        raise click.ClickException(str(exc)) from None
    except SpoolForbidden as exc:
        logging.getLogger("uploader").error("cannot start: %s", exc)
        raise NotPermitted(str(exc)) from None
    finally:
        if watch is not None:
            watch.stop()
        if claimed:
            claimed.release()
    if once and not ok:
        sys.exit(1)


# the uploader's folders and lock are taken from these at start
RESTART_ONLY = ("spooldir", "channel")


def _reload(config_path: str | None, uploader: Uploader) -> None:
    """SIGHUP: re-read the file; login, server, key, maxper... apply from the next round."""
    log = logging.getLogger("uploader")
    try:
        cfg = configuration.load(config_path)
        if cfg.upload:
            cfg.require_upload_settings()
    except configuration.ConfigError as exc:
        log.error("SIGHUP: configuration not reloaded: %s", exc)
        return
    for name in RESTART_ONLY:
        if getattr(cfg, name) != getattr(uploader.config, name):
            log.warning("SIGHUP: %s changed; it takes effect at the next restart", name)
            cfg = cfg.with_overrides(**{name: getattr(uploader.config, name)})
    uploader.reconfigure(cfg)
    log.info("SIGHUP: configuration re-read; next round now")


@click.command()
@config_option
@click.option("--type", "kind", type=click.Choice(keys.KEY_TYPES), default="ed25519", show_default=True)
@click.option("--bits", type=int, default=keys.DEFAULT_RSA_BITS, show_default=True, help="RSA key size")
def gen_key_main(config_path: str | None, kind: str, bits: int) -> None:
    """Make the upload key pair at `uploadkey` and show the public half."""
    cfg = load_config(config_path)
    try:
        # the uploader runs as the service user and must be able to read it
        line = keys.generate(cfg.uploadkey, kind, bits, owner=daemon.service_owner())
    except (keys.KeyExists, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Wrote the private key to {cfg.uploadkey} (mode 0600) and the public key to {cfg.uploadkey}.pub:")
    click.echo("")
    click.echo(line.rstrip("\n"))
    click.echo("")
    click.echo("Send this public key line to SIE with your sensor's login name; once it is registered,")
    click.echo(f"put the collector's host key in {cfg.knownhosts} and start the uploader.")
