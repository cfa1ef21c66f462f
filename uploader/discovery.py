"""Where the collector is: `submitserver`, or the SRV records it names.

As the reference package's wrapsrv does: a `submitserver` with a port is
used as it is; a name without one is first looked up as an SRV domain
(`_rsync._tcp.<name>` for rsync, `_sftp-ssh._tcp.<name>` for SFTP) and
its targets are tried in RFC 2782 order, each with its own port; a name
with no SRV records (or an address) is the collector itself, on 49222.
Lookups use the system's resolver (/etc/resolv.conf).

An SRV answer is not trusted further than the configuration is: a target
whose name is not host-name syntax (an option such as `-oProxyCommand=...`,
spaces, control bytes) or whose port is 0 is skipped with a log line, and
at most MAX_TARGETS are tried per round (each may take CONNECT_TIMEOUT).
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Sequence

import dns.exception
import dns.resolver

from sensor.service.config import is_host_name

UPLOAD_PORT = 49222
SRV_PREFIX = {"rsync": "_rsync._tcp", "sftp": "_sftp-ssh._tcp"}
LOOKUP_SECONDS = 10.0
MAX_TARGETS = 16  # tried per round, in RFC 2782 order
MAX_SAID = 16  # skipped targets named one by one per round; the rest counted

log = logging.getLogger("uploader")


class Target:
    """One (host, port) to try, as given or as an SRV record named it."""

    def __init__(self, host: str, port: int, via: str | None = None) -> None:
        self.host, self.port, self.via = host, port, via

    def __repr__(self) -> str:
        return f"Target({self.host!r}, {self.port}, via={self.via!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Target) and (self.host, self.port) == (other.host, other.port)


def rfc2782_order(
    records: Sequence[tuple[int, int, int, str]], rng: random.Random | None = None, limit: int | None = None
) -> list:
    """(priority, weight, port, target) records in the order to try them
    (the first `limit` of that order: picking is quadratic in the group).

    Lowest priority first; within a priority, a weighted random order
    (RFC 2782's selection: running sums, a random number between 0 and the
    total, the first record whose sum reaches it), zero weights first in
    the list so they keep a small chance.
    """
    rng = rng or random.Random()
    limit = len(records) if limit is None else limit
    ordered: list = []
    for priority in sorted({r[0] for r in records}):
        group = sorted((r for r in records if r[0] == priority), key=lambda r: r[1] != 0)
        while group and len(ordered) < limit:
            total = sum(r[1] for r in group)
            pick = rng.randint(0, total)
            running = 0
            for index, record in enumerate(group):
                running += record[1]
                if running >= pick:
                    ordered.append(group.pop(index))
                    break
    return ordered


def targets(host: str, port: int | None, method: str) -> list[Target]:
    """The collectors to try, in order."""
    if port is not None:
        return [Target(host, port)]
    try:
        ipaddress.ip_address(host)
        return [Target(host, UPLOAD_PORT)]
    except ValueError:
        pass
    domain = f"{SRV_PREFIX[method]}.{host.rstrip('.')}."
    try:
        answer = dns.resolver.resolve(domain, "SRV", lifetime=LOOKUP_SECONDS)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return [Target(host, UPLOAD_PORT)]
    except dns.exception.DNSException as exc:
        log.warning("SRV lookup of %s failed (%s); trying %s:%d", domain, exc or type(exc).__name__, host, UPLOAD_PORT)
        return [Target(host, UPLOAD_PORT)]
    records = [(r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True)) for r in answer]
    records = [record for record in records if record[3] not in ("", ".")]
    if not records:
        log.warning("%s says the service is not available here (target '.')", domain)
        return []
    usable = _usable(records, domain)
    if len(usable) > MAX_TARGETS:
        log.warning("%s names %d collectors; trying the first %d", domain, len(usable), MAX_TARGETS)
    return [Target(t, p, via=domain) for _, _, p, t in rfc2782_order(usable, limit=MAX_TARGETS)]


def _usable(records: list[tuple[int, int, int, str]], domain: str) -> list[tuple[int, int, int, str]]:
    """The records whose target may be handed to ssh or rsync; the others are named in the log."""
    usable, skipped = [], 0
    for record in records:
        _, _, port, target = record
        if is_host_name(target) and port != 0:
            usable.append(record)
            continue
        skipped += 1
        if skipped <= MAX_SAID:
            why = "port 0" if is_host_name(target) else "not a host name"
            log.warning("%s: skipped target %r port %d (%s)", domain, target[:100], port, why)
    if skipped > MAX_SAID:
        log.warning("%s: %d more targets skipped (not host names, or port 0)", domain, skipped - MAX_SAID)
    if not usable:
        log.warning("%s names no collector that can be tried", domain)
    return usable
