"""Wire facts: ports, protocol and ethertype numbers, DNS header bits.

What the packets themselves define; nothing here is the sensor's choice.
"""

from __future__ import annotations

import enum
import ipaddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network  # an address or prefix of either family

DNS_PORT = 53
MDNS_PORT = 5353
DNS_PORTS = frozenset((DNS_PORT, MDNS_PORT))  # UDP: either side makes it DNS
TCP_DNS_PORT = DNS_PORT
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPPROTO_FRAGMENT = 44  # IPv6 fragment extension header
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_VLAN = (0x8100, 0x88A8, 0x9100)
DNS_HEADER_LEN = 12
MAX_NAME_LEN = 255
DNS_FLAG_QR = 0x8000  # set in responses
DNS_FLAG_RD = 0x0100  # recursion desired
DNS_RCODE_MASK = 0x000F


class Rcode(enum.IntEnum):
    """DNS response codes by their names in the RFCs, which are nmsgtool's
    too (`rrnames.RCODES` is this enum; 11-15 have no name there). The
    header's four bits carry 0-15; BADVERS is reachable only through EDNS."""

    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5
    YXDOMAIN = 6
    YXRRSET = 7
    NXRRSET = 8
    NOTAUTH = 9
    NOTZONE = 10
    BADVERS = 16


# A response with no question may still match its query on the 6-tuple
# when the server said one of these (it could not or would not echo it).
RCODES_WITHOUT_QUESTION = frozenset(
    (Rcode.FORMERR, Rcode.SERVFAIL, Rcode.NOTIMP, Rcode.REFUSED)
)
