"""IPv4 and IPv6 fragment reassembly with bounded memory.

Large DNS answers (DNSSEC, big referrals) arrive in fragments, and only the
first one carries the UDP header. The reassembler holds pieces until a
datagram is whole, then hands back its transport payload together with
every raw fragment (the record keeps them all). Whatever it holds is
capped in bytes, in datagrams and in pieces per datagram, and expires by
packet time, so hostile fragment streams cannot grow the process.
Fragments whose overlapping bytes disagree poison their datagram (as RFC
5722 asks for IPv6): guessing which copy is true would let an attacker
choose what the sensor records.
"""

from __future__ import annotations

from collections import OrderedDict

from sensor.records import limits

MAX_PIECES = 64
MAX_DATAGRAM = 65535


class _Pending:
    __slots__ = ("born", "packets", "pieces", "size", "total")

    def __init__(self, born: int) -> None:
        self.pieces: list[tuple[int, bytes]] = []
        self.packets: list[tuple[bytes, int, int]] = []
        self.total: int | None = None
        self.born = born
        self.size = 0


class Reassembler:
    """Collects fragments per (addresses, protocol, id) key.

    `add` returns None while a datagram is incomplete, and
    (payload, [(raw packet, sec, nsec), ...]) once it is whole. Problems
    are counted in `counters` (a dict shared with the matcher).
    """

    def __init__(
        self,
        counters: dict[str, int],
        max_bytes: int = limits.FRAGMENT_BYTES,
        max_datagrams: int = limits.FRAGMENT_DATAGRAMS,
        timeout: int = limits.FRAGMENT_TIMEOUT,
    ) -> None:
        self.counters = counters
        self.max_bytes = max_bytes
        self.max_datagrams = max_datagrams
        self.timeout = timeout
        self.pending: OrderedDict[tuple, _Pending] = OrderedDict()
        self.held_bytes = 0

    def add(
        self,
        key: tuple,
        offset: int,
        more: bool,
        piece: bytes,
        packet: bytes,
        sec: int,
        nsec: int,
    ) -> tuple[bytes, list[tuple[bytes, int, int]]] | None:
        self.expire(sec)
        end = offset + len(piece)
        if end > MAX_DATAGRAM or (more and len(piece) % 8):
            self._count("fragment_malformed")
            return None
        entry = self.pending.get(key)
        if entry is None:
            entry = self.pending[key] = _Pending(sec)
            if len(self.pending) > self.max_datagrams:
                self._drop_oldest("fragment_evicted")
        if not self._fits(entry, offset, end, more, piece):
            self._drop(key, "fragment_overlap")
            return None
        if (offset, piece) in entry.pieces:
            self._count("fragment_duplicate")
            return None
        entry.pieces.append((offset, piece))
        entry.packets.append((packet, sec, nsec))
        entry.size += len(packet)
        self.held_bytes += len(packet)
        if len(entry.pieces) > MAX_PIECES:
            self._drop(key, "fragment_too_many")
            return None
        while self.held_bytes > self.max_bytes and self.pending:
            self._drop_oldest("fragment_evicted")
        if key not in self.pending:
            return None
        payload = self._assemble(entry)
        if payload is None:
            return None
        self._forget(key)
        return payload, entry.packets

    def _fits(self, entry: _Pending, offset: int, end: int, more: bool, piece: bytes) -> bool:
        """False when this piece contradicts what the datagram already has."""
        if not more:
            if entry.total is not None and entry.total != end:
                return False
            entry.total = end
        if entry.total is not None and end > entry.total:
            return False
        for other_offset, other in entry.pieces:
            lo = max(offset, other_offset)
            hi = min(end, other_offset + len(other))
            if lo < hi and piece[lo - offset : hi - offset] != other[lo - other_offset : hi - other_offset]:
                return False
        return True

    @staticmethod
    def _assemble(entry: _Pending) -> bytes | None:
        """The whole payload once pieces cover 0..total without a gap."""
        if entry.total is None:
            return None
        buffer = bytearray(entry.total)
        covered = 0
        for offset, piece in sorted(entry.pieces):
            if offset > covered:
                return None
            buffer[offset : offset + len(piece)] = piece
            covered = max(covered, offset + len(piece))
        return bytes(buffer) if covered == entry.total else None

    def expire(self, now: int) -> None:
        """Forget datagrams whose first piece is older than the timeout."""
        while self.pending:
            key, entry = next(iter(self.pending.items()))
            if now - entry.born <= self.timeout:
                return
            self._drop(key, "fragment_timeout")

    def _drop_oldest(self, reason: str) -> None:
        self._drop(next(iter(self.pending)), reason)

    def _drop(self, key: tuple, reason: str) -> None:
        self._forget(key)
        self._count(reason)

    def _forget(self, key: tuple) -> None:
        entry = self.pending.pop(key, None)
        if entry is not None:
            self.held_bytes -= entry.size

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1
