"""The query server for the API tests: a store filled from records built in
code, a configuration, keys made with `add-key`, and `sie-dns-collector
serve` as its own process on a loopback port it picks itself."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time

import dns.name

from collector import roothints
from collector.chain import Chain
from collector.sqlite_store import SqliteStore
from tests.collectorkit import ZONE, hints_file, message, resolution, response_record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wire(text: str) -> bytes:
    return dns.name.from_text(text).to_wire().lower()


def zone_answer(qname: str, qtype: str, datas: list[str], when: int) -> dict:
    """An authoritative answer from the zones' server (known once a resolution delegated to it)."""
    return response_record(ZONE, message(qname, qtype, answer=[(f"{qname}.", qtype, datas)], aa=True), when)


def records() -> list[dict]:
    """Several zones in two TLDs, several types, times from 1000 to 9000."""
    out = []
    for when in (1000, 2000):
        out += resolution("www.example.test", "example.test", "203.0.113.80", when)
    out += resolution("mail.example.test", "example.test", "203.0.113.25", 1500)
    out += [zone_answer("www.example.test", "AAAA", ["2001:db8::80"], 3000),
            zone_answer("example.test", "MX", ["10 mail.example.test."], 3000),
            zone_answer("example.test", "TXT", ['"v=spf1 -all"'], 3500),
            zone_answer("ftp.example.test", "CNAME", ["www.example.test."], 4000)]
    out += resolution("www.example.other", "example.other", "203.0.113.81", 5000)
    out += [zone_answer("alias.example.other", "CNAME", ["www.example.test."], 6000)]
    out += resolution("www.shop.test", "shop.test", "198.51.100.50", 9000)
    return out


def fill(path: str, extra: list[tuple] | None = None) -> None:
    """The store at `path` from `records()`, then `extra` synthetic aggregates (rrsets as Chain.drain gives)."""
    store = SqliteStore(path)
    roothints.seed(store.directory, roothints.read(hints_file(os.path.dirname(path))))
    chain = Chain(store.directory)
    for record in records():
        chain.feed(record)
    store.merge(*chain.drain())
    if extra:
        store.merge(extra, [])
    store.commit([])
    store.close()


def write_config(folder: str, **settings: str) -> str:
    """A collector configuration on `folder` (store folder/pdns.sqlite), with `settings` on top."""
    values = {"collector_dir": folder, "store": f"sqlite:{folder}/pdns.sqlite",
              "root_hints": f"{folder}/root.hints", **settings}
    path = os.path.join(folder, "collector.conf")
    with open(path, "w") as handle:
        handle.writelines(f'{name}="{value}"\n' for name, value in values.items())
    return path


def env() -> dict[str, str]:
    """This checkout's collector, its log lines on stderr (no syslog)."""
    return dict(os.environ, PYTHONPATH=REPO, SIE_DNS_SENSOR_SYSLOG_SOCKET="/nonexistent/sie-test-no-syslog")


def collector(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collector", *args], capture_output=True, text=True, timeout=120,
                          env=env())


def add_key(config: str, name: str, *options: str) -> str:
    done = collector("add-key", "-c", config, name, *options)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Server:
    """`sie-dns-collector serve` on 127.0.0.1, a free port; its log lines kept in `lines`."""

    def __init__(self, config: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "collector", "serve", "-c", config,
                                         "--listen", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True, env=env())
        self.lines: list[str] = []
        self.port = 0
        ready = threading.Event()
        threading.Thread(target=self._read, args=(ready,), daemon=True).start()
        if not ready.wait(60) or not self.port:
            self.stop()
            raise AssertionError("the server did not start: " + "\n".join(self.lines))

    def _read(self, ready: threading.Event) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            found = re.search(r"answering on http://127\.0\.0\.1:(\d+)/", line)
            if found:
                self.port = int(found.group(1))
                ready.set()
        ready.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of a GET."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def log_has(self, pattern: str, seconds: float = 10) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in self.lines):
                return True
            time.sleep(0.05)
        return False

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
