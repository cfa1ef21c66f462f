"""Exchanges a dnstap sensor loses or doubles across its restarts, against the wire.

The lab's resolver (unbound, or BIND with `--resolver named`) reports to a
dnstap sensor while a client asks it a steady stream of new names (each
one upstream exchange) and a packet-capture sensor records the upstream
interface. The dnstap sensor is restarted every few seconds: SIGTERM,
wait for its exit, start it again, as `systemctl restart` does. Then
every exchange begun on the wire during the load is looked up among the
dnstap records:

- lost: on the wire, no dnstap record;
- doubled: two dnstap records for one exchange (unanswered + pair);
- unanswered: a pair on the wire, an unanswered query in dnstap;
- ipv4_port_differs, ipv6_port_differs: one record, with another query
  port than the wire's (what the resolver reported).

`--socket held` plays systemd's socket activation (tests/sockethold.py:
the listening socket outlives each sensor process); `--socket own` is the
sensor making and removing it (SysV). `--tree DIR` runs another checkout's
sensor for the dnstap side (the figures before a change).

    python -m tests.dnstap_restart --resolver unbound --socket held --restarts 5
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

import click

from sensor.records.record import Field, RecordType
from sensor.spool import formats as spoolfile
from sensor.spool import spooldir
from tests import lab as lab_module
from tests.netns import wait_for_line
from tests.sockethold import HeldSocket

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A client in its namespace: `rate` new names a second under lab.test for
# `seconds` (each an upstream query for the resolver: NXDOMAIN, never cached
# before), answers read and dropped.
LOAD = r"""
import os, random, socket, struct, sys, time
rate, seconds, tag = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setblocking(False)
start = time.monotonic()
sent = 0
while time.monotonic() < start + seconds:
    labels = [f"n{sent}-{tag}".encode(), b"lab", b"test"]
    name = b"".join(bytes((len(l),)) + l for l in labels) + b"\0"
    sock.sendto(struct.pack("!HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0) + name + b"\0\1\0\1",
                ("203.0.113.1", 53))
    sent += 1
    while True:
        try:
            sock.recv(4096)
        except BlockingIOError:
            break
    time.sleep(max(0.0, start + sent / rate - time.monotonic()))
print(sent)
"""


def _config(path: str, spool: str, extra: str = "") -> str:
    with open(path, "w") as handle:
        handle.write(f'spooldir="{spool}"\nDNSQR_CAPTURE_RD="0"\nupload="no"\narchive="yes"\ninterval="3600"\n'
                     f"{extra}")
    return path


def _records(spool: str) -> list[dict]:
    folder = spooldir.folder(spool, spooldir.ARCHIVE, "ch202")
    if not os.path.isdir(folder):
        return []
    return [r for name in sorted(os.listdir(folder)) for r in spoolfile.records(os.path.join(folder, name))]


def _key(record: dict) -> tuple:
    """An exchange, as both edges name it, but for the query port (unbound
    reports 53 for IPv6, BIND 0 for TCP): the load's names are unique."""
    return (str(ipaddress.ip_address(record[Field.QUERY_IP])), str(ipaddress.ip_address(record[Field.RESPONSE_IP])),
            record[Field.RESPONSE_PORT], record.get(Field.ID), (record.get(Field.QNAME) or b"").lower(),
            record.get(Field.QTYPE))


def _begun(record: dict) -> float:
    secs = record.get(Field.QUERY_TIME_SEC) or record.get(Field.RESPONSE_TIME_SEC)
    nsecs = record.get(Field.QUERY_TIME_NSEC) or record.get(Field.RESPONSE_TIME_NSEC)
    return secs[0] + nsecs[0] / 1e9


def compare(wire: list[dict], dnstap: list[dict], since: float, until: float, show=None) -> dict[str, int]:
    """What became of each exchange begun on the wire in [since, until);
    `show(what, record)` is told each one that went wrong."""
    window = [r for r in wire if since <= _begun(r) < until]
    reported: dict[tuple, list[tuple[int, int]]] = {}
    for record in dnstap:
        reported.setdefault(_key(record), []).append((record[Field.TYPE], record[Field.QUERY_PORT]))
    counts = Counter(exchanges=len(window))
    for record in window:
        found = reported.get(_key(record), [])
        if not found:
            what = "lost"
        elif len(found) > 1:
            what = "doubled"
        elif record[Field.TYPE] == RecordType.UDP_QUERY_RESPONSE and found[0][0] == RecordType.UDP_UNANSWERED_QUERY:
            what = "unanswered"
        elif record[Field.TYPE] != RecordType.TCP and found[0][1] != record[Field.QUERY_PORT]:
            what = f"ipv{ipaddress.ip_address(record[Field.QUERY_IP]).version}_port_differs"
        else:
            continue
        counts[what] += 1
        if show:
            show(what, record)
    return dict(counts)


def kept_records(spool: str) -> list[dict]:
    """The queries a dnstap sensor's last stop kept for its next start
    (carryover), as unanswered records: what that start writes if it comes
    later than the query timeout (the file is consumed)."""
    from sensor.edges import carryover
    from sensor.edges.dnstap import Decoder, DnstapMatcher

    matcher = DnstapMatcher()
    carry = carryover.TableCarry(carryover.table_path(spool, "ch202"), matcher, Decoder({}))
    if not os.path.exists(carry.path):
        return []
    carry.restore()
    return matcher.flush()


class _DnstapSensor:
    """The sensor under test, started again and again on one spool."""

    def __init__(self, work: str, sock: str, held: HeldSocket | None, tree: str) -> None:
        self.stops: list[float] = []
        self.argv = [sys.executable, "-m", "sensor", "run", "-c", _config(f"{work}/dnstap.conf", f"{work}/dnstap"),
                     "--dnstap", f"unix:{sock}", "--user", "nobody-here"]
        self.held = held
        self.env = dict(os.environ, PYTHONPATH=tree)
        self.logs: list[str] = []
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        options = {"stderr": subprocess.PIPE, "text": True, "env": self.env, "cwd": self.env["PYTHONPATH"]}
        self.process = self.held.popen(self.argv, **options) if self.held else subprocess.Popen(self.argv, **options)
        wait_for_line(self.process, "capturing from")

    def stop(self) -> None:
        self.stops.append(time.time())
        self.process.send_signal(signal.SIGTERM)
        self.logs.append(self.process.communicate(timeout=60)[1])


def measure(resolver: str, socket_mode: str, restarts: int, rate: float, every: float, tree: str = REPO,
            verbose: bool = False, named_options: str = "") -> dict:
    """Run the load with `restarts` restarts `every` seconds apart; the comparison."""
    work = tempfile.mkdtemp(prefix="sie-restart-")
    os.chmod(work, 0o755)
    sock = f"{work}/dnstap.sock"
    held = HeldSocket(sock) if socket_mode == "held" else None
    dnstap = _DnstapSensor(work, sock, held, tree)
    dnstap.start()
    try:
        with lab_module.DnsLab(dnstap_socket=sock, resolver=resolver, named_options=named_options) as lab:
            capture = subprocess.Popen(
                ["ip", "netns", "exec", lab.resolver, sys.executable, "-m", "sensor", "run", "-c",
                 _config(f"{work}/capture.conf", f"{work}/capture",
                         f'DNSQR_RES_ADDRS="{lab_module.RESOLVER4},{lab_module.RESOLVER6}"\n'),
                 "--interface", lab.upstream_if, "--user", "nobody-here"],
                stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO),
            )
            wait_for_line(capture, "capturing from")
            seconds = every * (restarts + 1)
            since = time.time()
            load = subprocess.Popen(["ip", "netns", "exec", lab.client, sys.executable, "-c", LOAD, str(rate),
                                     str(seconds), os.path.basename(work)], stdout=subprocess.PIPE, text=True)
            for _ in range(restarts):
                time.sleep(every)
                dnstap.stop()
                dnstap.start()
            load.communicate(timeout=seconds + 60)
            until = time.time()
            time.sleep(3)  # the resolver's last reports (unbound holds them up to a second)
            capture.send_signal(signal.SIGTERM)
            capture.communicate(timeout=60)
    finally:
        dnstap.stop()
        if held:
            held.close()
    stops = dnstap.stops

    def show(what: str, record: dict) -> None:
        begun = _begun(record)
        nearest = min(range(len(stops)), key=lambda i: abs(stops[i] - begun))
        print(f"{what}: {_key(record)} begun {begun - stops[nearest]:+.3f} s from stop {nearest + 1}",
              file=sys.stderr)

    reported = _records(f"{work}/dnstap") + kept_records(f"{work}/dnstap")
    result = compare(_records(f"{work}/capture"), reported, since, until, show if verbose else None)
    if not os.environ.get("SIE_LAB_KEEP"):
        shutil.rmtree(work, ignore_errors=True)
    result["warnings"] = sum(log.count("WARNING") for log in dnstap.logs)
    if verbose:
        for number, log in enumerate(dnstap.logs, 1):
            print(f"---- sensor run {number}:\n{log}", file=sys.stderr)
    return result


@click.command()
@click.option("--resolver", type=click.Choice(["unbound", "named"]), default="unbound", show_default=True)
@click.option("--socket", "socket_mode", type=click.Choice(["held", "own"]), default="held", show_default=True)
@click.option("--restarts", default=5, show_default=True)
@click.option("--rate", default=200.0, show_default=True, help="client queries a second")
@click.option("--every", default=4.0, show_default=True, help="seconds between restarts")
@click.option("--tree", default=REPO, show_default=True, help="the checkout whose sensor takes dnstap")
@click.option("--verbose", is_flag=True, help="name each exchange lost, doubled or left unanswered")
@click.option("--named-options", default="", help='BIND options to add, e.g. "fstrm-set-reopen-interval 1;"')
def main(resolver: str, socket_mode: str, restarts: int, rate: float, every: float, tree: str,
         verbose: bool, named_options: str) -> None:
    """Measure, print one line of figures."""
    reason = lab_module.available()
    if reason or not os.path.exists(f"/usr/sbin/{resolver}"):
        raise click.ClickException(reason or f"needs /usr/sbin/{resolver}")
    result = measure(resolver, socket_mode, restarts, rate, every, os.path.abspath(tree), verbose, named_options)
    click.echo(f"resolver={resolver} {named_options} socket={socket_mode} restarts={restarts} tree={tree} "
               + " ".join(f"{k}={v}" for k, v in sorted(result.items())))


if __name__ == "__main__":
    main()
