"""The little of a DNS message the sensor reads: header and question.

Names stay in wire format (as on the wire, case kept) because matching is
byte-exact; text forms exist only for people (`read`) and for the qname
filters in the configuration. Parsing never raises on bad input: it
returns None so the caller can count the packet and go on.
"""

from __future__ import annotations

import struct

from .constants import DNS_HEADER_LEN, MAX_NAME_LEN

_QUESTION_TAIL = struct.Struct("!HH")


def parse_question(buf: bytes, start: int, end: int) -> tuple[bytes, int, int] | None:
    """(qname in wire format, qtype, qclass) of the first question.

    `start` is where the DNS message begins inside `buf` and `end` where it
    stops, so a caller can parse in place without copying the datagram.
    Compression pointers are refused: in the question nothing precedes the
    name but the header, so a pointer there is always malformed (and can
    never loop). None when the name or the type/class run off the end.
    """
    first = pos = start + DNS_HEADER_LEN
    while True:
        if pos >= end:
            return None
        length = buf[pos]
        if length == 0:
            break
        if length > 63:
            return None
        pos += length + 1
    pos += 1
    if pos - first > MAX_NAME_LEN or pos + 4 > end:
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
    """Presentation form with a trailing dot, escaped as wdns escapes it.

    nmsgtool (through wdns) writes every byte from `!` to `~` as itself
    except `.` and `\\`, which get a backslash, and every other byte, the
    space included, as `\\DDD`; `read` prints names the same way so the
    two outputs compare equal. Malformed input gives a best-effort text
    rather than an exception: this runs when showing records to a person.
    """
    labels = []
    pos = 0
    while pos < len(wire):
        length = wire[pos]
        if length == 0:
            break
        label = wire[pos + 1 : pos + 1 + length]
        pos += length + 1
        labels.append("".join(_ESCAPED[byte] for byte in label))
    return ".".join(labels) + "."


_ESCAPED = tuple(
    "\\" + chr(byte) if byte in b".\\" else chr(byte) if 0x21 <= byte <= 0x7E else f"\\{byte:03d}"
    for byte in range(256)
)


def text_to_wire(text: str) -> bytes:
    """Wire form of a name written by a person (\\. and \\DDD understood)."""
    if text in (".", ""):
        return b"\x00"
    labels: list[bytearray] = [bytearray()]
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            if text[i + 1 : i + 4].isdigit() and len(text[i + 1 : i + 4]) == 3:
                labels[-1].append(int(text[i + 1 : i + 4]))
                i += 4
                continue
            if i + 1 >= len(text):
                raise ValueError("trailing backslash")
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
