"""Operating the service: status, logs, a lost capture, start-up errors, small fixes."""

from __future__ import annotations

import json
import logging
import os
import pty
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from sensor import pipeline
from sensor.cli import main
from sensor.edges.libpcap import CaptureError
from sensor.matching.matcher import Matcher, Settings
from sensor.pipeline import Sensor
from sensor.service import daemonstate as state
from sensor.service import logs, status
from sensor.spool import spooldir
from sensor.spool.cbor import read_spool
from sensor.spool.writer import SpoolWriter
from tests import packets as P
from tests.uploadkit import CHANNEL, needs_sshd, run_tool, spool_files, start_tool, uploader_keys, write_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = 1_700_000_000


# ------------------------------------------------------------ a lost capture
class FakeLive:
    """A live capture that yields the given batches, then fails (or idles)."""

    live = True
    not_ip = 0
    description = "interface fake0"

    def __init__(self, batches, then_fail: str | None = None) -> None:
        self.batches = list(batches)
        self.then_fail = then_fail
        self.closed = False

    def read_batch(self):
        if self.batches:
            return self.batches.pop(0)
        if self.then_fail:
            raise CaptureError(f"interface fake0: {self.then_fail}")
        time.sleep(0.01)
        return []

    def kernel_stats(self):
        return (10, 0, 0)

    def close(self):
        self.closed = True


def exchange(i: int, t: float):
    """A query and its response as capture batches' entries."""
    sec = int(t)
    return [
        (P.query(ident=i, sport=20000 + i), sec, 0),
        (P.response(ident=i, dport=20000 + i), sec, 1000),
    ]


def test_a_lost_capture_is_reopened_and_nothing_is_lost(tmp_path, caplog, monkeypatch):
    now = int(time.time())
    before = FakeLive([[*exchange(1, now), (P.query(ident=9, sport=30000), now, 2000)]], then_fail="went down")
    after = FakeLive([[(P.response(ident=9, dport=30000), now + 1, 0), *exchange(2, now + 1)]])
    tries = []

    def reopen():
        tries.append(time.monotonic())
        if len(tries) < 2:
            raise CaptureError("interface 'fake0' names no network device")
        return after

    writer = SpoolWriter(str(tmp_path), CHANNEL, "host", 3600, archive=False, upload=True)
    sensor = Sensor(before, Matcher(Settings()), writer, reopen=reopen)
    monkeypatch.setattr(pipeline, "REOPEN_FIRST", 0.05)
    threading.Timer(2.0, sensor.stop).start()
    with caplog.at_level(logging.INFO):
        sensor.run()
    assert before.closed and len(tries) == 2
    assert "capture lost (interface fake0: went down)" in caplog.text
    assert "capture on interface fake0 again" in caplog.text
    waiting = spooldir.folder(tmp_path, spooldir.WAITING, CHANNEL)
    files = sorted(os.listdir(waiting))
    assert len(files) == 2  # the open file was finished when the capture was lost
    records = [r for name in files for r in read_spool(os.path.join(waiting, name))[1]]
    # query 9 was outstanding across the outage: the table was kept, it paired
    assert sorted((r[1], r[7]) for r in records) == [(1, 1), (1, 2), (1, 9)]
    assert sensor.last_error == "capture lost: interface fake0: went down"


def test_a_capture_error_in_a_replay_stops_with_a_log_line_not_a_traceback(tmp_path, caplog):
    broken = FakeLive([exchange(1, T0)], then_fail="read error")
    writer = SpoolWriter(str(tmp_path), CHANNEL, "host", 3600, archive=False, upload=True)
    with caplog.at_level(logging.INFO):
        Sensor(broken, Matcher(Settings()), writer).run()
    assert "capture lost (interface fake0: read error): stopping" in caplog.text
    assert "stopped: packets=2" in caplog.text


# ------------------------------------------------------------------- status
def _config(tmp_path, **settings):
    from sensor.service import config as configuration

    lines = [f'spooldir="{tmp_path}"', 'interval="10"'] + [f'{k}="{v}"' for k, v in settings.items()]
    (tmp_path / "conf").write_text("\n".join(lines) + "\n")
    return configuration.load(str(tmp_path / "conf")), str(tmp_path / "conf")


def _write(tmp_path, program, **fields):
    os.makedirs(tmp_path / spooldir.LOCKS, exist_ok=True)
    now = time.time()
    base = {"pid": os.getpid(), "updated": now, "started": now - 100}
    state.write_state(state.state_path(str(tmp_path), program, CHANNEL), dict(base, **fields))


def test_status_is_ok_when_both_run_and_nothing_waits(tmp_path):
    _cfg, path = _config(tmp_path)
    _write(tmp_path, state.SENSOR, capturing=True, capture="interface eth0", packets_per_second=12.0,
           records_last_interval={"UDP_QUERY_RESPONSE": 5}, table=3, table_max=10)
    _write(tmp_path, state.UPLOADER, last_success=time.time() - 30)
    result = CliRunner().invoke(main, ["status", "-c", path])
    assert result.exit_code == 0, result.output
    assert "UDP_QUERY_RESPONSE=5" in result.output and "table 3/10" in result.output
    assert result.output.rstrip().endswith("ok")


def test_status_adds_up_the_capture_workers_and_misses_a_dead_one(tmp_path):
    cfg, _path = _config(tmp_path)
    _write(tmp_path, state.SENSOR, worker=[1, 2], capturing=True, packets=100, records=40, kernel_dropped=1,
           table=3, table_max=10, records_last_interval={"UDP_QUERY_RESPONSE": 5})
    _write(tmp_path, state.worker_state_name(2), worker=[2, 2], capturing=True, packets=50, records=20,
           kernel_dropped=2, table=4, table_max=10,
           records_last_interval={"UDP_QUERY_RESPONSE": 6, "UDP_UNANSWERED_QUERY": 1})
    _write(tmp_path, state.UPLOADER, last_success=time.time() - 30)
    sensor = status.report(cfg)["sensor"]
    assert (sensor["packets"], sensor["records"], sensor["kernel_dropped"]) == (150, 60, 3)
    assert (sensor["table"], sensor["table_max"]) == (7, 20)
    assert sensor["records_last_interval"] == {"UDP_QUERY_RESPONSE": 11, "UDP_UNANSWERED_QUERY": 1}
    _write(tmp_path, state.worker_state_name(2), worker=[2, 2], pid=2**22 + 1)  # worker 2 is gone
    found = status.report(cfg)
    assert found["exit_status"] == status.PROBLEM
    assert "capture worker 2 of 2 is not running" in " | ".join(found["problems"])


def test_status_not_running_is_exit_3(tmp_path):
    cfg, path = _config(tmp_path)
    result = CliRunner().invoke(main, ["status", "-c", path, "--json"])
    assert result.exit_code == status.NOT_RUNNING
    found = json.loads(result.output)
    assert found["problems"][:2] == ["the sensor is not running", "the uploader is not running"]
    # a dead pid in a fresh file is not running either
    _write(tmp_path, state.SENSOR, pid=2**22 + 1)
    assert status.report(cfg)["sensor"]["running"] is False


def test_status_flags_a_stalled_upload_a_lost_capture_and_drops(tmp_path):
    _cfg, path = _config(tmp_path)
    old = time.time() - 600
    for name in spool_files(tmp_path, [100, 200]):
        os.utime(name, (old, old))
    _write(tmp_path, state.SENSOR, capturing=False, capture_error="went down", dropped_last_interval=7)
    _write(tmp_path, state.UPLOADER, last_success=None, last_error="cannot connect", last_error_time=old)
    result = CliRunner().invoke(main, ["status", "-c", path, "--json"])
    assert result.exit_code == status.PROBLEM
    found = json.loads(result.output)
    assert found["backlog"]["files"] == 2 and found["backlog"]["bytes"] == 300
    problems = " | ".join(found["problems"])
    assert "capture lost: went down" in problems
    assert "dropped 7 packets" in problems
    assert "no upload succeeded for more than 5 intervals (never) while 2 files wait" in problems
    assert "cannot connect" in problems
    # the same files, a recent success: not stalled
    _write(tmp_path, state.UPLOADER, last_success=time.time() - 5)
    assert status.upload_problems(state.read_state(state.state_path(str(tmp_path), "upload", CHANNEL)),
                                  status.backlog(spooldir.folder(tmp_path, spooldir.WAITING, CHANNEL)), 10) == []


def test_upload_no_needs_no_uploader(tmp_path):
    cfg, _path = _config(tmp_path, upload="no")
    _write(tmp_path, state.SENSOR, capturing=True)
    assert status.report(cfg)["problems"] == []


# --------------------------------------------------------------------- logs
@pytest.fixture
def root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    for handler in root.handlers:
        handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_daemon_without_syslog_writes_the_log_file(tmp_path, monkeypatch, root_logger):
    monkeypatch.setattr(logs, "SYSLOG_SOCKET", str(tmp_path / "no-dev-log"))
    monkeypatch.setattr(logs, "LOG_DIR", str(tmp_path / "log"))
    monkeypatch.setattr(logs, "LOG_FILE", str(tmp_path / "log" / "sie-dns-sensor.log"))
    for name in ("JOURNAL_STREAM", "INVOCATION_ID"):
        monkeypatch.delenv(name, raising=False)
    where = logs.setup("local5.info", foreground=False, detached=True, program="sie-upload")
    assert where == str(tmp_path / "log" / "sie-dns-sensor.log")
    logging.getLogger("uploader").error("upload failed: because")
    text = (tmp_path / "log" / "sie-dns-sensor.log").read_text()
    assert "sie-upload[" in text and "ERROR upload failed: because" in text


def test_under_systemd_lines_go_to_the_journal_with_their_priority(monkeypatch, root_logger, capsys):
    monkeypatch.setenv("INVOCATION_ID", "0123")
    assert logs.setup("local5.info", foreground=False) == "the journal"
    logging.getLogger("sensor").warning("drops rising")
    assert capsys.readouterr().err == f"<{21 * 8 + 4}>drops rising\n"  # local5 = 21, warning = 4


# ------------------------------------------------------ daemons and start-up
def test_daemons_close_descriptors_inherited_from_the_shell(tmp_path):
    code = (
        "import os; from sensor.service import daemon\n"
        "keep = os.open('/dev/null', os.O_RDONLY)  # ours: close-on-exec\n"
        "daemon.close_inherited_fds()\n"
        "print(sorted(int(f) for f in os.listdir('/proc/self/fd')), keep)\n"
    )
    leaked = os.open(str(tmp_path / "leak"), os.O_WRONLY | os.O_CREAT)
    try:
        out = subprocess.run([sys.executable, "-c", code], pass_fds=(leaked,), capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=REPO), check=True).stdout.split()
    finally:
        os.close(leaked)
    fds = json.loads(" ".join(out[:-1]))
    assert leaked not in fds and int(out[-1]) in fds


def test_a_start_up_failure_after_detaching_reaches_the_terminal(tmp_path):
    pcap = str(tmp_path / "c.pcap")
    P.write_pcap(pcap, [(P.ethernet(P.query()), T0)])
    cfg = write_config(tmp_path / "conf", tmp_path / "spool", upload="no")
    pidfile = tmp_path / "sensor.pid"
    sleeper = subprocess.Popen(["sh", "-c", "sleep 30", "sie-dns-sensor", "--pidfile", str(pidfile)])
    try:
        pidfile.write_text(f"{sleeper.pid}\n")
        result = subprocess.run(
            [sys.executable, "-m", "sensor", "run", "-c", cfg, "--pcap", pcap, "--daemon", "--pidfile", str(pidfile)],
            capture_output=True, text=True, timeout=30,
            env=dict(os.environ, PYTHONPATH=REPO, SIE_DNS_SENSOR_LOG_DIR=str(tmp_path / "log")),
        )
    finally:
        sleeper.kill()
        sleeper.wait()
    assert result.returncode == 1
    assert f"already running as pid {sleeper.pid}" in result.stderr
    if not os.path.exists("/dev/log"):  # no syslog: the log file
        assert "cannot start: already running" in (tmp_path / "log" / "sie-dns-sensor.log").read_text()


def _on_a_terminal(argv: list[str], env: dict) -> str:
    """What `argv` writes to stderr when stderr is a terminal (a pty)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal, env=env)
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    process.wait(timeout=30)
    os.close(controller)
    return seen.decode(errors="replace")


def test_run_pcap_shows_progress_and_a_summary_on_a_terminal_only(tmp_path):
    pcap = str(tmp_path / "c.pcap")
    P.write_pcap(pcap, [(P.ethernet(P.query(ident=i, sport=20000 + i)), T0 + i) for i in range(50)])
    cfg = write_config(tmp_path / "conf", tmp_path / "spool", upload="no", DNSQR_RES_ADDRS="192.0.2.53")
    argv = [sys.executable, "-m", "sensor", "run", "-c", cfg, "--pcap", pcap]
    env = dict(os.environ, PYTHONPATH=REPO)
    text = _on_a_terminal(argv, env)
    assert "replaying" in text and "100%" in text
    assert "50 packets in" in text and "50 records" in text
    plain = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
    assert plain.returncode == 0 and "replaying" not in plain.stderr and "packets in" not in plain.stderr


def test_gen_key_comments_the_key_with_what_hostname_f_says(tmp_path):
    if shutil.which("hostname") is None:
        pytest.skip("needs hostname")
    expected = subprocess.run(["hostname", "-f"], capture_output=True, text=True).stdout.strip()
    keys = uploader_keys()
    line = keys.generate(str(tmp_path / "key"))
    assert line.split()[2] == expected
    assert keys.host_fqdn() == expected


# ------------------------------------------------------------ the uploader
@needs_sshd
def test_host_key_error_shows_the_openssh_sha256_fingerprint(collector):
    server, config, spool = collector
    server.start()
    (spool / "keys" / "known_hosts").write_text("")
    spool_files(spool, [100])
    result = run_tool("upload", "-c", config, "--once")
    printed = subprocess.run(["ssh-keygen", "-lf", server.host_key + ".pub"], capture_output=True, text=True,
                             check=True).stdout.split()[1]
    assert printed.startswith("SHA256:")
    assert f"offered ssh-ed25519 {printed}" in result.stderr


@needs_sshd
def test_upload_sessions_end_with_a_clean_disconnect(collector):
    server, config, spool = collector
    server.start()
    spool_files(spool, [100, 100, 100])  # maxper=2: two sessions
    assert run_tool("upload", "-c", config, "--once").returncode == 0
    deadline = time.monotonic() + 10  # sshd writes its log line a moment after the session
    while True:
        with open(server.log) as handle:
            log = handle.read()
        if log.count("Received disconnect") >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert log.count("Received disconnect") == 2
    assert "Connection reset by peer" not in log


@needs_sshd
def test_sighup_reaches_the_uploader_and_status_follows_it(collector, tmp_path):
    server, config, spool = collector
    server.start()
    with open(config) as handle:
        right = handle.read()
    with open(config, "w") as handle:
        handle.write(right.replace(f'login="{server.user}"', 'login="nobody-here"') + 'interval="1"\n')
    spool_files(spool, [100])
    uploader = start_tool("upload", "-c", config)
    state_file = state.state_path(str(spool), state.UPLOADER, CHANNEL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (state.read_state(state_file) or {}).get("last_error"):
            time.sleep(0.2)
        found = state.read_state(state_file)
        assert "Authentication failed" in found["last_error"] and found["last_success"] is None
        with open(config, "w") as handle:
            handle.write(right + 'interval="1"\n')
        uploader.send_signal(1)  # SIGHUP
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (state.read_state(state_file) or {}).get("last_success"):
            time.sleep(0.2)
        assert os.listdir(server.path("up", CHANNEL))
    finally:
        uploader.terminate()
        _, err = uploader.communicate(timeout=30)
    assert "SIGHUP: configuration re-read" in err
    assert state.read_state(state_file)["stopped"]



# ------------------------------------------- issue 25, items 8, 9, 12, 13
def test_log_lines_start_their_own_line_under_the_progress_bar(tmp_path):
    pcap = str(tmp_path / "c.pcap")
    P.write_pcap(pcap, [(P.ethernet(P.query(ident=i, sport=20000 + i)), T0 + i) for i in range(50)])
    cfg = write_config(tmp_path / "conf", tmp_path / "spool", upload="no", DNSQR_RES_ADDRS="192.0.2.53")
    text = _on_a_terminal([sys.executable, "-m", "sensor", "run", "-c", cfg, "--pcap", pcap],
                          dict(os.environ, PYTHONPATH=REPO))
    assert "sie: INFO capturing from" in text and "replaying" in text
    for at in [i for i in range(len(text)) if text.startswith("sie: ", i)]:
        before = text[:at]
        assert before == "" or before.endswith(("\n", "\x1b[K")), f"a log line ran on from {before[-40:]!r}"


def test_sie_upload_help_names_rsync_and_sftp():
    from uploader.cli import upload_main

    said = CliRunner().invoke(upload_main, ["--help"]).output
    assert "rsync" in said and 'upload_method="sftp"' in said
    assert "over SFTP." not in said


def test_a_negative_count_is_said_to_be_below_one_not_to_be_no_whole_number(tmp_path):
    path = write_config(tmp_path / "conf", tmp_path, maxper="-3")
    result = CliRunner().invoke(main, ["check-config", "-c", path])
    assert result.exit_code == 78
    assert f"{path}:4: maxper: '-3' must be greater than 0" in result.output


def test_a_missing_interface_given_on_the_command_line_names_no_configuration_variable(tmp_path):
    _cfg, path = _config(tmp_path, DNSQR_RES_ADDRS="192.0.2.53", upload="no")
    result = CliRunner().invoke(main, ["run", "-c", path, "--interface", "sienosuch9"])
    assert result.exit_code == 1
    assert "interface 'sienosuch9' names no network device" in result.output
    assert "configuration variable" not in result.output


def test_check_config_refuses_an_interface_the_kernel_does_not_know(tmp_path):
    _cfg, path = _config(tmp_path, DNSQR_RES_ADDRS="192.0.2.53", upload="no", interface="opw9")
    result = CliRunner().invoke(main, ["check-config", "-q", "-c", path])
    assert result.exit_code == 1
    assert f"{path}:5: interface: 'opw9' names no network device" in result.output
    _cfg, path = _config(tmp_path, DNSQR_RES_ADDRS="192.0.2.53", upload="no", interface="lo+")  # promiscuous lo
    assert CliRunner().invoke(main, ["check-config", "-q", "-c", path]).exit_code == 0
    # dnstap captures nothing: no interface to check
    _cfg, path = _config(tmp_path, upload="no", interface="opw9", dnstap_socket="unix:/run/x.sock")
    assert CliRunner().invoke(main, ["check-config", "-q", "-c", path]).exit_code == 0


def test_with_upload_no_files_left_in_waiting_are_kept_shown_apart_and_not_counted(tmp_path):
    _cfg, path = _config(tmp_path, upload="no")
    old = time.time() - 3600
    for name in spool_files(tmp_path, [100, 200]):
        os.utime(name, (old, old))
    _write(tmp_path, state.SENSOR, capturing=True)
    result = CliRunner().invoke(main, ["status", "-c", path, "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["backlog"]["files"] == 0 and found["problems"] == []
    assert (found["left_waiting"]["files"], found["left_waiting"]["bytes"]) == (2, 300)
    text = CliRunner().invoke(main, ["status", "-c", path]).output
    assert "waiting:  0 files, 0 bytes" in text
    assert 'and 2 files (300 bytes) from before upload="no": kept, not uploaded' in text
    assert len(os.listdir(spooldir.folder(tmp_path, spooldir.WAITING, CHANNEL))) == 2


def test_a_restarted_uploader_keeps_the_last_upload_and_is_not_judged_before_its_first_round(tmp_path):
    """The previous uploader stopped an hour ago, files waited meanwhile; the
    new one is in its first round (a collector that never answers)."""
    _cfg, path = _config(tmp_path, login="sensor1", upload_method="sftp", uploadkey=f"{tmp_path}/key",
                         knownhosts=f"{tmp_path}/known_hosts")
    uploader_keys().generate(str(tmp_path / "key"))
    (tmp_path / "known_hosts").write_text("")
    old = time.time() - 3600
    for name in spool_files(tmp_path, [100, 200]):
        os.utime(name, (old, old))
    _write(tmp_path, state.SENSOR, capturing=True)
    _write(tmp_path, state.UPLOADER, pid=2**22 + 1, updated=old, started=old - 60, last_success=old,
           last_error=None, last_error_time=None, rounds=3, stopped=old)
    silent = socket.create_server(("127.0.0.1", 0))  # takes the connection, never says a word
    with open(path, "a") as handle:
        handle.write(f'submitserver="127.0.0.1:{silent.getsockname()[1]}"\n')
    uploader = start_tool("upload", "-c", path)
    state_file = state.state_path(str(tmp_path), state.UPLOADER, CHANNEL)
    try:
        deadline = time.monotonic() + 30
        while (state.read_state(state_file) or {}).get("pid") != uploader.pid and time.monotonic() < deadline:
            time.sleep(0.05)
        found = json.loads(CliRunner().invoke(main, ["status", "-c", path, "--json"]).output)
    finally:
        uploader.terminate()
        uploader.communicate(timeout=60)
        silent.close()
    assert found["uploader"]["running"] and found["uploader"]["last_success"] == old
    assert found["problems"] == [], found["problems"]
    assert "last upload never" not in "\n".join(status.text_lines(found))
    # once a round has ended without a success, the stall is one
    after_a_round = dict(found["uploader"], rounds=1)
    assert status.upload_problems(after_a_round, status.Backlog(2, 300, 3600), 10)


def _timex(state_value: int, status_bits: int):
    from sensor.service import clock

    timex = clock.Timex()
    timex.status = status_bits
    return lambda: (state_value, timex)


@pytest.mark.parametrize("kernel, warned", [((5, 0x0040), True), ((5, 0), True), ((0, 0x0040), True),
                                            ((0, 0x2001), False)])
def test_check_config_and_status_warn_when_the_kernel_says_the_clock_is_unsynchronized(
        tmp_path, monkeypatch, kernel, warned):
    from sensor.service import clock

    monkeypatch.setattr(clock, "adjtimex", _timex(*kernel))
    _cfg, path = _config(tmp_path, DNSQR_RES_ADDRS="192.0.2.53", upload="no", interface="lo")
    checked = CliRunner().invoke(main, ["check-config", "-c", path])
    assert checked.exit_code == 0, checked.output
    assert ("clock unsynchronized" in checked.output) is warned
    _write(tmp_path, state.SENSOR, capturing=True)
    shown = CliRunner().invoke(main, ["status", "-c", path])
    assert shown.exit_code == 0, shown.output  # a warning, not a problem: records are still made
    assert ("WARNING:  the kernel reports the system clock unsynchronized" in shown.output) is warned
    assert bool(json.loads(CliRunner().invoke(main, ["status", "-c", path, "--json"]).output)["warnings"]) is warned


def test_adjtimex_reads_the_kernels_own_clock_state():
    from sensor.service import clock

    state_value, timex = clock.adjtimex()
    assert 0 <= state_value <= clock.TIME_ERROR
    # fields a wrong layout would garble: the kernel's constant MAXFREQ_SCALED
    # (500 ppm << 16), a tick near 1/USER_HZ, and the time of day
    assert timex.tolerance == 500 << 16
    assert 9000 <= timex.tick <= 11000
    assert abs(timex.time_sec - time.time()) < 5


def _section(page: str, title: str) -> str:
    with open(os.path.join(REPO, "man", page)) as handle:
        text = handle.read()
    assert f".SH {title}\n" in text, f"{page} has no {title} section"
    return text.split(f".SH {title}\n", 1)[1].split("\n.SH ", 1)[0]


def test_man_pages_name_every_command_the_logs_and_the_exit_statuses():
    from sensor.service.cli_options import EX_CONFIG, EX_NOPERM

    synopsis = _section("sie-dns-sensor.8", "SYNOPSIS")
    for command in main.commands:
        assert f".B sie-dns-sensor {command}" in synopsis
    exits = _section("sie-dns-sensor.8", "EXIT STATUS")
    status_part = exits.split(".B status\n", 1)[1]
    for code in (status.PROBLEM, status.NOT_RUNNING, status.UNKNOWN, EX_CONFIG):
        assert f"{code} " in status_part
    check_part = exits.split(".B check-config\n", 1)[1].split(".TP", 1)[0]
    for code in (1, 3, EX_NOPERM, EX_CONFIG):
        assert f"{code} " in check_part
    assert f"{EX_NOPERM} " in _section("sie-upload.8", "EXIT STATUS")
    assert "78 " in _section("sie-gen-key.8", "EXIT STATUS")
    for page in ("sie-dns-sensor.8", "sie-upload.8"):
        logs_part = _section(page, "LOGS")
        assert "journal" in logs_part and "syslog" in logs_part and logs.LOG_FILE in logs_part.replace("\\-", "-")
    if shutil.which("man"):
        for page in ("sie-dns-sensor.8", "sie-upload.8", "sie-gen-key.8"):
            rendered = subprocess.run(["man", "--warnings", "-l", os.path.join(REPO, "man", page)],
                                      capture_output=True, text=True, env=dict(os.environ, MANWIDTH="80"))
            assert rendered.returncode == 0 and rendered.stderr == "", rendered.stderr
