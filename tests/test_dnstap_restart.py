"""dnstap across stops and restarts: nothing a resolver sent is lost, and one
exchange stays one record.

A real sensor process listens; the test is the resolver (bench's Sender
speaks Frame Streams as unbound does) and, for socket activation, systemd
(tests/sockethold.py holds the socket across the sensor's restarts).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench import dnstap_traffic as T
from sensor.edges import carryover
from sensor.edges.dnstap import Decoder, DnstapMatcher
from sensor.edges.dnstap_schema import CONTENT_TYPE, MessageType
from sensor.edges.framestream import Control, control_frame
from sensor.records.record import Field, RecordType
from sensor.spool import formats as spoolfile
from sensor.spool import spooldir
from tests.netns import wait_for_line
from tests.sockethold import HeldSocket

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTHORITY = bytes((198, 51, 100, 7))


def _config(tmp_path) -> str:
    path = tmp_path / "conf"
    path.write_text(f'spooldir="{tmp_path}/spool"\nupload="no"\narchive="yes"\ninterval="3600"\n')
    return str(path)


def _argv(tmp_path, sock: str) -> list[str]:
    return [sys.executable, "-m", "sensor", "run", "-c", _config(tmp_path), "--dnstap", f"unix:{sock}",
            "--user", "nobody-here"]  # stay root: pytest's tmp is root's


def _start(tmp_path, sock: str, held: HeldSocket | None = None) -> subprocess.Popen:
    options = {"stderr": subprocess.PIPE, "text": True, "env": dict(os.environ, PYTHONPATH=REPO)}
    sensor = held.popen(_argv(tmp_path, sock), **options) if held else subprocess.Popen(_argv(tmp_path, sock),
                                                                                         **options)
    wait_for_line(sensor, f"capturing from dnstap socket unix:{sock}{' (from systemd)' if held else ''} as")
    return sensor


def _stop(sensor: subprocess.Popen) -> str:
    sensor.send_signal(signal.SIGTERM)
    _, log = sensor.communicate(timeout=60)
    assert sensor.returncode == 0, log
    return log


def _spooled(tmp_path) -> list[dict]:
    folder = Path(spooldir.folder(tmp_path / "spool", spooldir.ARCHIVE, "ch202"))
    return [r for name in sorted(os.listdir(folder)) for r in spoolfile.records(str(folder / name))]


def _exchange(ident: int, port: int = 40000) -> tuple[bytes, bytes, tuple[int, int]]:
    """RESOLVER_QUERY and RESOLVER_RESPONSE of one exchange, now, as unbound
    reports them (the response carries the query's time, not the query)."""
    query = T.dns_query(ident, T.name("www.example.test"))
    now = time.time_ns()
    asked, answered = divmod(now, 10**9), divmod(now + 30_000_000, 10**9)
    rq = T.message(MessageType.RESOLVER_QUERY, T.RESOLVER4, AUTHORITY, port, 53, query=query, query_time=asked)
    rr = T.message(MessageType.RESOLVER_RESPONSE, T.RESOLVER4, AUTHORITY, port, 53, response=T.dns_response(query),
                   query_time=asked, response_time=answered)
    return rq, rr, asked


def _resolver(sock: str) -> T.Sender:
    sender = T.Sender(sock)
    sender.handshake()
    return sender


def _answer(resolver: T.Sender) -> Control | str:
    """The control frame the sensor sent, or what happened instead."""
    try:
        return Control(T.read_control(resolver.sock)[0])
    except (OSError, ConnectionError) as exc:
        return f"no control frame: {exc!r}"


# ------------------------------------------------------------------- a stop
SO_SNDBUFFORCE = 32  # Linux (socket.h); the socket module does not name it


def _queue_up_to(sock: socket.socket, size: int) -> None:
    """Let `size` bytes wait in the socket unread (beyond wmem_max: as root)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def test_a_stop_mid_stream_records_every_frame_sent_before_it_and_answers_finish(tmp_path):
    """SIGTERM while the resolver's frames still sit in the socket, more
    than one read's worth: every one becomes a record, and the resolver
    gets FINISH (not a connection cut under it)."""
    sock = str(tmp_path / "dnstap.sock")
    sensor = _start(tmp_path, sock)
    resolver = _resolver(sock)
    try:
        payloads = T.exchanges(6000, seed=11)  # 3,000 exchanges, ~450 kB of frames
        _queue_up_to(resolver.sock, 8 << 20)  # all of it queued at once
        os.kill(sensor.pid, signal.SIGSTOP)  # the sensor reads none of it before the stop
        resolver.send(payloads)
    finally:
        sensor.send_signal(signal.SIGTERM)  # once: a second one could land after Python restored SIG_DFL
        os.kill(sensor.pid, signal.SIGCONT)
    answer = _answer(resolver)
    _, log = sensor.communicate(timeout=60)
    assert sensor.returncode == 0, log
    records = _spooled(tmp_path)
    assert len(records) == 3000, log
    assert {r[Field.TYPE] for r in records} == {RecordType.UDP_QUERY_RESPONSE}
    assert answer == Control.FINISH
    assert "WARNING" not in log and "kernel_received=6000" in log


# ---------------------------------------------------------------- a restart
def test_a_query_outstanding_at_a_restart_pairs_with_the_response_the_new_process_gets(tmp_path):
    """The old process has the query, the new one gets the response report
    (with the query's time in it): one record, a pair, with the query's
    own time."""
    sock = str(tmp_path / "dnstap.sock")
    rq, rr, asked = _exchange(7)
    sensor = _start(tmp_path, sock)
    resolver = _resolver(sock)
    resolver.send([rq])
    first_log = _stop(sensor)
    assert _answer(resolver) == Control.FINISH
    resolver.sock.close()

    sensor = _start(tmp_path, sock)
    resolver = _resolver(sock)
    resolver.send([rr])
    resolver.finish()
    time.sleep(0.5)
    second_log = _stop(sensor)
    records = _spooled(tmp_path)
    assert [r[Field.TYPE] for r in records] == [RecordType.UDP_QUERY_RESPONSE], second_log
    (record,) = records
    assert (record[Field.QUERY_TIME_SEC][0], record[Field.QUERY_TIME_NSEC][0]) == asked
    assert record[Field.ID] == 7 and record[Field.QUERY_PORT] == 40000
    assert not os.path.exists(carryover.table_path(str(tmp_path / "spool"), "ch202"))
    assert "1 outstanding queries kept for the next start" in first_log


def test_the_socket_systemd_holds_takes_a_reconnect_while_the_sensor_restarts(tmp_path):
    """sie-dns-sensor.socket: the sensor listens on the socket it is given
    and leaves it open at its stop; a resolver that reconnects while no
    sensor runs is connected at once and served by the next one."""
    sock = str(tmp_path / "dnstap.sock")
    held = HeldSocket(sock)
    try:
        sensor = _start(tmp_path, sock, held)
        resolver = _resolver(sock)
        resolver.send(T.exchanges(200, seed=12))
        _stop(sensor)
        assert _answer(resolver) == Control.FINISH
        assert os.path.exists(sock)

        again = T.Sender(sock)  # no sensor runs: the kernel takes the connection for the next
        again.sock.sendall(control_frame(Control.READY, (CONTENT_TYPE,)))
        sensor = _start(tmp_path, sock, held)
        assert T.read_control(again.sock)[0] == Control.ACCEPT
        again.sock.sendall(control_frame(Control.START, (CONTENT_TYPE,)))
        again.send(T.exchanges(400, seed=13))
        again.finish()
        time.sleep(0.5)
        log = _stop(sensor)
    finally:
        held.close()
    assert len(_spooled(tmp_path)) == 300, log


# ------------------------------------------------------- the kept table file
def _carry(tmp_path, timeout: int = 60) -> carryover.TableCarry:
    from sensor.matching.matcher import Settings

    matcher = DnstapMatcher(Settings(query_timeout=timeout))
    os.makedirs(tmp_path / spooldir.LOCKS, exist_ok=True)  # the sensor's writer makes it
    return carryover.TableCarry(carryover.table_path(str(tmp_path), "ch202"), matcher,
                                Decoder(matcher.counters, on_tcp=matcher.saw_tcp))


def _fed(carry: carryover.TableCarry, payloads: list[bytes]) -> list:
    records = []
    for payload in payloads:
        batch: list = []
        assert carry.decoder.decode(payload, batch)
        for packet, sec, nsec in batch:
            records += carry.matcher.feed(packet, sec, nsec)
    return records


def test_a_stop_longer_ago_than_the_query_timeout_writes_the_kept_queries_as_unanswered(tmp_path):
    old = _carry(tmp_path)
    queries = [_exchange(i)[0] for i in range(3)]
    assert _fed(old, queries) == []
    assert old.keep() and not old.matcher.table
    with open(old.path, "r+b") as handle:  # the stop's wall time, two minutes back
        handle.seek(len(carryover.MAGIC) + 12)
        handle.write(carryover.struct.pack("!d", time.time() - 120))
    new = _carry(tmp_path)
    records = new.restore()
    assert [r[Field.TYPE] for r in records] == [RecordType.UDP_UNANSWERED_QUERY] * 3
    assert not new.matcher.table and not os.path.exists(old.path)


def test_a_damaged_table_gives_what_it_holds_before_the_damage_and_is_set_aside(tmp_path, caplog):
    old = _carry(tmp_path)
    _fed(old, [_exchange(i, port=1000 + i)[0] for i in range(3)])
    assert old.keep()
    with open(old.path, "r+b") as handle:
        handle.truncate(os.path.getsize(old.path) - 5)  # the last query cut short
    new = _carry(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert new.restore() == []
    assert len(new.matcher.table) == 2
    assert "cut short" in caplog.text and os.path.exists(old.path + ".damaged")

    with open(carryover.table_path(str(tmp_path), "ch202"), "wb") as handle:
        handle.write(b"not a table at all")
    again = _carry(tmp_path)
    assert again.restore() == [] and not again.matcher.table
    assert "not a table this sensor wrote" in caplog.text


def test_a_kept_query_answered_after_the_restart_is_fed_once(tmp_path):
    """The decoder learns the kept queries too: the response report, which
    carries the query, then adds no second copy of it (that one would be
    left unanswered)."""
    old = _carry(tmp_path)
    rq, rr, _ = _exchange(9)
    _fed(old, [rq])
    old.keep()
    new = _carry(tmp_path)
    new.restore()
    records = _fed(new, [rr]) + new.matcher.flush()
    assert [r[Field.TYPE] for r in records] == [RecordType.UDP_QUERY_RESPONSE]
