"""The ingester: claimed files through the chain into the store, once each.

A batch gathers files for up to `window` seconds (the front table
coalesces their repeats meanwhile), then commits their aggregates, what
the bailiwick stage learned from them and their names in one store
transaction, and only then moves the files on. So a crash at any moment
leaves each claimed file either committed (its name is in the store: at
start-up it is just moved on) or not at all (it is ingested again), never
half and never twice. A name already in the store (a sensor that sent a
file again after a broken connection) is not counted again.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sensor.spool.cbor import SpoolError

from . import incoming
from .chain import Chain
from .spoolscan import batches
from .store import STORE_PROBLEMS, Store

log = logging.getLogger("collector")


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a file is fed or a
    batch written. Ingest makes no reference cycles, and holds millions of
    objects the collector tracks (the front tables' entries, the zones of
    servers, a merge's rows), which it walked again at each of its full
    collections, set off by the allocations of the records: 20 of 82 CPU-s
    a million responses on the collector benchmark (bench/RESULTS.md,
    "Ingest"). Collections go on between files, over what was made since:
    what the file left (most of it the front table's new entries) is
    frozen (gc.freeze) as it ends, else the first collection after it
    walked all of it again (3 of 64 CPU-s a million responses). The
    commit, the front table drained, collects it (`collect_frozen`), so
    a cycle made while paused lives one batch at most."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def collect_frozen() -> None:
    """What cyclic_gc_paused froze collected, if it froze anything."""
    if gc.get_freeze_count():
        gc.unfreeze()
        gc.collect()


STEP_SECONDS = 10.0  # a step's time (about: a file is not cut short), between two reports of the daemon's state
UNCLAIMABLE_RETRY = 3600.0  # seconds before an upload that could not be moved into work/ is tried again
RATE_SPAN = 60.0  # seconds over which `status` gives files and records a second


@dataclass
class Totals:
    """What the ingester has done since it started (for `status`)."""

    files: int = 0
    damaged: int = 0
    duplicates: int = 0
    records: int = 0
    last_file: dict[str, str] = field(default_factory=dict)  # sensor -> its last file
    errors: int = 0
    samples: deque[tuple[float, int, int]] = field(default_factory=deque, repr=False)  # (when, files, records)

    def per_second(self, now: float) -> tuple[float, float]:
        """Files and records ingested a second over about the last RATE_SPAN seconds (each call a sample)."""
        self.samples.append((now, self.files, self.records))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_SPAN:
            self.samples.popleft()
        when, files, records = self.samples[0]
        span = now - when
        if span <= 0:
            return 0.0, 0.0
        return round((self.files - files) / span, 2), round((self.records - records) / span, 1)


class Ingester:
    def __init__(self, root: str, store: Store, chain: Chain, *, keep: bool = False, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.store = store
        self.chain = chain
        self.keep = keep
        self.window = window
        self.clock = clock
        self.batch: list[tuple[incoming.Claimed, str]] = []  # (file, outcome) awaiting the commit
        self.batch_names: set[tuple[str, str]] = set()
        self.batch_started = 0.0
        self.totals = Totals()
        self.unclaimable: dict[tuple[str, str, str], float] = {}  # (sensor, channel, name) -> when it failed
        self.unlisted: dict[str, tuple[float, str]] = {}  # a folder of uploads not listed -> (when said, why)

    @property
    def counts(self) -> Counter[str]:
        return self.chain.counts

    def recover(self) -> None:
        """Finish what a previous run left in work/: moved on when its batch
        was committed, ingested again when it was not."""
        for item in incoming.claimed(self.root):
            outcome = self.store.outcome(item.sensor, item.ledger_name)
            if outcome is None:
                self.ingest(item)
            else:
                incoming.finish(self.root, item, damaged=bool(outcome), keep=self.keep)
        self.commit()

    def step(self, most: int = 64) -> int:
        """Claim and ingest up to `most` uploads, for about STEP_SECONDS at most (the daemon
        reports its state between steps: 64 large files took minutes, and `status` said the
        ingester had stopped); commit when the window is over or nothing else waits. The
        number of files taken."""
        taken = 0
        started = self.clock()
        listed = self._claimable()
        taking = listed[:most]
        for number, (sensor, channel, name, size) in enumerate(taking, 1):
            try:
                item = incoming.claim(self.root, sensor, channel, name, size)
            except OSError as exc:
                self._cannot_claim((sensor, channel, name), exc)
                continue
            if item is not None:
                self.ingest(item)
                taken += 1
            if self.batch and self.clock() - self.batch_started >= self.window:
                self.commit()
            if number < len(taking) and self.clock() - started >= STEP_SECONDS:
                return taken  # the rest at the next step, the batch still open
        if len(listed) <= most:  # nothing else waits
            self.commit()
        return taken

    def _claimable(self) -> list[tuple[str, str, str, int]]:
        """The uploads waiting, but those that could not be moved in the last UNCLAIMABLE_RETRY
        seconds (else they would head every listing and take every step's places)."""
        now = self.clock()
        for key, since in list(self.unclaimable.items()):
            if now - since >= UNCLAIMABLE_RETRY:
                del self.unclaimable[key]
        unlisted: list[tuple[str, OSError]] = []
        waiting = incoming.waiting(self.root, unlisted)
        self._cannot_list(unlisted, now)
        if not self.unclaimable:
            return waiting
        return [upload for upload in waiting if upload[:3] not in self.unclaimable]

    def _cannot_list(self, unlisted: list[tuple[str, OSError]], now: float) -> None:
        """A folder of uploads that cannot be listed (an SFTP login's folder without its
        set-group-ID bit, say) hides its files: said when first met and every UNCLAIMABLE_RETRY
        seconds while it lasts, counted as an error; ingest goes on with the others."""
        for folder, exc in unlisted:
            said = self.unlisted.get(folder)
            if said is None or now - said[0] >= UNCLAIMABLE_RETRY:
                why = exc.strerror or str(exc)
                self.unlisted[folder] = (now, why)
                self.totals.errors += 1
                log.error("%s: cannot list it (%s): its uploads wait unseen; said again in %d s while it lasts",
                          folder, why, UNCLAIMABLE_RETRY)
        listed_again = set(self.unlisted) - {folder for folder, _ in unlisted}
        for folder in listed_again:
            del self.unlisted[folder]

    def _cannot_claim(self, key: tuple[str, str, str], exc: OSError) -> None:
        """An upload that cannot be moved into work/ (a sensor's rsync -p left its folder read-only,
        say) is one file's problem: said once, left where it is, tried again later; ingest goes on."""
        self.unclaimable[key] = self.clock()
        self.totals.errors += 1
        log.error("%s: cannot take it (%s), left in %s/, tried again in %d s", "/".join(key), exc,
                  incoming.INCOMING, UNCLAIMABLE_RETRY)

    def ingest(self, item: incoming.Claimed) -> None:
        """Feed one claimed file's records through the chain."""
        key = (item.sensor, item.ledger_name)
        if key in self.batch_names or self.store.outcome(*key) is not None:
            log.warning("%s/%s: already ingested, not counted again", item.sensor, item.ledger_name)
            self.totals.duplicates += 1
            incoming.finish(self.root, item, damaged=False, keep=False)
            return
        if not self.batch:
            self.batch_started = self.clock()
        outcome = self._feed(item)
        self.batch.append((item, outcome))
        self.batch_names.add(key)
        if getattr(self.store, "full", False):  # a store holding its batch in memory (ClickHouse) has enough
            self.commit()

    def _feed(self, item: incoming.Claimed) -> str:
        """'' when the whole file was read, else what was wrong with it."""
        with cyclic_gc_paused():
            return self._feed_records(item)

    def _feed_records(self, item: incoming.Claimed) -> str:
        records = 0
        try:
            for batch in batches(item.path):  # a container's records (the front tables' bound: plus one's)
                self.chain.take(batch)
                records += len(batch)
                if self.chain.full():
                    self.store.merge(*self.chain.drain())
            return ""
        except SpoolError as exc:
            return str(exc) or "damaged"
        except STORE_PROBLEMS:
            raise  # the store's, not the file's: the batch is let go, its files taken again later
        except Exception as exc:  # a daemon never dies of one file
            self.totals.errors += 1
            return f"{type(exc).__name__}: {exc}"
        finally:
            self.totals.records += records

    def abandon(self) -> None:
        """Let the batch under way go (the store refused it): its files stay
        claimed in work/, and `recover` takes them again once the store answers."""
        self.chain.drain()
        self.batch.clear()
        self.batch_names.clear()
        self.store.rollback()

    def commit(self) -> None:
        """Make the batch durable, then move its files on."""
        if not self.batch:
            return
        with cyclic_gc_paused():
            self.store.merge(*self.chain.drain())
        self.store.commit([(item.sensor, item.ledger_name, item.size, outcome) for item, outcome in self.batch])
        for item, outcome in self.batch:
            incoming.finish(self.root, item, damaged=bool(outcome), keep=self.keep)
            self.totals.files += 1
            self.totals.last_file[item.sensor] = item.ledger_name
            if outcome:
                self.totals.damaged += 1
                log.warning("%s/%s set aside in %s/: %s", item.sensor, item.ledger_name, incoming.DAMAGED, outcome)
        self.batch.clear()
        self.batch_names.clear()
        collect_frozen()
