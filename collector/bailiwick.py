"""Bailiwick reconstruction: which zone, if any, may a server speak for.

A resolver believes a record from a server only for the zones it sent
the resolver to that server for; the database must do the same, or any
server could write any name into it (cache poisoning, junk, a misconfigured
authority answering for zones it does not serve). So, as in "ISC Passive
DNS Architecture" (Edmonds, 2012), each RRset of a response from server S
gets as its bailiwick the deepest zone that encloses its owner name and for
which S is a known name server; with none, it is dropped:

- `unknown_server`: S is known for no zone at all;
- `out_of_bailiwick`: S is known, but for no zone above this name.

Known name servers are learned only from RRsets already accepted: an NS
RRset of zone Z naming N, and an A or AAAA RRset of N with address a,
make a a server of Z. The root's servers come from the root hints. Each
RRset of a message is judged on what was known before the message, then
what it taught is learned, so the order of RRsets inside a message does
not matter. (The stricter rule, judging every RRset against the zone that
encloses the question only, would drop the glue and NS of every referral,
which are what the database most needs for following delegations.)

The knowledge itself lives behind `Directory` (in memory for tests, in
the store for the collector, so that it is committed with the data it was
learned from and survives a restart); this module only decides.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import Protocol

from .decompose import TYPE_A, TYPE_AAAA, TYPE_NS, name_end

UNKNOWN_SERVER = "unknown_server"
OUT_OF_BAILIWICK = "out_of_bailiwick"


class Directory(Protocol):
    """What is known of zones and their servers."""

    def zones_of(self, address: bytes) -> AbstractSet[bytes]:
        """Zones (wire, lower case) for which `address` is a known server
        (read before teaching the directory anything: it may be its own set)."""

    def learn_delegation(self, zone: bytes, server_name: bytes) -> None:
        """Zone `zone` has name server `server_name` (an accepted NS RRset)."""

    def learn_address(self, name: bytes, address: bytes) -> None:
        """Host `name` has `address` (an accepted A or AAAA RRset)."""


def ancestors(name: bytes) -> Iterable[bytes]:
    """The name, then each name above it, up to the root (wire form)."""
    pos = 0
    while True:
        yield name[pos:]
        if name[pos] == 0:
            return
        pos += name[pos] + 1


def judge(zones: AbstractSet[bytes], owner: bytes) -> bytes | str:
    """The bailiwick of an RRset owned by `owner` from a server known for
    `zones`, or the reason it is dropped."""
    if not zones:
        return UNKNOWN_SERVER
    for candidate in ancestors(owner):
        if candidate in zones:
            return candidate
    return OUT_OF_BAILIWICK


def learn(directory: Directory, owner: bytes, rrtype: int, rdatas: tuple[bytes, ...]) -> None:
    """Teach `directory` what an accepted RRset says about name servers."""
    if rrtype == TYPE_NS:
        for rdata in rdatas:
            directory.learn_delegation(owner, rdata[: name_end(rdata, 0)])
    elif rrtype in (TYPE_A, TYPE_AAAA):
        for rdata in rdatas:
            if len(rdata) == (4 if rrtype == TYPE_A else 16):
                directory.learn_address(owner, rdata)


class MemoryDirectory:
    """A Directory held in dicts: tests, and the statement of what the
    store's tables must answer."""

    def __init__(self) -> None:
        self.served: dict[bytes, set[bytes]] = {}  # name server name -> its zones
        self.addresses: dict[bytes, set[bytes]] = {}  # host name -> addresses
        self.zones: dict[bytes, set[bytes]] = {}  # address -> zones

    def zones_of(self, address: bytes) -> frozenset[bytes]:
        return frozenset(self.zones.get(address, ()))

    def learn_delegation(self, zone: bytes, server_name: bytes) -> None:
        self.served.setdefault(server_name, set()).add(zone)
        for address in self.addresses.get(server_name, ()):
            self.zones.setdefault(address, set()).add(zone)

    def learn_address(self, name: bytes, address: bytes) -> None:
        self.addresses.setdefault(name, set()).add(address)
        for zone in self.served.get(name, ()):
            self.zones.setdefault(address, set()).add(zone)
