"""Users without the spool's rights get one line and an exit status of their own (issue 25, item 6).

A monitoring user runs `status`, an operator runs `check-config` as
himself, root runs `sie-upload --once` on a spool made by hand: each
meets a folder it may not enter. Each test makes a throwaway user and a
spool of root's, runs the real command as that user, and expects the
path, the user and a status that is not an alarm's, never a traceback.
"""

from __future__ import annotations

import json
import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile
import uuid

import pytest

from sensor.service import status
from sensor.service.cli_options import EX_NOPERM
from sensor.spool import spooldir
from tests.uploadkit import CHANNEL, python_for_others, spool_files, uploader_keys, write_config


@pytest.fixture
def stranger():
    """(a new user, a world-readable scratch folder, (interpreter, PYTHONPATH) it can load)."""
    python = python_for_others()
    if os.geteuid() != 0 or shutil.which("useradd") is None or python is None:
        pytest.skip("needs root, useradd and an interpreter a dropped-privilege process can load")
    user = f"siemon{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                   check=True, capture_output=True)
    folder = tempfile.mkdtemp(prefix="sie-notroot-", dir="/tmp")
    os.chmod(folder, 0o755)
    try:
        yield pwd.getpwnam(user), pathlib.Path(folder), python
    finally:
        subprocess.run(["pkill", "-KILL", "-u", user], capture_output=True)
        subprocess.run(["userdel", user], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _root_spool(root: pathlib.Path) -> pathlib.Path:
    """A spool as a hand-made or older layout leaves it: root's, 0750, no locks/."""
    spool = root / "spool"
    spool.mkdir(mode=0o755)
    spool_files(spool, [100])
    uploader_keys().generate(str(spool / "keys" / "upload"))
    for folder in (spool / spooldir.WAITING, spooldir.folder(spool, spooldir.WAITING, CHANNEL), spool / "keys"):
        os.chmod(folder, 0o750)
    return spool


def _config(root: pathlib.Path, spool: pathlib.Path) -> str:
    path = write_config(root / "conf", spool, login="sensor1", submitserver="127.0.0.1:9", interface="lo",
                        DNSQR_RES_ADDRS="192.0.2.53")
    os.chmod(path, 0o644)
    return path


def _as(entry: pwd.struct_passwd | None, python, *args: str, groups=()) -> subprocess.CompletedProcess:
    interpreter, path = python
    who = {} if entry is None else {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": list(groups)}
    return subprocess.run([interpreter, *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=path), **who)


def test_upload_as_root_on_a_spool_left_roots_says_the_lock_path_and_the_user(stranger):
    entry, root, python = stranger
    spool = _root_spool(root)
    config = _config(root, spool)
    code = "import sys; from uploader.cli import upload_main; sys.argv[0] = 'sie-upload'; upload_main()"
    result = _as(None, python, "-c", code, "-c", config, "--once", "--user", entry.pw_name)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == EX_NOPERM, result.stderr
    locks = spool / spooldir.LOCKS
    assert f"cannot take the upload lock as user {entry.pw_name}: {locks}: Permission denied" in result.stderr
    # locks/ made for the user since, waiting/ still root's: the round fails in one line
    (spool / spooldir.LOCKS).mkdir()
    os.chown(spool / spooldir.LOCKS, entry.pw_uid, entry.pw_gid)
    again = _as(None, python, "-c", code, "-c", config, "--once", "--user", entry.pw_name)
    assert "Traceback" not in again.stderr, again.stderr
    assert again.returncode == 1
    waiting = spooldir.folder(spool, spooldir.WAITING, CHANNEL)
    assert f"cannot use the spool as user {entry.pw_name}: {waiting}: Permission denied" in again.stderr
    assert len(os.listdir(waiting)) == 1  # nothing lost


def test_status_as_a_monitoring_user_outside_the_spools_group_is_unknown_not_an_alarm(stranger):
    entry, root, python = stranger
    spool = _root_spool(root)
    config = _config(root, spool)
    result = _as(entry, python, "-m", "sensor", "status", "-c", config)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status.UNKNOWN, result.stdout + result.stderr
    said = f"cannot read the spool as user {entry.pw_name}: {spooldir.folder(spool, spooldir.WAITING, CHANNEL)}: " \
        "Permission denied"
    assert result.stdout.splitlines() == [f"UNKNOWN:  {said} (status needs root or a member of group root)"]
    as_json = _as(entry, python, "-m", "sensor", "status", "-c", config, "--json")
    assert as_json.returncode == status.UNKNOWN
    assert json.loads(as_json.stdout)["problems"][0].startswith(said)
    # in the spool's group, as the message says, the same user can read it
    member = _as(entry, python, "-m", "sensor", "status", "-c", config, groups=[0])
    assert member.returncode == status.NOT_RUNNING, member.stdout + member.stderr


def test_check_config_as_a_user_who_cannot_enter_the_key_folder_does_not_call_the_key_missing(stranger):
    entry, root, python = stranger
    spool = _root_spool(root)
    config = _config(root, spool)
    result = _as(entry, python, "-m", "sensor", "check-config", "-q", "-c", config)
    assert "Traceback" not in result.stderr, result.stderr
    assert "is missing" not in result.stderr
    assert result.returncode == EX_NOPERM, result.stderr
    assert (f"cannot check the upload key as user {entry.pw_name}: {spool}/keys/upload: Permission denied"
            in result.stderr)
    os.unlink(spool / "keys" / "upload")  # really missing: root is told so
    missing = _as(None, python, "-m", "sensor", "check-config", "-q", "-c", config)
    assert missing.returncode == 1 and f"upload key {spool}/keys/upload is missing" in missing.stderr
