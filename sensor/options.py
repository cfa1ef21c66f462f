"""Command-line pieces shared by sie-dns-sensor, sie-upload and sie-gen-key."""

from __future__ import annotations

import click

from . import config as configuration

config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"configuration file (default {configuration.DEFAULT_CONFIG_PATH})",
)


EX_CONFIG = 78  # sysexits.h; the systemd units do not restart on it (RestartPreventExitStatus)


class ConfigProblem(click.ClickException):
    """The configuration stops the start: exit EX_CONFIG, so that systemd's
    Restart=on-failure does not retry every few seconds on a file that
    only an operator can fix (an unconfigured fresh install, a typo)."""

    exit_code = EX_CONFIG


def load_config(config_path: str | None) -> configuration.Config:
    """The configuration, or a clean exit that names the variable and line."""
    try:
        return configuration.load(config_path)
    except configuration.ConfigError as exc:
        raise ConfigProblem(f"configuration: {exc}") from None
