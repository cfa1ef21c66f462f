"""Name keys: the one form names take in the store's indexes.

A name is kept as its labels in reverse order, each with its length octet
("www.example.com." -> 3com 7example 3www), lower case, without the root's
empty label. Under this form a zone's key is a prefix of the key of every
name in or below it and of no other name, so "everything under a zone" is
one range scan [key, key + 0xFF) (a length octet is at most 63).
"""

from __future__ import annotations

from sensor.records.dns import text_to_wire, wire_to_text

RANGE_END = b"\xff"
ROOT = b"\x00"  # the root's name, in wire form


def labels(wire: bytes) -> list[bytes]:
    """The labels of a wire-form name, root excluded."""
    out = []
    pos = 0
    while wire[pos]:
        out.append(wire[pos : pos + 1 + wire[pos]])
        pos += wire[pos] + 1
    return out


def key(wire: bytes) -> bytes:
    """The reversed key of a wire-form name."""
    return b"".join(reversed(labels(wire.lower())))


def wire_of_key(reversed_key: bytes) -> bytes:
    """The wire-form name a key stands for."""
    parts = []
    pos = 0
    while pos < len(reversed_key):
        parts.append(reversed_key[pos : pos + 1 + reversed_key[pos]])
        pos += reversed_key[pos] + 1
    return b"".join(reversed(parts)) + b"\x00"


def text_of_key(reversed_key: bytes) -> str:
    """Presentation form (trailing dot) of a key."""
    return wire_to_text(wire_of_key(reversed_key))


def key_of_text(text: str) -> bytes:
    """Key of a name written by a person; ValueError when it is no name."""
    return key(text_to_wire(text))
