"""The batch journal: a batch written down before any shard receives it.

A batch goes to each shard as one INSERT block (atomic on that shard),
but nothing makes the shards take it together. So the ingester first
writes the batch, split by shard, to this file (fsync, rename), then
inserts each shard's block, and removes the file when every shard has it.
After a crash or while a shard is down the file is still there: each
shard that lacks the batch's marker row gets exactly the block it would
have got, the others nothing. Only this ingester writes its journal (the
file is in its collector_dir), so the pickle it reads is its own.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field

NAME = "clickhouse-batch.journal"


@dataclass
class Batch:
    """What one commit sends: per shard number, the rows of its block; and the knowledge learned."""

    ident: str
    blocks: dict[int, list[tuple]]
    facts: list[tuple[str, bytes, bytes]] = field(default_factory=list)


def write(path: str, batch: Batch) -> None:
    """Durably, and whole or not at all."""
    partial = path + ".partial"
    with open(partial, "wb") as handle:
        pickle.dump(batch, handle, protocol=pickle.HIGHEST_PROTOCOL)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    _sync_folder(path)


def read(path: str) -> Batch | None:
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    except FileNotFoundError:
        return None


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    _sync_folder(path)


def _sync_folder(path: str) -> None:
    folder = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
