"""Service plumbing: pidfile, memory cap, privilege drop, SIGHUP reload."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from sensor.service import daemon
from sensor.spool import spooldir
from tests import netns
from tests import packets as P
from tests.netns import STAY_AS_IS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pidfile_refuses_a_live_owner_and_replaces_a_stale_one(tmp_path):
    path = str(tmp_path / "run" / "sensor.pid")
    owner = subprocess.Popen(["sh", "-c", "sleep 30", "sie-dns-sensor", "--pidfile", path])
    stranger = subprocess.Popen(["sleep", "30"])  # a reused pid: alive, but not started with this pidfile
    try:
        os.makedirs(os.path.dirname(path))
        with open(path, "w") as handle:
            handle.write(f"{owner.pid}\n")
        with pytest.raises(daemon.DaemonError, match="already running"):
            daemon.PidFile(path).claim()
        with open(path, "w") as handle:
            handle.write(f"{stranger.pid}\n")
        daemon.PidFile(path).claim()
        with open(path) as handle:
            assert int(handle.read()) == os.getpid()
    finally:
        for process in (owner, stranger):
            process.kill()
            process.wait()
    pidfile = daemon.PidFile(path)
    pidfile.claim()  # the old pid is gone: stale
    with open(path) as handle:
        assert int(handle.read()) == os.getpid()
    pidfile.release()
    assert not os.path.exists(path)


def test_memory_cap_is_a_hard_limit():
    code = (
        "from sensor.service import daemon\n"
        "daemon.limit_memory(400 * 1024)\n"
        "try:\n"
        "    b = bytearray(600 * 1024 * 1024)\n"
        "    print('allocated')\n"
        "except MemoryError:\n"
        "    print('refused')\n"
        "import resource; print(resource.getrlimit(resource.RLIMIT_AS))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=REPO), check=True).stdout.split("\n")
    assert out[0] == "refused"
    assert out[1] == f"({400 * 1024 * 1024}, {400 * 1024 * 1024})"


def test_privileges_stay_when_the_service_user_is_missing():
    assert daemon.drop_privileges("no-such-user-sie") is False


REASON = netns.available()


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_sighup_finishes_the_open_file_and_rereads_settings(tmp_path):
    spool = tmp_path / "spool"
    config = tmp_path / "sie-dns-sensor"
    base = f'spooldir="{spool}"\nDNSQR_RES_ADDRS="192.0.2.53"\nupload="yes"\ninterval="3600"\n'
    from uploader import keys

    keys.generate(str(tmp_path / "key"))
    base += f'uploadkey="{tmp_path / "key"}"\n'
    config.write_text(base)
    env = dict(os.environ, PYTHONPATH=REPO)
    exchange = P.ethernet(P.query()).hex() + " " + P.ethernet(P.response()).hex()
    with netns.Lab(["192.0.2.53/24"], ["198.51.100.1/24"]) as lab:
        sensor = lab.popen(lab.a, [sys.executable, "-m", "sensor", "run", "-c", str(config),
                                   "--interface", lab.a_if, *STAY_AS_IS], stderr=subprocess.PIPE, env=env, text=True)
        while "capturing from" not in sensor.stderr.readline():
            assert sensor.poll() is None
        time.sleep(0.5)
        sender = (
            "import socket,sys; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); "
            f"s.bind(('{lab.b_if}', 0)); [s.send(bytes.fromhex(f)) for f in sys.argv[1:]]"
        )
        lab.run(lab.b, [sys.executable, "-c", sender, *exchange.split()], check=True)
        time.sleep(0.5)
        config.write_text(base + 'archive="yes"\n')
        sensor.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        waiting = spooldir.folder(spool, spooldir.WAITING, "ch202")
        while time.monotonic() < deadline and not os.listdir(waiting):
            time.sleep(0.1)
        assert len(os.listdir(waiting)) == 1  # finished by SIGHUP
        second = [P.ethernet(P.query(ident=2)).hex(), P.ethernet(P.response(ident=2)).hex()]
        lab.run(lab.b, [sys.executable, "-c", sender, *second], check=True)
        time.sleep(0.5)
        sensor.send_signal(signal.SIGTERM)
        _, err = sensor.communicate(timeout=30)
    assert "configuration re-read" in err
    assert len(os.listdir(spooldir.folder(spool, spooldir.ARCHIVE, "ch202"))) == 1  # archive="yes" now applies
    assert len(os.listdir(waiting)) == 2
