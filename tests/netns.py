"""Network namespaces joined by veth pairs, for tests that cross a real wire.

Each `Lab` makes its own uniquely named namespaces and removes them (and
every process started in them) on exit, so tests can run side by side
and leave nothing behind. Addresses are from the documentation ranges.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

# Programs started as root by tests run as the service user when it exists
# (the package test creates it, and purge keeps it): name one that does
# not, so they stay the test's user and can use its root-only temp dirs.
STAY_AS_IS = ("--user", "sie-test-no-such-user")


def available() -> str | None:
    """None when namespaces can be used here, else why not."""
    if os.geteuid() != 0:
        return "needs root for ip netns"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    probe = f"siep{uuid.uuid4().hex[:6]}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if result.returncode != 0:
        return f"ip netns does not work here: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def wait_for_line(process: subprocess.Popen, text: str, seconds: float = 30) -> None:
    """Read the process's stderr until a line holds `text` (it is ready)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if text in line:
            return
        if not line and process.poll() is not None:
            raise AssertionError(f"exited before saying {text!r}: {process.stderr.read()}")
    raise AssertionError(f"no {text!r} in {seconds} s")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Lab:
    """Two hosts, `a` and `b`, on one veth link."""

    def __init__(self, a_addrs: list[str], b_addrs: list[str]) -> None:
        tag = uuid.uuid4().hex[:6]
        self.a, self.b = f"siea{tag}", f"sieb{tag}"
        self.a_if, self.b_if = f"va{tag}", f"vb{tag}"
        self.a_addrs, self.b_addrs = a_addrs, b_addrs
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> Lab:
        _ip("netns", "add", self.a)
        _ip("netns", "add", self.b)
        _ip("link", "add", self.a_if, "netns", self.a, "type", "veth", "peer", "name", self.b_if, "netns", self.b)
        for ns, dev, addrs in ((self.a, self.a_if, self.a_addrs), (self.b, self.b_if, self.b_addrs)):
            _ip("-n", ns, "link", "set", "lo", "up")
            for addr in addrs:
                extra = ["nodad"] if ":" in addr else []
                _ip("-n", ns, "addr", "add", addr, "dev", dev, *extra)
            _ip("-n", ns, "link", "set", dev, "up")
            if shutil.which("ethtool"):
                # veth hands on packets with the UDP checksum left to "hardware"
                # that does not exist; compute it, as a real sender's NIC would
                subprocess.run(
                    ["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"], capture_output=True, check=True
                )
        return self

    def popen(self, ns: str, argv: list[str], **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kwargs)
        self.processes.append(process)
        return process

    def run(self, ns: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], **kwargs)

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
