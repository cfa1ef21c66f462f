"""The uploader against a real OpenSSH sshd on loopback, and its faults."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sensor.service import config as configuration
from sensor.service import daemonstate as state
from sensor.spool import spooldir
from tests import sshd as sshd_helper
from tests.uploadkit import (
    CHANNEL,
    contents,
    make_collector,
    needs_sshd,
    run_tool,
    same,
    spool_files,
    start_tool,
    write_config,
)
from uploader import keys
from uploader.upload import pending, trim


# ------------------------------------------------------- without a collector
def test_gen_key_makes_a_private_0600_key_and_refuses_to_overwrite(tmp_path):
    config = write_config(tmp_path / "conf", tmp_path)
    result = run_tool("gen-key", "-c", config)
    assert result.returncode == 0, result.stderr
    key = tmp_path / "keys" / "upload"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = (tmp_path / "keys" / "upload.pub").read_text()
    assert public.startswith("ssh-ed25519 ") and public in result.stdout + "\n"
    assert public.split()[2]  # a comment: the host's name
    again = run_tool("gen-key", "-c", config)
    assert again.returncode != 0 and "already exists" in again.stderr
    import paramiko

    assert paramiko.PKey.from_path(str(key)).get_name() == "ssh-ed25519"


def test_gen_key_rsa_option(tmp_path):
    path = str(tmp_path / "k")
    line = keys.generate(path, "rsa", 2048, comment="sensor.example")
    assert line.startswith("ssh-rsa ") and line.endswith(" sensor.example\n")
    import paramiko

    assert paramiko.PKey.from_path(path).get_bits() == 2048


def test_upload_no_exits_at_once_saying_so(tmp_path):
    result = run_tool("upload", "-c", write_config(tmp_path / "conf", tmp_path, upload="no"))
    assert result.returncode == 0 and 'upload="no"' in result.stderr


def test_pending_is_oldest_first_and_skips_temporaries(tmp_path):
    paths = spool_files(tmp_path, [10, 10, 10])
    (Path(spooldir.folder(tmp_path, spooldir.WAITING, CHANNEL)) / ".partial").write_bytes(b"x")
    assert pending(spooldir.folder(tmp_path, spooldir.WAITING, CHANNEL)) == paths


def test_trim_removes_oldest_until_under_the_cap_and_logs(tmp_path, caplog):
    paths = spool_files(tmp_path, [4096, 4096, 4096, 4096])
    archive = Path(spooldir.folder(tmp_path, spooldir.ARCHIVE, CHANNEL))
    archive.mkdir(parents=True)
    os.link(paths[0], archive / os.path.basename(paths[0]))
    removed = trim(spooldir.folder(tmp_path, spooldir.WAITING, CHANNEL), max_kbytes=9)
    assert removed == paths[:2]
    assert pending(spooldir.folder(tmp_path, spooldir.WAITING, CHANNEL)) == paths[2:]
    assert (archive / os.path.basename(paths[0])).exists()  # archive is not touched
    assert sum("removed" in r.message for r in caplog.records) == 2


def test_over_cap_spool_is_trimmed_even_while_the_collector_is_down(tmp_path):
    spool_files(tmp_path, [2048] * 5)
    config = write_config(
        tmp_path / "conf", tmp_path, login="x", submitserver=f"127.0.0.1:{sshd_helper.free_port()}",
        max_spool_size_kbytes="5",
    )
    keys.generate(str(tmp_path / "keys" / "upload"))
    (tmp_path / "keys" / "known_hosts").write_text("")
    result = run_tool("upload", "-c", config, "--once")
    assert result.returncode == 1
    assert result.stderr.count("without uploading it") == 3
    assert len(pending(spooldir.folder(tmp_path, spooldir.WAITING, CHANNEL))) == 2


# ---------------------------------------------------------- with an sshd
@needs_sshd
def test_files_arrive_whole_local_copies_go_archive_stays(collector):
    server, config, spool = collector
    server.start()
    paths = spool_files(spool, [1000, 200_000, 3_000_000, 10, 5000])
    archive = Path(spooldir.folder(spool, spooldir.ARCHIVE, CHANNEL))
    archive.mkdir(parents=True)
    for path in paths:
        os.link(path, archive / os.path.basename(path))
    expected = contents(paths)
    result = run_tool("upload", "-c", config, "--once")
    assert result.returncode == 0, result.stderr
    assert same(expected, server)
    assert sorted(os.listdir(server.path("up", CHANNEL))) == sorted(expected)  # no temporaries left
    assert pending(spooldir.folder(spool, spooldir.WAITING, CHANNEL)) == []
    assert sorted(os.listdir(archive)) == sorted(expected)
    assert result.stderr.count("uploaded sensor1.") == 5
    assert server.accepted_sessions() == 3  # maxper=2: 2 + 2 + 1


@needs_sshd
def test_collector_down_files_stay_and_arrive_once_it_starts(collector):
    server, config, spool = collector
    paths = spool_files(spool, [5000, 7000])
    expected = contents(paths)
    uploader = start_tool("upload", "-c", config)
    try:
        time.sleep(3)
        assert pending(spooldir.folder(spool, spooldir.WAITING, CHANNEL)) == paths
        server.start()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not same(expected, server):
            time.sleep(0.2)
        assert same(expected, server)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pending(spooldir.folder(spool, spooldir.WAITING, CHANNEL)):
            time.sleep(0.1)
        assert pending(spooldir.folder(spool, spooldir.WAITING, CHANNEL)) == []
        # new files are picked up within a few seconds while it keeps watching
        more = spool_files(spool, [300], start=1_790_100_000)
        expected_more = contents(more)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not same(expected_more, server):
            time.sleep(0.1)
        assert same(expected_more, server)
    finally:
        uploader.terminate()
        _, err = uploader.communicate(timeout=20)
    assert "cannot connect" in err
    assert uploader.returncode == 0


@needs_sshd
def test_sshd_killed_mid_file_leaves_no_final_name_and_the_file_arrives_next_time(collector):
    server, config, spool = collector
    server.start()
    (path,) = spool_files(spool, [300_000_000])
    name = os.path.basename(path)
    expected = contents([path])
    uploader = start_tool("upload", "-c", config, "--once")
    temporary = server.path("up", CHANNEL, f".{name}.part")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if os.path.exists(temporary) and os.path.getsize(temporary) > 20_000_000:
            break
        time.sleep(0.01)
    server.kill()
    _, err = uploader.communicate(timeout=120)
    assert uploader.returncode == 1, err
    assert "upload failed" in err
    assert not os.path.exists(server.path("up", CHANNEL, name))
    assert os.path.getsize(temporary) < 300_000_000
    assert pending(spooldir.folder(spool, spooldir.WAITING, CHANNEL)) == [path]
    server.start()
    result = run_tool("upload", "-c", config, "--once", timeout=300)
    assert result.returncode == 0, result.stderr
    assert same(expected, server)
    assert os.listdir(server.path("up", CHANNEL)) == [name]


@needs_sshd
@pytest.mark.parametrize("case", ["changed", "unknown"])
def test_host_key_changed_or_unknown_sends_nothing(collector, tmp_path, case):
    server, config, spool = collector
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
    assert ("does not match" if case == "changed" else "is not in") in result.stderr
    assert "nothing sent" in result.stderr
    assert not os.path.exists(server.path("up"))
    assert server.accepted_sessions() == 0
    assert pending(spooldir.folder(spool, spooldir.WAITING, CHANNEL)) == paths


@needs_sshd
def test_remote_directory_not_writable_keeps_the_file(collector):
    server, config, spool = collector
    server.start()
    os.makedirs(server.path("up", CHANNEL))
    os.chmod(server.path("up", CHANNEL), 0o755)  # owned by root: the user cannot write
    paths = spool_files(spool, [1000])
    result = run_tool("upload", "-c", config, "--once")
    assert result.returncode == 1
    assert "permission denied" in result.stderr.lower()
    assert pending(spooldir.folder(spool, spooldir.WAITING, CHANNEL)) == paths
    assert os.listdir(server.path("up", CHANNEL)) == []


@needs_sshd
def test_two_uploaders_at_once_upload_each_file_once(collector):
    server, config, spool = collector
    server.start()
    paths = spool_files(spool, [100_000] * 12)
    expected = contents(paths)
    first = start_tool("upload", "-c", config, "--once")
    second = start_tool("upload", "-c", config, "--once")
    outputs = [p.communicate(timeout=120)[1] for p in (first, second)]
    assert same(expected, server)
    assert sorted(os.listdir(server.path("up", CHANNEL))) == sorted(expected)
    assert sum(o.count("uploaded sensor1.") for o in outputs) == 12
    assert pending(spooldir.folder(spool, spooldir.WAITING, CHANNEL)) == []


def test_missing_settings_are_a_clear_error(tmp_path):
    cfg = configuration.build({"spooldir": (str(tmp_path), "test")})
    with pytest.raises(configuration.ConfigError, match="login"):
        from uploader.upload import Uploader

        Uploader(cfg)


# ----------------------------------------------- issue 25, items 7, 8 and 10
needs_rrsync = pytest.mark.skipif(not os.path.exists("/usr/bin/rrsync"), reason="needs rsync (rrsync)")


@pytest.fixture
def rsync_only(tmp_path):
    """A collector as SIE's: its sshd forces rrsync for the sensor's key."""
    server, config, spool = make_collector(tmp_path, method="rsync")
    try:
        yield server, config, spool
    finally:
        server.close()


def _set(config: str, **settings) -> None:
    """Rewrite these settings in the configuration file."""
    with open(config) as handle:
        lines = [line for line in handle.read().splitlines() if line.split("=", 1)[0] not in settings]
    with open(config, "w") as handle:
        handle.write("\n".join(lines + [f'{name}="{value}"' for name, value in settings.items()]) + "\n")


@needs_sshd
@needs_rrsync
@pytest.mark.parametrize("case", ["changed", "unknown"])
def test_rsync_names_the_fingerprint_of_the_host_key_it_refuses(rsync_only, tmp_path, case):
    server, config, spool = rsync_only
    server.start()
    if case == "changed":
        other = tmp_path / "other_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        kind, blob = (tmp_path / "other_key.pub").read_text().split()[:2]
        (spool / "keys" / "known_hosts").write_text(f"[127.0.0.1]:{server.port} {kind} {blob}\n")
    else:
        (spool / "keys" / "known_hosts").write_text("")
    spool_files(spool, [1000])
    result = run_tool("upload", "-c", config, "--once")
    printed = subprocess.run(["ssh-keygen", "-lf", server.host_key + ".pub"], capture_output=True, text=True,
                             check=True).stdout.split()[1]
    assert result.returncode == 1
    assert f"offered ssh-ed25519 {printed}" in result.stderr and "nothing sent" in result.stderr
    assert "debug1" not in result.stderr


@needs_sshd
@needs_rrsync
def test_sftp_to_an_rsync_only_collector_says_to_try_rsync(rsync_only):
    server, config, spool = rsync_only
    server.start()
    _set(config, upload_method="sftp")
    paths = spool_files(spool, [1000])
    result = run_tool("upload", "-c", config, "--once")
    assert result.returncode == 1
    assert f"it forces a command for {server.user} instead of SFTP" in result.stderr
    assert 'try upload_method="rsync"' in result.stderr
    assert pending(spooldir.folder(spool, spooldir.WAITING, CHANNEL)) == paths


@needs_sshd
@needs_rrsync
def test_a_reload_that_changes_upload_method_uses_the_new_method(rsync_only):
    server, config, spool = rsync_only
    server.start()
    _set(config, upload_method="sftp", interval="1")
    sent = contents(spool_files(spool, [1000, 2000]))
    uploader = start_tool("upload", "-c", config)
    state_file = state.state_path(str(spool), state.UPLOADER, CHANNEL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (state.read_state(state_file) or {}).get("last_error"):
            time.sleep(0.2)
        assert (state.read_state(state_file) or {}).get("last_error"), "sftp to an rsync-only collector failed"
        _set(config, upload_method="rsync", interval="1")
        uploader.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not same(sent, server):
            time.sleep(0.2)
    finally:
        uploader.terminate()
        _, err = uploader.communicate(timeout=60)
    assert same(sent, server), err
    assert "upload_method is now rsync (was sftp)" in err


@needs_sshd
def test_a_reload_starts_a_round_at_once_whatever_the_backoff(collector, monkeypatch):
    """A wrong login fixed by a reload is used now, not after the backoff the
    failures built (up to 300 s; here made an hour so that waiting shows)."""
    from uploader import cli as uploader_cli
    from uploader import upload

    server, config, spool = collector
    server.start()
    right = configuration.load(config)
    _set(config, login="nobody-here")
    sent = contents(spool_files(spool, [1000]))
    monkeypatch.setattr(upload, "BACKOFF_FIRST", 3600.0)
    uploader = upload.Uploader(configuration.load(config))
    stop = threading.Event()
    worker = threading.Thread(target=uploader.run, args=(False, stop.is_set))
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not uploader.failures:
            time.sleep(0.05)
        assert uploader.failures, "the wrong login failed"
        _set(config, login=right.login)
        uploader_cli._reload(config, uploader)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not same(sent, server):
            time.sleep(0.1)
        assert same(sent, server)
    finally:
        stop.set()
        worker.join(timeout=60)
