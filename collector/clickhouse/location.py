"""Where the ClickHouse store is: the `store` setting's `clickhouse://` form.

    clickhouse://[USER[:PASSWORD]@]HOST:PORT[,HOST:PORT...]/DATABASE[?cluster=NAME[&replication=PATH]]

HOST:PORT are native-protocol ports (9000 by default on a server); the
first that answers is used, the others are for failover. `cluster` names
a cluster of the servers' `remote_servers`: the data is then sharded over
it (a `Distributed` table reads it). `replication` asks for the
`Replicated*` engines, PATH being the table's path in ZooKeeper (it should
hold the server's `{shard}` macro; the replica name is the `{replica}`
macro). Parsing needs no client library, so `check-config` reads it.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

SCHEME = "clickhouse://"
DEFAULT_PORT = 9000
MASK = "***"
_PLAIN_USER = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # a user name shown beside the mask; any other, masked too
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_HOST = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([0-9A-Za-z_.-]+))(?::(\d{1,5}))?")


@dataclass(frozen=True)
class Location:
    """The parsed setting."""

    hosts: tuple[tuple[str, int], ...]
    database: str
    cluster: str = ""
    replication: str = ""
    user: str = "default"
    password: str = ""

    def text(self) -> str:
        """The setting with its password as *** (for logs and status)."""
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.hosts)
        query = urllib.parse.urlencode({k: v for k, v in (("cluster", self.cluster),
                                                          ("replication", self.replication)) if v})
        user = urllib.parse.quote(self.user, safe="")
        who = f"{user}:{MASK}@" if self.password else ("" if self.user == "default" else f"{user}@")
        return f"{SCHEME}{who}{hosts}/{self.database}" + (f"?{query}" if query else "")


def masked(text: str) -> str:
    """A store setting as written, its password (if any) as ***: what check-config and errors print.

    By position, not by grammar, so that no mistake in the setting shows the password: the
    credentials are what lies before the last @, after `://` (else after the scheme's colon);
    with a colon among them, all but a plain user name before it become ***. (An @ in a
    replication path, with no credentials, masks too much: never too little.)"""
    head, at, tail = text.rpartition("@")
    if not at:
        return text
    scheme_end = head.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else head.find(":") + 1
    user, colon, _ = head[start:].partition(":")
    if not colon:
        return text
    shown = f"{user}:" if _PLAIN_USER.fullmatch(user) else ""
    return f"{head[:start]}{shown}{MASK}@{tail}"


def parse(text: str) -> Location:
    """The Location of a `clickhouse://` setting; ValueError saying what is wrong (the setting
    shown masked; a piece of it only when there is nothing to mask, since an unencoded ? or / in
    a password moves where the parser cuts, and the piece shown could be the password's)."""
    if not text.startswith(SCHEME):
        raise ValueError(f"{masked(text)!r} does not begin with {SCHEME}")

    def wrong(what: str, piece: str = "") -> ValueError:
        shown = f" ({piece!r})" if piece and masked(text) == text else ""
        return ValueError(f"{masked(text)!r}: {what}{shown}")

    rest = text[len(SCHEME):]
    rest, _, query = rest.partition("?")
    credentials, at, rest = rest.rpartition("@")
    hosts_text, slash, database = rest.partition("/")
    if not slash or not _NAME.fullmatch(database):
        raise wrong("names no database (clickhouse://HOST:PORT/DATABASE, a name of letters, digits and _)")
    hosts = []
    for part in hosts_text.split(","):
        host = _host(part)
        if isinstance(host, str):
            raise wrong(host, part)
        hosts.append(host)
    options = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=False)
    unknown = set(options) - {"cluster", "replication"}
    if unknown:
        raise wrong("unknown parameter (cluster, replication)", sorted(unknown)[0])
    cluster = options.get("cluster", [""])[-1]
    replication = options.get("replication", [""])[-1]
    if cluster and not _NAME.fullmatch(cluster):
        raise wrong("the cluster is not a name of letters, digits and _", cluster)
    if replication and (not cluster or "'" in replication or "\\" in replication):
        raise wrong("replication needs a cluster, and a ZooKeeper path without quotes")
    user, _, password = urllib.parse.unquote(credentials).partition(":") if at else ("default", "", "")
    return Location(tuple(hosts), database, cluster, replication, user or "default", password)


def _host(text: str) -> tuple[str, int] | str:
    """(host, port), or what is wrong with it."""
    match = _HOST.fullmatch(text)
    if not match:
        return "a host is not HOST:PORT ([ADDRESS]:PORT for IPv6)"
    port = int(match.group(3) or DEFAULT_PORT)
    if not 0 < port <= 65535:
        return "a port is out of range"
    return match.group(1) or match.group(2), port
