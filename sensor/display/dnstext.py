"""DNS messages shown the way nmsgtool shows them (its library, wdns 0.12).

`read` is compared with nmsgtool by people debugging a sensor, so the
message is read by wdns's rules (`dnsmessage`) and printed in wdns's
form: record data as wdns writes it (RRSIG times as plain numbers, NSEC3
hashes in base32hex, DS digests in upper-case hex, generic `\\# len hex `
with its trailing space, `### PARSE ERROR ###` where the data runs short),
the JSON form nmsg builds (RRs of a section grouped into RRsets, lowest
TTL) and the dig-like text (one line per RR, wire order).

Two wdns slips are not copied (README, "Where we differ from nmsg on
purpose"): an RRset of a type wdns cannot name is printed `TYPE<class>` in
nmsg's JSON (here `TYPE<type>`), and the EDNS extended rcode is shifted by
8 instead of 4 (here BADVERS is 16).
"""

from __future__ import annotations

import base64
import socket

from sensor.display import dnsmessage
from sensor.display.dnsmessage import ADDITIONAL, ANSWER, AUTHORITY, QUESTION, Edns, Message, Rr
from sensor.records.dns import wire_to_text
from sensor.records.rrnames import OPCODES, RCODES, RRCLASSES, RRTYPES, rrclass_name, rrtype_name

SECTION_TITLES = ("QUESTION", "ANSWER", "AUTHORITY", "ADDITIONAL")
FLAG_BITS = (("qr", 15), ("aa", 10), ("tc", 9), ("rd", 8), ("ra", 7), ("ad", 5), ("cd", 4))
EDNS_DO = 0x8000


def parse(wire: bytes) -> Message | None:
    """The message nmsgtool shows, or None where it shows none (never raises).

    wdns refuses the whole message at its first fault, and nmsgtool then
    prints `<PARSE ERROR>` (JSON: null), so a partly read message is None.
    """
    decoded = dnsmessage.decode(wire)
    return None if decoded.fault else decoded.message


# ------------------------------------------------------------------ rdata
SVC_KEYS = {0: "mandatory", 1: "alpn", 2: "no-default-alpn", 3: "port", 4: "ipv4hint",
            5: "ech", 6: "ipv6hint", 65535: "invalid key"}
EDE_PURPOSES = (
    "Other Error", "Unsupported DNSKEY Algorithm", "Unsupported DS Digest Type", "Stale Answer",
    "Forged Answer", "DNSSEC Indeterminate", "DNSSEC Bogus", "Signature Expired",
    "Signature Not Yet Valid", "DNSKEY Missing", "RRSIGs Missing", "No Zone Key Bit Set",
    "NSEC Missing", "Cached Error", "Not Ready", "Blocked", "Censored", "Filtered",
    "Prohibited", "Stale NXDomain Answer", "Not Authoritative", "Not Supported",
    "No Reachable Authority", "Network Error", "Invalid Data",
)


class _Short(Exception):
    """The rdata ends inside a field: wdns prints what it has and a marker."""

    def __init__(self, code: int | None = None) -> None:
        super().__init__(code)
        self.code = code


def rdata_text(rdata: bytes, rrtype: int, rrclass: int) -> str:
    """Record data in wdns's presentation form."""
    descriptor = dnsmessage.DESCRIPTORS.get(rrtype)
    if descriptor is None:
        return f"\\# {len(rdata)} " + "".join(f"{byte:02x} " for byte in rdata)
    klass, kinds = descriptor
    if klass == dnsmessage.IN_CLASS and rrclass != 1:
        return ""
    out: list[str] = []
    try:
        pos = 0
        for kind in kinds:
            if pos == len(rdata):
                break
            pos = _FIELD_PRINTERS[kind](rdata, pos, out)
    except _Short as short:
        text = "".join(out)
        if short.code is None:
            return text + " ### PARSE ERROR ###"
        return text + f" ### PARSE ERROR #{int(short.code)} ###"
    text = "".join(out)
    return text[:-1] if text.endswith(" ") else text


def _need(rdata: bytes, pos: int, count: int) -> None:
    if len(rdata) - pos < count:
        raise _Short


def _name(rdata: bytes, pos: int, out: list[str]) -> int:
    end = pos
    while True:
        if end >= len(rdata):
            raise _Short(dnsmessage.Res.OVERFLOW if end == pos else dnsmessage.Res.INVALID_LENGTH_OCTET)
        length = rdata[end]
        if length > 63 or length > len(rdata) - end - 1:
            raise _Short(dnsmessage.Res.INVALID_LENGTH_OCTET)
        end += length + 1
        if length == 0:
            break
    if end - pos > 255:
        raise _Short(dnsmessage.Res.NAME_LEN)
    out.append(wire_to_text(rdata[pos:end]) + " ")
    return end


def _hex_upper(rdata: bytes, pos: int, out: list[str]) -> int:
    out.append(rdata[pos:].hex().upper())
    return len(rdata)


def _base64(rdata: bytes, pos: int, out: list[str]) -> int:
    out.append(base64.b64encode(rdata[pos:]).decode("ascii"))
    return len(rdata)


def _quoted(data: bytes) -> str:
    return '"' + "".join(_STRING_ESCAPED[byte] for byte in data) + '" '


_STRING_ESCAPED = tuple(
    '\\"' if byte == 0x22 else "\\\\" if byte == 0x5C
    else chr(byte) if 0x20 <= byte <= 0x7E else f"\\{byte:03d}"
    for byte in range(256)
)


def _bytes_str(rdata: bytes, pos: int, out: list[str]) -> int:
    out.append(_quoted(rdata[pos:]))
    return len(rdata)


def _integer(size: int):
    def printer(rdata: bytes, pos: int, out: list[str]) -> int:
        _need(rdata, pos, size)
        out.append(f"{int.from_bytes(rdata[pos:pos + size], 'big')} ")
        return pos + size
    return printer


def _address(family: int, size: int):
    def printer(rdata: bytes, pos: int, out: list[str]) -> int:
        _need(rdata, pos, size)
        out.append(socket.inet_ntop(family, rdata[pos:pos + size]) + " ")
        return pos + size
    return printer


def _ipv6_prefix(rdata: bytes, pos: int, out: list[str]) -> int:
    _need(rdata, pos, 1)
    prefix = rdata[pos]
    if prefix > 128:
        raise _Short
    size = (128 - prefix + 7) // 8
    _need(rdata, pos, 1 + size)
    out.append(f"{prefix} ")
    if size:
        address = bytes(16 - size) + rdata[pos + 1:pos + 1 + size]
        out.append(socket.inet_ntop(socket.AF_INET6, address) + " ")
    return pos + 1 + size


def _eui(size: int):
    def printer(rdata: bytes, pos: int, out: list[str]) -> int:
        _need(rdata, pos, size)
        out.append("-".join(f"{byte:02x}" for byte in rdata[pos:pos + size]))
        return pos + size
    return printer


def _string(rdata: bytes, pos: int, out: list[str]) -> int:
    _need(rdata, pos, 1)
    length = rdata[pos]
    _need(rdata, pos + 1, length)
    out.append(_quoted(rdata[pos + 1:pos + 1 + length]))
    return pos + 1 + length


def _repstring(rdata: bytes, pos: int, out: list[str]) -> int:
    while pos < len(rdata):
        pos = _string(rdata, pos, out)
    return pos


def _rrtype(rdata: bytes, pos: int, out: list[str]) -> int:
    _need(rdata, pos, 2)
    out.append(rrtype_name(int.from_bytes(rdata[pos:pos + 2], "big")) + " ")
    return pos + 2


def _bitmap(rdata: bytes, pos: int, out: list[str]) -> int:
    _need(rdata, pos, 2)
    while len(rdata) - pos >= 2:
        window, length = rdata[pos], rdata[pos + 1]
        pos += 2
        _need(rdata, pos, length)
        for index, byte in enumerate(rdata[pos:pos + length]):
            for bit in range(8):
                if byte & (0x80 >> bit):
                    out.append(rrtype_name(window << 8 | index * 8 + bit) + " ")
        pos += length
    return pos


def _salt(rdata: bytes, pos: int, out: list[str]) -> int:
    _need(rdata, pos, 1)
    length = rdata[pos]
    _need(rdata, pos, 1 + length)
    out.append((rdata[pos + 1:pos + 1 + length].hex() or "-") + " ")
    return pos + 1 + length


def _hash(rdata: bytes, pos: int, out: list[str]) -> int:
    _need(rdata, pos, 1)
    length = rdata[pos]
    _need(rdata, pos, 1 + length)
    if length == 0:
        out.append("0 ")
        return pos + 1
    digest = rdata[pos + 1:pos + 1 + length]
    out.append(base64.b32hexencode(digest).decode("ascii").rstrip("=") + " ")
    return pos + 1 + length


def _svcparams(rdata: bytes, pos: int, out: list[str]) -> int:
    while pos < len(rdata):
        _need(rdata, pos, 2)
        key = int.from_bytes(rdata[pos:pos + 2], "big")
        if key == 65535:
            raise _Short
        name = SVC_KEYS.get(key, f"key{key}")
        out.append(name if key == 2 else name + "=")
        _need(rdata, pos + 2, 2)
        length = int.from_bytes(rdata[pos + 2:pos + 4], "big")
        pos += 4
        _need(rdata, pos, length)
        _svcparam_value(key, rdata[pos:pos + length], out)
        pos += length
    return pos


def _svcparam_value(key: int, value: bytes, out: list[str]) -> None:
    if key == 0:
        if len(value) % 2:
            raise _Short(dnsmessage.Res.PARSE_ERROR)
        _svc_list(out, [SVC_KEYS.get(k, f"key{k}") for k in (
            int.from_bytes(value[i:i + 2], "big") for i in range(0, len(value), 2))])
    elif key == 2:
        if value:
            raise _Short(dnsmessage.Res.PARSE_ERROR)
        out.append(" ")
    elif key == 3:
        if len(value) != 2:
            raise _Short(dnsmessage.Res.PARSE_ERROR)
        out.append(f"{int.from_bytes(value, 'big')} ")
    elif key == 5:
        out.append(base64.b64encode(value).decode("ascii") + " ")
    elif key in (4, 6):
        size, family = (4, socket.AF_INET) if key == 4 else (16, socket.AF_INET6)
        if len(value) % size:
            raise _Short(dnsmessage.Res.PARSE_ERROR)
        _svc_list(out, [socket.inet_ntop(family, value[i:i + size]) for i in range(0, len(value), size)])
    elif key == 1:
        out.append('"' + ",".join(_alpn_ids(value)) + '" ')
    else:
        out.append(_quoted(value))


def _svc_list(out: list[str], items: list[str]) -> None:
    # wdns puts a comma or a space after each item: an empty list prints nothing
    if items:
        out.append(",".join(items) + " ")


def _alpn_ids(value: bytes) -> list[str]:
    ids, pos = [], 0
    while pos < len(value):
        length = value[pos]
        if pos + 1 + length > len(value):
            raise _Short(dnsmessage.Res.PARSE_ERROR)
        ids.append("".join(_ALPN_ESCAPED[byte] for byte in value[pos + 1:pos + 1 + length]))
        pos += 1 + length
    return ids


_ALPN_ESCAPED = tuple(
    '\\"' if byte == 0x22 else "\\\\\\\\" if byte == 0x5C else "\\\\," if byte == 0x2C
    else chr(byte) if 0x20 <= byte <= 0x7E else f"\\{byte:03d}"
    for byte in range(256)
)


def _edns_options(rdata: bytes, pos: int, out: list[str]) -> int:
    while pos < len(rdata):
        _need(rdata, pos, 2)
        code = int.from_bytes(rdata[pos:pos + 2], "big")
        out.append({8: "CLIENT-SUBNET:", 15: "EDE:"}.get(code, f"OPT={code}:"))
        _need(rdata, pos + 2, 2)
        length = int.from_bytes(rdata[pos + 2:pos + 4], "big")
        pos += 4
        _need(rdata, pos, length)
        out.append(" ")  # wdns writes it before the data, so an error follows two spaces
        out.append(_option_text(code, rdata[pos:pos + length]))
        pos += length
        if pos < len(rdata):
            out.append("\n")
    return pos


def _printable(data: bytes) -> str:
    return "".join(chr(byte) if 0x20 <= byte <= 0x7E else "." for byte in data)


def _option_text(code: int, data: bytes) -> str:
    if code == 8:
        if len(data) < 4:
            raise _Short(dnsmessage.Res.PARSE_ERROR)
        family, source, scope = int.from_bytes(data[:2], "big"), data[2], data[3]
        size = {1: 4, 2: 16}.get(family)
        if size is None or len(data) - 4 > size:
            raise _Short(dnsmessage.Res.PARSE_ERROR)
        address = data[4:].ljust(size, b"\0")
        af = socket.AF_INET if family == 1 else socket.AF_INET6
        return f"{socket.inet_ntop(af, address)}/{source}/{scope}"
    if code == 15:
        if len(data) < 2:
            raise _Short(dnsmessage.Res.PARSE_ERROR)
        info = int.from_bytes(data[:2], "big")
        purpose = f" ({EDE_PURPOSES[info]})" if info < len(EDE_PURPOSES) else ""
        return f"{info}{purpose}: ({_printable(data[2:])})"
    return "".join(f"{byte:02x} " for byte in data) + f'("{_printable(data)}")'


_FIELD_PRINTERS = {  # one per field kind of wdns's descriptors
    dnsmessage.NAME: _name,
    dnsmessage.BYTES: _hex_upper,
    dnsmessage.B64: _base64,
    dnsmessage.BYTES_STR: _bytes_str,
    dnsmessage.INT8: _integer(1),
    dnsmessage.INT16: _integer(2),
    dnsmessage.INT32: _integer(4),
    dnsmessage.IPV4: _address(socket.AF_INET, 4),
    dnsmessage.IPV6: _address(socket.AF_INET6, 16),
    dnsmessage.IPV6PREFIX: _ipv6_prefix,
    dnsmessage.EUI48: _eui(6),
    dnsmessage.EUI64: _eui(8),
    dnsmessage.STRING: _string,
    dnsmessage.REPSTRING: _repstring,
    dnsmessage.RRTYPE: _rrtype,
    dnsmessage.BITMAP: _bitmap,
    dnsmessage.SALT: _salt,
    dnsmessage.HASH: _hash,
    dnsmessage.SVCPARAMS: _svcparams,
    dnsmessage.EDNS_OPTS: _edns_options,
}


def edns_option_lines(edns: Edns) -> list[str]:
    """One text per EDNS option (wdns prints them joined, nmsg splits them)."""
    if edns.options is None:
        return []
    return [line for line in rdata_text(edns.options, dnsmessage.TYPE_OPT, 0).split("\n") if line]


# ------------------------------------------------------------ whole message
def _opcode(msg: Message) -> int:
    return (msg.flags >> 11) & 0xF


def _flag_names(msg: Message) -> list[str]:
    return [name for name, bit in FLAG_BITS if msg.flags >> bit & 1]


def _rrsets(rrs: list[Rr]) -> list[tuple[Rr, list[bytes]]]:
    """RRs grouped as wdns groups them: same name (any case), type, class."""
    groups: list[tuple[Rr, list[bytes]]] = []
    for rr in rrs:
        for index in range(len(groups) - 1, -1, -1):
            head, rdatas = groups[index]
            if (head.rrtype, head.rrclass) == (rr.rrtype, rr.rrclass) and (
                head.name.lower() == rr.name.lower()
            ):
                rdatas.append(rr.rdata)
                if rr.ttl < head.ttl:
                    groups[index] = (Rr(head.name, head.rrtype, head.rrclass, rr.ttl), rdatas)
                break
        else:
            groups.append((rr, [rr.rdata]))
    return groups


def to_json(msg: Message) -> dict:
    """nmsg's `query_json` / `response_json` object for a decoded message."""
    opcode = _opcode(msg)
    header: dict = {
        "opcode": OPCODES.get(opcode, opcode),
        "rcode": RCODES.get(msg.rcode, msg.rcode),
        "id": msg.id,
        "flags": _flag_names(msg),
    }
    if msg.edns is not None:
        edns: dict = {
            "version": msg.edns.version,
            "flags": ["do"] if msg.edns.flags & EDNS_DO else [],
            "udp": msg.edns.size,
        }
        if msg.edns.options is not None:  # nmsg leaves the key out for an OPT asked as a question
            edns["options"] = edns_option_lines(msg.edns)
        header["opt"] = {"edns": edns}
    out = {"header": header, "question": [
        {"qname": wire_to_text(q.name), "qclass": rrclass_name(q.rrclass), "qtype": rrtype_name(q.rrtype)}
        for q in msg.sections[QUESTION]
    ]}
    for section, key in ((ANSWER, "answer"), (AUTHORITY, "authority"), (ADDITIONAL, "additional")):
        out[key] = [
            {
                "rrname": wire_to_text(head.name),
                "rrttl": head.ttl,
                "rrclass": rrclass_name(head.rrclass),
                "rrtype": rrtype_name(head.rrtype),
                "rdata": [rdata_text(rdata, head.rrtype, head.rrclass) for rdata in rdatas],
            }
            for head, rdatas in _rrsets(msg.sections[section])
        ]
    return out


def to_text(msg: Message) -> str:
    """wdns's dig-like text of a message (ends with a newline)."""
    opcode = _opcode(msg)
    counts = [len(section) for section in msg.sections]
    lines = [
        f";; ->>HEADER<<- opcode: {OPCODES.get(opcode, opcode)}, "
        f"rcode: {RCODES.get(msg.rcode, msg.rcode)}, id: {msg.id}",
        ";; flags:" + "".join(" " + name for name in _flag_names(msg))
        + "; QUERY: {}, ANSWER: {}, AUTHORITY: {}, ADDITIONAL: {}".format(*counts),
    ]
    if msg.edns is not None:
        edns = msg.edns
        do = " do" if edns.flags & EDNS_DO else ""
        lines += ["", ";; OPT PSEUDOSECTION:", f"; EDNS: version: {edns.version}, flags:{do}; udp: {edns.size}"]
        lines += ["; " + option for option in edns_option_lines(edns)]
    for section, title in enumerate(SECTION_TITLES):
        if section or msg.edns is None:
            lines.append("")
        lines.append(f";; {title} SECTION:")
        lines += [_rr_line(rr, section) for rr in msg.sections[section]]
    return "\n".join(lines) + "\n"


def _rr_line(rr: Rr, section: int) -> str:
    name = wire_to_text(rr.name)
    klass = RRCLASSES.get(rr.rrclass) or f"CLASS{rr.rrclass}"
    kind = RRTYPES.get(rr.rrtype) or f"TYPE{rr.rrtype}"
    if section == QUESTION:
        return f";{name} {klass} {kind}"
    return f"{name} {rr.ttl} {klass} {kind} {rdata_text(rr.rdata, rr.rrtype, rr.rrclass)}"
