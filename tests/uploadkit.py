"""Helpers shared by the uploader tests: tools as processes, spool files, a collector."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests import sshd as sshd_helper
from uploader import keys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHANNEL = "ch202"


def _as_root(tool: str, args: tuple[str, ...]) -> tuple[str, ...]:
    """sie-upload stays root: the service user, where the package made it,
    could not read pytest's private temporary folders."""
    if tool == "upload" and "--user" not in args:
        return (*args, "--user", "nobody-here")
    return args


def run_tool(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    module = {"upload": "upload_main", "gen-key": "gen_key_main"}[tool]
    args = _as_root(tool, args)
    code = f"import sys; from uploader.cli import {module}; sys.argv[0] = 'sie-{tool}'; {module}()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, timeout=timeout, env=dict(os.environ, PYTHONPATH=REPO),
    )


def start_tool(tool: str, *args: str) -> subprocess.Popen:
    module = {"upload": "upload_main"}[tool]
    args = _as_root(tool, args)
    code = f"from uploader.cli import {module}; {module}()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO),
    )


def write_config(path, spool, **settings) -> str:
    lines = [f'spooldir="{spool}"', f'uploadkey="{spool}/keys/upload"', f'knownhosts="{spool}/keys/known_hosts"']
    lines += [f'{name}="{value}"' for name, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def spool_files(spool, sizes: list[int], start: int = 1_790_000_000) -> list[str]:
    waiting = os.path.join(spool, "waiting", CHANNEL)
    os.makedirs(waiting, exist_ok=True)
    paths = []
    for i, size in enumerate(sizes):
        path = os.path.join(waiting, f"sensor1.{start + 60 * i}.000000.cbor.gz")
        with open(path, "wb") as handle:
            handle.write(os.urandom(size))
        paths.append(path)
    return paths



REASON = sshd_helper.available()
needs_sshd = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def make_collector(tmp_path, sftp_script: str | None = None):
    """(sshd, config path, spool): key made by sie-gen-key, host key known."""
    spool = tmp_path / "spool"
    spool.mkdir()
    keys.generate(str(spool / "keys" / "upload"), comment="sensor1.example")
    server = sshd_helper.Sshd((spool / "keys" / "upload.pub").read_text(), sftp_script=sftp_script)
    (spool / "keys" / "known_hosts").write_text(server.known_hosts_line())
    config = write_config(
        tmp_path / "conf",
        spool,
        login=server.user,
        submitserver=f"127.0.0.1:{server.port}",
        maxper="2",
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


