"""What the stores' rows are keyed by, made in C where the C takes the input.

Both stores key their rows alike: an owner by its name key (names.key),
an RRset's data packed (store.pack_rdata), an inverse-index row by
store.rdata_key (a target name's key, else the datum). `collector._ingest`
makes each in C; what it refuses (a name or a datum it does not take) goes
to the Python, which says what is wrong. tests/test_collector_fast.py
holds the two to each other.
"""

from __future__ import annotations

from collections.abc import Iterator

from . import _ingest, decompose, names
from .store import pack_rdata

_name_key, _pack, _target = _ingest.name_key, _ingest.pack_rdata, _ingest.rdata_target


def name_key(wire: bytes) -> bytes:
    """names.key, in C when it takes the name."""
    try:
        return _name_key(wire)
    except ValueError:
        return names.key(wire)


def forward_key(key: bytes) -> bytes:
    """The forward key of a name key: its labels back in written order (no root)."""
    return names.wire_of_key(key)[:-1]


def packed(rdatas: tuple[bytes, ...]) -> bytes:
    """store.pack_rdata, in C when it takes the data."""
    try:
        return _pack(rdatas)
    except ValueError:
        return pack_rdata(rdatas)


class NameKeys(dict):
    """wire name -> its name key, each computed once a merge, and in
    `forward` its forward key (forward_key's, straight from the name)."""

    def __init__(self) -> None:
        super().__init__()
        self.forward: dict[bytes, bytes] = {}

    def __missing__(self, wire: bytes) -> bytes:
        try:
            key = _name_key(wire)
            forward = wire.lower()[:-1]  # a name the C took: what wire_of_key gives back, without the root
        except ValueError:
            key = names.key(wire)
            forward = forward_key(key)
        self[wire] = key
        self.forward[wire] = forward
        return key

    def forward_rows(self) -> Iterator[tuple[bytes, bytes]]:
        """(forward key, key) of every name."""
        return zip(self.forward.values(), self.values(), strict=True)


def index_key(keys: NameKeys, rrtype: int, datum: bytes) -> tuple[bytes, bytes | None]:
    """(store.rdata_key's key of the datum, its target name or None): a target's key through `keys`,
    so the target is one of the merge's names; the target found in C when it takes the data."""
    try:
        target = _target(rrtype, datum)
    except ValueError:
        target = decompose.rdata_names(rrtype, datum)  # which says what is wrong
    return (datum, None) if target is None else (keys[target], target)
