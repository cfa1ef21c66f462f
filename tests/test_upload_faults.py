"""The uploader in a hostile or failing world (issue 12).

Each test builds the bad thing for real: an sshd whose SFTP server never
speaks or freezes mid-file, a symbolic link and a stranger's file in
waiting/, an unprotected key, damaged, hashed, @revoked and @cert-authority
known_hosts lines, one file the collector refuses and one the uploader
cannot read, a full collector disk, a port that never sends an SSH banner.
"""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest

from sensor.spool import spooldir
from tests import sshd as sshd_helper
from tests.netns import STAY_AS_IS
from tests.uploadkit import (
    CHANNEL,
    REPO,
    contents,
    make_collector,
    needs_sshd,
    python_for_others,
    run_tool,
    same,
    spool_files,
    write_config,
)
from uploader import keys, sftp
from uploader.upload import pending

SILENT_SFTP = '#!/bin/sh\n: > "$HOME/sftp-started"\nexec sleep 600\n'


def _waiting(spool) -> str:
    return spooldir.folder(str(spool), spooldir.WAITING, CHANNEL)


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _start_uploader(config: str, log_path: str, *args: str) -> subprocess.Popen:
    code = "from uploader.cli import upload_main; upload_main()"
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-c", code, "-c", config, *STAY_AS_IS, *args], stderr=log,
                                stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=REPO))


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


@pytest.fixture
def hung_collector(tmp_path):
    """Logs the user in, then runs an SFTP server that never says a word."""
    server, config, spool = make_collector(tmp_path, sftp_script=SILENT_SFTP)
    try:
        server.start()
        yield server, config, spool
    finally:
        server.close()


def _collector(server, spool, **kwargs) -> sftp.Collector:
    return sftp.Collector("127.0.0.1", server.port, server.user, str(spool / "keys" / "upload"),
                          str(spool / "keys" / "known_hosts"), **kwargs)


# ------------------------------------------------------------ item 1: no hang
@needs_sshd
def test_sftp_server_that_never_answers_fails_at_the_deadline(hung_collector, monkeypatch):
    server, _, spool = hung_collector
    monkeypatch.setattr(sftp, "CONNECT_TIMEOUT", 2.0)
    outcome = []

    def connect():
        try:
            with _collector(server, spool):
                outcome.append("connected")
        except sftp.UploadError as exc:
            outcome.append(str(exc))

    worker = threading.Thread(target=connect, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(15)
    assert not worker.is_alive(), "still waiting for the SFTP server after 15 s"
    assert time.monotonic() - started < 10
    assert os.path.exists(server.path("sftp-started"))  # it hung where the issue says: SFTP start
    assert outcome and "no answer from the collector for 2 s while starting SFTP" in outcome[0]


@needs_sshd
def test_sigterm_ends_the_uploader_while_the_collector_hangs(hung_collector, tmp_path):
    server, config, spool = hung_collector
    paths = spool_files(spool, [1000])
    log = str(tmp_path / "upload.log")
    uploader = _start_uploader(config, log)
    try:
        assert _wait_for(lambda: os.path.exists(server.path("sftp-started")), 20), _read(log)
        time.sleep(0.5)
        assert uploader.poll() is None
        stopped = time.monotonic()
        uploader.send_signal(signal.SIGTERM)
        uploader.wait(timeout=5)
        assert time.monotonic() - stopped < 2.5
    finally:
        if uploader.poll() is None:
            uploader.kill()
            uploader.wait()
    assert uploader.returncode == 0, _read(log)
    assert "stopping" in _read(log) and "Traceback" not in _read(log)
    assert pending(_waiting(spool)) == paths


# ------------------------------------------- item 11: a frozen collector, said
@needs_sshd
def test_frozen_collector_fails_after_one_stall_timeout_and_says_so(collector, monkeypatch):
    server, _, spool = collector
    server.start()
    monkeypatch.setattr(sftp, "TRANSFER_TIMEOUT", 4.0)
    (path,) = spool_files(spool, [128_000_000])
    partial = server.path("up", CHANNEL, f".{os.path.basename(path)}.part")
    frozen = []

    def freeze_mid_file():
        if _wait_for(lambda: os.path.exists(partial) and os.path.getsize(partial) > 1_000_000, 30):
            subprocess.run(["pkill", "-STOP", "-u", server.user], check=True)  # the SFTP server freezes
            frozen.append(time.monotonic())

    with _collector(server, spool) as session:
        session.ensure_directory(f"up/{CHANNEL}")
        threading.Thread(target=freeze_mid_file, daemon=True).start()
        with pytest.raises(sftp.UploadError) as failure:
            session.upload(path, f"up/{CHANNEL}")
        assert frozen, "the file went before the collector could be frozen"
        took = time.monotonic() - frozen[0]
    message = str(failure.value)
    assert "no answer from the collector for 4 s while sending" in message, message
    assert not isinstance(failure.value, sftp.FileRefused)  # the session is over, not the file
    assert took < 7, f"{took:.1f} s: one stall timeout is 4 s"  # it was two: write, then close
    assert os.path.exists(path)


def test_every_failure_message_says_what_happened():
    assert sftp.reason(TimeoutError()) == "timed out"
    assert sftp.reason(EOFError()) == "the connection was closed"
    assert sftp.reason(OSError("Socket is closed")) == "Socket is closed"
    assert sftp.reason(PermissionError(13, "Permission denied", "/x")) == "Permission denied"


# ------------------------------------- item 6: links, strangers, loose keys
@needs_sshd
def test_symlink_in_waiting_is_not_followed(collector, tmp_path):
    server, config, spool = collector
    server.start()
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret:19000:0:99999:7:::\n")
    os.chmod(secret, 0o600)
    (good,) = spool_files(spool, [1000])
    link = os.path.join(_waiting(spool), "sensor1.1780000000.000000.cbor.gz")  # oldest by name
    os.symlink(secret, link)
    expected = contents([good])
    result = run_tool("upload", "-c", config, "--once")
    assert result.returncode == 0, result.stderr
    assert same(expected, server)
    assert os.listdir(server.path("up", CHANNEL)) == [os.path.basename(good)]
    assert f"not uploading {link}: a symbolic link" in result.stderr
    assert os.path.islink(link)  # left alone: not ours to delete


def test_open_for_upload_refuses_a_link_swapped_in_after_the_listing(tmp_path):
    from uploader import localfiles

    target = tmp_path / "secret"
    target.write_text("x")
    os.symlink(target, tmp_path / "spool-file")
    with pytest.raises(localfiles.NotSendable, match="symbolic link"):
        localfiles.open_for_upload(str(tmp_path / "spool-file"))


@needs_sshd
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o666])
def test_private_key_readable_by_others_is_refused(collector, mode):
    server, config, spool = collector
    server.start()
    paths = spool_files(spool, [1000])
    key = spool / "keys" / "upload"
    os.chmod(key, mode)
    result = run_tool("upload", "-c", config, "--once")
    assert result.returncode == 1
    assert f"upload key {key} is readable by others (mode {mode:04o})" in result.stderr
    assert f"chmod 600 {key}" in result.stderr
    assert server.accepted_sessions() == 0
    assert pending(_waiting(spool)) == paths


# ------------------------------- item 7, issue 20 item 4: known_hosts as ssh reads it
def _hash_host(tmp_path, line: str) -> str:
    """The known_hosts line with its host name hashed by OpenSSH (ssh-keygen -H)."""
    path = tmp_path / "to_hash"
    path.write_text(line)
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(path)], check=True, capture_output=True)
    return path.read_text()


@needs_sshd
def test_unusable_known_hosts_lines_are_skipped_named_once_and_sftp_still_uploads(collector, tmp_path):
    server, config, spool = collector
    server.start()
    known = spool / "keys" / "known_hosts"
    good_line = known.read_text()
    key = " ".join(good_line.split()[1:3])
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    other_key = " ".join((tmp_path / "other_key.pub").read_text().split()[:2])
    known.write_text(
        "# the collector\n"
        f"|1|garbage|garbage {key}\n"  # line 2: paramiko raised binascii.Error, the uploader died
        f"[127.0.0.1]:{server.port} ssh-ed25519 AAAA!!!notbase64\n"  # line 3
        f"@cert-authority *.example {other_key}\n"  # line 4
        f"@revoked * {other_key}\n"  # line 5: another key, revoked everywhere
        + _hash_host(tmp_path, good_line)  # line 6: the collector, hashed by OpenSSH
    )
    first = contents(spool_files(spool, [1000, 2000]))
    log = str(tmp_path / "upload.log")
    uploader = _start_uploader(config, log)
    try:
        assert _wait_for(lambda: same(first, server), 30), _read(log)
        expected = contents(spool_files(spool, [3000], start=1_790_100_000))
        assert _wait_for(lambda: same(expected, server), 30), _read(log)  # a second session read it again
        assert uploader.poll() is None, _read(log)
    finally:
        uploader.send_signal(signal.SIGTERM)
        uploader.wait(timeout=20)
    text = _read(log)
    assert uploader.returncode == 0, text
    assert server.accepted_sessions() == 2
    for number in (2, 3, 4):
        assert text.count(f"knownhosts file {known} line {number} skipped") == 1, text
    assert "@cert-authority is not used by upload_method=sftp" in text
    assert "line 5" not in text and "line 6" not in text
    assert "upload failed" not in text and "Traceback" not in text


@needs_sshd
def test_revoked_collector_key_is_refused_and_nothing_is_sent(collector):
    server, config, spool = collector
    server.start()
    known = spool / "keys" / "known_hosts"
    good_line = known.read_text()
    known.write_text(good_line + "@revoked * " + " ".join(good_line.split()[1:3]) + "\n")
    paths = spool_files(spool, [1000])
    result = run_tool("upload", "-c", config, "--once")
    assert result.returncode == 1
    assert f"host key of [127.0.0.1]:{server.port} (ssh-ed25519 SHA256:" in result.stderr
    assert f"is revoked (@revoked in {known} line 2): refused; nothing sent" in result.stderr
    assert server.accepted_sessions() == 0
    assert not os.path.exists(server.path("up"))
    assert pending(_waiting(spool)) == paths


# ---------------------------- issue 20 item 7a: a port that never sends the banner
def test_a_port_that_never_sends_the_ssh_banner_fails_in_one_line(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    held = []
    threading.Thread(target=lambda: held.append(listener.accept()), daemon=True).start()
    keys.generate(str(tmp_path / "keys" / "upload"))
    (tmp_path / "keys" / "known_hosts").write_text("")
    spool_files(tmp_path, [1000])
    config = write_config(tmp_path / "conf", tmp_path, login="sensor1", upload_method="sftp",
                          submitserver=f"127.0.0.1:{listener.getsockname()[1]}")
    code = ("import sys; from uploader import sftp; sftp.CONNECT_TIMEOUT = 3.0; "
            "from uploader.cli import upload_main; sys.argv[0] = 'sie-upload'; upload_main()")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code, "-c", config, "--once", *STAY_AS_IS], capture_output=True,
                            text=True, timeout=60, env=dict(os.environ, PYTHONPATH=REPO))
    took = time.monotonic() - started
    listener.close()
    assert held, "the uploader never connected"
    held[0][0].close()
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "running as root" not in line]  # STAY_AS_IS
    assert len(lines) == 1, result.stderr  # no paramiko traceback, line by line at ERROR
    assert "upload failed: no answer from the collector for 3 s while waiting for the SSH banner of " in lines[0]
    assert took < 3 + sftp.HANDSHAKE_GRACE + 10, took  # its deadline, and the interpreter's start


# ----------------------------------------- item 8: one file does not block all
@pytest.fixture
def unprivileged_spool():
    """A spool tree (under a world-traversable folder) owned by a new user,
    as the package sets it up for the service user."""
    python = python_for_others()
    if python is None:
        pytest.skip("no interpreter a dropped-privilege process can load")
    user = f"siesvc{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                   check=True, capture_output=True)
    root = tempfile.mkdtemp(prefix="sie-spool-", dir="/tmp")
    os.chmod(root, 0o755)
    try:
        yield user, root, python
    finally:
        subprocess.run(["pkill", "-KILL", "-u", user], capture_output=True)
        subprocess.run(["userdel", user], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _upload_as(user: str, python: tuple[str, str], config: str) -> subprocess.CompletedProcess:
    interpreter, path = python
    code = "import sys; from uploader.cli import upload_main; sys.argv[0] = 'sie-upload'; upload_main()"
    return subprocess.run([interpreter, "-c", code, "-c", config, "--once", "--user", user],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=path))


@needs_sshd
def test_files_that_fail_alone_do_not_hold_up_the_others_and_say_why(unprivileged_spool):
    user, root, python = unprivileged_spool
    spool = os.path.join(root, "spool")
    os.makedirs(os.path.join(spool, "keys"))
    keys.generate(os.path.join(spool, "keys", "upload"), comment="sensor1.example")
    server = sshd_helper.Sshd(_read(os.path.join(spool, "keys", "upload.pub")))
    try:
        server.start()
        with open(os.path.join(spool, "keys", "known_hosts"), "w") as handle:
            handle.write(server.known_hosts_line())
        config = write_config(pathlib.Path(root, "conf"), spool, login=server.user,
                              submitserver=f"127.0.0.1:{server.port}", maxper="2", upload_method="sftp")
        stranger, unreadable, refused, *good = spool_files(spool, [1000, 2000, 3000, 4000, 5000, 6000])
        expected = contents(good)
        entry = pwd.getpwnam(user)
        for dirpath, _, names in os.walk(spool):
            for name in [".", *names]:
                os.chown(os.path.join(dirpath, name), entry.pw_uid, entry.pw_gid)
        os.chown(stranger, 0, 0)  # root's, mode 0600: the service user cannot read it
        os.chmod(stranger, 0o600)
        os.chmod(unreadable, 0)  # ours, but unreadable: a local problem
        blocker = server.path("up", CHANNEL, f".{os.path.basename(refused)}.part")  # the collector refuses it
        os.makedirs(blocker)
        collector_user = pwd.getpwnam(server.user)
        for made in (server.path("up"), server.path("up", CHANNEL)):
            os.chown(made, collector_user.pw_uid, collector_user.pw_gid)

        result = _upload_as(user, python, config)

        assert result.returncode == 1, result.stderr
        assert same(expected, server), result.stderr  # the newer files went all the same
        err = result.stderr
        assert f"not uploading {stranger}: owned by uid 0, not by this uploader (uid {entry.pw_uid})" in err
        assert f"cannot read the local file {unreadable}: Permission denied;" in err
        assert f"sending {os.path.basename(refused)}: refused by the collector" in err
        assert "permission denied on the collector" not in err.lower()
        assert "next try of this file in" in err
        left = sorted(os.path.join(_waiting(spool), name) for name in os.listdir(_waiting(spool)))
        assert left == sorted([stranger, unreadable, refused])
    finally:
        server.close()


@needs_sshd
def test_full_collector_disk_passes_over_the_big_file_and_retries_it_later(collector, tmp_path):
    server, config, spool = collector
    server.start()
    big, *small = spool_files(spool, [3_000_000, 100_000, 100_000, 100_000])
    remote = server.path("up", CHANNEL)
    os.makedirs(remote)
    entry = pwd.getpwnam(server.user)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=1m,uid={entry.pw_uid},gid={entry.pw_gid},mode=0755",
                    "tmpfs", remote], check=True)
    log = str(tmp_path / "upload.log")
    uploader = None
    try:
        expected_small, expected_big = contents(small), contents([big])
        uploader = _start_uploader(config, log)
        assert _wait_for(lambda: same(expected_small, server), 30), _read(log)
        assert "next try of this file in" in _read(log)
        assert os.path.exists(big)
        assert not any(name.endswith(".part") for name in os.listdir(remote))  # its space given back
        for name in small:  # the collector moves them on; then the big one fits
            os.unlink(os.path.join(remote, os.path.basename(name)))
        subprocess.run(["mount", "-o", "remount,size=8m", remote], check=True)
        assert _wait_for(lambda: same(expected_big, server), 30), _read(log)
        assert pending(_waiting(spool)) == []
    finally:
        if uploader is not None:
            uploader.send_signal(signal.SIGTERM)
            uploader.wait(timeout=20)
        subprocess.run(["umount", remote], capture_output=True)
    assert "Traceback" not in _read(log)


# ------------------------------------------------- the same for rsync uploads
@needs_sshd
def test_sigterm_ends_an_rsync_upload_while_the_collector_hangs(tmp_path):
    server, config, spool = make_collector(tmp_path, method="rsync")
    with open(server.authorized_keys) as handle:  # the collector logs in, then says nothing, ever
        key = handle.read().split(",restrict ", 1)[1]
    with open(server.authorized_keys, "w") as handle:
        handle.write(f'command="touch $HOME/rsync-started; exec sleep 600",restrict {key}')
    try:
        server.start()
        paths = spool_files(spool, [1000])
        log = str(tmp_path / "upload.log")
        uploader = _start_uploader(config, log)
        try:
            assert _wait_for(lambda: os.path.exists(server.path("rsync-started")), 20), _read(log)
            time.sleep(0.5)
            assert uploader.poll() is None
            stopped = time.monotonic()
            uploader.send_signal(signal.SIGTERM)
            uploader.wait(timeout=5)
            assert time.monotonic() - stopped < 2.5
        finally:
            if uploader.poll() is None:
                uploader.kill()
                uploader.wait()
        assert uploader.returncode == 0, _read(log)
        assert "stopping" in _read(log) and "Traceback" not in _read(log)
        assert pending(_waiting(spool)) == paths
        assert subprocess.run(["pgrep", "-f", f"rsync.*{server.port}"], capture_output=True).returncode == 1
    finally:
        server.close()


@needs_sshd
def test_rsync_passes_over_a_link_and_an_unreadable_file(unprivileged_spool):
    user, root, python = unprivileged_spool
    spool = os.path.join(root, "spool")
    os.makedirs(os.path.join(spool, "keys"))
    keys.generate(os.path.join(spool, "keys", "upload"), comment="sensor1.example")
    server = sshd_helper.Sshd(_read(os.path.join(spool, "keys", "upload.pub")), mode="rsync")
    try:
        server.start()
        with open(os.path.join(spool, "keys", "known_hosts"), "w") as handle:
            handle.write(server.known_hosts_line())
        config = write_config(pathlib.Path(root, "conf"), spool, login=server.user,
                              submitserver=f"127.0.0.1:{server.port}", maxper="3", upload_method="rsync")
        unreadable, *good = spool_files(spool, [1000, 2000, 3000, 4000])
        secret = os.path.join(root, "secret")
        with open(secret, "w") as handle:
            handle.write("not for the collector\n")
        link = os.path.join(_waiting(spool), "sensor1.1780000000.000000.nmsg")
        os.symlink(secret, link)
        expected = contents(good)
        entry = pwd.getpwnam(user)
        for dirpath, _, names in os.walk(spool):
            for name in [".", *names]:
                os.lchown(os.path.join(dirpath, name), entry.pw_uid, entry.pw_gid)
        os.chmod(unreadable, 0)  # ours, but unreadable: rsync fails this file alone (exit 23)

        result = _upload_as(user, python, config)

        assert result.returncode == 1, result.stderr
        assert same(expected, server), result.stderr
        err = result.stderr
        assert f"not uploading {link}: a symbolic link" in err
        assert f"{os.path.basename(unreadable)}: not delivered by rsync" in err and "Permission denied" in err
        assert "next try of this file in" in err
        assert sorted(os.listdir(_waiting(spool))) == sorted(os.path.basename(p) for p in (link, unreadable))
        assert not os.path.exists(server.path("up", CHANNEL, os.path.basename(link)))
    finally:
        server.close()
