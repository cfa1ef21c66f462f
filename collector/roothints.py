"""The root hints: where the bailiwick knowledge starts.

The root zone's servers are the one thing not learned from traffic: the
file a resolver primes from (Debian's dns-root-data ships it) names them.
An operator with a root of its own (a lab, an alternative root) names its
own file in `root_hints`.
"""

from __future__ import annotations

import ipaddress

import dns.exception
import dns.rdatatype
import dns.zone

from .bailiwick import Directory
from .names import ROOT

DEFAULT_ROOT_HINTS = "/usr/share/dns/root.hints"


class RootHintsError(ValueError):
    """The root hints file cannot be used; the text says why."""


def read(path: str) -> list[tuple[bytes, bytes]]:
    """[(server name, address)] of the root's NS and their A/AAAA records."""
    try:
        zone = dns.zone.from_file(path, origin=".", relativize=False, check_origin=False)
    except (OSError, dns.exception.DNSException) as exc:
        raise RootHintsError(f"{path}: {exc}") from None
    root = zone.get_rdataset(".", dns.rdatatype.NS)
    if root is None:
        raise RootHintsError(f"{path}: no NS records for the root")
    servers = []
    for ns in root:
        name = ns.target
        for rrtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            for address in zone.get_rdataset(name, rrtype) or ():
                packed = ipaddress.ip_address(address.address).packed
                servers.append((name.to_wire().lower(), packed))
    if not servers:
        raise RootHintsError(f"{path}: no address for any root server")
    return servers


def seed(directory: Directory, servers: list[tuple[bytes, bytes]]) -> None:
    """Make the root's servers known for the root zone."""
    for name, address in servers:
        directory.learn_delegation(ROOT, name)
        directory.learn_address(name, address)
