"""The upload key pair that `sie-gen-key` makes.

Keys are written in OpenSSH's own format (what ssh-keygen writes) so an
operator can inspect them with OpenSSH tools and paste the public half
into the collector's registration. `cryptography` (which paramiko already
depends on) makes them: paramiko itself cannot generate Ed25519 keys.
"""

from __future__ import annotations

import os
import socket

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

KEY_TYPES = ("ed25519", "rsa")
DEFAULT_RSA_BITS = 4096


class KeyExists(FileExistsError):
    """An upload key is already there; it is never overwritten."""


def host_fqdn() -> str:
    """This host's name as `hostname -f` prints it: the canonical name that
    getaddrinfo gives for gethostname(). (socket.getfqdn() asks
    gethostbyaddr instead, which often answers `localhost`.)"""
    name = socket.gethostname()
    try:
        for *_, canonical, _ in socket.getaddrinfo(name, None, flags=socket.AI_CANONNAME):
            if canonical:
                return canonical
    except OSError:
        pass
    return name


def generate(
    path: str,
    kind: str = "ed25519",
    bits: int = DEFAULT_RSA_BITS,
    comment: str | None = None,
    owner: tuple[int, int] | None = None,
) -> str:
    """Write `path` (mode 0600) and `path.pub`; return the public key line.

    `owner` (uid, gid) is given to both files through their open
    descriptors: run as root in a folder the service user can write, a
    chown by name could be sent through a link swapped in meanwhile.
    """
    public_path = path + ".pub"
    for existing in (path, public_path):
        if os.path.exists(existing):
            raise KeyExists(f"{existing} already exists; remove it first to make a new key")
    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif kind == "rsa":
        if bits < 2048:
            raise ValueError("RSA keys must have at least 2048 bits")
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        raise ValueError(f"unknown key type {kind!r} (one of {', '.join(KEY_TYPES)})")
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = f"{public.decode('ascii')} {comment or host_fqdn()}\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    _write_new(path, private, 0o600, owner)
    _write_new(public_path, line.encode("ascii"), 0o644, owner)
    return line


def _write_new(path: str, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    """Create `path` (never an existing name or a link), chown it by descriptor, fill it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as handle:
        if owner is not None:
            os.fchown(fd, *owner)
        handle.write(data)


def loose_mode(path: str) -> str | None:
    """Why the private key must not be used, if others may read it (OpenSSH
    refuses such a key too); None when its mode is fine or it cannot be
    looked at (loading it then says what is wrong)."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return None
    if mode & 0o077:
        return (f"upload key {path} is readable by others (mode {mode:04o}); not used, as OpenSSH "
                f"would not use it either: chmod 600 {path}")
    return None
