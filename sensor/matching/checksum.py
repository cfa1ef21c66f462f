"""UDP checksum verification of response datagrams.

The Internet checksum is a ones'-complement sum of 16-bit words. Because
2**16 is 1 modulo 0xFFFF, that sum is the big-endian value of a byte
string of even length modulo 0xFFFF, which CPython computes in C in one
call: the per-byte Python loop a literal port would need is far too slow
for a resolver's packet rates. The same congruence lets the pseudo-header
be summed field by field instead of built: for IPv4 and IPv6 alike it
adds the two addresses, the protocol (17) and the UDP length. A correct
segment, checksum field included, sums to 0xFFFF, that is to 0 modulo
0xFFFF (an all-zero sum cannot occur: the protocol word is never zero).
"""

from __future__ import annotations

from sensor.records.record import UdpChecksum
from sensor.records.wire import IPPROTO_UDP

_from_bytes = int.from_bytes
# module names, not class attributes (record.py: 78 against 15 ns)
_ERROR, _ABSENT = UdpChecksum.ERROR, UdpChecksum.ABSENT
_INCORRECT, _CORRECT = UdpChecksum.INCORRECT, UdpChecksum.CORRECT


def verify_udp(src: bytes, dst: bytes, segment: bytes) -> UdpChecksum:
    """Verdict on one whole UDP segment (header and payload) between addresses.

    ABSENT when the sender put 0 in the checksum field (allowed in IPv4).
    ERROR when the segment is too short to carry a UDP header.
    """
    size = len(segment)
    if size < 8:
        return _ERROR
    if segment[6] == 0 and segment[7] == 0:
        return _ABSENT
    total = _from_bytes(segment, "big")
    if size & 1:
        total <<= 8  # pad with a zero byte
    total += _from_bytes(src, "big") + _from_bytes(dst, "big") + IPPROTO_UDP + size
    return _INCORRECT if total % 0xFFFF else _CORRECT
