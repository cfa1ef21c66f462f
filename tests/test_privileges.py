"""Root never follows or signals what the service user controls (issue 12, item 2).

The attacker here is the service account: it can write where the service
writes. Each test plants what it could plant (a link where root writes a
pidfile, a stranger's pid in a pidfile, a link swapped in for the new key)
and checks that root did not write, signal or chown through it.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from sensor.service import daemon, logs
from sensor.spool import spooldir
from tests.sshd import free_port
from tests.uploadkit import CHANNEL, REPO, python_for_others, uploader_keys, write_config

INIT_SCRIPT = os.path.join(REPO, "initscripts", "sie-dns-sensor.init")
# stands in for sie-dns-sensor and sie-upload: accepts the configuration,
# and "detaches" (a forked copy of itself, so its command line names this
# program and the pidfile) writing its pid where --pidfile, the last
# argument, says
FAKE_PROGRAM = """#!/bin/sh
[ "$1" = check-config ] && exit 0
for pidfile; do :; done
( trap 'exit 0' TERM; while :; do sleep 0.1; done ) >/dev/null 2>&1 &
echo $! > "$pidfile"
"""


def test_pidfile_claim_does_not_write_through_a_planted_link(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    victim = tmp_path / "root-only"
    victim.write_text("root's secret\n")
    os.chmod(victim, 0o600)
    path = run / "sensor.pid"
    # the names the old code wrote as root: <pidfile>.<pid>, then <pidfile>
    os.symlink(victim, f"{path}.{os.getpid()}")
    pidfile = daemon.PidFile(str(path))
    pidfile.claim()
    assert victim.read_text() == "root's secret\n"
    assert not path.is_symlink() and path.read_text() == f"{os.getpid()}\n"
    pidfile.release()
    assert not path.exists()


def test_pidfile_that_is_a_link_is_neither_read_through_nor_written_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text(f"{os.getppid()}\n")  # a live pid: read through the link, it would block the start
    path = tmp_path / "sensor.pid"
    os.symlink(victim, path)
    daemon.PidFile(str(path)).claim()
    assert victim.read_text() == f"{os.getppid()}\n"
    assert not path.is_symlink()


@pytest.fixture
def init_script(tmp_path):
    """The SysV script with its paths pointed at a scratch folder and fake programs."""
    rundir = tmp_path / "run"
    rundir.mkdir()
    programs = {}
    for name in ("sie-dns-sensor", "sie-upload"):
        program = tmp_path / name
        program.write_text(FAKE_PROGRAM)
        program.chmod(0o755)
        programs[name] = str(program)
    with open(INIT_SCRIPT) as handle:
        text = handle.read()
    for variable, value in (("RUNDIR", rundir), ("SENSOR", programs["sie-dns-sensor"]),
                            ("UPLOADER", programs["sie-upload"])):
        assert f"\n{variable}=" in text
        text = text.replace(f"\n{variable}=", f"\n{variable}={value}\n# was: {variable}=", 1)
    script = tmp_path / "sie-dns-sensor.init"
    script.write_text(text)
    return str(script), rundir, programs


def test_init_stop_does_not_signal_a_stranger_named_in_the_pidfile(init_script):
    script, rundir, _ = init_script
    stranger = subprocess.Popen(["sleep", "300"])  # a root process the service user wants dead
    try:
        for name in ("sensor.pid", "upload.pid"):
            (rundir / name).write_text(f"{stranger.pid}\n")
        result = subprocess.run(["sh", script, "stop"], capture_output=True, text=True, timeout=90)
        time.sleep(0.3)
        assert stranger.poll() is None, "the init script killed a process it did not start"
        assert result.returncode == 0, result.stderr
        assert not (rundir / "sensor.pid").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_init_start_takes_the_pidfile_folder_back_and_stop_stops_the_programs(init_script):
    script, rundir, _ = init_script
    nobody = pwd.getpwnam("nobody")
    os.chown(rundir, nobody.pw_uid, nobody.pw_gid)  # as the old script left it: the service user's
    pids = []
    try:
        result = subprocess.run(["sh", script, "start"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert os.stat(rundir).st_uid == 0 and os.stat(rundir).st_mode & 0o022 == 0
        pids = [int((rundir / name).read_text()) for name in ("sensor.pid", "upload.pid")]
        status = subprocess.run(["sh", script, "status"], capture_output=True, text=True, timeout=30)
        assert f"is running (pid {pids[0]})" in status.stdout
        assert f"sie-upload is running (pid {pids[1]})" in status.stdout
        result = subprocess.run(["sh", script, "stop"], capture_output=True, text=True, timeout=90)
        assert result.returncode == 0, result.stderr
        assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
        assert not os.listdir(rundir)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_gen_key_gives_the_key_away_by_descriptor_not_by_name(tmp_path, monkeypatch):
    nobody = pwd.getpwnam("nobody")
    monkeypatch.setattr(daemon, "service_user", lambda name=daemon.SERVICE_USER: nobody)
    victim = tmp_path / "root-only"
    victim.write_text("root's\n")
    os.chmod(victim, 0o600)
    keys = uploader_keys()
    uploader_cli = pytest.importorskip("uploader.cli")
    real_generate = keys.generate

    def generate_then_swap(path, *args, **kwargs):
        # the service user wins the race: the new key is swapped for a link
        line = real_generate(path, *args, **kwargs)
        os.rename(path, path + ".made")
        os.symlink(victim, path)
        return line

    monkeypatch.setattr(keys, "generate", generate_then_swap)
    config = write_config(tmp_path / "conf", tmp_path)
    result = CliRunner().invoke(uploader_cli.gen_key_main, ["-c", config])
    assert result.exit_code == 0, result.output
    assert os.stat(victim).st_uid == 0, "root chowned the file a link pointed at"
    made = os.stat(str(tmp_path / "keys" / "upload.made"))
    assert (made.st_uid, made.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert os.stat(str(tmp_path / "keys" / "upload.pub")).st_uid == nobody.pw_uid


# ------------------------------------------- the log file (issue 20, item 1)
@pytest.fixture
def scratch():
    """A folder under /tmp that other users can reach (pytest's tmp_path is root's alone)."""
    folder = tempfile.mkdtemp(prefix="sie-logs-", dir="/tmp")
    os.chmod(folder, 0o755)
    try:
        yield pathlib.Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_root_opens_the_log_file_as_the_owner_of_its_folder(scratch):
    nobody = pwd.getpwnam("nobody")
    folder = scratch / "log"
    folder.mkdir(mode=0o750)
    os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    victim = scratch / "root-only"
    victim.write_text("root's\n")
    os.chmod(victim, 0o600)
    os.symlink(victim, folder / "sie-dns-sensor.log")
    fd, note = logs.open_log_file(str(folder / "sie-dns-sensor.log"))
    os.write(fd, b"a line\n")
    os.close(fd)
    assert victim.read_text() == "root's\n"
    assert note.startswith(f"the log file {folder}/sie-dns-sensor.log was a symbolic link: moved to ")
    made = os.lstat(folder / "sie-dns-sensor.log")
    # as logrotate's `create 0640 sie-dns-sensor sie-dns-sensor` makes the next one
    assert (made.st_uid, made.st_gid, made.st_mode & 0o777) == (nobody.pw_uid, nobody.pw_gid, 0o640)


@pytest.fixture
def service_account(scratch):
    """A throwaway service user, a scratch folder it can reach, and an
    interpreter it can load."""
    python = python_for_others()
    if os.geteuid() != 0 or shutil.which("useradd") is None or python is None:
        pytest.skip("needs root, useradd and an interpreter a dropped-privilege process can load")
    user = f"sielog{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                   check=True, capture_output=True)
    try:
        yield pwd.getpwnam(user), scratch, python
    finally:
        subprocess.run(["userdel", user], capture_output=True)


def _owned_by(entry: pwd.struct_passwd, top: pathlib.Path) -> None:
    for dirpath, dirnames, names in os.walk(top):
        for name in [".", *dirnames, *names]:
            os.lchown(os.path.join(dirpath, name), entry.pw_uid, entry.pw_gid)


def _ended(pid: int) -> bool:
    """Gone, or a zombie nobody reaps (a container's pid 1 may not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def test_a_daemon_without_syslog_writes_neither_through_a_link_nor_lines_a_name_chose(service_account):
    """The SysV setup on a host with no syslog: `sie-upload --daemon` logs to
    the log file in a folder the service user owns. That user has swapped
    the file for a link to a root-only file and put a link named to end a
    line in waiting/ (refused, so logged with its name)."""
    entry, root, (interpreter, pythonpath) = service_account
    victim = root / "root-only"
    victim.write_text("root:x:0:0:root:/root:/bin/sh\n")
    os.chmod(victim, 0o600)
    folder = root / "log"
    folder.mkdir(mode=0o750)
    os.symlink(victim, folder / "sie-dns-sensor.log")
    spool = root / "spool"
    waiting = Path(spooldir.folder(spool, spooldir.WAITING, CHANNEL))
    waiting.mkdir(parents=True)
    hostile = waiting / "x\nhostile0::0:0:::\n"
    os.symlink(victim, hostile)
    uploader_keys().generate(str(spool / "keys" / "upload"))
    _owned_by(entry, folder)
    _owned_by(entry, spool)
    config = write_config(root / "conf", spool, login="sensor1", submitserver=f"127.0.0.1:{free_port()}")
    pidfile = root / "run" / "upload.pid"  # root's folder, as the init script makes /run/sie-dns-sensor
    pidfile.parent.mkdir()
    env = dict(os.environ, PYTHONPATH=pythonpath, SIE_DNS_SENSOR_LOG_DIR=str(folder),
               SIE_DNS_SENSOR_SYSLOG_SOCKET=str(root / "no-syslog"))
    for name in ("JOURNAL_STREAM", "INVOCATION_ID"):
        env.pop(name, None)
    code = "import sys; from uploader.cli import upload_main; sys.argv[0] = 'sie-upload'; upload_main()"
    started = subprocess.run([interpreter, "-c", code, "-c", config, "--once", "--daemon", "--pidfile",
                              str(pidfile), "--user", entry.pw_name], capture_output=True, text=True, timeout=60,
                             env=env)
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 60
    while not _ended(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not _ended(pid):
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the uploader's one round did not end")

    assert victim.read_text() == "root:x:0:0:root:/root:/bin/sh\n"
    log_file = folder / "sie-dns-sensor.log"
    text = log_file.read_text()
    assert f"not uploading {waiting}/x\\nhostile0::0:0:::\\n: a symbolic link" in text
    assert not [line for line in text.splitlines() if not line.startswith("20")]  # every line a log line
    assert f"the log file {log_file} was a symbolic link: moved to " in text
    made = os.lstat(log_file)
    assert (made.st_uid, made.st_gid, made.st_mode & 0o777) == (entry.pw_uid, entry.pw_gid, 0o640)
