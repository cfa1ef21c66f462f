"""`run --pcap` on a terminal: how much of the file is read, then what it gave.

On stderr, so that stdout stays the records' (`--print`) and a replay run
from a script (stderr not a terminal) gets no bar at all.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Protocol

import click


class Positioned(Protocol):
    """A replayed file's edge: how far into the file it has read, in bytes."""

    def position(self) -> int: ...


class Totals(Protocol):
    """What a run did (pipeline.Summary), as far as the closing line says it."""

    packets: int
    records: int
    pairs: int
    files: int
    bytes_written: int


class ProgressBar:
    """Bytes of the file read, told after every batch; then a summary line."""

    def __init__(self, path: str) -> None:
        self.started = time.monotonic()
        self.bar = click.progressbar(length=os.path.getsize(path), label="replaying", file=sys.stderr,
                                     show_eta=True, show_percent=True)
        self.bar.__enter__()

    def __call__(self, capture: Positioned) -> None:
        position = capture.position()
        if position > self.bar.pos:
            self.bar.update(position - self.bar.pos)

    def finish(self, summary: Totals) -> None:
        self.bar.update(self.bar.length - self.bar.pos)
        self.bar.__exit__(None, None, None)
        seconds = max(time.monotonic() - self.started, 1e-9)
        click.echo(
            f"{summary.packets} packets in {seconds:.1f} s ({summary.packets / seconds:.0f} packets/s): "
            f"{summary.records} records ({summary.pairs} pairs), {summary.files} files, "
            f"{summary.bytes_written} bytes",
            err=True,
        )
