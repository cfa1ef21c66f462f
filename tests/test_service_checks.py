"""`service sie-dns-sensor restart` and `reload` do what was asked or say why not (issue 25, items 10, 11).

The SysV script runs with its paths pointed at a scratch folder. The
daemons are stand-ins (they detach and write their pidfile, as the real
ones do), but `check-config` is the real one: it is what decides here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.uploadkit import REPO

INIT_SCRIPT = os.path.join(REPO, "initscripts", "sie-dns-sensor.init")
# the real check-config; otherwise a daemon that detaches, writes its pid
# where --pidfile (the last argument) says, and notes each SIGHUP beside it
PROGRAM = """#!/bin/sh
if [ "$1" = check-config ]; then
    PYTHONPATH={repo} exec {python} -m sensor "$@"
fi
for pidfile; do :; done
( trap 'exit 0' TERM; trap 'echo hup >> "$pidfile.hups"' HUP; while :; do sleep 0.1; done ) >/dev/null 2>&1 &
echo $! > "$pidfile"
"""


@pytest.fixture
def service(tmp_path):
    """(run the script with an action, the configuration file, the pidfile folder)."""
    if os.geteuid() != 0:
        pytest.skip("the script makes its pidfile folder root's")
    rundir = tmp_path / "run"
    rundir.mkdir()
    program = tmp_path / "sie-dns-sensor"
    program.write_text(PROGRAM.format(repo=REPO, python=sys.executable))
    program.chmod(0o755)
    config = tmp_path / "sie-dns-sensor.conf"
    settings = {"spooldir": tmp_path / "spool", "interface": "lo", "DNSQR_RES_ADDRS": "192.0.2.53", "upload": "no"}
    config.write_text("".join(f'{name}="{value}"\n' for name, value in settings.items()))
    with open(INIT_SCRIPT) as handle:
        text = handle.read()
    for variable, value in (("RUNDIR", rundir), ("SENSOR", program), ("UPLOADER", "/bin/false"),
                            ("CONFIG", config)):
        assert f"\n{variable}=" in text
        text = text.replace(f"\n{variable}=", f"\n{variable}={value}\n# was: {variable}=", 1)
    script = tmp_path / "sie-dns-sensor.init"
    script.write_text(text)

    def action(name: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(script), name], capture_output=True, text=True, timeout=120)

    started = action("start")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield action, config, rundir
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((rundir / "sensor.pid").read_text()), signal.SIGKILL)


def _sensor_pid(rundir) -> int:
    return int((rundir / "sensor.pid").read_text())


def _hups(rundir, deadline: float = 10.0) -> int:
    """SIGHUPs the stand-in noted (it notes one between two 0.1 s sleeps)."""
    noted = rundir / "sensor.pid.hups"
    ends = time.monotonic() + deadline
    while not noted.exists() and time.monotonic() < ends:
        time.sleep(0.05)
    return noted.read_text().count("hup") if noted.exists() else 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_restart_with_a_typo_in_the_interface_leaves_the_running_sensor_as_it_is(service):
    action, config, rundir = service
    running = _sensor_pid(rundir)
    config.write_text(config.read_text().replace('interface="lo"', 'interface="opw9"'))
    result = action("restart")
    assert result.returncode == 1
    assert "interface: 'opw9' names no network device" in result.stderr
    assert "left as it is" in result.stderr
    assert _alive(running) and _sensor_pid(rundir) == running


def test_reload_of_a_setting_that_needs_a_restart_says_so_on_the_terminal_and_fails(service):
    action, config, rundir = service
    running = _sensor_pid(rundir)
    config.write_text(config.read_text().replace("192.0.2.53", "192.0.2.54") + 'interval="30"\n')
    result = action("reload")
    assert result.returncode != 0
    assert 'DNSQR_RES_ADDRS changed ("192.0.2.53/32" -> "192.0.2.54/32")' in result.stderr
    assert "service sie-dns-sensor restart" in result.stderr
    assert _hups(rundir) == 1  # the rest (interval) was applied
    assert _alive(running)
    # a reload that changes only what a reload applies is a plain success
    config.write_text(config.read_text().replace("192.0.2.54", "192.0.2.53").replace('"30"', '"20"'))
    again = action("reload")
    assert again.returncode == 0 and again.stderr == "", again.stderr
    # after a restart, the new settings are what the sensor started with
    config.write_text(config.read_text().replace("192.0.2.53", "192.0.2.54"))
    assert action("restart").returncode == 0
    assert action("reload").returncode == 0
    assert action("stop").returncode == 0 and not (rundir / "sensor.settings").exists()
