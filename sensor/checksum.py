"""UDP checksum verification of response datagrams.

The Internet checksum is a ones'-complement sum of 16-bit words. Because
2**16 is 1 modulo 0xFFFF, that sum is the big-endian value of the whole
byte string modulo 0xFFFF, which CPython computes in C in one call: the
per-byte Python loop a literal port would need is far too slow for the
packet rates a resolver sees. A correct segment, checksum field included,
sums to 0xFFFF, that is to 0 modulo 0xFFFF (an all-zero sum cannot occur:
the pseudo-header's protocol word is never zero).
"""

from __future__ import annotations

import struct

from .constants import IPPROTO_UDP, UdpChecksum

_V4_PSEUDO_TAIL = struct.Struct("!BBH")
_V6_PSEUDO_TAIL = struct.Struct("!I3xB")


def ones_complement_zero(data: bytes) -> bool:
    """True when the 16-bit ones'-complement sum of data is 0xFFFF."""
    if len(data) & 1:
        data += b"\x00"
    return int.from_bytes(data, "big") % 0xFFFF == 0


def verify_udp(src: bytes, dst: bytes, segment: bytes) -> UdpChecksum:
    """Verdict on one whole UDP segment (header and payload) between addresses.

    ABSENT when the sender put 0 in the checksum field (allowed in IPv4).
    ERROR when the segment is too short to carry a UDP header.
    """
    if len(segment) < 8:
        return UdpChecksum.ERROR
    if segment[6] == 0 and segment[7] == 0:
        return UdpChecksum.ABSENT
    if len(src) == 4:
        pseudo = src + dst + _V4_PSEUDO_TAIL.pack(0, IPPROTO_UDP, len(segment))
    else:
        pseudo = src + dst + _V6_PSEUDO_TAIL.pack(len(segment), IPPROTO_UDP)
    if ones_complement_zero(pseudo + segment):
        return UdpChecksum.CORRECT
    return UdpChecksum.INCORRECT
