"""The uploader's state file and its warning every interval while uploads stall.

A thread, not the upload loop, writes the state: a round can legitimately
take minutes (big files, a slow collector, connect timeouts), and `status`
must not call a busy uploader dead. A truly stuck one still shows, as
"no upload succeeded for N intervals while files wait", both here (a
warning every interval) and in `sie-dns-sensor status`.

The last success and the last error outlive a restart: they are taken
from the state file the previous uploader left, so `status` right after
`service ... restart` does not say "last upload never".
"""

from __future__ import annotations

import logging
import threading
import time

from sensor.service.daemonstate import STATE_SECONDS, UPLOADER, StateFile, read_state, state_path
from sensor.service.status import backlog, upload_problems

from .upload import Uploader

log = logging.getLogger("uploader")


class Watch(threading.Thread):
    """Writes `locks/upload-<channel>.state` every few seconds; warns every interval."""

    def __init__(self, uploader: Uploader) -> None:
        super().__init__(name="upload-state", daemon=True)
        config = uploader.config
        self.uploader = uploader
        self.state = StateFile(state_path(config.spooldir, UPLOADER, config.channel))
        _carry_over(read_state(self.state.path) or {}, uploader)
        self._stop_event = threading.Event()
        self._next_warning = time.monotonic() + config.interval

    def run(self) -> None:
        while not self._stop_event.wait(STATE_SECONDS):
            self.beat()

    def beat(self) -> None:
        """Write the state file; once an interval, warn about a stall."""
        config = self.uploader.config
        self.state.write(self.snapshot())
        if time.monotonic() >= self._next_warning:
            self._next_warning = time.monotonic() + config.interval
            for problem in upload_problems(self.snapshot(), backlog(self.uploader.directory), config.interval):
                log.warning("%s", problem)

    def snapshot(self) -> dict:
        up = self.uploader
        host, port = up.config.submitserver or ("", 0)
        return {
            "server": f"{host}:{port}",
            "login": up.config.login,
            "uploaded": up.uploaded,
            "failures": up.failures,
            "last_success": up.last_success,
            "last_error": up.last_error,
            "last_error_time": up.last_error_time,
            "rounds": up.rounds,
        }

    def stop(self) -> None:
        """Stop writing and leave a final state that says so."""
        self._stop_event.set()
        self.state.write(dict(self.snapshot(), stopped=time.time()))


CARRIED = {"last_success": (int, float), "last_error": str, "last_error_time": (int, float)}


def _carry_over(previous: dict, uploader: Uploader) -> None:
    """What the last uploader of this channel knew, unless this one knows better."""
    for name, kind in CARRIED.items():
        value = previous.get(name)
        if getattr(uploader, name) is None and isinstance(value, kind):
            setattr(uploader, name, value)
