"""Which files in waiting/ the uploader may send, and opening them safely.

waiting/ is writable by the service user, and the uploader may run as root
(when that user does not exist). So a name there is not trusted: only a
regular file owned by the uploader's own user is sent, never what a
symbolic link points to (a link to /etc/shadow would otherwise be shipped
to the collector byte for byte). The check is made twice: when the
directory is listed (lstat, so links are seen as links) and again on the
open descriptor (O_NOFOLLOW, fstat), so a file swapped for a link between
the two is refused too.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO


class NotSendable(OSError):
    """This name in waiting/ is not a regular file of ours."""


def refusal(info: os.stat_result) -> str | None:
    """Why a file with this (l)stat must not be sent, or None if it may."""
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_uid != os.geteuid():
        return f"owned by uid {info.st_uid}, not by this uploader (uid {os.geteuid()})"
    return None


def open_for_upload(path: str) -> BinaryIO:
    """Open a spool file for reading without following a link; NotSendable
    if it is not a regular file of ours, OSError if it cannot be read."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a link
            raise NotSendable("a symbolic link") from None
        raise
    try:
        reason = refusal(os.fstat(fd))
        if reason:
            raise NotSendable(reason)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
