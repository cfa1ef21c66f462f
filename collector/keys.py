"""API keys: who may ask the database over HTTP, and how much.

`sie-dns-collector add-key NAME` makes a key, 32 random bytes written as
64 hex digits (as DNSDB's keys look), and prints it once; the file keeps
only its SHA-256. A slow hash (bcrypt, scrypt) protects what people
choose; 256 random bits cannot be found from their SHA-256 however fast
the hash, and a fast one lets the server find a key by its digest in one
dictionary look-up a request.

The file (`api_keys`, default <collector_dir>/api-keys) holds one JSON
object a line: the name, the digest, and the key's own limits where they
differ from the configuration's. The server reads it again when it
changes, so adding or removing a key needs no restart; a line it cannot
read is named in the log once and skipped, the other keys still work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import secrets
import time

from . import privatefile

log = logging.getLogger("collector.api")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RELOAD_SECONDS = 1.0  # how often the server looks whether the file changed


class KeyProblem(ValueError):
    """A key cannot be added or removed as asked; the text says why."""


@dataclasses.dataclass(frozen=True)
class ApiKey:
    """One key as the file has it (None: the configuration's limit)."""

    name: str
    sha256: str
    results_max: int | None = None
    burst_size: int | None = None
    burst_window: int | None = None
    lookups: int | None = None

    def limits_text(self) -> str:
        fields = [f"{field}={value}" for field, value in dataclasses.asdict(self).items()
                  if field not in ("name", "sha256") and value is not None]
        return " ".join(fields) or "the configuration's limits"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def read(path: str) -> tuple[list[ApiKey], list[str]]:
    """(keys, problems): the keys of every readable line, and what is wrong with the others."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return [], []
    keys, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            keys.append(_parse(line))
        except (ValueError, TypeError) as exc:
            problems.append(f"{path}:{number}: {exc}")
    return keys, problems


def _parse(line: str) -> ApiKey:
    fields = json.loads(line)
    if not isinstance(fields, dict):
        raise ValueError("not a JSON object")
    key = ApiKey(**fields)
    if not NAME.fullmatch(str(key.name)) or not re.fullmatch(r"[0-9a-f]{64}", str(key.sha256)):
        raise ValueError("no valid name and sha256")
    for value in (key.results_max, key.burst_size, key.burst_window, key.lookups):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError("a limit must be a whole number of at least 1")
    return key


def add(path: str, name: str, owner: tuple[int, int] | None = None, **limits: int | None) -> str:
    """Register a new key NAME with its own `limits` (ApiKey's fields); the secret, to hand over once."""
    if not NAME.fullmatch(name):
        raise KeyProblem(f"{name!r}: a key name is letters, digits, '.', '_' and '-' (at most 64)")
    keys, problems = read(path)
    if problems:
        raise KeyProblem(f"fix the key file first: {problems[0]}")
    if any(key.name == name for key in keys):
        raise KeyProblem(f"a key named {name} exists (remove-key first)")
    secret = secrets.token_hex(32)
    _write(path, [*keys, ApiKey(name, digest(secret), **limits)], owner)
    return secret


def remove(path: str, name: str, owner: tuple[int, int] | None = None) -> bool:
    """Take the key NAME out; False when there is none."""
    keys, problems = read(path)
    if problems:
        raise KeyProblem(f"fix the key file first: {problems[0]}")
    kept = [key for key in keys if key.name != name]
    if len(kept) == len(keys):
        return False
    _write(path, kept, owner)
    return True


def _write(path: str, keys: list[ApiKey], owner: tuple[int, int] | None) -> None:
    """Replace the file whole, mode 0600, the service user's (privatefile)."""
    lines = []
    for key in keys:
        fields = {field: value for field, value in dataclasses.asdict(key).items() if value is not None}
        lines.append(json.dumps(fields) + "\n")
    privatefile.replace(path, "".join(lines), owner)


class KeyRing:
    """The keys the server accepts, read again when the file changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.by_digest: dict[str, ApiKey] = {}
        self.seen: tuple | None = None
        self.checked = 0.0
        self._reload()

    def find(self, secret: str) -> ApiKey | None:
        if time.monotonic() - self.checked > _RELOAD_SECONDS:
            self._reload()
        return self.by_digest.get(digest(secret))

    def _reload(self) -> None:
        self.checked = time.monotonic()
        try:
            info = os.stat(self.path)
            seen = (info.st_ino, info.st_size, info.st_mtime_ns)
        except OSError:
            seen = None
        if seen == self.seen:
            return
        self.seen = seen
        keys, problems = read(self.path)
        for problem in problems:
            log.error("API keys: %s (line skipped)", problem)
        self.by_digest = {key.sha256: key for key in keys}
        log.info("API keys: %d read from %s", len(self.by_digest), self.path)
