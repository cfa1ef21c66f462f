"""`sie-upload` and `sie-gen-key`."""

from __future__ import annotations

import signal
import sys

import click

from sensor import config as configuration
from sensor import daemon, logs
from sensor.options import config_option, load_config

from . import keys
from .upload import Uploader, UploaderBusy, channel_lock


@click.command()
@config_option
@click.option("--once", is_flag=True, help="one round over waiting/, then exit (status 1 if anything failed)")
@click.option("--daemon", "daemon_mode", is_flag=True, help="detach into the background (init scripts)")
@click.option("--pidfile", type=click.Path(dir_okay=False), help="write the process id here")
@click.option("--user", default=daemon.SERVICE_USER, show_default=True,
              help="as root: run as this user (if it exists)")
def upload_main(config_path: str | None, once: bool, daemon_mode: bool, pidfile: str | None, user: str) -> None:
    """Ship finished spool files to the collector over SFTP."""
    cfg = load_config(config_path)
    if not cfg.upload:
        click.echo('upload="no" in the configuration: nothing to do', err=True)
        return
    try:
        uploader = Uploader(cfg)
    except configuration.ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None
    logs.setup(cfg.syslog_priority, foreground=not daemon_mode and (daemon.foreground() or once))
    if daemon_mode:
        daemon.detach()
    claimed = daemon.PidFile(pidfile) if pidfile else None
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    try:
        if claimed:
            claimed.claim()
        daemon.drop_privileges(user)
        with channel_lock(cfg):
            ok = uploader.run(once, should_stop=lambda: bool(stopping))
    except (UploaderBusy, daemon.DaemonError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if claimed:
            claimed.release()
    if once and not ok:
        sys.exit(1)


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
