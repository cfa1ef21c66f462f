"""Helpers shared by the uploader tests: tools as processes, spool files, a collector."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

import pytest

from sensor.spool import spooldir
from tests import sshd as sshd_helper
from tests.netns import STAY_AS_IS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHANNEL = "ch202"


def uploader_keys():
    """uploader.keys, imported when a test makes a key: the pure tests run
    where the uploader's libraries (cryptography, paramiko) are not
    installed, and are skipped there."""
    return pytest.importorskip("uploader.keys", reason="needs the uploader's libraries")


def readable_by_others(path: str) -> bool:
    """Whether a user with no rights of its own reaches `path`: it and every folder above it o+rx."""
    parts = [os.path.realpath(path)]
    while parts[-1] != "/":
        parts.append(os.path.dirname(parts[-1]))
    return all(os.stat(p).st_mode & 0o005 == 0o005 for p in parts)


def code_readable_by_others() -> bool:
    """Whether a process that dropped to another user can load this checkout and its libraries
    (not when the checkout sits under a private folder, as `mktemp -d` makes)."""
    return readable_by_others(REPO) and readable_by_others(sysconfig.get_paths()["purelib"])


def python_for_others() -> tuple[str, str] | None:
    """(interpreter, PYTHONPATH) that a dropped-privilege process can load, or None."""
    venv_libs = sysconfig.get_paths()["purelib"]
    if not code_readable_by_others():
        return None
    if readable_by_others(sys.base_prefix):
        return sys.executable, f"{REPO}:{venv_libs}"
    system = "/usr/bin/python3"  # this interpreter lives under a private home: use the system's
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if os.path.exists(system) and subprocess.run(
        [system, "-c", f"import sys; sys.exit(f'{{sys.version_info.major}}.{{sys.version_info.minor}}' != '{version}')"]
    ).returncode == 0:
        return system, f"{REPO}:{venv_libs}"
    return None


def run_tool(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    module = {"upload": "upload_main", "gen-key": "gen_key_main"}[tool]
    code = f"import sys; from uploader.cli import {module}; sys.argv[0] = 'sie-{tool}'; {module}()"
    stay = STAY_AS_IS if tool == "upload" else ()
    return subprocess.run(
        [sys.executable, "-c", code, *args, *stay],
        capture_output=True, text=True, timeout=timeout, env=dict(os.environ, PYTHONPATH=REPO),
    )


def start_tool(tool: str, *args: str) -> subprocess.Popen:
    module = {"upload": "upload_main"}[tool]
    code = f"from uploader.cli import {module}; {module}()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args, *STAY_AS_IS],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO),
    )


def write_config(path, spool, **settings) -> str:
    lines = [f'spooldir="{spool}"', f'uploadkey="{spool}/keys/upload"', f'knownhosts="{spool}/keys/known_hosts"']
    lines += [f'{name}="{value}"' for name, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def spool_files(spool, sizes: list[int], start: int = 1_790_000_000) -> list[str]:
    waiting = spooldir.folder(str(spool), spooldir.WAITING, CHANNEL)
    os.makedirs(waiting, exist_ok=True)
    paths = []
    for i, size in enumerate(sizes):
        path = os.path.join(waiting, spooldir.file_name("sensor1", start + 60 * i, 0, "nmsg"))
        with open(path, "wb") as handle:
            handle.write(os.urandom(size))
        paths.append(path)
    return paths



REASON = sshd_helper.available()
needs_sshd = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def make_collector(tmp_path, method: str = "sftp", sftp_script: str | None = None):
    """(sshd, config path, spool): key made by sie-gen-key, host key known;
    the sshd serves `method` (sftp, or rsync forced to rrsync)."""
    spool = tmp_path / "spool"
    spool.mkdir()
    uploader_keys().generate(str(spool / "keys" / "upload"), comment="sensor1.example")
    server = sshd_helper.Sshd((spool / "keys" / "upload.pub").read_text(), mode=method, sftp_script=sftp_script)
    (spool / "keys" / "known_hosts").write_text(server.known_hosts_line())
    config = write_config(
        tmp_path / "conf",
        spool,
        login=server.user,
        submitserver=f"127.0.0.1:{server.port}",
        maxper="2",
        upload_method=method,
    )
    return server, config, spool


def same(local_bytes: dict, server) -> bool:
    for name, data in local_bytes.items():
        path = server.path("up", CHANNEL, name)
        if not os.path.exists(path):
            return False
        with open(path, "rb") as handle:
            if handle.read() != data:
                return False
    return True


def contents(paths) -> dict:
    out = {}
    for path in paths:
        with open(path, "rb") as handle:
            out[os.path.basename(path)] = handle.read()
    return out


