"""Where the IP datagram starts inside a captured frame, per link type.

Capture hands frames in one large buffer; each function here returns the
offset of the IP header inside `buf` for the frame at [start, end), or -1
when the frame carries no IPv4/IPv6 (ARP, LLDP, a cut header). The
matcher then receives exactly the IP datagram, whatever the link was.
"""

from __future__ import annotations

from collections.abc import Callable

from sensor.records.wire import ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN

# DLT values as libpcap reports them (it maps a file's LINKTYPE_* to these).
DLT_NULL = 0
DLT_EN10MB = 1
DLT_RAW = 12
DLT_RAW_OPENBSD = 14
DLT_LINKTYPE_RAW = 101
DLT_LOOP = 108
DLT_LINUX_SLL = 113
DLT_IPV4 = 228
DLT_IPV6 = 229
DLT_LINUX_SLL2 = 276

_IP_ETHERTYPES = (ETHERTYPE_IPV4, ETHERTYPE_IPV6)

OffsetFinder = Callable[[bytes, int, int], int]


def ethernet(buf: bytes, start: int, end: int) -> int:
    """Ethernet II, with any number of 802.1Q / 802.1ad tags."""
    at = start + 12
    while at + 2 <= end:
        ethertype = buf[at] << 8 | buf[at + 1]
        if ethertype in _IP_ETHERTYPES:
            return at + 2
        if ethertype not in ETHERTYPE_VLAN:
            return -1
        at += 4
    return -1


def linux_sll(buf: bytes, start: int, end: int) -> int:
    """Linux cooked capture v1: protocol in bytes 14-15 of a 16-byte header."""
    if start + 16 > end:
        return -1
    protocol = buf[start + 14] << 8 | buf[start + 15]
    return start + 16 if protocol in _IP_ETHERTYPES else -1


def linux_sll2(buf: bytes, start: int, end: int) -> int:
    """Linux cooked capture v2: protocol in bytes 0-1 of a 20-byte header."""
    if start + 20 > end:
        return -1
    protocol = buf[start] << 8 | buf[start + 1]
    return start + 20 if protocol in _IP_ETHERTYPES else -1


def raw_ip(buf: bytes, start: int, end: int) -> int:
    """No link header at all."""
    return start if start < end and buf[start] >> 4 in (4, 6) else -1


def loopback(buf: bytes, start: int, end: int) -> int:
    """BSD loopback (NULL/LOOP): a 4-byte address family, then IP.

    The family's number differs by OS and byte order, so the IP version
    nibble decides.
    """
    return raw_ip(buf, start + 4, end) if start + 4 < end else -1


FINDERS: dict[int, OffsetFinder] = {
    DLT_EN10MB: ethernet,
    DLT_LINUX_SLL: linux_sll,
    DLT_LINUX_SLL2: linux_sll2,
    DLT_RAW: raw_ip,
    DLT_RAW_OPENBSD: raw_ip,
    DLT_LINKTYPE_RAW: raw_ip,
    DLT_IPV4: raw_ip,
    DLT_IPV6: raw_ip,
    DLT_NULL: loopback,
    DLT_LOOP: loopback,
}


class UnsupportedLinkType(ValueError):
    """The capture's link type is not one the sensor can decode."""


def finder_for(linktype: int) -> OffsetFinder:
    try:
        return FINDERS[linktype]
    except KeyError:
        raise UnsupportedLinkType(
            f"link type {linktype} is not supported "
            "(Ethernet, 802.1Q, Linux SLL/SLL2, raw IP and loopback are)"
        ) from None
