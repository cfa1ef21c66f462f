"""Live capture with libpcap on a real veth interface inside namespaces.

Host `a` is the resolver (192.0.2.53, 2001:db8::53); host `b` is an
authoritative server (198.51.100.1, 2001:db8:1::1) that answers every
query except names under drop.example. The sensor captures on a's side of
the link until SIGTERM; then every exchange must be exactly one record of
the right type and nothing may be left half-written.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sensor import render
from sensor.spool import read_spool
from tests import netns
from uploader import keys

REASON = netns.available()
pytestmark = [pytest.mark.network, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RESPONDER = textwrap.dedent(
    """
    import socket, sys, dpkt
    socks = []
    for family, addr in ((socket.AF_INET, "198.51.100.1"), (socket.AF_INET6, "2001:db8:1::1")):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((addr, 53))
        socks.append(s)
    print("ready", flush=True)
    import select
    while True:
        ready, _, _ = select.select(socks, [], [])
        for s in ready:
            data, peer = s.recvfrom(4096)
            msg = dpkt.dns.DNS(data)
            if msg.qd[0].name.endswith("drop.example"):
                continue
            msg.qr = dpkt.dns.DNS_R
            rr = dpkt.dns.DNS.RR(name=msg.qd[0].name, type=dpkt.dns.DNS_A, ttl=60)
            rr.ip = bytes([203, 0, 113, 7])
            msg.an = [rr]
            s.sendto(bytes(msg), peer)
    """
)

ASKER = textwrap.dedent(
    """
    import socket, sys, dpkt
    count = int(sys.argv[1])
    for family, src, dst in ((socket.AF_INET, "192.0.2.53", "198.51.100.1"),
                             (socket.AF_INET6, "2001:db8::53", "2001:db8:1::1")):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((src, 0))
        s.settimeout(0.3)
        for i in range(count):
            name = f"q{i}.drop.example" if i % 10 == 9 else f"q{i}.example"
            q = dpkt.dns.DNS(id=i, qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A)], an=[], ns=[], ar=[])
            q.op = 0  # iterative, as a resolver asks (RD clear); a query with RD set goes too
            if i == 5:
                q.op = dpkt.dns.DNS_RD
            s.sendto(bytes(q), (dst, 53))
            try:
                s.recvfrom(4096)
            except socket.timeout:
                pass
    """
)

# a user's query to the resolver: must never be recorded
USER = textwrap.dedent(
    """
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("198.51.100.1", 0))
    s.sendto(b"\\x00\\x01\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x04user\\x00\\x00\\x01\\x00\\x01",
             ("192.0.2.53", 53))
    """
)


def test_live_capture_on_veth_pairs_everything_and_stops_cleanly(tmp_path):
    spool = tmp_path / "spool"
    config = tmp_path / "sie-dns-sensor"
    keys.generate(str(tmp_path / "upload"))  # a live sensor with upload="yes" needs its key
    config.write_text(
        f'spooldir="{spool}"\nDNSQR_RES_ADDRS="192.0.2.53,2001:db8::53"\nDNSQR_CAPTURE_RD="0"\n'
        f'interval="3600"\nupload="yes"\nuploadkey="{tmp_path / "upload"}"\n'
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    with netns.Lab(["192.0.2.53/24", "2001:db8::53/64"], ["198.51.100.1/24", "2001:db8:1::1/64"]) as lab:
        for ns, route in ((lab.a, "198.51.100.0/24"), (lab.b, "192.0.2.0/24")):
            dev = lab.a_if if ns == lab.a else lab.b_if
            netns._ip("-n", ns, "route", "add", route, "dev", dev)
        for ns, route in ((lab.a, "2001:db8:1::/64"), (lab.b, "2001:db8::/64")):
            dev = lab.a_if if ns == lab.a else lab.b_if
            netns._ip("-n", ns, "-6", "route", "add", route, "dev", dev)
        responder = lab.popen(lab.b, [sys.executable, "-c", RESPONDER], stdout=subprocess.PIPE, env=env)
        assert responder.stdout.readline().strip() == b"ready"
        sensor = lab.popen(
            lab.a,
            [sys.executable, "-m", "sensor", "run", "-c", str(config), "--interface", lab.a_if],
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        _wait_for(sensor, "capturing from")
        time.sleep(0.5)
        lab.run(lab.a, [sys.executable, "-c", ASKER, "40"], check=True, env=env, timeout=120)
        lab.run(lab.b, [sys.executable, "-c", USER], check=True, env=env, timeout=30)
        time.sleep(0.5)
        assert not glob.glob(str(spool / "waiting/ch202/*")), "interval not over: nothing finished yet"
        sensor.send_signal(signal.SIGTERM)
        _, err = sensor.communicate(timeout=30)
        assert sensor.returncode == 0, err
    assert not glob.glob(str(spool / "new/ch202/*")), "a partial file was left behind"
    files = glob.glob(str(spool / "waiting/ch202/*"))
    assert len(files) == 1, err
    _, records = read_spool(files[0])
    records = list(records)
    messages = [render.message(r) for r in records]
    kinds = sorted((m["type"], m["query_ip"]) for m in messages)
    for address in ("192.0.2.53", "2001:db8::53"):
        assert kinds.count(("UDP_QUERY_RESPONSE", address)) == 35  # 36 answered, one with RD set
        assert kinds.count(("UDP_UNANSWERED_QUERY", address)) == 4
    assert len(messages) == 78
    assert "filtered=2" in err
    assert all(m["udp_checksum"] == "CORRECT" for m in messages if m["type"] == "UDP_QUERY_RESPONSE")
    assert not any(m.get("qname") == "user." for m in messages)
    assert "kernel_dropped=0" in err
    json.dumps(messages)


def _wait_for(process: subprocess.Popen, text: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if text in line:
            return
        if not line and process.poll() is not None:
            raise AssertionError(f"sensor exited: {process.stderr.read()}")
    raise AssertionError(f"no {text!r} from the sensor in {seconds} s")
