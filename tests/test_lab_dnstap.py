"""dnstap from a real resolver: unbound reports to the sensor, tshark witnesses.

The lab's unbound sends dnstap (resolver and client messages) to a sensor
listening on a unix socket, started first, with no address list. At the
same time tshark and a packet-capture sensor watch the resolver's upstream
interface. Then:
- every upstream UDP exchange tshark sees is exactly one dnstap record of
  the right type with the same addresses, ports, id and question;
- the packet-capture sensor's records are the same records (type,
  addresses, ports, id, question, rcode, checksum verdict and both DNS
  messages; times and IP/UDP headers aside: dnstap has no fragments);
- the retry over TCP is one TCP record with both messages;
- nothing from the client side is recorded (those messages are counted).

One exception, the resolver's: unbound (1.17 in Debian, and up to now,
NLnetLabs/unbound PR #1463) reports the outgoing-interface template as the
query side, so for IPv6 the query port reads 53 and for TCP 0; those ports
are left out of the comparison. The IPv4 UDP ports are the real ones.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from sensor.records.record import Field, RecordType
from tests import lab as lab_module
from tests import netns
from tests.dnstap_restart import kept_records
from tests.test_lab import QUESTIONS, _records, _sensor_config, _summaries, _witness

REASON = lab_module.available() or (None if os.path.exists("/usr/bin/tshark") else "needs tshark")
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")  # marks: conftest.MARKS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dnstap_config(path: str, spool: str) -> str:
    with open(path, "w") as handle:
        handle.write(f'spooldir="{spool}"\nDNSQR_CAPTURE_RD="0"\nupload="no"\narchive="yes"\ninterval="3600"\n')
    return path


def _started_between(record: dict, since: float, until: float) -> bool:
    """Compared: exchanges begun from `since` (the witnesses' start; the
    dnstap sensor also saw the lab's readiness check) to `until`: unbound
    holds dnstap messages up to about a second before sending them and
    drops what it holds when it stops, so the retries to dead.test in
    its last moments may reach the wire and never the sensor."""
    secs = record.get(Field.QUERY_TIME_SEC) or record.get(Field.RESPONSE_TIME_SEC)
    nsecs = record.get(Field.QUERY_TIME_NSEC) or record.get(Field.RESPONSE_TIME_NSEC)
    return since <= secs[0] + nsecs[0] / 1e9 < until


def _reported_port(key: tuple) -> tuple:
    """A summary/witness key with the query port dropped where unbound does
    not report it (IPv6), and fragments reduced to "has a response"."""
    kind, client, server, cport, sport, ident, qname, qtype, fragments = key
    return kind, client, server, cport if ":" not in client else None, sport, ident, qname, qtype, fragments > 0


def _dns_of(packets: list[bytes]) -> bytes:
    """The DNS message inside a datagram or its fragments (arrival order)."""
    payload = b""
    for packet in packets:
        if packet[0] >> 4 == 4:
            start = (packet[0] & 0x0F) * 4
            offset = (int.from_bytes(packet[6:8], "big") & 0x1FFF) * 8
        elif packet[6] == 44:  # IPv6 fragment header
            start, offset = 48, int.from_bytes(packet[42:44], "big") & 0xFFF8
        else:
            start, offset = 40, 0
        body = packet[start:]
        payload = payload[:offset] + body + payload[offset + len(body) :]
    return payload[8:]  # the UDP header


def _essence(record: dict) -> tuple:
    """What the two edges must agree on."""
    query_ip = str(ipaddress.ip_address(record[Field.QUERY_IP]))
    return (
        RecordType(record[Field.TYPE]).name,
        query_ip,
        str(ipaddress.ip_address(record[Field.RESPONSE_IP])),
        record[Field.QUERY_PORT] if ":" not in query_ip else None,
        record[Field.RESPONSE_PORT],
        record.get(Field.ID),
        record.get(Field.QNAME),
        record.get(Field.QTYPE),
        record.get(Field.QCLASS),
        record.get(Field.RCODE),
        record.get(Field.UDP_CHECKSUM),
        _dns_of(record.get(Field.QUERY_PACKET, [])),
        _dns_of(record.get(Field.RESPONSE_PACKET, [])),
    )


def _tcp_exchanges(pcap: str) -> Counter:
    """(resolver, authority, id, qname) of every DNS response over TCP."""
    rows = subprocess.run(
        ["tshark", "-r", pcap, "-Y", "tcp && dns.flags.response == 1", "-T", "fields", "-E", "separator=|",
         "-e", "ip.dst", "-e", "ip.src", "-e", "dns.id", "-e", "dns.qry.name"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    return Counter((dst, src, int(ident, 0), name.lower()) for dst, src, ident, name in (r.split("|") for r in rows))


def _stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    _, log = process.communicate(timeout=60)
    assert process.returncode == 0, log
    return log


def test_unbound_dnstap_gives_the_records_packet_capture_gives(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    os.chmod(tmp_path, 0o755)
    sock = str(tmp_path / "dnstap.sock")
    pcap = str(tmp_path / "witness.pcap")
    dnstap_spool, capture_spool = str(tmp_path / "dnstap"), str(tmp_path / "capture")
    dnstap_sensor = subprocess.Popen(
        [sys.executable, "-m", "sensor", "run", "-c", _dnstap_config(str(tmp_path / "c1"), dnstap_spool),
         "--dnstap", f"unix:{sock}", "--user", "nobody-here"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        netns.wait_for_line(dnstap_sensor, "capturing from")  # the socket is there before unbound starts
        with lab_module.DnsLab(dnstap_socket=sock) as lab:
            witness = subprocess.Popen(
                ["ip", "netns", "exec", lab.resolver, "tshark", "-i", lab.upstream_if, "-F", "pcap", "-w", pcap,
                 "-n"],
                stderr=subprocess.PIPE, text=True,
            )
            capture_sensor = subprocess.Popen(
                ["ip", "netns", "exec", lab.resolver, sys.executable, "-m", "sensor", "run", "-c",
                 _sensor_config(str(tmp_path / "c2"), capture_spool), "--interface", lab.upstream_if,
                 "--user", "nobody-here"],
                stderr=subprocess.PIPE, text=True, env=env,
            )
            try:
                netns.wait_for_line(witness, "Capturing on")
                netns.wait_for_line(capture_sensor, "capturing from")
                time.sleep(1)
                since = time.time()
                for name, qtype in QUESTIONS:
                    lab.ask(name, qtype, timeout=3 if "dead" in name else 10)
                time.sleep(2)
                until = time.time() - 1.5
                lab.stop_resolver()  # its retries to dead.test would go on
                time.sleep(1)
            finally:
                capture_log = _stop(capture_sensor)
                witness.send_signal(signal.SIGINT)
                witness.communicate(timeout=60)
    finally:
        dnstap_log = _stop(dnstap_sensor)

    # the dnstap sensor kept its outstanding queries (dead.test's) for a next start
    dnstap = [r for r in _records(dnstap_spool) + kept_records(dnstap_spool) if _started_between(r, since, until)]
    captured = [r for r in _records(capture_spool) if _started_between(r, since, until)]
    assert "kernel_dropped=0" in capture_log

    # tshark's exchanges, each exactly one dnstap record of the right type
    cut = str(tmp_path / "cut.pcap")
    subprocess.run(["tshark", "-r", pcap, "-Y", f"frame.time_epoch < {until:.6f}", "-w", cut], check=True,
                   capture_output=True)
    pcap = cut
    expected, _ = _witness(pcap)
    seen, tcp_records = _summaries(dnstap)
    assert Counter(_reported_port(k) for k in seen.elements()) == Counter(
        _reported_port(k) for k in expected.elements()
    )
    kinds = Counter(key[0] for key in expected.elements())
    assert kinds["UDP_QUERY_RESPONSE"] >= 8 and kinds["UDP_UNANSWERED_QUERY"] >= 1

    # the same records as packet capture (UDP; TCP is segments there)
    udp = [r for r in dnstap if r[Field.TYPE] != RecordType.TCP]
    captured_udp = [r for r in captured if r[Field.TYPE] != RecordType.TCP]
    assert Counter(map(_essence, udp)) == Counter(map(_essence, captured_udp))
    assert any(len(r.get(Field.RESPONSE_PACKET, [])) > 1 for r in captured_udp)  # fragments were compared too

    # the TCP retry: one TCP record per exchange, both messages in it
    tcp = [r for r in dnstap if r[Field.TYPE] == RecordType.TCP]
    assert tcp_records == len(tcp) > 0
    assert Counter(
        (str(ipaddress.ip_address(r[Field.QUERY_IP])), str(ipaddress.ip_address(r[Field.RESPONSE_IP])),
         r[Field.ID], r[Field.QNAME].decode("latin-1"))
        for r in tcp
    ).keys() == {(a, b, i, _wire(n)) for a, b, i, n in _tcp_exchanges(pcap)}
    assert all(Field.QUERY_PACKET in r and Field.RESPONSE_PACKET in r for r in tcp)

    # nothing from the client side, though unbound reported it
    client_side = ("203.0.113.", "2001:db8:c::")
    assert not any(str(ipaddress.ip_address(r[Field.QUERY_IP])).startswith(client_side) for r in _records(dnstap_spool))
    assert "dnstap_client_query=" in dnstap_log and "dnstap_client_response=" in dnstap_log
    assert "dnstap: local peer connected" in dnstap_log


def _wire(text: str) -> str:
    """A tshark name as the latin-1 text of its wire form (for comparing)."""
    labels = [label for label in text.rstrip(".").split(".") if label]
    return "".join(chr(len(label)) + label for label in labels) + "\0"


@pytest.mark.parametrize("socket_mode", ["held", "own"])
def test_restarts_of_the_sensor_lose_and_double_nothing_unbound_reported(socket_mode):
    """unbound under a steady load while the sensor is restarted twice, on
    the socket sie-dns-sensor.socket holds ("held") or on its own (SysV):
    every upstream exchange on the wire is one dnstap record. The one
    allowance: unbound drops the message it was writing when the stop shut
    its connection (a response report: that exchange reads unanswered), at
    most one a restart."""
    from tests.dnstap_restart import measure

    result = measure("unbound", socket_mode, restarts=2, rate=200, every=3)
    assert result["exchanges"] >= 1500
    assert result.get("lost", 0) == 0 and result.get("doubled", 0) == 0, result
    assert result.get("unanswered", 0) <= 2 and result["warnings"] == 0, result
