"""OpenSSH's known_hosts, read the way ssh reads it, for the SFTP method.

paramiko's reader raised out of the uploader on a damaged hashed name
(`|1|garbage|garbage`) and took `@revoked` and `@cert-authority` lines for
broken keys, while ssh (the rsync method) reads the same file line by line,
skips what it cannot use and goes on. So does this reader:

- a line it cannot use (too few fields, bad base64, a hashed name that is
  not `|1|salt|hash`, a marker it does not know) is skipped and named once
  in the log with its line number;
- `@revoked` keys are refused for every host their patterns match, even
  when another line lists the same key as good (a revocation must win);
- `@cert-authority` lines are skipped: the SFTP method checks plain host
  keys, never host certificates (said once in the log);
- host patterns are OpenSSH's: comma-separated, `*` and `?` wildcards, `!`
  to exclude, case-insensitive, or one hashed name (`ssh-keygen -H`).

Keys are compared as public key blobs, as ssh compares them: a key type
paramiko cannot parse is no reason to skip a line.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import hashlib
import hmac
import logging
import re
import struct

log = logging.getLogger("uploader")

REVOKED_MARKER = "@revoked"
CA_MARKER = "@cert-authority"
HASH_MAGIC = "|1|"
SHA1_SIZE = 20

# (path, line number, line) already named in the log: the file is read again
# for every session, and an operator needs to hear of a line once, not every round
_said: set[tuple[str, int, str]] = set()
_SAID_MAX = 10_000


class Verdict(enum.Enum):
    KNOWN = "known"
    UNKNOWN = "unknown"  # no line names this host
    CHANGED = "changed"  # lines name this host, none with this key
    REVOKED = "revoked"  # an @revoked line names this host with this key


@dataclasses.dataclass(frozen=True)
class Entry:
    """One usable line: its host field as written, its key, revoked or not."""

    line: int
    hosts: str
    key_type: str
    blob: bytes
    revoked: bool

    def matches(self, host: str) -> bool:
        """`host` (lower case; `[host]:port` off port 22) is named by this line."""
        if self.hosts.startswith(HASH_MAGIC):
            _, _, salt, digest = self.hosts.split("|")
            mac = hmac.new(base64.b64decode(salt), host.encode(), hashlib.sha1).digest()
            return hmac.compare_digest(mac, base64.b64decode(digest))
        named = False
        for pattern in self.hosts.lower().split(","):
            negated = pattern.startswith("!")
            if _glob(pattern[1:] if negated else pattern).fullmatch(host):
                if negated:
                    return False  # an excluded host is never matched by the line
                named = True
        return named


def _glob(pattern: str) -> re.Pattern:
    """OpenSSH's host pattern: `*` any run, `?` any one character, nothing else special."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern))


class Unusable(ValueError):
    """Why one line cannot be used."""


def read(path: str) -> list[Entry]:
    """The usable lines of `path`; each unusable one is named once in the log.

    OSError when the file cannot be read at all (the caller says so).
    """
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.readlines()
    entries = []
    for number, text in enumerate(lines, 1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        try:
            entry = parse_line(text, number)
        except Unusable as exc:
            _say_once(path, number, text, f"knownhosts file {path} line {number} skipped: {exc}")
            continue
        if entry is None:
            _say_once(path, number, text, f"knownhosts file {path} line {number} skipped: {CA_MARKER} is "
                      "not used by upload_method=sftp (it checks plain host keys, not host certificates)")
            continue
        entries.append(entry)
    return entries


def parse_line(text: str, number: int) -> Entry | None:
    """One known_hosts line (not blank, not a comment); None for an
    @cert-authority line; Unusable when it cannot be read."""
    fields = text.split()
    revoked = False
    if fields[0].startswith("@"):
        marker = fields.pop(0)
        if marker == CA_MARKER:
            return None
        if marker != REVOKED_MARKER:
            raise Unusable(f"unknown marker {marker!r} (only {REVOKED_MARKER} and {CA_MARKER} exist)")
        revoked = True
    if len(fields) < 3:
        raise Unusable("expected host patterns, a key type and a key")
    hosts, key_type, encoded = fields[:3]
    if hosts.startswith("|"):
        _check_hashed(hosts)
    try:
        blob = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise Unusable("the key is not valid base64") from None
    inside = _blob_type(blob)
    if inside != key_type:
        raise Unusable(f"the key is {'not an SSH public key' if inside is None else 'of type ' + inside}, "
                       f"the line says {key_type}")
    return Entry(number, hosts, key_type, blob, revoked)


def _check_hashed(hosts: str) -> None:
    parts = hosts.split("|")
    if len(parts) != 4 or hosts[: len(HASH_MAGIC)] != HASH_MAGIC:
        raise Unusable("a hashed host name must be |1|salt|hash")
    for part in parts[2:]:
        try:
            if len(base64.b64decode(part, validate=True)) != SHA1_SIZE:
                raise Unusable("a hashed host name's salt and hash are 20 bytes each")
        except binascii.Error:
            raise Unusable("a hashed host name's salt or hash is not valid base64") from None


def _blob_type(blob: bytes) -> str | None:
    """The key type an SSH public key blob starts with (a length-prefixed string)."""
    if len(blob) < 4:
        return None
    (size,) = struct.unpack(">I", blob[:4])
    if not 0 < size <= len(blob) - 4:
        return None
    return blob[4 : 4 + size].decode("ascii", errors="replace")


def _say_once(path: str, number: int, text: str, message: str) -> None:
    key = (path, number, text)
    if key in _said:
        return
    if len(_said) >= _SAID_MAX:
        _said.clear()
    _said.add(key)
    log.warning("%s", message)


def verdict(entries: list[Entry], host: str, blob: bytes) -> tuple[Verdict, int | None]:
    """What the file says of `host` (as written in known_hosts: `[host]:port`
    off port 22) offering the key `blob`, and the line that says it."""
    host = host.lower()
    named = [entry for entry in entries if entry.matches(host)]
    for entry in named:
        if entry.revoked and entry.blob == blob:
            return Verdict.REVOKED, entry.line
    good = [entry for entry in named if not entry.revoked]
    for entry in good:
        if entry.blob == blob:
            return Verdict.KNOWN, entry.line
    if good:
        return Verdict.CHANGED, good[0].line
    return Verdict.UNKNOWN, None
