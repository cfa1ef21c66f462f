"""Log lines to syslog (tag `sie`, facility.level from syslog_priority).

Operators grep syslog for the sensor, as they did for the C one; in the
foreground the same lines also go to stderr.
"""

from __future__ import annotations

import logging
import logging.handlers
import os

SYSLOG_SOCKET = "/dev/log"
SYSLOG_TAG = "sie"  # as the C sensor logged


def setup(priority: str, foreground: bool) -> None:
    """Configure the root logger once for the process."""
    facility_name, _, level_name = priority.partition(".")
    root = logging.getLogger()
    root.handlers.clear()
    level = logging.DEBUG if level_name == "debug" else logging.INFO
    if level_name in ("warning", "notice"):
        level = logging.WARNING if level_name == "warning" else logging.INFO
    elif level_name in ("err", "crit", "alert", "emerg"):
        level = logging.ERROR
    root.setLevel(level)
    # paramiko narrates every connection at INFO; the uploader logs its own lines
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    if os.path.exists(SYSLOG_SOCKET):
        facility = logging.handlers.SysLogHandler.facility_names[facility_name]
        handler = logging.handlers.SysLogHandler(address=SYSLOG_SOCKET, facility=facility)
        handler.setFormatter(logging.Formatter(f"{SYSLOG_TAG}[%(process)d]: %(message)s"))
        root.addHandler(handler)
    if foreground or not root.handlers:
        stderr = logging.StreamHandler()
        stderr.setFormatter(logging.Formatter(f"{SYSLOG_TAG}: %(levelname)s %(message)s"))
        root.addHandler(stderr)
