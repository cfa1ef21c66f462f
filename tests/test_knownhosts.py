"""known_hosts as ssh reads it (issue 20 item 4): lines it cannot use are
skipped and named once, markers are understood, patterns and hashed names
match as OpenSSH matches them. The hashed names are made by ssh-keygen -H,
so the check is against OpenSSH's own hashing, not a copy of it."""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess

import pytest

from uploader import knownhosts
from uploader.knownhosts import Verdict

HOST = "[collector.example]:49222"
needs_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")


def _key(tmp_path, name: str) -> tuple[str, bytes]:
    """(`type base64` as in known_hosts, the key blob) of a new ed25519 key."""
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    kind, encoded = (tmp_path / f"{name}.pub").read_text().split()[:2]
    return f"{kind} {encoded}", base64.b64decode(encoded)


def _hashed(tmp_path, line: str) -> str:
    """The line with its host name hashed by OpenSSH."""
    path = tmp_path / "to_hash"
    path.write_text(line + "\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(path)], check=True, capture_output=True)
    os.unlink(f"{path}.old")
    return path.read_text().strip()


def _read(tmp_path, *lines: str) -> list[knownhosts.Entry]:
    path = tmp_path / "known_hosts"
    path.write_text("".join(line + "\n" for line in lines))
    return knownhosts.read(str(path))


@needs_keygen
def test_unusable_lines_are_skipped_and_named_once_with_their_line_number(tmp_path, caplog):
    good, blob = _key(tmp_path, "collector")
    caplog.set_level(logging.WARNING, logger="uploader")
    lines = (
        "# the collector",
        f"|1|garbage|garbage {good}",  # paramiko's hash_host raised binascii.Error on it
        f"|1|{'A' * 8}|{'A' * 8} {good}",  # base64, but not 20 bytes
        f"{HOST} ssh-ed25519 AAAA!!!notbase64",
        f"{HOST} ssh-rsa {good.split()[1]}",  # the blob is an ed25519 key
        f"@bogus {HOST} {good}",
        f"{HOST} ssh-ed25519",
        f"@cert-authority *.example {good}",
        f"{HOST} {good}",
    )
    for _ in range(2):  # read for every session: named once all the same
        entries = _read(tmp_path, *lines)
    assert knownhosts.verdict(entries, HOST, blob) == (Verdict.KNOWN, 9)
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 7, said
    for number in range(2, 9):
        assert sum(f"line {number} skipped" in message for message in said) == 1, (number, said)
    assert any("line 8 skipped: @cert-authority is not used by upload_method=sftp" in m for m in said)


@needs_keygen
def test_revoked_key_is_refused_even_where_another_line_lists_it(tmp_path):
    good, blob = _key(tmp_path, "collector")
    _, other_blob = _key(tmp_path, "other")
    entries = _read(tmp_path, f"{HOST} {good}", f"@revoked * {good}")
    assert knownhosts.verdict(entries, HOST, blob) == (Verdict.REVOKED, 2)
    assert knownhosts.verdict(entries, HOST, other_blob) == (Verdict.CHANGED, 1)
    hashed = _hashed(tmp_path, f"{HOST} {good}")
    entries = _read(tmp_path, f"@revoked {hashed}", f"{HOST} {good}")
    assert knownhosts.verdict(entries, HOST, blob) == (Verdict.REVOKED, 1)
    entries = _read(tmp_path, f"@revoked other.example {good}", f"{HOST} {good}")
    assert knownhosts.verdict(entries, HOST, blob) == (Verdict.KNOWN, 2)  # revoked for another host only


@needs_keygen
def test_patterns_and_hashed_names_match_as_openssh_matches_them(tmp_path):
    good, blob = _key(tmp_path, "collector")
    hashed = _hashed(tmp_path, f"{HOST} {good}")
    assert hashed.startswith("|1|")
    for hosts, matched in (
        (hashed.split()[0], True),
        ("[Collector.EXAMPLE]:49222", True),  # case-insensitive
        ("other.example,[collector.example]:49222", True),
        ("[*.example]:49222", True),
        ("[collector.exampl?]:*", True),
        ("[*.example]:49222,![collector.example]:*", False),  # excluded
        ("[collector.example]:22", False),
        ("collector.example", False),  # port 22 only
        ("[c*.example]:4922", False),
    ):
        entries = _read(tmp_path, f"{hosts} {good}")
        expected = (Verdict.KNOWN, 1) if matched else (Verdict.UNKNOWN, None)
        assert knownhosts.verdict(entries, HOST, blob) == expected, hosts
