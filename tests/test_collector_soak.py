"""SIGKILL the ingester at random moments: the store equals a clean run's.

One trial here; `python -m bench.ingest_soak --trials 20 --files 120` is the soak.
"""

from __future__ import annotations

import random

from bench.ingest_soak import prepare, reference, trial


def test_sigkill_at_random_moments_counts_every_file_exactly_once(tmp_path):
    work = str(tmp_path)
    template = prepare(work, files=24, seed=3)
    expected, full = reference(work, template)
    assert len(expected["ingested"]) == 24 and expected["rrset"]
    rng = random.Random(5)
    result = trial(work, template, expected, [rng.uniform(0.3, full) for _ in range(4)])
    assert result["files"] == 24
