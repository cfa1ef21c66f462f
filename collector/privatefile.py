"""Files the collector keeps for its service user alone (authorized_keys,
the API keys): replaced whole, never seen half-written.

Written aside in the same folder, fsynced, mode 0600, given to the owner,
then renamed over the old one: sshd and the API server read them at any
moment, and a crash must leave either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def replace(path: str, text: str, owner: tuple[int, int] | None) -> None:
    """Make `text` the content of `path` (0600, `owner`'s when given)."""
    folder = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        if owner is not None:
            os.chown(temporary, *owner)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
