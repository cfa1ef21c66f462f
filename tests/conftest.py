"""Fixtures shared across test modules, and the test markers.

Markers, by module (one place, so a new test file says here what it needs):
- network: real servers or network namespaces (root): sshd, nsd, unbound,
  veth pairs, tshark;
- slow: seconds to minutes each (SIGKILL trials, floods, the DNS lab);
- package: builds, installs and purges the .deb on this machine.
`pytest -m "not network and not slow and not package"` runs the pure core
(matcher, config, codecs, render) in seconds, without importing the
uploader's SSH libraries.
"""

from __future__ import annotations

import pytest

MARKS = {
    "test_live": ("network",),
    "test_lab": ("network", "slow"),
    "test_lab_dnstap": ("network", "slow"),
    "test_srv": ("network",),
    "test_daemon": ("network",),
    "test_upload": ("network",),
    "test_rsync": ("network",),
    "test_upload_faults": ("network", "slow"),
    "test_capture_workers": ("network",),
    "test_outage": ("network", "slow"),
    "test_full_disk": ("slow",),
    "test_crash": ("slow",),
    "test_collector_soak": ("slow",),
    "test_collector_lab": ("network", "slow"),
    "test_collector_sftp": ("network",),
    "test_collector_api": ("network",),
    "test_collector_page": ("network",),
    "test_collector_dnsdbq": ("network",),
    "test_collector_clickhouse": ("network", "slow"),
    "test_collector_clickhouse_replicated": ("network", "slow"),
    "test_flood": ("slow",),
    "test_sanitizers": ("slow",),
    "test_package": ("package", "network", "slow"),
}


def pytest_ignore_collect(collection_path, config) -> bool | None:
    """Do not even import a module whose every test the -m expression
    deselects: the pure run then never loads paramiko or cryptography."""
    marks = MARKS.get(collection_path.stem)
    expression = config.getoption("markexpr", "")
    if not marks or not expression:
        return None
    from _pytest.mark.expression import Expression

    wanted = Expression.compile(expression).evaluate(lambda name, **_: name in marks)
    return True if not wanted else None


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        for mark in MARKS.get(item.module.__name__.rsplit(".", 1)[-1], ()):
            item.add_marker(mark)


@pytest.fixture
def collector(tmp_path):
    """A private sshd as the collector: (sshd, config path, spool)."""
    from tests.uploadkit import make_collector  # here: pure tests need no SSH libraries

    server, config, spool = make_collector(tmp_path)
    try:
        yield server, config, spool
    finally:
        server.close()
