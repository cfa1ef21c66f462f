"""Decomposition: a DNS response message -> the RRsets it carries.

The first stage of "ISC Passive DNS Architecture" (Edmonds, 2012): a
response is split into its resource record sets, each the owner name, the
type and the set of record data, whatever section it came in (an RRset is
defined by owner, class and type: the same one in the answer and in the
additional section of one message is one observation). TTLs are left out,
as DNSDB leaves them out of an entry's identity.

Forms, so that the same data always gives the same key:

- owner names in wire form, lower case, never compressed;
- record data in wire form; the names inside the record data of the types
  whose data is a host or zone name (`NAME_FIELDS`) are decompressed and
  lower-cased (canonical form, RFC 4034 section 6.2, without the DNSSEC
  types whose names are signed as written), every other type's data kept
  byte for byte;
- an RRset's data sorted and without repeats.

Only class IN is kept; meta types (OPT, TSIG, TKEY, the query-only types
128-255) and type 0 are not data. A message the project's DNS reader
(`sensor.display.dnsmessage`) cannot read to its end is `Undecodable`, and the
caller counts it.
"""

from __future__ import annotations

from sensor.display import dnsmessage

CLASS_IN = 1
TYPE_A, TYPE_NS, TYPE_CNAME, TYPE_SOA, TYPE_PTR, TYPE_MX, TYPE_AAAA = 1, 2, 5, 6, 12, 15, 28
TYPE_SRV, TYPE_DNAME = 33, 39
_NOT_DATA = frozenset((0, 41, *range(128, 256)))  # type 0, OPT, meta and query types

# Layout of the record data of the types that carry names: a tuple of
# parts, each "n" (a name), an int (that many fixed octets) or "s" (one
# character-string). What follows the last part is kept as it is.
NAME_FIELDS: dict[int, tuple] = {
    TYPE_NS: ("n",), 3: ("n",), 4: ("n",), TYPE_CNAME: ("n",),  # NS, MD, MF, CNAME
    TYPE_SOA: ("n", "n"), 7: ("n",), 8: ("n",), 9: ("n",), TYPE_PTR: ("n",),  # SOA, MB, MG, MR, PTR
    14: ("n", "n"), TYPE_MX: (2, "n"), 17: ("n", "n"), 18: (2, "n"), 21: (2, "n"),  # MINFO, MX, RP, AFSDB, RT
    26: (2, "n", "n"), 36: (2, "n"), TYPE_SRV: (6, "n"), TYPE_DNAME: ("n",),  # PX, KX, SRV, DNAME
    35: (4, "s", "s", "s", "n"),  # NAPTR
}

_FLAG_QR, _FLAG_TC = 0x8000, 0x0200


class Undecodable(ValueError):
    """The message cannot be read as DNS; the reason is its text."""


class NotData(ValueError):
    """A readable message that carries no data to keep (TC set, not a QUERY
    response); the reason is its text, used as a counter name."""


def name_end(data: bytes, pos: int) -> int:
    """Offset after the uncompressed name at `pos` (Undecodable if it overruns)."""
    while pos < len(data) and data[pos]:
        pos += data[pos] + 1
    if pos >= len(data):
        raise Undecodable("name runs past the record data")
    return pos + 1


def canonical_rdata(rrtype: int, rdata: bytes) -> bytes:
    """Record data (names already uncompressed) with the names of the
    types in NAME_FIELDS in lower case."""
    layout = NAME_FIELDS.get(rrtype)
    if layout is None:
        return rdata
    out = bytearray()
    pos = 0
    for part in layout:
        if part == "n":
            end = name_end(rdata, pos)
            out += rdata[pos:end].lower()
        elif part == "s":
            end = pos + 1 + (rdata[pos] if pos < len(rdata) else 0)
            out += rdata[pos:end]
        else:
            end = pos + part
            out += rdata[pos:end]
        if end > len(rdata):
            raise Undecodable("record data too short")
        pos = end
    return bytes(out + rdata[pos:])


def rrsets(wire: bytes) -> dict[tuple[bytes, int], tuple[bytes, ...]]:
    """{(owner, type): sorted record data} of a response's three sections.

    The message is read by the project's one DNS reader (`dnsmessage`,
    wdns's rules); a message it cannot read to the end is undecodable as a
    whole: what came before a fault is not trusted either.
    """
    decoded = dnsmessage.decode(wire)
    message = decoded.message
    if message is None or decoded.fault is not None:
        raise Undecodable("not readable as DNS")
    if not message.flags & _FLAG_QR:
        raise NotData("not_a_response")
    if message.flags & _FLAG_TC:
        raise NotData("truncated")
    if (message.flags >> 11) & 0xF:
        raise NotData("not_a_query_response")
    found: dict[tuple[bytes, int], set[bytes]] = {}
    for section in message.sections[dnsmessage.ANSWER :]:
        for rr in section:
            if rr.rrclass != CLASS_IN or rr.rrtype in _NOT_DATA:
                continue
            found.setdefault((rr.name.lower(), rr.rrtype), set()).add(canonical_rdata(rr.rrtype, rr.rdata))
    return {key: tuple(sorted(datas)) for key, datas in found.items()}


def rdata_names(rrtype: int, rdata: bytes) -> bytes | None:
    """The host or zone name a record's canonical data points to (the
    target an analyst pivots on: NS, CNAME, PTR, DNAME, MX, SRV, KX,
    AFSDB, RT; SOA's primary server), else None."""
    layout = NAME_FIELDS.get(rrtype)
    if layout is None or rrtype in (14, 17, 26, 35):  # MINFO, RP, PX, NAPTR: mailboxes and rules
        return None
    skip = layout[0] if isinstance(layout[0], int) else 0
    return rdata[skip : name_end(rdata, skip)]
