"""A UDP segment's header and its DNS message's header and question.

`read(buf, start)` is the first thing the matcher does with every UDP
datagram: (sport, dport, end, ident, flags, question), or the name of the
counter a datagram that is not a well-formed DNS message goes to
("not_dns", "malformed_udp", "malformed_dns"). `start` is where the UDP
header begins in `buf`; `end` where the segment ends; question is
(qname as on the wire, qtype, qclass) when the message has exactly one
question and bytes after its header (as the reference reads it), else
None. A UDP header past the end of `buf` is a ValueError.

`read_in_python` states these rules. `_udpdns.c` does the same in C,
because these reads were most of a datagram's time in the matcher; the
tests hold the two to each other on crafted and random datagrams. Where
the C module is not built (no compiler when installing), `read` is the
Python one: the sensor runs the same, only slower.
"""

from __future__ import annotations

import struct

from sensor.records.dns import parse_question
from sensor.records.wire import DNS_HEADER_LEN, DNS_PORTS

_UDP_HEADER = struct.Struct("!HHH")  # ports and length (the checksum is judged elsewhere)
_DNS_HEADER = struct.Struct("!HHH")  # id, flags, qdcount
UDP_HEADER_LEN = 8


def read_in_python(buf: bytes, start: int) -> tuple | str:
    """What `read` returns (see the module's docstring)."""
    if start < 0 or len(buf) - start < _UDP_HEADER.size:
        raise ValueError("UDP header past the end of the datagram")
    sport, dport, length = _UDP_HEADER.unpack_from(buf, start)
    if sport not in DNS_PORTS and dport not in DNS_PORTS:
        return "not_dns"
    end = start + length
    if length < UDP_HEADER_LEN or end > len(buf):
        return "malformed_udp"
    msg = start + UDP_HEADER_LEN
    if end - msg < DNS_HEADER_LEN:
        return "malformed_dns"
    ident, flags, qdcount = _DNS_HEADER.unpack_from(buf, msg)
    if qdcount == 1 and end > msg + DNS_HEADER_LEN:
        question = parse_question(buf, msg, end)
        if question is None:
            return "malformed_dns"
    else:
        question = None
    return sport, dport, end, ident, flags, question


try:
    from sensor.matching import _udpdns
except ImportError:  # installed without a C compiler
    _udpdns = None
if _udpdns is not None and (
    {_udpdns.DNS_PORT, _udpdns.MDNS_PORT} != DNS_PORTS or _udpdns.DNS_HEADER_LEN != DNS_HEADER_LEN
):
    raise ImportError("sensor.matching._udpdns was built for other DNS ports or header size: rebuild it")
read = read_in_python if _udpdns is None else _udpdns.read
COMPILED = _udpdns is not None
