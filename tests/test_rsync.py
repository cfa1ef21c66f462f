"""upload_method="rsync" against a real sshd whose user is forced to rrsync.

That is how the SIE collector takes files: its sshd runs `rsync --server`
(restricted to one directory) whatever the client asks for.
"""

from __future__ import annotations

import os
import random
import subprocess

import pytest

from sensor.spool import spooldir
from tests.uploadkit import CHANNEL, contents, make_collector, needs_sshd, run_tool, same, spool_files
from uploader.discovery import rfc2782_order
from uploader.upload import pending

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/rrsync"), reason="needs rsync (rrsync)")


@pytest.fixture
def rsync_collector(tmp_path):
    server, config, spool = make_collector(tmp_path, method="rsync")
    try:
        yield server, config, spool
    finally:
        server.close()


@needs_sshd
def test_files_arrive_byte_identical_under_up_channel_and_leave_the_spool(rsync_collector):
    server, config, spool = rsync_collector
    server.start()
    paths = spool_files(spool, [1000, 250_000, 3_000_000, 10, 5000])
    sent = contents(paths)
    result = run_tool("upload", "-c", config, "--once")
    assert result.returncode == 0, result.stderr
    assert same(sent, server)
    assert pending(spooldir.folder(spool, spooldir.WAITING, CHANNEL)) == []
    assert sorted(os.listdir(server.path("up", CHANNEL))) == sorted(sent)  # no temporaries left
    assert server.accepted_sessions() == 3  # maxper=2: 2 + 2 + 1
    assert result.stderr.count("uploaded ") == 5


@needs_sshd
@pytest.mark.parametrize("case", ["changed", "unknown"])
def test_host_key_changed_or_unknown_sends_nothing_and_keeps_the_file(rsync_collector, tmp_path, case):
    server, config, spool = rsync_collector
    server.start()
    if case == "changed":
        other = tmp_path / "other_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        kind, blob = (tmp_path / "other_key.pub").read_text().split()[:2]
        (spool / "keys" / "known_hosts").write_text(f"[127.0.0.1]:{server.port} {kind} {blob}\n")
    else:
        (spool / "keys" / "known_hosts").write_text("")
    paths = spool_files(spool, [1000])
    result = run_tool("upload", "-c", config, "--once")
    assert result.returncode == 1
    assert "unknown or has changed" in result.stderr and "nothing sent" in result.stderr
    assert server.accepted_sessions() == 0
    assert os.listdir(server.path("up")) == []
    assert pending(spooldir.folder(spool, spooldir.WAITING, CHANNEL)) == paths


@needs_sshd
def test_collector_down_keeps_every_file_and_a_later_round_sends_them(rsync_collector):
    server, config, spool = rsync_collector
    paths = spool_files(spool, [5000] * 3)
    sent = contents(paths)
    result = run_tool("upload", "-c", config, "--once")  # nothing listens yet
    assert result.returncode == 1
    assert "rsync to 127.0.0.1" in result.stderr and "SSH connection failed" in result.stderr
    assert "Connection refused" in result.stderr  # ssh's own words
    assert pending(spooldir.folder(spool, spooldir.WAITING, CHANNEL)) == paths
    server.start()
    result = run_tool("upload", "-c", config, "--once")
    assert result.returncode == 0, result.stderr
    assert same(sent, server) and pending(spooldir.folder(spool, spooldir.WAITING, CHANNEL)) == []


@needs_sshd
def test_the_forced_command_is_what_runs(rsync_collector):
    """The collector's side really is rrsync: a shell command is refused."""
    server, _, spool = rsync_collector
    server.start()
    result = subprocess.run(
        ["ssh", "-F", "/dev/null", "-p", str(server.port), "-i", str(spool / "keys" / "upload"),
         "-o", f"UserKnownHostsFile={spool / 'keys' / 'known_hosts'}", "-o", "BatchMode=yes",
         f"{server.user}@127.0.0.1", "touch", "pwned"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    assert not os.path.exists(server.path("pwned"))


def test_srv_records_are_ordered_by_priority_then_weight():
    records = [(20, 0, 1, "backup"), (10, 60, 2, "big"), (10, 20, 3, "small"), (10, 0, 4, "zero")]
    firsts = [rfc2782_order(records, random.Random(seed))[0][3] for seed in range(2000)]
    assert set(firsts) <= {"big", "small", "zero"}
    assert firsts.count("big") > firsts.count("small") > firsts.count("zero")
    for seed in range(50):
        assert rfc2782_order(records, random.Random(seed))[-1][3] == "backup"
