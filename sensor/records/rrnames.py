"""DNS type, class, rcode and opcode names, exactly as nmsgtool prints them.

nmsgtool names these through its DNS library, wdns (0.12, the one nmsg
1.3.3 is built with), whose tables are generated from `wdns.h`: types it
has no define for (SMIMEA 53, ZONEMD 63, AMTRELAY 260, ...) have no name
there and print as `TYPEnn`, rcodes 11-15 have none either, and an
underscore in a define becomes a dash (`NSAP-PTR`). `read` follows that
table so its output compares equal to nmsgtool's; this is the one place
it lives.
"""

from __future__ import annotations

from sensor.records.wire import Rcode

RRTYPES: dict[int, str] = {
    1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG",
    9: "MR", 10: "NULL", 11: "WKS", 12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX",
    16: "TXT", 17: "RP", 18: "AFSDB", 19: "X25", 20: "ISDN", 21: "RT", 22: "NSAP",
    23: "NSAP-PTR", 24: "SIG", 25: "KEY", 26: "PX", 27: "GPOS", 28: "AAAA", 29: "LOC",
    30: "NXT", 31: "EID", 32: "NIMLOC", 33: "SRV", 34: "ATMA", 35: "NAPTR", 36: "KX",
    37: "CERT", 38: "A6", 39: "DNAME", 40: "SINK", 41: "OPT", 42: "APL", 43: "DS",
    44: "SSHFP", 45: "IPSECKEY", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 49: "DHCID",
    50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 55: "HIP", 56: "NINFO", 57: "RKEY",
    58: "TALINK", 59: "CDS", 60: "CDNSKEY", 61: "OPENPGPKEY", 62: "CSYNC", 64: "SVCB",
    65: "HTTPS", 99: "SPF", 100: "UINFO", 101: "UID", 102: "GID", 103: "UNSPEC",
    104: "NID", 105: "L32", 106: "L64", 107: "LP", 108: "EUI48", 109: "EUI64",
    249: "TKEY", 250: "TSIG", 251: "IXFR", 252: "AXFR", 253: "MAILB", 254: "MAILA",
    255: "ANY", 256: "URI", 257: "CAA", 32768: "TA", 32769: "DLV",
}

RRCLASSES: dict[int, str] = {1: "IN", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}

# wire.Rcode's names: header rcodes 11-15 are unnamed, 16 is only reachable through EDNS.
RCODES: dict[int, str] = {rcode.value: rcode.name for rcode in Rcode}

OPCODES: dict[int, str] = {0: "QUERY", 1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE"}


def rrtype_name(rrtype: int) -> str:
    """`A`, `NSEC3`, or `TYPE53` where wdns has no name."""
    return RRTYPES.get(rrtype) or f"TYPE{rrtype}"


def rrclass_name(rrclass: int) -> str:
    """`IN`, `CH`, or `CLASS7` where wdns has no name."""
    return RRCLASSES.get(rrclass) or f"CLASS{rrclass}"


def rcode_name(rcode: int) -> str:
    """`NXDOMAIN`, or the number as text (`"11"`) as nmsgtool prints it."""
    return RCODES.get(rcode) or str(rcode)
