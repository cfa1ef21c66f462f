"""capture_workers > 1: the first process starts the others and answers for them.

Processes, not threads: the matcher is Python, and one interpreter runs
one thread of Python at a time, so only processes put a second core to
work. The first process (worker 1) opens every worker's packet socket in
one fanout group while it may (CAP_NET_RAW), drops privileges, takes the
spool lock and finishes a crash's files, then forks the others; each
keeps its own socket, matcher, spool files and state file. A signal to
the first is passed on to all (the SysV script signals only the pid in
the pidfile); a worker that ends unasked stops them all, so the service
manager restarts the service whole rather than run with a share of the
traffic unseen; a worker whose first process is gone stops itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
from collections.abc import Callable

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
EXIT_SOFTWARE = 70


class Family:
    """The first worker's view of the others."""

    def __init__(self) -> None:
        self.children: dict[int, int] = {}  # pid -> worker number
        self.ended: dict[int, int] = {}  # worker number -> exit code
        self.unasked = False  # a worker ended before the first was asked to stop

    def fork(self, number: int, body: Callable[[], int]) -> None:
        """Start worker `number` running `body`; only the first returns."""
        pid = os.fork()
        if pid:
            self.children[pid] = number
            return
        code = EXIT_SOFTWARE
        try:
            _die_with_parent()
            code = body()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # a bug: logged once, never a bare traceback
            log.critical("worker %d stopped by an unexpected error: %s", number, exc, exc_info=True)
        finally:
            logging.shutdown()
            os._exit(code)

    def signal(self, signum: int) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def reap(self) -> bool:
        """Collect workers that have ended, without waiting; True if any had."""
        any_ended = False
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    self.ended[self.children.pop(pid)] = os.waitstatus_to_exitcode(status)
                    any_ended = True
        return any_ended

    def wait(self) -> dict[int, int]:
        """Wait for every worker; their exit codes by number."""
        for pid, number in list(self.children.items()):
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(pid, 0)
                self.ended[number] = os.waitstatus_to_exitcode(status)
            del self.children[pid]
        return self.ended


def _die_with_parent() -> None:
    """Have the kernel send SIGTERM if the first worker dies (SIGKILL, a crash)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
