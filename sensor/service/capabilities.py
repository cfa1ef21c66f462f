"""Keep CAP_NET_RAW, dormant, across the switch to the service user.

The sensor opens its capture as root and then runs as an unprivileged user.
When the interface goes away (a NIC reset, a bond or VLAN re-created) the
capture must be opened again, which needs CAP_NET_RAW. So the process keeps
that one capability in its *permitted* set only (not effective: it cannot
be used by accident) and raises it for the moment of reopening. Every
other capability goes with root. Python's standard library has no capset,
so this calls the two system calls through libc.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
_PR_SET_KEEPCAPS = 8
_VERSION_3 = 0x20080522  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _call(name: str, *args) -> None:
    if getattr(_libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")


def _get() -> tuple[int, int]:
    """(effective, permitted) as bit masks."""
    header, data = _Header(_VERSION_3, 0), (_Data * 2)()
    _call("capget", ctypes.byref(header), data)
    return (data[0].effective | data[1].effective << 32, data[0].permitted | data[1].permitted << 32)


def _set(effective: int, permitted: int) -> None:
    header, data = _Header(_VERSION_3, 0), (_Data * 2)()
    for word in (0, 1):
        data[word].effective = (effective >> (32 * word)) & 0xFFFFFFFF
        data[word].permitted = (permitted >> (32 * word)) & 0xFFFFFFFF
    _call("capset", ctypes.byref(header), data)


def keep_across_setuid(keep: bool) -> None:
    """Before setuid: whether the permitted set survives it (PR_SET_KEEPCAPS)."""
    _call("prctl", _PR_SET_KEEPCAPS, int(keep), 0, 0, 0)


def limit_to(*caps: int) -> None:
    """Permitted = `caps`, effective = none (dormant until `raised`)."""
    _set(0, sum(1 << cap for cap in caps))


def permitted() -> set[int]:
    mask = _get()[1]
    return {cap for cap in range(64) if mask >> cap & 1}


@contextlib.contextmanager
def raised(*caps: int) -> Iterator[None]:
    """Make permitted `caps` effective for a moment (as root: nothing to do)."""
    effective, allowed = _get()
    wanted = sum(1 << cap for cap in caps) & allowed
    if os.geteuid() == 0 or not wanted:
        yield
        return
    _set(effective | wanted, allowed)
    try:
        yield
    finally:
        _set(effective, allowed)
