"""Registering sensors: one authorized_keys line each, forced into its folder.

Receiving is OpenSSH's work, not ours: the collector user's
authorized_keys holds a line per sensor that lets that key do one thing,

    restrict,from="ADDRS",command="rrsync -wo -munge <root>/incoming/NAME" KEY sie-sensor=NAME

write with rsync into its own folder (rrsync, Debian's rsync package),
with no shell, no forwarding, no pty (`restrict`), and with `from=`
from the sensor's own addresses only. The sensor's identity is that
folder: a key cannot name itself as another sensor, and nothing inside a
file it sends can change where the file came from. Not rrsync's -no-del:
it also refuses --remove-source-files, which every sensor's uploader
sends (uploader/rsync.py); a --delete reaches only the sensor's own
uploads not yet claimed (the ingester moves a file out to work/ first).
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

from . import incoming, privatefile

RRSYNC = "/usr/bin/rrsync"
MARKER = "sie-sensor="
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,3}")


class SensorError(ValueError):
    """A registration that cannot be made as asked; the text says why."""


@dataclass(frozen=True)
class Sensor:
    """One registered sensor, as its authorized_keys line says."""

    name: str
    key_type: str
    key: str
    addresses: str

    def fingerprint(self) -> str:
        return fingerprint(f"{self.key_type} {self.key}")


def read_public_key(path: str) -> tuple[str, str]:
    """(type, base64) of the one public key in `path` (sie-gen-key's .pub)."""
    try:
        with open(path, encoding="ascii") as handle:
            lines = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise SensorError(f"{path}: cannot read a public key ({exc})") from None
    if len(lines) != 1:
        raise SensorError(f"{path}: expected one public key line, found {len(lines)}")
    fields = lines[0].split()
    if len(fields) < 2 or fields[0] not in KEY_TYPES or not _BASE64.fullmatch(fields[1]):
        raise SensorError(f"{path}: not an OpenSSH public key of a known type ({', '.join(KEY_TYPES)})")
    fingerprint(f"{fields[0]} {fields[1]}")  # ssh-keygen must accept it too
    return fields[0], fields[1]


def fingerprint(key_line: str) -> str:
    """SHA256 fingerprint of a public key, as ssh-keygen prints it."""
    with tempfile.NamedTemporaryFile("w", suffix=".pub") as handle:
        handle.write(key_line + "\n")
        handle.flush()
        done = subprocess.run(["ssh-keygen", "-l", "-f", handle.name], capture_output=True, text=True)
    if done.returncode:
        raise SensorError(f"ssh-keygen refuses the key: {done.stderr.strip()}")
    return done.stdout.split()[1]


def addresses_option(text: str) -> str:
    """A `from=` pattern list made only of addresses and prefixes."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise SensorError("--from needs at least one address or prefix")
    for item in items:
        try:
            ipaddress.ip_network(item, strict=True)
        except ValueError as exc:
            raise SensorError(f"--from: {item!r} is not an address or prefix ({exc})") from None
    return ",".join(items)


def key_line(root: str, name: str, key_type: str, key: str, addresses: str = "") -> str:
    folder = incoming.sensor_folder(root, name)
    options = ["restrict"]
    if addresses:
        options.append(f'from="{addresses}"')
    options.append(f'command="{RRSYNC} -wo -munge {folder}"')
    return f"{','.join(options)} {key_type} {key} {MARKER}{name}"


def registered(authorized_keys: str) -> list[Sensor]:
    """The sensors the file names (lines this module wrote)."""
    found = []
    for line in _lines(authorized_keys):
        sensor = _parse(line)
        if sensor is not None:
            found.append(sensor)
    return found


def _parse(line: str) -> Sensor | None:
    fields = line.split()
    if len(fields) < 4 or not fields[-1].startswith(MARKER):
        return None
    match = re.search(r'from="([^"]*)"', fields[0])
    return Sensor(fields[-1][len(MARKER):], fields[-3], fields[-2], match.group(1) if match else "")


def _lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().splitlines()
    except FileNotFoundError:
        return []


def _write(path: str, lines: list[str], owner: tuple[int, int] | None) -> None:
    """Replace the file whole (a temporary name, then rename), mode 0600."""
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700)
        if owner is not None:  # sshd reads authorized_keys as the user
            os.chown(folder, *owner)
    privatefile.replace(path, "".join(line + "\n" for line in lines), owner)


def add(root: str, authorized_keys: str, name: str, key_file: str, addresses: str = "",
        owner: tuple[int, int] | None = None) -> Sensor:
    """Register a sensor: its folder (up/ inside, owned by the collector
    user) and its authorized_keys line. A name or a key already registered
    is refused: one key, one identity."""
    incoming.sensor_folder(root, name)  # checks the name
    key_type, key = read_public_key(key_file)
    if addresses:
        addresses = addresses_option(addresses)
    for sensor in registered(authorized_keys):
        if sensor.name == name:
            raise SensorError(f"a sensor named {name} is already registered (remove-sensor first)")
        if sensor.key == key:
            raise SensorError(f"this key is already registered as sensor {sensor.name}")
    up = os.path.join(incoming.sensor_folder(root, name), incoming.UP)
    os.makedirs(up, mode=0o750, exist_ok=True)
    if owner is not None:
        for path in (os.path.dirname(up), up):
            os.chown(path, *owner)
    _write(authorized_keys, [*_lines(authorized_keys), key_line(root, name, key_type, key, addresses)], owner)
    return Sensor(name, key_type, key, addresses)


def remove(authorized_keys: str, name: str, owner: tuple[int, int] | None = None) -> bool:
    """Take the sensor's line out (its folder and files stay); False if none."""
    lines = _lines(authorized_keys)
    kept = [line for line in lines if (_parse(line) or Sensor("", "", "", "")).name != name]
    if len(kept) == len(lines):
        return False
    _write(authorized_keys, kept, owner)
    return True
