"""SIGKILL while writing: finished files are whole, cut files are recovered.

A few trials here; `python -m bench.crash_soak --trials 50` is the soak.
"""

from __future__ import annotations

import random

import pytest

from bench.crash_soak import make_inputs, reference, trial


@pytest.mark.parametrize("spool_format", ["nmsg", "cbor"])
def test_sigkill_at_random_moments_loses_nothing_finished_and_recovers_the_rest(tmp_path, spool_format):
    work = str(tmp_path)
    pcap, empty = make_inputs(work, 120_000)
    expected = reference(pcap, work, spool_format)
    assert len(expected) >= 5
    rng = random.Random(11)
    cut = 0
    for kill_after in (0.45, 0.6, rng.uniform(0.4, 0.9), rng.uniform(0.4, 0.9)):
        result = trial(pcap, empty, work, kill_after, expected)
        cut += result["cut"]
    assert cut >= 1  # at least one kill landed mid-file, so recovery was exercised
