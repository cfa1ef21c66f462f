"""Reading /etc/default/sie-dns-collector (parsed, never executed).

The same file conventions as the sensor's (`sensor.service.shellvars`): shell-style
lines, the environment overrides the file, a bad value names the variable
and its line.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

from sensor.service.logs import syslog_priority
from sensor.service.shellvars import ConfigError, Variable, parse_values, read_values

from .dedup import MAX_ENTRIES

DEFAULT_CONFIG_PATH = "/etc/default/sie-dns-collector"
SERVICE_USER = "sie-dns-collector"
SUBMIT_PORT = 49222  # the port the sensors' uploaders use by default

__all__ = ["DEFAULT_CONFIG_PATH", "Config", "ConfigError", "load"]


def _path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError(f"{text!r} must be an absolute path")
    if re.search(r"[\s\x00-\x1f]", text):
        raise ValueError(f"{text!r} has a space or a control character")
    return text


def _optional_path(text: str) -> str:
    return _path(text) if text else ""


def _whole(low: int):
    def parse(text: str) -> int:
        if not re.fullmatch(r"\d+", text):
            raise ValueError(f"{text!r} is not a whole number")
        if int(text) < low:
            raise ValueError(f"must be at least {low}")
        return int(text)

    return parse


def host_port(text: str) -> tuple[str, int]:
    """(host, port) of `HOST:PORT` (`[v6]:PORT`); port 0: any free one (tests)."""
    match = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]|([0-9A-Za-z_.-]+)):(\d{1,5})", text)
    if not match or int(match.group(3)) > 65535:
        raise ValueError(f"{text!r} is not HOST:PORT ([ADDRESS]:PORT for IPv6)")
    return match.group(1) or match.group(2), int(match.group(3))


def _listen(text: str) -> str:
    host_port(text)
    return text


CLICKHOUSE_SCHEME = "clickhouse://"  # a `store` beginning so is on ClickHouse


def _store(text: str) -> str:
    from .clickhouse.location import masked, parse  # parsing only: no client library

    if text.startswith(CLICKHOUSE_SCHEME):
        parse(text)
    elif text and not text.startswith("sqlite:/"):
        raise ValueError(f"{masked(text)!r} is not sqlite:/PATH, clickhouse://HOST:PORT[,HOST:PORT...]/DATABASE"
                         "[?cluster=NAME] (or empty for the default file)")
    return text


VARIABLES: dict[str, Variable] = {
    "collector_dir": Variable("collector_dir", _path, "/var/lib/sie-dns-collector"),
    "store": Variable("store", _store, ""),
    "root_hints": Variable("root_hints", _path, "/usr/share/dns/root.hints"),
    "authorized_keys": Variable("authorized_keys", _optional_path, ""),
    "keep_days": Variable("keep_days", _whole(0), "0"),
    "retention_days": Variable("retention_days", _whole(0), "0"),
    "dedup_window": Variable("dedup_window", _whole(1), "60"),
    "dedup_max_entries": Variable("dedup_max_entries", _whole(1000), str(MAX_ENTRIES)),
    "memory_ulimit_kbytes": Variable("memory_ulimit_kbytes", _whole(65536), "1048576"),
    "syslog_priority": Variable("syslog_priority", syslog_priority, "local5.info"),
    "api_listen": Variable("api_listen", _listen, "127.0.0.1:8053"),
    "api_keys": Variable("api_keys", _optional_path, ""),
    "api_limit": Variable("api_limit", _whole(1), "10000"),
    "api_results_max": Variable("api_results_max", _whole(1), "1000000"),
    "api_offset_max": Variable("api_offset_max", _whole(0), "1000000"),
    "api_burst_size": Variable("api_burst_size", _whole(1), "600"),
    "api_burst_window": Variable("api_burst_window", _whole(1), "60"),
    "api_key_lookups": Variable("api_key_lookups", _whole(1), "8"),
    "api_auth_failures": Variable("api_auth_failures", _whole(1), "10"),
    "api_timeout": Variable("api_timeout", _whole(1), "300"),
    "api_send_timeout": Variable("api_send_timeout", _whole(1), "30"),
    "api_max_connections": Variable("api_max_connections", _whole(2), "500"),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """The collector's effective settings."""

    collector_dir: str
    store: str
    root_hints: str
    authorized_keys: str
    keep_days: int
    retention_days: int
    dedup_window: int
    dedup_max_entries: int
    memory_ulimit_kbytes: int
    syslog_priority: str
    api_listen: str
    api_keys: str
    api_limit: int
    api_results_max: int
    api_offset_max: int
    api_burst_size: int
    api_burst_window: int
    api_key_lookups: int
    api_auth_failures: int
    api_timeout: int
    api_send_timeout: int
    api_max_connections: int
    origins: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def on_clickhouse(self) -> bool:
        """Whether `store` names a ClickHouse store (else the embedded file, `store_path`)."""
        return self.store.startswith(CLICKHOUSE_SCHEME)

    @property
    def store_path(self) -> str:
        """The embedded store's file."""
        if self.store.startswith("sqlite:"):
            return self.store[len("sqlite:"):]
        return os.path.join(self.collector_dir, "pdns.sqlite")

    @property
    def authorized_keys_path(self) -> str:
        """The collector user's authorized_keys (its home is collector_dir)."""
        return self.authorized_keys or os.path.join(self.collector_dir, ".ssh", "authorized_keys")

    @property
    def api_keys_path(self) -> str:
        """The query server's API keys (hashed): `add-key` writes it."""
        return self.api_keys or os.path.join(self.collector_dir, "api-keys")

    def as_text_lines(self) -> list[str]:
        """What check-config prints (a terminal, a ticket): the store's password as ***."""
        from .clickhouse.location import masked

        return [f'{name}="{masked(value) if name == "store" else value}"  # {self.origins.get(name, "default")}'
                for name, value in ((name, getattr(self, var.attr)) for name, var in VARIABLES.items())]


def load(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Defaults, overridden by the file at `path`, overridden by `environ`."""
    settings, origins = parse_values(read_values(path, DEFAULT_CONFIG_PATH, VARIABLES, environ), VARIABLES)
    return Config(origins=origins, **settings)
