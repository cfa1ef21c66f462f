"""What a lookup asks, read from DNSDB's URL forms, as a call on the store.

Paths (after /dnsdb/v2/lookup/ or /dnsdb/v2/summarize/), each segment
percent-decoded on its own (so `%2F` inside a name is not a separator):

    rrset/name/NAME[/RRTYPE[/BAILIWICK]]     rrset/raw/HEX[/RRTYPE[/BAILIWICK]]
    rdata/name/NAME[/RRTYPE]                 rdata/raw/HEX[/RRTYPE]
    rdata/ip/ADDRESS | ADDRESS,PREFIXLEN | FIRST-LAST

NAME may carry one wildcard standing for zero or more labels, the first
label (`*.example.com`) or the last (`www.example.*`); RRTYPE is a
mnemonic, TYPEnnn, ANY or ANY-DNSSEC. Parameters: limit, offset,
time_{first,last}_{before,after} (epoch seconds; negative: that many
seconds before now), aggr, max_count (summarize), and the client's
swclient, version and id, which are ignored.

Everything a client sends is checked before the store sees it: a bad
value is a `BadRequest` (400) naming what is wrong, an offset past the
cap an `OutOfRange` (416), an unknown lookup a `NotFound` (404). Lengths
are bounded before anything is parsed, so no input costs more than its
size.
"""

from __future__ import annotations

import ipaddress
import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field

import dns.exception
import dns.rdatatype

from sensor.records.dns import text_to_wire

from ..store import Fences, RRTypes, Store, Summary

MAX_NAME_TEXT = 1024  # a name's text with every octet escaped (\DDD) stays under this
MAX_RAW_OCTETS = 4096
_DNSSEC_TYPES = frozenset((43, 46, 47, 48, 50, 51, 32769))  # DS RRSIG NSEC DNSKEY NSEC3 NSEC3PARAM DLV
NUMBER_DIGITS = 12  # a number's digits at most, in a request or on the command line (SQLite's integers: 2**63)
_INTEGER = re.compile(rf"-?\d{{1,{NUMBER_DIGITS}}}")
_TRUE, _FALSE = ("t", "true", "1", "yes"), ("f", "false", "0", "no")
_TIMES = {"time_first_after": "first_after", "time_first_before": "first_before",
          "time_last_after": "last_after", "time_last_before": "last_before"}
_IGNORED = ("swclient", "version", "id")


class BadRequest(ValueError):
    """400: the request is malformed; the text says how."""


class NotFound(BadRequest):
    """404: no such lookup."""


class OutOfRange(BadRequest):
    """416: an offset past the cap."""


@dataclass(frozen=True)
class Lookup:
    """One store lookup: `method` (rrsets, rdata_name, rdata_ip_range, rdata_raw) with its arguments."""

    kind: str  # "rrset" or "rdata": what the rows are
    method: str
    args: tuple
    options: dict = field(default_factory=dict)

    def rows(self, store: Store, fences: Fences, limit: int | None, offset: int) -> Iterator:
        return getattr(store, self.method)(*self.args, **self.options, fences=fences, limit=limit, offset=offset)

    def summarize(self, store: Store, fences: Fences, limit: int | None, offset: int,
                  max_count: int | None) -> Summary:
        return store.summarize(self.method, *self.args, **self.options, fences=fences, limit=limit, offset=offset,
                               max_count=max_count)


@dataclass(frozen=True)
class Params:
    """The query parameters, checked and capped."""

    fences: Fences
    limit: int
    offset: int
    max_count: int | None


def split_path(raw_path: bytes, prefix: str) -> list[str]:
    """The segments after `prefix` of a raw (still percent-encoded) path, each decoded."""
    text = raw_path.decode("latin-1")
    if not text.startswith(prefix):
        raise NotFound("no such path")
    if len(text) > 4 * MAX_NAME_TEXT + 2 * MAX_RAW_OCTETS:
        raise BadRequest("the path is too long")
    try:
        return [urllib.parse.unquote(part, errors="strict") if "%" in part else part
                for part in text[len(prefix):].split("/")]
    except UnicodeDecodeError:
        raise BadRequest("the path is not UTF-8 once percent-decoded") from None


def parse_lookup(segments: list[str]) -> Lookup:
    """The Lookup of `rrset/name/...` (and the other forms above), split into segments."""
    try:
        kind, by, value, *rest = segments
    except ValueError:
        raise NotFound("a lookup is rrset/name|raw/VALUE or rdata/name|ip|raw/VALUE") from None
    if kind not in ("rrset", "rdata"):
        raise NotFound(f"no lookup named {kind!r} (rrset or rdata)")
    forms = {("rrset", "name"): 2, ("rrset", "raw"): 2, ("rdata", "name"): 1, ("rdata", "raw"): 1, ("rdata", "ip"): 0}
    if (kind, by) not in forms:
        raise BadRequest(f"no {kind} lookup by {by!r} ({', '.join(b for k, b in forms if k == kind)})")
    if len(rest) > forms[kind, by] or any(not part for part in rest):
        raise BadRequest(f"{kind}/{by}/ takes {forms[kind, by]} more part(s) at most, none empty")
    rrtype = parse_rrtype(rest[0]) if rest else None
    if kind == "rdata":
        return rdata_lookup(by, value, rrtype)
    owner = parse_raw_name(value) if by == "raw" else None
    name, under, starts = (owner, False, False) if owner else parse_name(value)
    zone = parse_name(rest[1], wildcards=False)[0] if len(rest) > 1 else None
    return Lookup("rrset", "rrsets", (name,), {"under": under, "starts": starts, "rrtype": rrtype, "bailiwick": zone})


def rdata_lookup(by: str, value: str, rrtype: RRTypes) -> Lookup:
    """An inverse-index lookup: by name (wildcards), ip (address, prefix, range) or raw data (hex)."""
    if by == "ip":
        return Lookup("rdata", "rdata_ip_range", parse_addresses(value))
    if by == "raw":
        return Lookup("rdata", "rdata_raw", (parse_hex(value),), {"rrtype": rrtype})
    name, under, starts = parse_name(value)
    return Lookup("rdata", "rdata_name", (name,), {"under": under, "starts": starts, "rrtype": rrtype})


def parse_name(text: str, wildcards: bool = True) -> tuple[bytes, bool, bool]:
    """(wire name, under, starts) of `example.com`, `*.example.com` or `www.example.*`."""
    if len(text) > MAX_NAME_TEXT:
        raise BadRequest(f"a name of {len(text)} characters is too long")
    plain = text[:-1] if text.endswith(".") and not text.endswith("\\.") else text
    under = plain == "*" or plain.startswith("*.")
    starts = not under and plain.endswith(".*") and not plain.endswith("\\.*")
    if under:
        plain = plain[2:]
    elif starts:
        plain = plain[:-2]
    if (under or starts) and not wildcards:
        raise BadRequest(f"{text!r}: no wildcard here")
    if "*" in plain:
        raise BadRequest(f"{text!r}: a wildcard is a whole first or last label, and one a name")
    try:
        return text_to_wire(plain or "."), under, starts
    except ValueError as exc:
        raise BadRequest(f"{text!r} is not a domain name: {exc}") from None


def parse_raw_name(text: str) -> bytes:
    """A wire-form name given in hex (rrset/raw)."""
    wire = parse_hex(text)
    pos = 0
    while pos < len(wire) and wire[pos] and wire[pos] <= 63:
        pos += wire[pos] + 1
    if pos != len(wire) - 1 or wire[pos] != 0 or len(wire) > 255:
        raise BadRequest(f"{text[:80]!r} is not a domain name in wire form")
    return wire.lower()


def parse_hex(text: str) -> bytes:
    if len(text) > 2 * MAX_RAW_OCTETS:
        raise BadRequest(f"raw data longer than {MAX_RAW_OCTETS} octets")
    if not re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", text):
        raise BadRequest(f"{text[:80]!r} is not hexadecimal octets")
    return bytes.fromhex(text)


def parse_rrtype(text: str) -> RRTypes:
    """A type: its number; ANY: None (every type); ANY-DNSSEC: DNSSEC's types."""
    upper = text.upper()
    if upper == "ANY":
        return None
    if upper == "ANY-DNSSEC":
        return _DNSSEC_TYPES
    try:
        if len(text) > 16 or "," in text:
            raise ValueError
        return int(dns.rdatatype.from_text(upper))
    except (dns.exception.DNSException, ValueError):
        raise BadRequest(f"{text[:40]!r} is not a record type") from None


def parse_addresses(text: str) -> tuple[bytes, bytes]:
    """(first, last) packed addresses of an address, a prefix (`,` or `/`) or a range (`-`)."""
    if len(text) > 100:
        raise BadRequest("an address or prefix is shorter than that")
    try:
        if "-" in text:
            low, high = (ipaddress.ip_address(part) for part in text.split("-", 1))
            if low.version != high.version or low > high:
                raise ValueError("a range goes from the lower to the higher address of one family")
            return low.packed, high.packed
        if "," in text or "/" in text:
            network = ipaddress.ip_network(text.replace(",", "/"), strict=False)
            return network.network_address.packed, network.broadcast_address.packed
        address = ipaddress.ip_address(text).packed
        return address, address
    except ValueError as exc:
        raise BadRequest(f"{text!r} is not an address, prefix or range: {exc}") from None


def parse_params(items: list[tuple[str, str]], *, default_limit: int, results_max: int, offset_max: int,
                 now: float | None = None) -> Params:
    """The parameters of a query string, checked: limit clamped to `results_max` (0 asks for it)."""
    seen: dict[str, str] = {}
    for name, value in items:
        if name in seen:
            raise BadRequest(f"{name} given twice")
        if name not in (*_TIMES, "limit", "offset", "aggr", "max_count", "humantime", *_IGNORED):
            raise BadRequest(f"unknown parameter {name[:40]!r}")
        seen[name] = value
    now = int(time.time() if now is None else now)
    times = {}
    for name, attr in _TIMES.items():
        if name in seen:
            value = _integer(name, seen[name])
            times[attr] = now + value if value < 0 else value
    limit = _integer("limit", seen.get("limit", str(default_limit)))
    offset = _integer("offset", seen.get("offset", "0"))
    max_count = _integer("max_count", seen["max_count"]) if "max_count" in seen else None
    if limit < 0 or offset < 0 or (max_count is not None and max_count < 1):
        raise BadRequest("limit and offset are 0 or more, max_count 1 or more")
    if offset > offset_max:
        raise OutOfRange(f"offset {offset} is past the most allowed, {offset_max}")
    _flag("aggr", seen.get("aggr", "t"))  # every entry is an aggregate here: aggr=f gives the same
    if _flag("humantime", seen.get("humantime", "f")):
        raise BadRequest("humantime is not offered: times are epoch seconds")
    return Params(Fences(**times), min(limit or results_max, results_max), offset, max_count)


def _integer(name: str, text: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise BadRequest(f"{name}={text[:40]!r} is not a whole number (at most {NUMBER_DIGITS} digits)")
    return int(text)


def _flag(name: str, text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise BadRequest(f"{name}={text[:40]!r} is not true or false")
