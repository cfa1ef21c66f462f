"""Entries as analysts read them: DNSDB's JSON objects and dnsdbq's text.

One place turns the store's wire forms into presentation forms, for the
command line and (later) the HTTP APIs: names with a trailing dot, types
by mnemonic (`TYPE65534` when unnamed), record data as dnspython prints it
(`\\# len hex` when it cannot read it), times as epoch seconds in JSON and
ISO 8601 UTC in text.
"""

from __future__ import annotations

import time

import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from sensor.dns import wire_to_text

from .store import Entry, RdataEntry


def type_text(rrtype: int) -> str:
    return dns.rdatatype.to_text(rrtype)


def rdata_text(rrtype: int, rdata: bytes) -> str:
    try:
        return dns.rdata.from_wire(dns.rdataclass.IN, rrtype, rdata, 0, len(rdata)).to_text()
    except (dns.exception.DNSException, ValueError, IndexError):
        return f"\\# {len(rdata)} {rdata.hex()}" if rdata else "\\# 0"


def entry_json(entry: Entry) -> dict:
    """An RRset entry as DNSDB's API v2 `obj` (rrname, rrtype, bailiwick, rdata list, times, count)."""
    return {
        "count": entry.count,
        "time_first": entry.time_first,
        "time_last": entry.time_last,
        "rrname": wire_to_text(entry.rrname),
        "rrtype": type_text(entry.rrtype),
        "bailiwick": wire_to_text(entry.bailiwick),
        "rdata": [rdata_text(entry.rrtype, datum) for datum in entry.rdata],
    }


def rdata_entry_json(entry: RdataEntry) -> dict:
    """An inverse-index row as DNSDB's rdata lookup `obj` (one rdata value)."""
    return {
        "count": entry.count,
        "time_first": entry.time_first,
        "time_last": entry.time_last,
        "rrname": wire_to_text(entry.rrname),
        "rrtype": type_text(entry.rrtype),
        "rdata": rdata_text(entry.rrtype, entry.rdata),
    }


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def entry_text(entry: Entry) -> str:
    """As dnsdbq prints an RRset: the counters, then one line a record."""
    head = [f";; bailiwick: {wire_to_text(entry.bailiwick)}", f";;      count: {entry.count:,}",
            f";; first seen: {_when(entry.time_first)}", f";;  last seen: {_when(entry.time_last)}"]
    owner, kind = wire_to_text(entry.rrname), type_text(entry.rrtype)
    return "\n".join(head + [f"{owner}  {kind}  {rdata_text(entry.rrtype, datum)}" for datum in entry.rdata]) + "\n"


def rdata_entry_text(entry: RdataEntry) -> str:
    head = [f";;      count: {entry.count:,}", f";; first seen: {_when(entry.time_first)}",
            f";;  last seen: {_when(entry.time_last)}"]
    line = f"{wire_to_text(entry.rrname)}  {type_text(entry.rrtype)}  {rdata_text(entry.rrtype, entry.rdata)}"
    return "\n".join([*head, line]) + "\n"
