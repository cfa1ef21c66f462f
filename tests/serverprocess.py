"""A server a test starts and must stop (ClickHouse, ZooKeeper): its output in its own folder,
waited for until it answers, stopped with SIGTERM (SIGKILL after 30 s).

A subclass says how to tell it answers (`answers`) and which of its logs to
show when it does not start (`LOGS`); it launches itself with `launch`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time


class ServerProcess:
    NAME = "server"  # for messages
    LOGS: tuple[str, ...] = ("stdout.log",)  # in its folder, last first shown

    def __init__(self, folder: str, port: int) -> None:
        self.folder, self.port = folder, port
        self.process: subprocess.Popen | None = None

    def answers(self) -> bool:
        raise NotImplementedError

    def launch(self, argv: list[str], timeout: float, poll: float) -> None:
        """Start `argv` in the folder and wait until it answers; RuntimeError with its logs if it dies or
        takes longer than `timeout` seconds."""
        out = open(os.path.join(self.folder, "stdout.log"), "ab")  # noqa: SIM115 (the child keeps it)
        self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=self.folder)
        out.close()
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.NAME} on port {self.port} did not start: {self.errors()}")
            time.sleep(poll)

    def errors(self) -> str:
        found = []
        for name in self.LOGS:
            path = os.path.join(self.folder, name)
            if os.path.exists(path):
                with open(path, errors="replace") as handle:
                    found.append(handle.read()[-2000:])
        return "\n".join(found) or "(no log)"

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
