"""capture_workers=2: a live replay yields exactly the records of one worker.

The same generated capture is sent by tcpreplay onto a veth pair, once to a
sensor with one worker and once to a sensor with two (one PACKET_FANOUT
group). The records must be the same, times aside (they are the kernel's
arrival times of each replay); both workers must have written records (the
kernel did share the packets), and the stop line adds them up.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from bench import traffic
from sensor.records.record import Field
from sensor.spool import formats as spoolfile
from sensor.spool import spooldir
from tests import netns

REASON = netns.available() or (None if shutil.which("tcpreplay") else "needs tcpreplay")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKETS = 6000
# the kernel's arrival times of each replay, and the wait of a query left unanswered at the stop
TIMES = (Field.QUERY_TIME_SEC, Field.QUERY_TIME_NSEC, Field.RESPONSE_TIME_SEC, Field.RESPONSE_TIME_NSEC, Field.TIMEOUT)

pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or "")]


def _replay(lab: netns.Lab, pcap: str, work: str, workers: int) -> tuple[list, str, dict]:
    """Records (times aside, sorted), the final stop line, and each worker's records."""
    spool = os.path.join(work, f"spool-{workers}")
    config = os.path.join(work, f"conf-{workers}")
    with open(config, "w") as handle:
        handle.write(
            f'spooldir="{spool}"\nDNSQR_RES_ADDRS="{traffic.RESOLVER4},{traffic.RESOLVER6}"\n'
            f'upload="no"\narchive="yes"\nspool_format="cbor"\ncapture_workers="{workers}"\n'
            'interval="1"\n'
        )
    sensor = lab.popen(
        lab.a,
        [sys.executable, "-m", "sensor", "run", "-c", config, "--interface", lab.a_if, *netns.STAY_AS_IS],
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    netns.wait_for_line(sensor, "capturing from")
    lab.run(lab.b, ["tcpreplay", "-i", lab.b_if, "--pps=4000", pcap], capture_output=True, check=True)
    sensor.send_signal(signal.SIGTERM)
    _, log = sensor.communicate(timeout=60)
    assert sensor.returncode == 0, log
    stop = [line for line in log.splitlines() if "stopped:" in line][-1]
    archive = spooldir.folder(spool, spooldir.ARCHIVE, "ch202")
    records = []
    for name in sorted(os.listdir(archive)):
        for record in spoolfile.records(os.path.join(archive, name)):
            records.append(sorted((k, repr(v)) for k, v in record.items() if k not in TIMES))
    by_worker = {int(n): int(r) for n, r in re.findall(r"worker (\d+) of \d+ stopped: packets=\d+ records=(\d+)", log)}
    return sorted(records), stop, by_worker


def test_two_workers_record_exactly_what_one_does(tmp_path):
    pcap = str(tmp_path / "traffic.pcap")
    traffic.write(pcap, PACKETS)
    with netns.Lab(["192.0.2.53/24"], ["198.51.100.1/24"]) as lab:
        one, one_stop, _ = _replay(lab, pcap, str(tmp_path), 1)
        two, two_stop, writers = _replay(lab, pcap, str(tmp_path), 2)
    assert re.search(rf"packets={PACKETS} ", one_stop), one_stop
    assert "workers=2" in two_stop and re.search(rf"packets={PACKETS} ", two_stop), two_stop
    assert set(writers) == {1, 2} and all(writers.values()), writers  # the kernel shared the packets
    pairs = int(re.search(r"pairs=(\d+)", one_stop).group(1))
    # a response in one worker and its query in the other would not pair
    assert pairs > PACKETS // 3 and f"pairs={pairs} " in two_stop
    assert len(one) == len(two)
    for a, b in zip(one, two, strict=True):
        assert a == b, [(x, y) for x, y in zip(a, b, strict=False) if x != y]


def test_a_worker_that_dies_stops_the_sensor_whole(tmp_path):
    """SIGKILL to worker 2: the first stops too, says why, exits 1 (the
    service manager then restarts the whole sensor, not a share of it)."""
    config = tmp_path / "conf"
    config.write_text(f'spooldir="{tmp_path}/spool"\nDNSQR_RES_ADDRS="{traffic.RESOLVER4}"\nupload="no"\n'
                      'capture_workers="2"\n')
    with netns.Lab(["192.0.2.53/24"], ["198.51.100.1/24"]) as lab:
        sensor = lab.popen(
            lab.a,
            [sys.executable, "-m", "sensor", "run", "-c", str(config), "--interface", lab.a_if, *netns.STAY_AS_IS],
            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO),
        )
        netns.wait_for_line(sensor, "capturing from")
        with open(f"/proc/{sensor.pid}/task/{sensor.pid}/children") as handle:
            (worker,) = (int(pid) for pid in handle.read().split())
        os.kill(worker, signal.SIGKILL)
        _, log = sensor.communicate(timeout=30)
    assert sensor.returncode == 1, log
    assert "capture workers ended unasked (exit codes by worker: {2: -9})" in log
    assert "stopped: workers=2" in log and "Traceback" not in log
