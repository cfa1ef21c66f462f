"""Command-line pieces shared by sie-dns-sensor, sie-upload and sie-gen-key."""

from __future__ import annotations

import os
import pwd

import click

from sensor.service import config as configuration

config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"configuration file (default {configuration.DEFAULT_CONFIG_PATH})",
)


EX_NOPERM = 77  # sysexits.h: this user may not do it (a spool or key another user owns)
EX_CONFIG = 78  # sysexits.h; the systemd units do not restart on it (RestartPreventExitStatus)


class ConfigProblem(click.ClickException):
    """The configuration stops the start: exit EX_CONFIG, so that systemd's
    Restart=on-failure does not retry every few seconds on a file that
    only an operator can fix (an unconfigured fresh install, a typo)."""

    exit_code = EX_CONFIG


class NotPermitted(click.ClickException):
    """A file the command needs belongs to another user: one line naming
    the path and who we are, exit EX_NOPERM, never a PermissionError's
    traceback (a monitoring user running `status`, a spool left root's)."""

    exit_code = EX_NOPERM


def user_name() -> str:
    """Who this process is, as the messages about permissions name it."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def as_this_user(doing: str, exc: OSError) -> str:
    """"cannot <doing> as user X: PATH: Permission denied", from the OSError
    that said it (its path, without the errno str() adds)."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"cannot {doing} as user {user_name()}: {where}{exc.strerror or exc}"


def load_config(config_path: str | None) -> configuration.Config:
    """The configuration, or a clean exit that names the variable and line."""
    try:
        return configuration.load(config_path)
    except configuration.ConfigError as exc:
        raise ConfigProblem(f"configuration: {exc}") from None
