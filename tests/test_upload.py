"""The uploader against a real OpenSSH sshd on loopback, and its faults."""

from __future__ import annotations

import os
import stat
import subprocess
import time

import pytest

from sensor import config as configuration
from tests import sshd as sshd_helper
from tests.uploadkit import CHANNEL, contents, needs_sshd, run_tool, same, spool_files, start_tool, write_config
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
    (tmp_path / "waiting" / CHANNEL / ".partial").write_bytes(b"x")
    assert pending(str(tmp_path / "waiting" / CHANNEL)) == paths


def test_trim_removes_oldest_until_under_the_cap_and_logs(tmp_path, caplog):
    paths = spool_files(tmp_path, [4096, 4096, 4096, 4096])
    archive = tmp_path / "archive" / CHANNEL
    archive.mkdir(parents=True)
    os.link(paths[0], archive / os.path.basename(paths[0]))
    removed = trim(str(tmp_path / "waiting" / CHANNEL), max_kbytes=9)
    assert removed == paths[:2]
    assert pending(str(tmp_path / "waiting" / CHANNEL)) == paths[2:]
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
    assert len(pending(str(tmp_path / "waiting" / CHANNEL))) == 2


# ---------------------------------------------------------- with an sshd
@needs_sshd
def test_files_arrive_whole_local_copies_go_archive_stays(collector):
    server, config, spool = collector
    server.start()
    paths = spool_files(spool, [1000, 200_000, 3_000_000, 10, 5000])
    archive = spool / "archive" / CHANNEL
    archive.mkdir(parents=True)
    for path in paths:
        os.link(path, archive / os.path.basename(path))
    expected = contents(paths)
    result = run_tool("upload", "-c", config, "--once")
    assert result.returncode == 0, result.stderr
    assert same(expected, server)
    assert sorted(os.listdir(server.path("up", CHANNEL))) == sorted(expected)  # no temporaries left
    assert pending(str(spool / "waiting" / CHANNEL)) == []
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
        assert pending(str(spool / "waiting" / CHANNEL)) == paths
        server.start()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not same(expected, server):
            time.sleep(0.2)
        assert same(expected, server)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pending(str(spool / "waiting" / CHANNEL)):
            time.sleep(0.1)
        assert pending(str(spool / "waiting" / CHANNEL)) == []
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
    assert pending(str(spool / "waiting" / CHANNEL)) == [path]
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
    assert pending(str(spool / "waiting" / CHANNEL)) == paths


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
    assert pending(str(spool / "waiting" / CHANNEL)) == paths
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
    assert pending(str(spool / "waiting" / CHANNEL)) == []


def test_missing_settings_are_a_clear_error(tmp_path):
    cfg = configuration.build({"spooldir": (str(tmp_path), "test")})
    with pytest.raises(configuration.ConfigError, match="login"):
        from uploader.upload import Uploader

        Uploader(cfg)
