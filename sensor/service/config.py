"""Reading /etc/default/sie-dns-sensor without executing it (sensor.service.shellvars).

The file is shell-style `NAME="value"` lines because operators and the init
scripts already treat it that way; here it is parsed, never run. Every
variable has one declared kind and default below; a value that does not
fit its kind stops the start with the variable's name and where it came
from (file and line, or the environment, which overrides the file).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from sensor.records.limits import QUERY_TIMEOUT, STATE_TABLE_MAX
from sensor.records.wire import IPNetwork
from sensor.service import shellvars
from sensor.service.logs import syslog_priority
from sensor.service.shellvars import ConfigError, Variable
from sensor.spool import spooldir

DEFAULT_CONFIG_PATH = "/etc/default/sie-dns-sensor"


# ------------------------------------------------------------ value kinds
def _positive_int(text: str) -> int:
    if not re.fullmatch(r"-?\d+", text):
        raise ValueError(f"{text!r} is not a whole number")
    value = int(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be greater than 0")
    return value


def _boolean(text: str) -> bool:
    low = text.lower()
    if low in ("yes", "true", "1", "on"):
        return True
    if low in ("no", "false", "0", "off", ""):
        return False
    raise ValueError(f"{text!r} is not yes/no, true/false or 1/0")


def _optional_bit(text: str) -> int | None:
    if text == "":
        return None
    if text in ("0", "1"):
        return int(text)
    raise ValueError(f"{text!r} must be 0, 1 or empty")


def _addresses(text: str) -> tuple[IPNetwork, ...]:
    nets = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an address or prefix ({exc})") from None
    return tuple(nets)


def _qnames(text: str) -> tuple[bytes, ...]:
    """Colon-separated names, kept as lower-case wire format for matching."""
    from sensor.records.dns import text_to_wire  # local: dns.py is the hot path's module

    names = []
    for item in (part.strip() for part in text.split(":")):
        if not item:
            continue
        try:
            names.append(text_to_wire(item).lower())
        except ValueError as exc:
            raise ValueError(f"{item!r} is not a domain name ({exc})") from None
    return tuple(names)


def _name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise ValueError(f"{text!r} must be letters, digits, '.', '_' or '-'")
    return text


def _interface(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:@-]+\+?", text):
        raise ValueError(f"{text!r} is not an interface name")
    return text


def _path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError(f"{text!r} must be an absolute path")
    return text


# What ssh would split (whitespace: UserKnownHostsFile is a list of files),
# expand (% tokens in IdentityFile and UserKnownHostsFile) or rsync's -e
# parser would read as quoting; control bytes have no business in a path.
_NOT_FOR_SSH = re.compile(r"[\s\x00-\x1f\x7f%'\"\\]")


def _ssh_path(text: str) -> str:
    """A path that reaches ssh's command line (-i, UserKnownHostsFile):
    absolute (so it cannot start with '-') and taken by ssh as it is."""
    _path(text)
    bad = _NOT_FOR_SSH.search(text)
    if bad:
        raise ValueError(
            f"{text!r} contains {bad.group()!r}: ssh would not read it as one path "
            "(no whitespace, control characters, quotes, backslashes or '%')"
        )
    return text


def _login(text: str) -> str:
    """The user name at the collector, which ends up in `login@host:dir`:
    a '/', '@' or ':' would change where rsync sends the files (a '/' makes
    the destination a local path), a leading '-' would be read as an option."""
    if text and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}", text):
        raise ValueError(
            f"{text!r} is not a user name (letters, digits, '_', '.' and '-', at most 32, "
            "not starting with '-'; no '/', '@', ':' or spaces)"
        )
    return text


_LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}")


def is_host_name(text: str) -> bool:
    """Host-name syntax: dot-separated labels of letters, digits, '_' and
    '-' (not first), at most 253 characters, one final dot allowed. What the
    uploader hands to ssh or rsync as a host: the checks on `submitserver`
    and on SRV targets."""
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _server(text: str) -> tuple[str, int | None] | None:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 address.

    The port is None when not given: the uploader then looks the name up
    as an SRV domain before falling back to the name itself on 49222.
    """
    if text == "":
        return None
    match = re.fullmatch(r"\[([^]]*)\](?::(\d+))?", text)
    if match:
        host, port = match.group(1), match.group(2)
        valid = _is_address(host)
    elif text.count(":") == 1:
        host, port = text.split(":")
        valid = _is_address(host) or is_host_name(host)
    else:  # a name, or an IPv6 address without a port
        host, port = text, None
        valid = _is_address(host) or is_host_name(host)
    if not valid:
        raise ValueError(f"{text!r} is not host, host:port or [IPv6]:port (host: a host name or an address)")
    if port is None:
        return host, None
    number = int(port) if port.isdigit() else -1
    if not 0 < number < 65536:
        raise ValueError(f"{text!r} has a bad port")
    return host, number



def _choice(*allowed: str) -> Callable[[str], str]:
    """A value that must be one of a few words (case-insensitive)."""

    def parse(text: str) -> str:
        if text.lower() not in allowed:
            raise ValueError(f"{text!r} must be one of: {', '.join(allowed)}")
        return text.lower()

    return parse


def _whole_number_between(low: int, high: int) -> Callable[[str], int]:
    """A whole number from `low` to `high` (a level, where every value between means something)."""

    def parse(text: str) -> int:
        if not re.fullmatch(r"-?\d+", text) or not low <= int(text) <= high:
            raise ValueError(f"{text!r} must be a whole number from {low} to {high}")
        return int(text)

    return parse


def _optional_u32(text: str) -> int | None:
    """An NMSG id: unset, decimal, or 0x-prefixed hex, fitting 32 bits."""
    if text == "":
        return None
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise ValueError(f"{text!r} is not a number (decimal or 0x-prefixed hex)") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{text!r} does not fit in 32 bits")
    return value


def dnstap_endpoint(text: str) -> tuple[str, str | tuple[str, int]] | None:
    """`unix:/PATH` -> ("unix", path); `tcp:HOST:PORT` (`[v6]` in brackets)
    -> ("tcp", (host, port)); empty -> None. The one reading of the syntax,
    for the configuration check and for the listener."""
    if text == "":
        return None
    if text.startswith("unix:/"):
        return "unix", text[len("unix:") :]
    match = re.fullmatch(r"tcp:(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9_.-]+)):(\d+)", text)
    if match and 0 < int(match.group(3)) < 65536:
        return "tcp", (match.group(1) or match.group(2), int(match.group(3)))
    raise ValueError(f"{text!r} is not unix:/PATH or tcp:HOST:PORT")


def _dnstap_socket(text: str) -> str:
    dnstap_endpoint(text)
    return text


VARIABLES: dict[str, Variable] = {
    "spooldir": Variable("spooldir", _path, spooldir.DEFAULT_ROOT),
    "uploadkey": Variable("uploadkey", _ssh_path, f"{spooldir.DEFAULT_ROOT}/{spooldir.KEYS}/{spooldir.UPLOAD_KEY}"),
    "knownhosts": Variable("knownhosts", _ssh_path, f"{spooldir.DEFAULT_ROOT}/{spooldir.KEYS}/{spooldir.KNOWN_HOSTS}"),
    "login": Variable("login", _login, ""),
    "submitserver": Variable("submitserver", _server, ""),
    "interval": Variable("interval", _positive_int, "60"),
    "maxper": Variable("maxper", _positive_int, "16"),
    "channel": Variable("channel", _name, "ch202"),
    "interface": Variable("interface", _interface, "eth0"),
    "DNSQR_RES_ADDRS": Variable("res_addrs", _addresses, ""),
    "DNSQR_AUTH_ADDRS": Variable("auth_addrs", _addresses, ""),
    "DNSQR_ZERO_RESOLVER_ADDRESS": Variable("zero_resolver_address", _boolean, "0"),
    "DNSQR_STATE_TABLE_MAX": Variable("state_table_max", _positive_int, str(STATE_TABLE_MAX)),
    "DNSQR_QUERY_TIMEOUT": Variable("query_timeout", _positive_int, str(QUERY_TIMEOUT)),
    "DNSQR_CAPTURE_RD": Variable("capture_rd", _optional_bit, ""),
    "DNSQR_CAPTURE_QR": Variable("capture_qr", _optional_bit, ""),
    "DNSQR_FILTER_QNAMES_INCLUDE": Variable("qnames_include", _qnames, ""),
    "DNSQR_FILTER_QNAMES_EXCLUDE": Variable("qnames_exclude", _qnames, ""),
    "archive": Variable("archive", _boolean, "no"),
    "upload": Variable("upload", _boolean, "yes"),
    "syslog_priority": Variable("syslog_priority", syslog_priority, "local5.info"),
    "max_spool_size_kbytes": Variable("max_spool_size_kbytes", _positive_int, "524288"),
    "memory_ulimit_kbytes": Variable("memory_ulimit_kbytes", _positive_int, "524288"),
    "spool_format": Variable("spool_format", _choice("nmsg", "cbor"), "nmsg"),
    "nmsg_compress": Variable("nmsg_compress", _boolean, "yes"),
    # libdeflate's levels; the default is nmsg.COMPRESSION_LEVEL (not imported: the uploader reads this module)
    "nmsg_compress_level": Variable("nmsg_compress_level", _whole_number_between(1, 12), "6"),
    "nmsg_source": Variable("nmsg_source", _optional_u32, ""),
    "nmsg_operator": Variable("nmsg_operator", _optional_u32, ""),
    "nmsg_group": Variable("nmsg_group", _optional_u32, ""),
    "upload_method": Variable("upload_method", _choice("rsync", "sftp"), "rsync"),
    "dnstap_socket": Variable("dnstap_socket", _dnstap_socket, ""),
    "capture_workers": Variable("capture_workers", _positive_int, "1"),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """The effective settings: defaults, then the file, then the environment."""

    spooldir: str
    uploadkey: str
    knownhosts: str
    login: str
    submitserver: tuple[str, int | None] | None
    interval: int
    maxper: int
    channel: str
    interface: str
    res_addrs: tuple[IPNetwork, ...]
    auth_addrs: tuple[IPNetwork, ...]
    zero_resolver_address: bool
    state_table_max: int
    query_timeout: int
    capture_rd: int | None
    capture_qr: int | None
    qnames_include: tuple[bytes, ...]
    qnames_exclude: tuple[bytes, ...]
    archive: bool
    upload: bool
    syslog_priority: str
    max_spool_size_kbytes: int
    memory_ulimit_kbytes: int
    spool_format: str
    nmsg_compress: bool
    nmsg_compress_level: int
    nmsg_source: int | None
    nmsg_operator: int | None
    nmsg_group: int | None
    upload_method: str
    dnstap_socket: str
    capture_workers: int
    # variable name -> where its value came from ("file:line", "environment")
    origins: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def promiscuous(self) -> bool:
        """A trailing '+' on the interface asks for promiscuous mode."""
        return self.interface.endswith("+")

    @property
    def device(self) -> str:
        return self.interface.rstrip("+")

    def require_capture_addresses(self) -> None:
        """The capture filter is built from these; without them it would
        record end users' queries, which the sensor must never do."""
        if not self.res_addrs and not self.auth_addrs:
            raise ConfigError(
                "DNSQR_RES_ADDRS or DNSQR_AUTH_ADDRS must be set (the resolver's or the authority's addresses)"
            )

    def require_upload_settings(self) -> None:
        """The uploader cannot reach the collector without these."""
        for name, value in (("login", self.login), ("submitserver", self.submitserver)):
            if not value:
                raise ConfigError(f"{name} must be set when upload is enabled")

    def require_upload_key(self) -> None:
        """The uploader authenticates with it: without it, every upload fails."""
        if not os.path.exists(self.uploadkey):
            raise ConfigError(
                f'upload key {self.uploadkey} is missing: run sie-gen-key first (or set upload="no")'
            )

    def with_overrides(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def as_text_lines(self) -> list[str]:
        """Effective settings as `NAME="value"` lines, in declaration order."""
        lines = []
        for name, var in VARIABLES.items():
            value = getattr(self, var.attr)
            lines.append(f'{name}="{_render(value)}"  # {self.origins.get(name, "default")}')
        return lines


def variable_name(attr: str) -> str:
    """The name an operator writes in the file for a Config attribute."""
    for name, var in VARIABLES.items():
        if var.attr == attr:
            return name
    raise KeyError(attr)


def _render(value: Any) -> str:
    from sensor.records.dns import wire_to_text

    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return ""
    if isinstance(value, tuple) and value and isinstance(value[0], bytes):
        return ":".join(wire_to_text(v) for v in value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        host, port = value
        if port is None:
            return host
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def parse_lines(text: str, source: str) -> dict[str, tuple[str, str]]:
    """Assignments of the sensor's variables in a shell-style file (shellvars)."""
    return shellvars.parse_lines(text, source, VARIABLES)


def load(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Defaults, overridden by the file at `path`, overridden by `environ`.

    A missing file at the default path is not an error (every variable has
    a default); a missing file that was named explicitly is.
    """
    return build(shellvars.read_values(path, DEFAULT_CONFIG_PATH, VARIABLES, environ))


def build(values: Mapping[str, tuple[str, str]]) -> Config:
    """Parse each variable's text into its kind, naming it on failure."""
    settings, origins = shellvars.parse_values(values, VARIABLES)
    return Config(origins=origins, **settings)


def defaults() -> Config:
    """Every variable at its default: the base for tests and replay."""
    return build({})
