"""Entries as analysts read them: DNSDB's JSON objects and dnsdbq's text.

One place turns the store's wire forms into presentation forms, for the
command line and the HTTP APIs: names with a trailing dot, types by
mnemonic (`TYPE65534` when unnamed), record data as dnspython prints it
(`\\# len hex` when it cannot read it), times as epoch seconds in JSON and
ISO 8601 UTC in text. DNSDB's API v2 always gives `rdata` as a list; the
Passive DNS Common Output Format (COF, as CIRCL serves it) gives one
object a record, `rdata` a string.
"""

from __future__ import annotations

import time

import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from sensor.records.dns import wire_to_text

from .store import Entry, RdataEntry, Summary


def type_text(rrtype: int) -> str:
    return dns.rdatatype.to_text(rrtype)


def rdata_text(rrtype: int, rdata: bytes) -> str:
    if rrtype == 1 and len(rdata) == 4:  # the commonest by far: no dnspython object for it
        return f"{rdata[0]}.{rdata[1]}.{rdata[2]}.{rdata[3]}"
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
    """An inverse-index row as DNSDB's API v2 rdata lookup `obj` (a list of one rdata value)."""
    return {
        "count": entry.count,
        "time_first": entry.time_first,
        "time_last": entry.time_last,
        "rrname": wire_to_text(entry.rrname),
        "rrtype": type_text(entry.rrtype),
        "rdata": [rdata_text(entry.rrtype, entry.rdata)],
    }


def summary_json(summary: Summary) -> dict:
    """DNSDB's summarize `obj` (no times when nothing was found)."""
    obj = {"count": summary.count, "num_results": summary.num_results}
    if summary.time_first is not None:
        obj.update(time_first=summary.time_first, time_last=summary.time_last)
    return obj


def entry_cof(entry: Entry) -> list[dict]:
    """An RRset entry as COF objects: one a record, each with the RRset's times and count."""
    head = {"rrname": wire_to_text(entry.rrname), "rrtype": type_text(entry.rrtype),
            "bailiwick": wire_to_text(entry.bailiwick)}
    return [{**head, "rdata": rdata_text(entry.rrtype, datum), "time_first": entry.time_first,
             "time_last": entry.time_last, "count": entry.count} for datum in entry.rdata]


def rdata_entry_cof(entry: RdataEntry) -> dict:
    """An inverse-index row as a COF object (the index keeps no bailiwick)."""
    return {"rrname": wire_to_text(entry.rrname), "rrtype": type_text(entry.rrtype),
            "rdata": rdata_text(entry.rrtype, entry.rdata), "time_first": entry.time_first,
            "time_last": entry.time_last, "count": entry.count}


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


def summary_text(summary: Summary) -> str:
    """As dnsdbq prints a summary."""
    lines = [f";;      count: {summary.count:,}", f";; num_results: {summary.num_results:,}"]
    if summary.time_first is not None:
        lines += [f";; first seen: {_when(summary.time_first)}", f";;  last seen: {_when(summary.time_last)}"]
    return "\n".join(lines) + "\n"
