"""dnstap: the outstanding queries kept across a planned restart.

A resolver reports a response with the query's time inside it. When the
sensor restarts between a query and its response, the old process would
write the query as unanswered at its stop and the new one would pair the
response with the query rebuilt from that report: one exchange, two
records. So at a planned stop in dnstap mode the query table is written
to `locks/dnstap-<channel>.table` in the spool instead of being flushed,
and the next start feeds it back before the first message: the response
then pairs with the query it answers. A file older than
DNSQR_QUERY_TIMEOUT (the sensor was stopped, not restarted) is flushed at
that start as the stop would have flushed it (same records, same
timeouts), only written later. A stop that cannot write the file flushes
as before; a crash writes none (its queries are lost, as they always
were); a damaged file gives what it holds before the damage and is set
aside (`.damaged`), never read twice.

Format (big-endian): MAGIC; the matcher's clock at the stop (sec int64,
nsec uint32) and the stop's wall time (float64); then per datagram sec
int64, nsec uint32, length uint16 and the datagram.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import struct
import time
from collections.abc import Iterable

from sensor.edges.dnstap import Decoder, DnstapMatcher
from sensor.matching.matcher import Record
from sensor.spool import spooldir

log = logging.getLogger(__name__)

MAGIC = b"sie-dns-sensor dnstap table 1\n"
_HEAD = struct.Struct("!qId")
_ENTRY = struct.Struct("!qIH")
_MAX_DATAGRAM = 0xFFFF


class CarryError(Exception):
    """The file is not one this module wrote, or is cut short."""


@dataclasses.dataclass
class Kept:
    clock: tuple[int, int]  # the matcher's clock at the stop
    saved: float  # wall time of the stop
    datagrams: list[tuple[bytes, int, int]]
    damage: str | None = None  # what stopped the reading early


def table_path(root: str, channel: str) -> str:
    return spooldir.in_locks(root, spooldir.DNSTAP, channel, spooldir.TABLE)


def save(path: str, clock: tuple[int, int], datagrams: Iterable[tuple[bytes, int, int]]) -> int:
    """Write the file whole (aside, fsync, rename); the datagrams written."""
    temporary = f"{path}.{os.getpid()}.tmp"
    count = 0
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(MAGIC + _HEAD.pack(clock[0], clock[1], time.time()))
            for datagram, sec, nsec in datagrams:
                if len(datagram) <= _MAX_DATAGRAM:
                    handle.write(_ENTRY.pack(sec, nsec, len(datagram)) + datagram)
                    count += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return count


def load(path: str, limit: int) -> Kept | None:
    """The file's content (None when there is none), at most `limit`
    datagrams; the file is gone afterwards (set aside when damaged)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        try:
            kept = _parse(handle, limit)
        except CarryError as exc:
            kept, damage = None, str(exc)
        else:
            damage = kept.damage
    if damage is None:
        os.unlink(path)
    else:
        aside = f"{path}.damaged"
        os.replace(path, aside)
        log.warning("%s: %s: %s; set aside as %s", path, damage,
                    "nothing restored" if kept is None else f"the {len(kept.datagrams)} queries before it restored",
                    aside)
    return kept


def _parse(handle, limit: int) -> Kept:
    if handle.read(len(MAGIC)) != MAGIC:
        raise CarryError("not a table this sensor wrote")
    head = handle.read(_HEAD.size)
    if len(head) < _HEAD.size:
        raise CarryError("cut short in its header")
    sec, nsec, saved = _HEAD.unpack(head)
    kept = Kept((sec, nsec), saved, [])
    while entry := handle.read(_ENTRY.size):
        if len(kept.datagrams) >= limit:
            kept.damage = f"more than DNSQR_STATE_TABLE_MAX ({limit}) queries"
            break
        if len(entry) < _ENTRY.size:
            kept.damage = "cut short"
            break
        sec, nsec, length = _ENTRY.unpack(entry)
        datagram = handle.read(length)
        if len(datagram) < length:
            kept.damage = "cut short"
            break
        kept.datagrams.append((datagram, sec, nsec))
    return kept


class TableCarry:
    """What the pipeline calls: `restore` at start, `keep` at a planned stop."""

    def __init__(self, path: str, matcher: DnstapMatcher, decoder: Decoder) -> None:
        self.path = path
        self.matcher = matcher
        self.decoder = decoder

    def restore(self) -> list[Record]:
        """Feed the kept queries back (and tell the decoder it saw them);
        the records that makes: none, or all of them as unanswered when the
        stop was longer ago than the query timeout."""
        try:
            kept = load(self.path, self.matcher.settings.table_max)
        except OSError as exc:
            log.warning("cannot read the outstanding queries kept at the last stop (%s): %s", self.path, exc)
            return []
        if kept is None:
            return []
        matcher = self.matcher
        records: list[Record] = []
        for datagram, sec, nsec in kept.datagrams:
            records += matcher.feed(datagram, sec, nsec)
            self.decoder.remember(datagram, sec)
        records += matcher.tick(*kept.clock)
        away = time.time() - kept.saved
        if away > matcher.settings.query_timeout:
            records += matcher.flush()
            log.info("%d outstanding queries from the stop %.0f s ago: written as unanswered (longer ago than "
                     "DNSQR_QUERY_TIMEOUT)", len(kept.datagrams), away)
        else:
            log.info("%d outstanding queries from the stop %.1f s ago taken back: their responses pair with them",
                     len(matcher.table), away)
        return records

    def keep(self) -> bool:
        """Write the table for the next start; False when that failed (the
        caller then flushes it as unanswered, as without this)."""
        matcher = self.matcher
        if not matcher.table:
            return True
        try:
            count = save(self.path, (matcher.now_sec, matcher.now_nsec), matcher.outstanding())
        except OSError as exc:
            log.warning("cannot keep the outstanding queries for the next start (%s): %s; written as unanswered",
                        self.path, exc)
            return False
        matcher.table.clear()
        matcher.shared.clear()
        if count:
            log.info("%d outstanding queries kept for the next start in %s", count, self.path)
        return True
