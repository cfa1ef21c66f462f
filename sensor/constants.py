"""Every number and name the sensor shares between its parts.

Record types, field numbers and checksum verdicts are part of the spool
format (they follow nmsg's base:dnsqr message so operators' tools keep
meaning the same thing); ports and protocol numbers are wire facts.
"""

from __future__ import annotations

import enum

# ---------------------------------------------------------------- wire facts
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

# defaults shared by the configuration file and the matcher
DEFAULT_STATE_TABLE_MAX = 131072
DEFAULT_QUERY_TIMEOUT = 60



class RecordType(enum.IntEnum):
    """What kind of transaction a record describes (numbers are on disk)."""

    UDP_INVALID = 0
    UDP_QUERY_RESPONSE = 1
    UDP_UNANSWERED_QUERY = 2
    UDP_UNSOLICITED_RESPONSE = 3
    TCP = 4
    ICMP = 5
    UDP_QUERY_ONLY = 6
    UDP_RESPONSE_ONLY = 7


class UdpChecksum(enum.IntEnum):
    """Verdict on the response datagram's UDP checksum (numbers are on disk)."""

    ERROR = 0
    ABSENT = 1
    INCORRECT = 2
    CORRECT = 3


class Rcode(enum.IntEnum):
    """DNS response codes that the header's four bits can carry (names: rrnames)."""

    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5


# A response with no question may still match its query on the 6-tuple
# when the server said one of these (it could not or would not echo it).
RCODES_WITHOUT_QUESTION = frozenset(
    (Rcode.FORMERR, Rcode.SERVFAIL, Rcode.NOTIMP, Rcode.REFUSED)
)


class Field:
    """CBOR map keys of a record: nmsg base:dnsqr's protobuf field numbers."""

    TYPE = 1
    QUERY_IP = 2
    RESPONSE_IP = 3
    PROTO = 4
    QUERY_PORT = 5
    RESPONSE_PORT = 6
    ID = 7
    QNAME = 8
    QTYPE = 9
    QCLASS = 10
    RCODE = 11
    QUERY_PACKET = 12
    QUERY_TIME_SEC = 13
    QUERY_TIME_NSEC = 14
    RESPONSE_PACKET = 15
    RESPONSE_TIME_SEC = 16
    RESPONSE_TIME_NSEC = 17
    TCP = 18
    ICMP = 19
    TIMEOUT = 20
    UDP_CHECKSUM = 21
    RESOLVER_ADDRESS_ZEROED = 22


# Field number -> the name nmsgtool's JSON output uses for it.
FIELD_NAMES = {
    value: name.lower()
    for name, value in vars(Field).items()
    if not name.startswith("_")
}

# ------------------------------------------------------------- spool format
SPOOL_FORMAT = "sie-dnsqr"
SPOOL_VERSION = 1
SPOOL_EXT = "cbor.gz"

# Keys of the header item that opens every spool file.
HEADER_FORMAT = "format"
HEADER_VERSION = "version"
HEADER_HOST = "host"
HEADER_CHANNEL = "channel"
HEADER_START = "start"

# ----------------------------------------------------------- configuration
DEFAULT_CONFIG_PATH = "/etc/default/sie-dns-sensor"
SYSLOG_TAG = "sie"
