"""Log lines: one printable line per record, whatever the handler (issue 20, item 1).

File names reach the log ("not uploading PATH: a symbolic link"), and a
name is whatever the service user chose: a newline in it must not begin a
line of the name's own making, in syslog, the journal, the log file or on
stderr alike.
"""

from __future__ import annotations

import logging
import os
import socket

import pytest

from sensor.service import logs

HOSTILE = "/spool/ch202/x\nhostile0::0:0:::\n\x1b[2J\udcff\\"  # a file name a log line names
SHOWN = "/spool/ch202/x\\nhostile0::0:0:::\\n\\x1b[2J\\xff\\\\"


@pytest.fixture
def root_logger(monkeypatch, tmp_path):
    """The root logger given back as it was; no syslog, no journal, the log folder in tmp_path."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(logs, "SYSLOG_SOCKET", str(tmp_path / "no-dev-log"))
    monkeypatch.setattr(logs, "LOG_DIR", str(tmp_path / "log"))
    monkeypatch.setattr(logs, "LOG_FILE", str(tmp_path / "log" / "sie-dns-sensor.log"))
    for name in ("JOURNAL_STREAM", "INVOCATION_ID"):
        monkeypatch.delenv(name, raising=False)
    yield root
    for handler in root.handlers:
        handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def _say_hostile() -> None:
    logging.getLogger("uploader").warning("not uploading %s: %s", HOSTILE, "a symbolic link")


def _one_escaped_line(text: str) -> None:
    assert f"not uploading {SHOWN}: a symbolic link" in text
    assert "\n" not in text and "\x1b" not in text


def test_the_log_file_gets_one_escaped_line(root_logger, tmp_path):
    assert logs.setup("local5.info", foreground=False, detached=True) == logs.LOG_FILE
    _say_hostile()
    text = (tmp_path / "log" / "sie-dns-sensor.log").read_text()
    assert text.endswith("\n")
    _one_escaped_line(text[:-1])


def test_the_detached_collector_logs_to_its_own_folder(root_logger, tmp_path, monkeypatch):
    """Another package with another service user (issue 24): not the sensor's folder."""
    monkeypatch.setattr(logs, "COLLECTOR_LOG_DIR", str(tmp_path / "collector-log"), raising=False)
    path = tmp_path / "collector-log" / "sie-dns-collector.log"
    assert logs.setup("local5.info", foreground=False, detached=True, program="sie-dns-collector") == str(path)
    logging.getLogger("collector").info("ingesting")
    assert "sie-dns-collector[" in path.read_text() and "INFO ingesting" in path.read_text()
    assert not (tmp_path / "log").exists()


def test_syslog_gets_one_escaped_line(root_logger, tmp_path, monkeypatch):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(tmp_path / "dev-log"))
    monkeypatch.setattr(logs, "SYSLOG_SOCKET", str(tmp_path / "dev-log"))
    try:
        assert logs.setup("local5.info", foreground=False, detached=True).startswith("syslog")
        _say_hostile()
        server.settimeout(10)
        datagram = server.recv(65536).decode()
    finally:
        server.close()
    assert datagram.startswith(f"<{21 * 8 + 4}>sie[") and datagram.endswith("\x00")
    _one_escaped_line(datagram[:-1])


def test_the_journal_gets_one_escaped_line(root_logger, monkeypatch, capsys):
    monkeypatch.setenv("INVOCATION_ID", "0123")
    assert logs.setup("local5.info", foreground=False) == "the journal"
    _say_hostile()
    err = capsys.readouterr().err
    assert err.startswith(f"<{21 * 8 + 4}>") and err.endswith("\n")
    _one_escaped_line(err[:-1])


def test_stderr_gets_one_escaped_line(root_logger, capsys):
    assert logs.setup("local5.info", foreground=True) == "stderr"
    _say_hostile()
    err = capsys.readouterr().err
    assert err.startswith("sie: WARNING ") and err.endswith("\n")
    _one_escaped_line(err[:-1])


def test_a_traceback_stays_on_its_line(root_logger, capsys):
    logs.setup("local5.info", foreground=True)
    try:
        raise ValueError("bad\nname")
    except ValueError:
        logging.getLogger("sensor").critical("stopped by an unexpected error", exc_info=True)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\\nTraceback (most recent call last):\\n" in err
    assert "ValueError: bad\\nname" in err


def test_printable_text_is_left_as_it_is():
    assert logs.escaped("capturing from interface eth0 as uid 0: é, ü, 名前") == (
        "capturing from interface eth0 as uid 0: é, ü, 名前"
    )
    assert logs.escaped("tab\there\u202eand\U000e0001") == "tab\\there\\u202eand\\U000e0001"


def test_the_log_file_is_not_written_through_a_link(root_logger, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("root's\n")
    (tmp_path / "log").mkdir()
    os.symlink(victim, tmp_path / "log" / "sie-dns-sensor.log")
    logs.setup("local5.info", foreground=False, detached=True)
    _say_hostile()
    assert victim.read_text() == "root's\n"
    log_file = tmp_path / "log" / "sie-dns-sensor.log"
    assert not log_file.is_symlink() and oct(log_file.stat().st_mode & 0o777) == oct(logs.LOG_MODE)
    text = log_file.read_text()
    assert f"the log file {log_file} was a symbolic link: moved to {log_file}." in text
    assert [os.readlink(p) for p in (tmp_path / "log").iterdir() if p.is_symlink()] == [str(victim)]


def test_a_hard_link_to_another_file_is_set_aside(root_logger, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("root's\n")
    (tmp_path / "log").mkdir()
    os.link(victim, tmp_path / "log" / "sie-dns-sensor.log")
    logs.setup("local5.info", foreground=False, detached=True)
    _say_hostile()
    assert victim.read_text() == "root's\n"
    assert "was a file with 2 names (hard links): moved to" in (tmp_path / "log" / "sie-dns-sensor.log").read_text()
