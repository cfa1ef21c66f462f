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
import time

import pytest

from sensor.display import render
from sensor.spool import formats as spoolfile
from sensor.spool import spooldir
from tests import netns
from tests.dnstraffic import ASKER, RESPONDER, USER
from tests.netns import STAY_AS_IS
from uploader import keys

REASON = netns.available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")  # marks: conftest.MARKS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
            [sys.executable, "-m", "sensor", "run", "-c", str(config), "--interface", lab.a_if, *STAY_AS_IS],
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        netns.wait_for_line(sensor, "capturing from")
        time.sleep(0.5)
        lab.run(lab.a, [sys.executable, "-c", ASKER, "40"], check=True, env=env, timeout=120)
        lab.run(lab.b, [sys.executable, "-c", USER], check=True, env=env, timeout=30)
        time.sleep(0.5)
        waiting = spooldir.folder(spool, spooldir.WAITING, "ch202")
        assert not glob.glob(os.path.join(waiting, "*")), "interval not over: nothing finished yet"
        sensor.send_signal(signal.SIGTERM)
        _, err = sensor.communicate(timeout=30)
        assert sensor.returncode == 0, err
    assert not glob.glob(os.path.join(spooldir.folder(spool, spooldir.NEW, "ch202"), "*")), "a partial file was left"
    files = glob.glob(os.path.join(waiting, "*"))
    assert len(files) == 1, err
    records = spoolfile.records(files[0])
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


def test_idle_live_capture_stops_promptly_on_sigterm(tmp_path):
    """No packet at all on the link: SIGTERM must still end the sensor."""
    config = tmp_path / "sie-dns-sensor"
    config.write_text(f'spooldir="{tmp_path / "spool"}"\nDNSQR_RES_ADDRS="192.0.2.53"\nupload="no"\n')
    env = dict(os.environ, PYTHONPATH=REPO)
    with netns.Lab(["192.0.2.53/24"], ["198.51.100.1/24"]) as lab:
        # no IPv6 addresses: nothing at all crosses this link
        netns._ip("-n", lab.a, "link", "set", lab.a_if, "arp", "off")
        sensor = lab.popen(
            lab.a,
            [sys.executable, "-m", "sensor", "run", "-c", str(config), "--interface", lab.a_if, *STAY_AS_IS],
            stderr=subprocess.PIPE, env=env, text=True,
        )
        netns.wait_for_line(sensor, "capturing from")
        time.sleep(1)
        started = time.monotonic()
        sensor.send_signal(signal.SIGTERM)
        _, err = sensor.communicate(timeout=30)
        assert sensor.returncode == 0, err
        assert time.monotonic() - started < 5
        assert "packets=0" in err


def test_records_before_a_quiet_spell_survive_a_sigkill(tmp_path):
    """The open file is synced on a timer, not only when a later write comes."""
    spool = tmp_path / "spool"
    config = tmp_path / "sie-dns-sensor"
    config.write_text(
        f'spooldir="{spool}"\nDNSQR_RES_ADDRS="192.0.2.53,2001:db8::53"\nDNSQR_CAPTURE_RD="0"\n'
        'interval="3600"\nupload="no"\narchive="yes"\n'
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    with netns.Lab(["192.0.2.53/24", "2001:db8::53/64"], ["198.51.100.1/24", "2001:db8:1::1/64"]) as lab:
        for ns, route in ((lab.a, "198.51.100.0/24"), (lab.b, "192.0.2.0/24")):
            netns._ip("-n", ns, "route", "add", route, "dev", lab.a_if if ns == lab.a else lab.b_if)
        for ns, route in ((lab.a, "2001:db8:1::/64"), (lab.b, "2001:db8::/64")):
            netns._ip("-n", ns, "-6", "route", "add", route, "dev", lab.a_if if ns == lab.a else lab.b_if)
        responder = lab.popen(lab.b, [sys.executable, "-c", RESPONDER], stdout=subprocess.PIPE, env=env)
        assert responder.stdout.readline().strip() == b"ready"
        sensor = lab.popen(
            lab.a, [sys.executable, "-m", "sensor", "run", "-c", str(config), "--interface", lab.a_if, *STAY_AS_IS],
            stderr=subprocess.PIPE, env=env, text=True,
        )
        netns.wait_for_line(sensor, "capturing from")
        time.sleep(0.5)
        lab.run(lab.a, [sys.executable, "-c", ASKER, "40"], check=True, env=env, timeout=120)  # a burst...
        time.sleep(3)  # ...then silence
        sensor.send_signal(signal.SIGKILL)
        sensor.wait(timeout=30)
    (left,) = glob.glob(os.path.join(spooldir.folder(spool, spooldir.NEW, "ch202"), "*"))  # the crash left it open
    records = spoolfile.records(left, allow_cut=True)
    assert len(records) == 70  # every pair answered before the silence (35 per address)
