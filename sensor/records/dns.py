"""The little of a DNS message the sensor reads: header and question.

Names stay in wire format (as on the wire, case kept) because matching is
byte-exact; text forms exist only for people (`read`) and for the qname
filters in the configuration. Parsing never raises on bad input: it
returns None so the caller can count the packet and go on.
"""

from __future__ import annotations

import struct

from sensor.records.wire import DNS_HEADER_LEN, MAX_NAME_LEN

_QUESTION_TAIL = struct.Struct("!HH")


def parse_question(buf: bytes, start: int, end: int) -> tuple[bytes, int, int] | None:
    """(qname as on the wire, qtype, qclass) of a message's only question.

    `start` is where the DNS message begins inside `buf` and `end` where it
    stops, so a caller can parse in place without copying the datagram.
    The name is delimited exactly as the reference sensor does it (wdns's
    skip_name), so records carry the same bytes: labels are skipped by
    their length octet whatever its value, a compression pointer ends the
    name (its two octets included), and there is no length limit but the
    datagram's. None when the name and the type/class do not fit: the
    reference then drops the datagram.
    """
    first = pos = start + DNS_HEADER_LEN
    while pos < end:
        length = buf[pos]
        if length == 0:
            break
        if length >= 0xC0:
            pos += 1  # a pointer: two octets, and the end of the name
            break
        pos += length + 1
    pos += 1
    if pos + 4 > end:
        return None
    qtype, qclass = _QUESTION_TAIL.unpack_from(buf, pos)
    return buf[first:pos], qtype, qclass


def name_and_ancestors(wire: bytes):
    """Yield the name, then each name above it up to the root (wire form)."""
    pos = 0
    while pos < len(wire):
        yield wire[pos:]
        if wire[pos] == 0:
            return
        pos += wire[pos] + 1


def in_any_zone(wire_lower: bytes, zones: frozenset[bytes]) -> bool:
    """True when the name is one of `zones` or below one of them."""
    return any(candidate in zones for candidate in name_and_ancestors(wire_lower))


def wire_to_text(wire: bytes) -> str:
    """Presentation form with a trailing dot, escaped as wdns does it.

    Every byte from `!` to `~` stands for itself but `.` and `\\` (escaped
    with a backslash); every other byte, the space included, is `\\DDD`.
    Labels are walked by their length octets within the bytes given, so
    a malformed name still gives a text (this runs when showing records
    to a person) and never an exception.
    """
    out = []
    pos = 0
    while pos < len(wire) and wire[pos] != 0:
        label = wire[pos + 1 : pos + 1 + wire[pos]]
        pos += wire[pos] + 1
        out.append("".join(_ESCAPED[byte] for byte in label))
        out.append(".")
    return "".join(out) or "."


_ESCAPED = [
    "\\" + chr(b) if b in b".\\" else chr(b) if 0x21 <= b <= 0x7E else f"\\{b:03d}" for b in range(256)
]


_DIGITS = frozenset("0123456789")


def text_to_wire(text: str) -> bytes:
    """Wire form of a name written by a person (\\. and \\DDD understood)."""
    if text in (".", ""):
        return b"\x00"
    labels: list[bytearray] = [bytearray()]
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            if i + 1 >= len(text):
                raise ValueError("trailing backslash")
            if text[i + 1] in _DIGITS:  # \DDD: exactly three digits, at most 255 (RFC 1035 5.1, as dnspython)
                digits = text[i + 1 : i + 4]
                if len(digits) != 3 or not all(digit in _DIGITS for digit in digits) or int(digits) > 255:
                    raise ValueError(f"bad escape \\{digits}: \\DDD takes three digits, 000 to 255")
                labels[-1].append(int(digits))
                i += 4
                continue
            labels[-1].extend(text[i + 1].encode())
            i += 2
            continue
        if char == ".":
            labels.append(bytearray())
        else:
            labels[-1].extend(char.encode())
        i += 1
    if not labels[-1]:
        labels.pop()
    wire = bytearray()
    for label in labels:
        if not 0 < len(label) <= 63:
            raise ValueError("a label must be 1 to 63 octets")
        wire.append(len(label))
        wire.extend(label)
    wire.append(0)
    if len(wire) > MAX_NAME_LEN:
        raise ValueError("name longer than 255 octets")
    return bytes(wire)
