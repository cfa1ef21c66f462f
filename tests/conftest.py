"""Fixtures shared across test modules."""

from __future__ import annotations

import pytest

from tests.uploadkit import make_collector


@pytest.fixture
def collector(tmp_path):
    """A private sshd as the collector: (sshd, config path, spool)."""
    server, config, spool = make_collector(tmp_path)
    try:
        yield server, config, spool
    finally:
        server.close()
