"""`run --print json|text`: the records on stdout as they go to the spool.

Run as an operator runs it: through a shell pipe into `head`, and on a
live dnstap sensor read line by line while it runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from bench import dnstap_traffic as T
from tests.netns import wait_for_line

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "resolver.pcap")
EXAMPLE_RECORDS = 1000  # the example's exchanges, every one answered: one pair each
ENV = dict(os.environ, PYTHONPATH=REPO)


def _config(tmp_path) -> str:
    path = tmp_path / "conf"
    path.write_text(f'spooldir="{tmp_path}/spool"\nupload="no"\narchive="yes"\ninterval="3600"\n')
    return str(path)


def _read(tmp_path, fmt: str = "json") -> list[str]:
    result = subprocess.run([sys.executable, "-m", "sensor", "read", "--format", fmt, str(tmp_path / "spool")],
                            capture_output=True, text=True, env=ENV, check=True)
    return result.stdout.splitlines()


def test_print_json_into_head_ends_the_printing_not_the_replay(tmp_path):
    command = (f"set -o pipefail; {sys.executable} -m sensor run -c {_config(tmp_path)} --pcap {EXAMPLE} "
               f"--print json | head -1")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr  # pipefail: the sensor's status, were it not 0
    (line,) = result.stdout.splitlines()
    json.loads(line)
    spooled = _read(tmp_path)
    assert line == spooled[0]
    # every record of the file, in the spool
    assert len(spooled) == EXAMPLE_RECORDS and f"records={EXAMPLE_RECORDS}" in result.stderr
    assert "Traceback" not in result.stderr and "Broken pipe" not in result.stderr


def test_print_text_on_a_replay_is_every_line_read_prints(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sensor", "run", "-c", _config(tmp_path), "--pcap", EXAMPLE,
                             "--print", "text"], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == _read(tmp_path, "text")
    assert "replaying" not in result.stderr  # no progress bar


def test_print_shows_a_live_sensors_records_while_it_runs(tmp_path):
    sock = str(tmp_path / "dnstap.sock")
    sensor = subprocess.Popen(
        [sys.executable, "-m", "sensor", "run", "-c", _config(tmp_path), "--dnstap", f"unix:{sock}",
         "--user", "nobody-here", "--print", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )
    try:
        wait_for_line(sensor, "capturing from")
        resolver = T.Sender(sock)
        resolver.handshake()
        resolver.send(T.exchanges(20, seed=21))
        lines = [sensor.stdout.readline() for _ in range(10)]  # before any stop
    finally:
        sensor.send_signal(signal.SIGTERM)
        rest, log = sensor.communicate(timeout=60)
    assert sensor.returncode == 0, log
    assert [json.loads(line)["message"]["type"] for line in lines] == ["UDP_QUERY_RESPONSE"] * 10
    assert "".join(lines).splitlines() + rest.splitlines() == _read(tmp_path)


def test_print_is_refused_with_daemon(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sensor", "run", "-c", _config(tmp_path), "--daemon",
                             "--print", "json"], capture_output=True, text=True, env=ENV, timeout=60)
    assert result.returncode == 2 and "--print writes to stdout, which --daemon closes" in result.stderr
