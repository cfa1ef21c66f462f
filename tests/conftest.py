"""Fixtures shared across test modules."""

from __future__ import annotations

import pytest


@pytest.fixture
def collector(tmp_path):
    """A private sshd as the collector: (sshd, config path, spool)."""
    from tests.uploadkit import make_collector  # here: pure tests need no SSH libraries

    server, config, spool = make_collector(tmp_path)
    try:
        yield server, config, spool
    finally:
        server.close()
