"""Resolutions that walk from the root: a DNS universe and a caching resolver, as a pcap.

The collector keeps an RRset only when the server that sent it is known to
serve a zone above its owner, learned from referrals it accepted before
(bailiwick reconstruction, seeded with the root hints). Traffic from
servers nobody referred to is all dropped at that stage, so a benchmark
of the whole ingest chain needs what a resolver really sends and gets:

- a universe: a root (3 servers), a few dozen TLDs (2 servers each, glue
  in the root's referral), tens of thousands of zones (2 servers each:
  their own `ns1/ns2.<zone>` with glue in the TLD's referral, on shared
  hosting addresses, or a hosting provider's servers, glueless when the
  provider's zone is under another TLD), a few CDN zones that `www` names
  point to by CNAME; names with A, AAAA, MX, TXT, NS, CNAME; NXDOMAIN and
  NODATA answers with the zone's SOA in authority; names under TLDs that
  do not exist (NXDOMAIN from the root);
- a caching resolver (192.0.2.53 / 2001:db8::53) on a simulated clock,
  answering clients whose questions favour popular zones (Zipf): a
  question it cannot answer from its cache walks down from the deepest
  delegation it holds (priming the root first), asks for the addresses of
  glueless name servers, follows a CNAME out of the zone, and caches
  every delegation, address and answer (negative ones too) for its TTL.

Every exchange of that resolver with an authority is a query packet and,
a few ms later, its response (Ethernet, IPv4 or 1 time in 4 IPv6, correct
checksums; RD clear, EDNS). Servers are in the documentation ranges only:
198.51.100.0/24 and 203.0.113.0/24 (IPv4 addresses shared by many zones,
as hosting providers share theirs) and 2001:db8::/32 (one per server). The
root hints file names the root's servers, so the collector starts from
what a resolver starts from. Deterministic for a seed.

    python -m bench.resolutions --responses 1000000 bench/out/resolutions.pcap
"""

from __future__ import annotations

import bisect
import heapq
import json
import random
import socket
import struct
import zlib
from collections import Counter
from dataclasses import asdict, dataclass

import click

from bench.traffic import ETH_V4, ETH_V6, RESOLVER4, RESOLVER6, WORDS, _ipv4_udp, _ipv6_udp
from sensor.records.dns import wire_to_text

A, NS, CNAME, SOA, MX, TXT, AAAA, OPT = 1, 2, 5, 6, 15, 16, 28, 41
NXDOMAIN = 3
_QR, _AA = 0x8000, 0x0400
_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
_OPT_RR = b"\x00" + struct.pack("!HHIH", OPT, 1232, 0, 0)  # EDNS, 1232-octet payload, as resolvers send
_MASK = (1 << 64) - 1

TLDS = (  # (name, weight): how many of the zones are under it
    ("com", 40), ("net", 8), ("org", 7), ("de", 5), ("uk", 4), ("io", 3), ("nl", 3), ("fr", 3), ("ru", 3),
    ("br", 2), ("jp", 2), ("it", 2), ("pl", 2), ("au", 2), ("ca", 2), ("es", 2), ("info", 2), ("eu", 2),
    ("ch", 1), ("se", 1), ("be", 1), ("at", 1), ("dk", 1), ("cz", 1), ("no", 1), ("fi", 1), ("pt", 1),
    ("ie", 1), ("nz", 1), ("in", 1), ("kr", 1), ("mx", 1), ("ar", 1), ("cl", 1), ("co", 1), ("biz", 1),
    ("us", 1), ("tv", 1), ("me", 1), ("xyz", 1),
)
PROVIDER_TLDS = ("com", "net", "org", "de", "io")
PROVIDERS = 60  # hosting providers whose two servers serve many zones
CDNS = 8
HOSTED = 0.45  # share of the zones on a provider's servers (the rest have ns1/ns2.<zone>)
SHARED_V4 = [bytes([198, 51, 100, n]) for n in range(100, 255)]  # the zones' own servers share these
LABELS = (  # (label, weight) of client questions inside a zone; "" is the apex, None a name that is not there
    ("www", 40), ("", 20), ("mail", 8), ("api", 6), ("cdn", 4), ("static", 4), ("login", 3), ("shop", 3),
    ("blog", 3), (None, 3),
)
OPTIONAL_LABELS = ("api", "cdn", "static", "login", "shop", "blog")
QTYPES = ((A, 55), (AAAA, 28), (MX, 6), (TXT, 6), (NS, 3), (SOA, 2))
JUNK_TLD = 0.015  # client questions for a TLD that does not exist (NXDOMAIN from the root)
CLIENT_RATE = 1500.0  # client questions a second: sets how fast the simulated clock runs
START = 1_790_000_000.0


def mix(*parts: int) -> int:
    """A 64-bit hash of integers (splitmix64 steps): per-name data that is
    the same whenever asked, without a table."""
    x = 0x9E3779B97F4A7C15
    for part in parts:
        x = (x ^ part) * 0xBF58476D1CE4E5B9 & _MASK
        x ^= x >> 31
        x = x * 0x94D049BB133111EB & _MASK
        x ^= x >> 29
    return x


def wire(*labels: str) -> bytes:
    """Wire form of the name made of `labels` (empty ones skipped), lower case."""
    return b"".join(bytes([len(label)]) + label.encode() for label in labels if label) + b"\x00"


def _v6(*groups: int) -> bytes:
    """2001:db8:<groups but the last>::<the last>."""
    return socket.inet_pton(socket.AF_INET6, "2001:db8:" + "".join(f"{g:x}:" for g in groups[:-1]) + f":{groups[-1]:x}")


# --------------------------------------------------------------------- the wire
def _put_name(out: bytearray, name: bytes, table: dict[bytes, int]) -> None:
    """Append `name`, pointing to an earlier copy of its longest known suffix."""
    pos = 0
    while name[pos]:
        suffix = name[pos:]
        pointer = table.get(suffix)
        if pointer is not None:
            out += (0xC000 | pointer).to_bytes(2, "big")
            return
        if len(out) < 0x3FFF:
            table[suffix] = len(out)
        end = pos + 1 + name[pos]
        out += name[pos:end]
        pos = end
    out.append(0)


def encode(flags: int, qname: bytes, qtype: int, sections: tuple[list, list, list]) -> bytes:
    """A DNS message (id 0, EDNS) with name compression. An RR is (owner,
    type, TTL, rdata); rdata is bytes, or (prefix, names, suffix) for the
    types whose data holds names (NS, CNAME, MX, SOA), compressed too."""
    answer, authority, additional = sections
    out = bytearray(_HEADER.pack(0, flags, 1, len(answer), len(authority), len(additional) + 1))
    table: dict[bytes, int] = {}
    _put_name(out, qname, table)
    out += struct.pack("!HH", qtype, 1)
    for rrs in sections:
        for owner, rrtype, ttl, rdata in rrs:
            _put_name(out, owner, table)
            out += _RR_FIXED.pack(rrtype, 1, ttl, 0)
            start = len(out)
            if type(rdata) is bytes:
                out += rdata
            else:
                prefix, names, suffix = rdata
                out += prefix
                for name in names:
                    _put_name(out, name, table)
                out += suffix
            out[start - 2 : start] = (len(out) - start).to_bytes(2, "big")
    out += _OPT_RR
    return bytes(out)


def query_wire(qname: bytes, qtype: int) -> bytes:
    """A resolver's query to an authority: RD clear, EDNS."""
    return _HEADER.pack(0, 0, 1, 0, 0, 1) + qname + struct.pack("!HH", qtype, 1) + _OPT_RR


# ----------------------------------------------------------------- the universe
class Host:
    """A name server: its name and its two addresses."""

    __slots__ = ("home", "name", "v4", "v6")

    def __init__(self, name: bytes, v4: bytes, v6: bytes) -> None:
        self.name, self.v4, self.v6 = name, v4, v6
        self.home: Zone | None = None  # the zone whose servers answer for this name

    def address_rrs(self, ttl: int) -> list:
        return [(self.name, A, ttl, self.v4), (self.name, AAAA, ttl, self.v6)]


class Zone:
    """A zone, its servers, and how its names answer (drawn from its own seed)."""

    __slots__ = ("aaaa", "answer_ttl", "cdn", "glued", "key", "labels", "name", "negative_ttl", "parent",
                 "servers", "ttl", "verbose", "www")

    def __init__(self, name: bytes, parent: Zone | None, servers: tuple[Host, ...], ttl: int, key: int,
                 rng: random.Random) -> None:
        self.name, self.parent, self.servers, self.ttl, self.key = name, parent, servers, ttl, key
        # the parent's referral carries a server's addresses only when its name is under the parent
        self.glued = parent is not None and all(host.name.endswith(parent.name) for host in servers)
        self.answer_ttl = rng.choice((60, 300, 300, 3600, 3600, 86400))
        self.negative_ttl = rng.choice((300, 900, 3600))
        self.aaaa = rng.random() < 0.5
        self.verbose = rng.random() < 0.5  # NS in authority of every answer, as BIND without minimal-responses
        self.labels = {"", "www", "mail"} | {label for label in OPTIONAL_LABELS if rng.random() < 0.7}
        roll = rng.random()
        self.www = "apex" if roll < 0.3 else "cdn" if roll < 0.5 else "a"
        self.cdn = rng.randrange(CDNS)

    def soa(self) -> tuple:
        rdata = (b"", (self.servers[0].name, b"\x0ahostmaster" + self.name),
                 struct.pack("!IIIII", 2026120101, 7200, 900, 1209600, self.negative_ttl))
        return (self.name, SOA, self.negative_ttl, rdata)

    def ns_rrs(self, ttl: int) -> list:
        return [(self.name, NS, ttl, (b"", (host.name,), b"")) for host in self.servers]

    def glue(self, ttl: int) -> list:
        return [rr for host in self.servers if host.name.endswith(self.name) for rr in host.address_rrs(ttl)]


class Universe:
    """The root, the TLDs, providers, CDNs and `zones` ordinary zones; an
    ordinary zone is made when first asked for, from its index."""

    def __init__(self, zones: int, seed: int) -> None:
        self.seed = seed
        self.count = zones
        rng = random.Random(seed)
        root_hosts = tuple(Host(wire(letter, "root-servers", "net"), bytes([198, 51, 100, n + 1]), _v6(0, 53, n + 1))
                           for n, letter in enumerate("abc"))
        self.root = Zone(b"\x00", None, root_hosts, 518400, 0, rng)
        self.root.negative_ttl = 86400
        self.tlds: dict[str, Zone] = {}
        for n, (label, _) in enumerate(TLDS):
            hosts = tuple(Host(wire(letter, "nic", label), bytes([198, 51, 100, 10 + 2 * n + i]), _v6(1, n, i + 1))
                          for i, letter in enumerate("ab"))
            self.tlds[label] = Zone(wire(label), self.root, hosts, 172800, 1 + n, rng)
            for host in hosts:
                host.home = self.tlds[label]
        self.providers = [self._service(f"{WORDS[p % len(WORDS)]}dns{p}", PROVIDER_TLDS[p % len(PROVIDER_TLDS)],
                                        2 * p + 1, 2, p) for p in range(PROVIDERS)]
        self.cdns = [self._service(f"cdn{c}-edge", "net", 2 * (PROVIDERS + c) + 1, 3, c) for c in range(CDNS)]
        self.tld_cumulative = list(_cumulative([w for _, w in TLDS]))
        self.zipf = list(_cumulative([1.0 / (rank + 1) ** 0.9 for rank in range(zones)]))
        self.made: dict[int, Zone] = {}

    def _service(self, label: str, tld: str, first_v4: int, net: int, index: int) -> Zone:
        """A provider's or a CDN's zone: two servers in it, addresses of their own."""
        name = wire(label, tld)
        hosts = tuple(Host(wire(f"ns{i + 1}", label, tld), bytes([203, 0, 113, first_v4 + i]), _v6(net, index, i + 1))
                      for i in range(2))
        zone = Zone(name, self.tlds[tld], hosts, 172800, mix(self.seed, net, index), random.Random(mix(net, index)))
        zone.answer_ttl, zone.aaaa = (60 if net == 3 else 3600), True
        for host in hosts:
            host.home = zone
        return zone

    def zone(self, index: int) -> Zone:
        made = self.made.get(index)
        if made is not None:
            return made
        key = mix(self.seed, 7, index)
        rng = random.Random(key)
        label = f"{rng.choice(WORDS)}{rng.choice(WORDS)}{index}"
        tld = TLDS[bisect.bisect_left(self.tld_cumulative, rng.random() * self.tld_cumulative[-1])][0]
        name = wire(label, tld)
        if rng.random() < HOSTED:
            servers = self.providers[rng.randrange(PROVIDERS)].servers
        else:
            first = rng.randrange(len(SHARED_V4))
            servers = tuple(Host(wire(f"ns{i + 1}", label, tld), SHARED_V4[(first + i) % len(SHARED_V4)],
                                 _v6(0x1000 + (index >> 16), index & 0xFFFF, i + 1)) for i in range(2))
        made = self.made[index] = Zone(name, self.tlds[tld], servers, rng.choice((3600, 86400, 172800)), key, rng)
        for host in servers:
            if host.home is None:
                host.home = made
        return made

    def pick_zone(self, rng: random.Random) -> Zone:
        return self.zone(bisect.bisect_left(self.zipf, rng.random() * self.zipf[-1]))

    def root_hints(self) -> str:
        lines = []
        for host in self.root.servers:
            lines.append(f". 3600000 NS {wire_to_text(host.name)}")
            lines.append(f"{wire_to_text(host.name)} 3600000 A {socket.inet_ntop(socket.AF_INET, host.v4)}")
            lines.append(f"{wire_to_text(host.name)} 3600000 AAAA {socket.inet_ntop(socket.AF_INET6, host.v6)}")
        return "\n".join(lines) + "\n"


def _cumulative(weights):
    total = 0.0
    for weight in weights:
        total += weight
        yield total


# --------------------------------------------------------------- what a zone says
def address_of(zone: Zone, name: bytes, rrtype: int) -> bytes:
    """The data of a name's A or AAAA record (documentation ranges)."""
    h = mix(zone.key, zlib.crc32(name), rrtype)
    if rrtype == A:
        return bytes(((192, 0, 2), (198, 51, 100), (203, 0, 113))[h % 3]) + bytes([1 + (h >> 8) % 254])
    return _v6(0x2000 + (h >> 16) % 0xE000, (h >> 32) & 0xFFFF, (h >> 48) & 0xFFFF)


def owned(zone: Zone, name: bytes, label: str, rrtype: int) -> list:
    """The RRset of type `rrtype` at `name` (a name the zone has, not a CNAME)."""
    ttl = zone.answer_ttl
    for host in zone.servers:
        if host.name == name:  # a name server's own name: its real addresses
            return [(name, rrtype, zone.ttl, host.v4 if rrtype == A else host.v6)] if rrtype in (A, AAAA) else []
    if rrtype == A:
        return [(name, A, ttl, address_of(zone, name + bytes([n]), A)) for n in range(1 + zone.key % 2)]
    if rrtype == AAAA:
        return [(name, AAAA, ttl, address_of(zone, name, AAAA))] if zone.aaaa or label == "mail" else []
    if label != "":
        return []
    if rrtype == MX:
        return [(name, MX, ttl, (b"\x00\x0a", (b"\x04mail" + zone.name,), b""))]
    if rrtype == TXT:
        spf = f"v=spf1 a mx ip4:203.0.113.{zone.key % 256} -all".encode()
        return [(name, TXT, ttl, bytes([len(spf)]) + spf)]
    if rrtype == NS:
        return zone.ns_rrs(zone.ttl)
    if rrtype == SOA:
        return [zone.soa()]
    return []


@dataclass
class Reply:
    """A zone's answer to one question, and what the resolver does next."""

    message: tuple[int, list, list, list]  # flags, answer, authority, additional
    ttl: int  # how long the resolver may keep it
    kind: str
    chase: tuple[Zone, bytes] | None = None  # a CNAME out of the zone: its target is resolved too


def answer(universe: Universe, zone: Zone, label: str | None, qname: bytes, qtype: int) -> Reply:
    """The authoritative response of `zone` for `qname` (`label` in it; None: no such name)."""
    flags = _QR | _AA
    if label is None:
        return Reply((flags | NXDOMAIN, [], [zone.soa()], []), zone.negative_ttl, "nxdomain")
    if label == "www" and zone.www != "a":
        if zone.www == "cdn":
            cdn = universe.cdns[zone.cdn]
            target = qname[4 : -len(zone.parent.name)] + b"\x04edge" + cdn.name  # www.shop1.de -> shop1.edge.<cdn>
            rrs = [(qname, CNAME, zone.answer_ttl, (b"", (target,), b""))]
            return Reply((flags, rrs, [], []), zone.answer_ttl, "cname_out", chase=(cdn, target))
        apex = owned(zone, zone.name, "", qtype)
        rrs = [(qname, CNAME, zone.answer_ttl, (b"", (zone.name,), b"")), *apex]
        return Reply((flags, rrs, [] if apex else [zone.soa()], []), zone.answer_ttl, "cname_in")
    rrs = owned(zone, qname, label, qtype)
    if not rrs:
        return Reply((flags, [], [zone.soa()], []), zone.negative_ttl, "nodata")
    authority, additional = [], []
    if qtype == NS:
        additional = zone.glue(zone.ttl)
    elif zone.verbose:
        authority, additional = zone.ns_rrs(zone.ttl), zone.glue(zone.ttl)
    return Reply((flags, rrs, authority, additional), min(rr[2] for rr in rrs), "answer")


def referral(child: Zone) -> tuple[int, list, list, list]:
    """The parent's response sending the resolver to `child`'s servers
    (their addresses as glue when their names are under the parent)."""
    glue = [rr for host in child.servers if host.name.endswith(child.parent.name)
            for rr in host.address_rrs(child.ttl)]
    return (_QR, [], child.ns_rrs(child.ttl), glue)


# ------------------------------------------------------------------ the resolver
# (sent, received, server Host, qname, qtype, key of the response or None, make: () -> (flags, *sections))
Exchange = tuple


class Resolver:
    """A caching resolver on a simulated clock: what it must ask, whom, and when.

    Each client question runs on its own clock (`clock`), which each
    exchange moves on by the server's round trip. What is learned is kept
    from the moment its response arrives: a question that needs something
    already asked for and not yet answered waits for that answer, as a
    resolver holds a second query for a name already in flight; so no
    server is asked before the response that made it known has arrived.
    """

    def __init__(self, universe: Universe, rng: random.Random) -> None:
        self.universe = universe
        self.rng = rng
        # ("zone", name) | ("host", name) | ("root",) | (qname, qtype) -> (known from, known until)
        self.cache: dict[tuple, tuple[float, float]] = {}
        self.clock = 0.0
        self.kinds: Counter[str] = Counter()

    def client_question(self, now: float) -> list[Exchange]:
        """One client's question, drawn at random: the exchanges it costs."""
        rng = self.rng
        self.clock = now
        qtype = QTYPES[bisect.bisect_left(_QTYPE_CUMULATIVE, rng.random() * _QTYPE_CUMULATIVE[-1])][0]
        self.kinds["client_questions"] += 1
        out: list[Exchange] = []
        if rng.random() < JUNK_TLD:
            self._junk(rng, qtype, out)
            return out
        zone = self.universe.pick_zone(rng)
        label = LABELS[bisect.bisect_left(_LABEL_CUMULATIVE, rng.random() * _LABEL_CUMULATIVE[-1])][0]
        if label is None:  # a name the zone does not have
            qname = wire(f"x{rng.randrange(10000, 100000)}")[:-1] + zone.name
        else:
            qname = (bytes([len(label)]) + label.encode() if label else b"") + zone.name
            if label not in zone.labels:
                label = None
        self.resolve(zone, label, qname, qtype, out)
        return out

    def _cached(self, key: tuple) -> bool:
        entry = self.cache.get(key)
        if entry is None or entry[1] <= self.clock:
            return False
        if entry[0] > self.clock:  # asked for already, the answer is on its way: wait for it
            self.clock = entry[0]
        return True

    def _ask(self, servers: tuple[Host, ...], qname: bytes, qtype: int, key, make, out: list) -> None:
        """One exchange with one of `servers`; the clock moves past its response."""
        host = servers[self.rng.randrange(len(servers))]
        sent = self.clock
        received = sent + 0.002 + (mix(host.v4[3], len(host.name)) % 60) / 1000 + self.rng.random() * 0.003
        out.append((sent, received, host, qname, qtype, key, make))
        self.clock = received + 0.0002

    def _keep(self, key: tuple, ttl: int) -> None:
        self.cache[key] = (self.clock, self.clock + ttl)

    def _junk(self, rng: random.Random, qtype: int, out: list) -> None:
        """A name under a TLD that does not exist (search lists, browsers' probes)."""
        tld = rng.choice(("local", "lan", "home", "corp", "internal", "localdomain", None))
        tld = tld or "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(7, 15)))
        qname = wire(rng.choice(WORDS), tld) if rng.random() < 0.6 else wire(tld)
        if self._cached((qname, qtype)):
            self.kinds["cache_hits"] += 1
            return
        root = self.universe.root
        self._prime(out)
        self._ask(root.servers, qname, qtype, None, lambda: (_QR | _AA | NXDOMAIN, [], [root.soa()], []), out)
        self.kinds["root_nxdomain"] += 1
        self._keep((qname, qtype), root.negative_ttl)

    def resolve(self, zone: Zone, label: str | None, qname: bytes, qtype: int, out: list) -> None:
        """Answer (qname, qtype) of `zone` from the cache, else by asking."""
        if self._cached((qname, qtype)):
            self.kinds["cache_hits"] += 1
            return
        servers = self._servers_of(zone, qname, qtype, out)
        reply = answer(self.universe, zone, label, qname, qtype)
        self._ask(servers, qname, qtype, ("answer", qname, qtype), lambda: reply.message, out)
        self.kinds[reply.kind] += 1
        self._keep((qname, qtype), reply.ttl)
        if reply.chase is not None:
            target_zone, target = reply.chase
            self.resolve(target_zone, "edge", target, qtype, out)

    def _servers_of(self, zone: Zone, qname: bytes, qtype: int, out: list) -> tuple[Host, ...]:
        """The servers of `zone`, after the referrals (and the lookups of
        glueless servers' addresses) that the cache does not spare."""
        if zone.parent is None:
            self._prime(out)
            return zone.servers
        if not self._cached(("zone", zone.name)):
            above = self._servers_of(zone.parent, qname, qtype, out)
            self._ask(above, qname, qtype, ("referral", zone.name, qname, qtype), lambda: referral(zone), out)
            self.kinds["root_referral" if zone.parent.parent is None else "tld_referral"] += 1
            self._keep(("zone", zone.name), zone.ttl)
        if not zone.glued:
            for host in zone.servers:
                if not self._cached(("host", host.name)):
                    self.kinds["server_address_lookups"] += 1
                    self.resolve(host.home, "ns", host.name, A, out)
                    self.resolve(host.home, "ns", host.name, AAAA, out)
                    self._keep(("host", host.name), host.home.ttl)
        return zone.servers

    def _prime(self, out: list) -> None:
        """The root's own NS set and addresses, before the first referral."""
        if self._cached(("root",)):
            return
        root = self.universe.root
        self._ask(root.servers, b"\x00", NS, ("priming",),
                  lambda: (_QR | _AA, root.ns_rrs(root.ttl), [],
                           [rr for host in root.servers for rr in host.address_rrs(root.ttl)]), out)
        self.kinds["priming"] += 1
        self._keep(("root",), root.ttl)

    def forget_expired(self) -> None:
        """Drop what has expired (the cache would otherwise hold every name ever asked)."""
        self.cache = {key: entry for key, entry in self.cache.items() if entry[1] > self.clock}


_QTYPE_CUMULATIVE = list(_cumulative([w for _, w in QTYPES]))
_LABEL_CUMULATIVE = list(_cumulative([w for _, w in LABELS]))


# ----------------------------------------------------------------- the capture
@dataclass
class Summary:
    """What was written: for the benchmark's report and its cache."""

    responses: int
    seed: int
    zones: int
    first: float
    last: float
    kinds: dict


def frames(responses: int, seed: int = 1, zones: int | None = None, summary: dict | None = None):
    """Yield (timestamp, Ethernet frame) in time order: `responses`
    exchanges, query then response. `summary`, when given, is filled in."""
    universe = Universe(zones or default_zones(responses), seed)
    rng = random.Random(mix(seed, 99))
    resolver = Resolver(universe, rng)
    resolver4 = socket.inet_pton(socket.AF_INET, RESOLVER4)
    resolver6 = socket.inet_pton(socket.AF_INET6, RESOLVER6)
    built: dict = {}  # response bytes by key: a question asked again gets the same message
    pending: list[tuple[float, int, bytes]] = []
    now, made, serial, pruned = START, 0, 0, START
    while made < responses:
        now += rng.expovariate(CLIENT_RATE)
        while pending and pending[0][0] <= now:
            ts, _, frame = heapq.heappop(pending)
            yield ts, frame
        if now - pruned > 600:
            resolver.forget_expired()
            pruned = now
        for sent, received, host, qname, qtype, key, make in resolver.client_question(now):
            if made >= responses:
                break
            response = built.get(key) if key is not None else None
            if response is None:
                flags, *sections = make()
                response = encode(flags, qname, qtype, sections)
                if key is not None:
                    if len(built) >= 200_000:
                        built.clear()
                    built[key] = response
            ident = rng.randrange(65536)
            query = struct.pack("!H", ident) + query_wire(qname, qtype)[2:]
            response = struct.pack("!H", ident) + response[2:]
            port = rng.randrange(1024, 65536)
            if rng.random() < 0.25:
                out = ETH_V6 + _ipv6_udp(resolver6, host.v6, port, 53, query)
                back = ETH_V6 + _ipv6_udp(host.v6, resolver6, 53, port, response)
            else:
                out = ETH_V4 + _ipv4_udp(resolver4, host.v4, port, 53, query, serial & 0xFFFF)
                back = ETH_V4 + _ipv4_udp(host.v4, resolver4, 53, port, response, rng.randrange(65536))
            heapq.heappush(pending, (sent, serial, out))
            heapq.heappush(pending, (received, serial + 1, back))
            serial += 2
            made += 1
    last = now
    while pending:
        last, _, frame = heapq.heappop(pending)
        yield last, frame
    if summary is not None:
        summary.update(asdict(Summary(made, seed, universe.count, START, last, dict(resolver.kinds))))


def default_zones(responses: int) -> int:
    """Zones in the universe: growing with the capture, so that about 60% of
    the client questions are answered from the cache at any size."""
    return max(500, min(200_000, responses // 8))


def write(pcap: str, hints: str, responses: int, seed: int = 1, zones: int | None = None) -> dict:
    """The capture, its root hints, and `<pcap>.json` (the Summary); the summary."""
    summary: dict = {}
    with open(pcap, "wb") as handle:
        handle.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in frames(responses, seed, zones, summary):
            sec = int(ts)
            usec = min(999_999, round((ts - sec) * 1e6))
            handle.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)))
            handle.write(frame)
    with open(hints, "w") as handle:
        handle.write(Universe(1, seed).root_hints())
    with open(pcap + ".json", "w") as handle:
        json.dump(summary, handle, indent=1, sort_keys=True)
    return summary


@click.command()
@click.option("--responses", default=1_000_000, show_default=True, help="exchanges (query and response) to write")
@click.option("--seed", default=1, show_default=True)
@click.option("--zones", type=int, default=None, help="ordinary zones in the universe (default: responses / 8)")
@click.option("--hints", default=None, help="root hints file to write (default: PCAP with .hints)")
@click.argument("pcap")
def main(responses: int, seed: int, zones: int | None, hints: str | None, pcap: str) -> None:
    """Write a deterministic capture of a resolver walking from the root to PCAP."""
    hints = hints or (pcap[:-5] if pcap.endswith(".pcap") else pcap) + ".hints"
    summary = write(pcap, hints, responses, seed, zones)
    click.echo(f"wrote {summary['responses']} exchanges over {summary['last'] - summary['first']:.0f} s "
               f"of resolver time to {pcap}, root hints to {hints}")
    click.echo(", ".join(f"{k} {v}" for k, v in sorted(summary["kinds"].items())))


if __name__ == "__main__":
    main()
