"""Is the system clock synchronized? The kernel's own answer, adjtimex(2).

Every record carries the sensor's time (the packets' times, the spool
file's name, first and last seen at the collector, `delay`), and SIE's
operators' guide asks for an accurate clock (NTP). chrony, ntpd and
systemd-timesyncd tell the kernel when they have the clock in hand; until
one does, or when none runs, the kernel says "unsynchronized" (STA_UNSYNC
in the status, TIME_ERROR as the return value). Reading needs no
privilege (modes = 0 changes nothing), so `check-config` and `status`
ask whoever runs them. Linux only; elsewhere the answer is "unknown".
"""

from __future__ import annotations

import ctypes
import ctypes.util

TIME_ERROR = 5  # adjtimex's return value: the clock is not synchronized
STA_UNSYNC = 0x0040  # status bit: no one keeps the clock in hand


class Timex(ctypes.Structure):
    """struct timex (linux/timex.h, the kernel's own layout on every ABI:
    `long` fields and padding as the C compiler lays them out)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


def adjtimex() -> tuple[int, Timex] | None:
    """(return value, the kernel's timex) read without changing anything,
    or None where there is no adjtimex."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        call = libc.adjtimex
    except (OSError, AttributeError):
        return None
    found = Timex()  # modes = 0: read only
    state = call(ctypes.byref(found))
    if state < 0:
        return None
    return state, found


def unsynchronized() -> str | None:
    """Why the clock cannot be trusted, in words; None when the kernel says
    it is synchronized (or cannot say)."""
    found = adjtimex()
    if found is None:
        return None
    state, timex = found
    if state != TIME_ERROR and not timex.status & STA_UNSYNC:
        return None
    return ("the kernel reports the system clock unsynchronized (adjtimex: no NTP client keeps it in hand); "
            "record times, first/last seen and delays are only as right as this clock: run chrony, ntpd "
            "or systemd-timesyncd")
