"""Real resolver traffic: unbound and nsd in namespaces, tshark as the witness.

The sensor captures on the resolver's upstream interface while the client
resolves a list of names; tshark captures the same interface. Every
resolver<->authority UDP exchange tshark sees must be exactly one record
of the right type (fragmented answers with every fragment), every TCP
segment a TCP record; and replaying tshark's file through `run --pcap`
must give the same records as the live run.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from sensor.records.dns import wire_to_text
from sensor.records.record import Field, RecordType
from sensor.spool import formats as spoolfile
from sensor.spool import spooldir
from tests import lab as lab_module
from tests import netns

REASON = lab_module.available() or (None if os.path.exists("/usr/bin/tshark") else "needs tshark")
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")  # marks: conftest.MARKS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTIONS = [
    ("www.lab.test", "A"),
    ("www.lab.test", "AAAA"),
    ("lab.test", "MX"),
    ("nx.lab.test", "A"),
    ("big.signed.test", "TXT"),
    ("www.signed.test", "A"),
    ("big.signed6.test", "TXT"),
    ("big.tc.test", "TXT"),
    ("www.refused.test", "A"),
    ("www.dead.test", "A"),
]
FIELDS = [
    "frame.number",
    "ip.src",
    "ipv6.src",
    "ip.dst",
    "ipv6.dst",
    "udp.srcport",
    "udp.dstport",
    "dns.id",
    "dns.flags.response",
    "dns.qry.name",
    "dns.qry.type",
    "dns.flags.rcode",
    "ip.fragment.count",
    "ipv6.fragment.count",
]


def _sensor_config(path: str, spool: str) -> str:
    with open(path, "w") as handle:
        handle.write(
            f'spooldir="{spool}"\nDNSQR_RES_ADDRS="{lab_module.RESOLVER4},{lab_module.RESOLVER6}"\n'
            'DNSQR_CAPTURE_RD="0"\nupload="no"\narchive="yes"\ninterval="3600"\n'
        )
    return path


def _records(spool: str) -> list[dict]:
    out = []
    for path in sorted(glob.glob(os.path.join(spooldir.folder(spool, spooldir.ARCHIVE, "ch202"), "*"))):
        out += spoolfile.records(path)
    return out


def _witness(pcap: str) -> tuple[Counter, int]:
    """What tshark saw: expected (type, ...) tuples for UDP DNS, and TCP segments."""
    argv = ["tshark", "-r", pcap, "-Y", "udp && dns", "-T", "fields", "-E", "separator=|", "-E", "occurrence=f"]
    for field in FIELDS:
        argv += ["-e", field]
    rows = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()
    messages = []
    for row in rows:
        values = dict(zip(FIELDS, row.split("|"), strict=True))
        src = values["ip.src"] or values["ipv6.src"]
        dst = values["ip.dst"] or values["ipv6.dst"]
        fragments = int(values["ip.fragment.count"] or values["ipv6.fragment.count"] or 1)
        messages.append(
            (
                values["dns.flags.response"] in ("1", "True"),
                src,
                dst,
                int(values["udp.srcport"]),
                int(values["udp.dstport"]),
                int(values["dns.id"], 0),
                values["dns.qry.name"].lower(),
                int(values["dns.qry.type"] or 0),
                fragments,
            )
        )
    outstanding: dict[tuple, list] = {}
    expected: Counter = Counter()
    for response, src, dst, sport, dport, ident, qname, qtype, fragments in messages:
        if not response:
            outstanding.setdefault((src, dst, sport, dport, ident, qname, qtype), []).append(fragments)
            continue
        key = (dst, src, dport, sport, ident, qname, qtype)
        if outstanding.get(key):
            outstanding[key].pop(0)
            expected[("UDP_QUERY_RESPONSE", *key, fragments)] += 1
        else:
            expected[("UDP_UNSOLICITED_RESPONSE", *key, fragments)] += 1
    for key, left in outstanding.items():
        for _ in left:
            expected[("UDP_UNANSWERED_QUERY", *key, 0)] += 1
    tcp = subprocess.run(
        ["tshark", "-r", pcap, "-Y", "tcp.port == 53", "-T", "fields", "-e", "frame.number"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return expected, len(tcp)


def _summaries(records: list[dict]) -> tuple[Counter, int]:
    seen: Counter = Counter()
    tcp = 0
    for r in records:
        kind = RecordType(r[Field.TYPE])
        if kind == RecordType.TCP:
            tcp += 1
            continue
        qname = wire_to_text(r[Field.QNAME]).rstrip(".").lower() if Field.QNAME in r else ""
        fragments = len(r.get(Field.RESPONSE_PACKET, []))
        seen[
            (
                kind.name,
                str(ipaddress.ip_address(r[Field.QUERY_IP])),
                str(ipaddress.ip_address(r[Field.RESPONSE_IP])),
                r[Field.QUERY_PORT],
                r[Field.RESPONSE_PORT],
                r[Field.ID],
                qname,
                r.get(Field.QTYPE, 0),
                fragments,
            )
        ] += 1
    return seen, tcp


TIMES = (Field.QUERY_TIME_SEC, Field.QUERY_TIME_NSEC, Field.RESPONSE_TIME_SEC, Field.RESPONSE_TIME_NSEC)


def _comparable(record: dict) -> tuple:
    """A record without its times: two captures of one wire (the sensor's and
    tshark's) stamp each packet separately, microseconds apart; and without
    `timeout`, which depends on when the run stopped."""
    return tuple(sorted((k, repr(v)) for k, v in record.items() if k not in TIMES and k != Field.TIMEOUT))


def _times(record: dict) -> list[float]:
    out = []
    for sec, nsec in (
        (Field.QUERY_TIME_SEC, Field.QUERY_TIME_NSEC),
        (Field.RESPONSE_TIME_SEC, Field.RESPONSE_TIME_NSEC),
    ):
        out += [s + n / 1e9 for s, n in zip(record.get(sec, []), record.get(nsec, []), strict=True)]
    return out


def test_every_exchange_tshark_sees_is_one_record_and_replay_equals_live(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    pcap = str(tmp_path / "witness.pcap")
    live_spool = str(tmp_path / "live")
    config = _sensor_config(str(tmp_path / "conf"), live_spool)
    with lab_module.DnsLab() as lab:
        witness = subprocess.Popen(
            ["ip", "netns", "exec", lab.resolver, "tshark", "-i", lab.upstream_if, "-F", "pcap", "-w", pcap, "-n"],
            stderr=subprocess.PIPE,
            text=True,
        )
        sensor = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                lab.resolver,
                sys.executable,
                "-m",
                "sensor",
                "run",
                "-c",
                config,
                "--interface",
                lab.upstream_if,
                *netns.STAY_AS_IS,
            ],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            netns.wait_for_line(witness, "Capturing on")
            netns.wait_for_line(sensor, "capturing from")
            time.sleep(1)
            for name, qtype in QUESTIONS:
                lab.ask(name, qtype, timeout=3 if "dead" in name else 10)
            time.sleep(1)
        finally:
            sensor.send_signal(signal.SIGTERM)
            _, sensor_log = sensor.communicate(timeout=60)
            witness.send_signal(signal.SIGINT)
            witness.communicate(timeout=60)
    assert sensor.returncode == 0, sensor_log
    assert "kernel_dropped=0" in sensor_log

    live = _records(live_spool)
    expected, tcp_segments = _witness(pcap)
    seen, tcp_records = _summaries(live)
    assert seen == expected  # every exchange exactly once, of the right type, fragments and all
    assert tcp_records == tcp_segments > 0  # the truncated answer was retried over TCP
    kinds = Counter(key[0] for key in expected.elements())
    assert kinds["UDP_QUERY_RESPONSE"] >= 8 and kinds["UDP_UNANSWERED_QUERY"] >= 1
    fragmented = {(key[1], key[8]) for key in expected if key[8] > 1}
    assert any(":" not in address for address, _ in fragmented), "no fragmented IPv4 answer"
    assert any(":" in address for address, _ in fragmented), "no fragmented IPv6 answer"
    rcodes = Counter(r.get(Field.RCODE) for r in live if r[Field.TYPE] == RecordType.UDP_QUERY_RESPONSE)
    assert rcodes[3] >= 1 and rcodes[5] >= 1  # NXDOMAIN and REFUSED
    client_side = ("203.0.113.", "2001:db8:c::")
    assert not any(str(ipaddress.ip_address(r[Field.QUERY_IP])).startswith(client_side) for r in live)

    # offline == live
    replay_spool = str(tmp_path / "replay")
    replay_config = _sensor_config(str(tmp_path / "conf-replay"), replay_spool)
    subprocess.run(
        [sys.executable, "-m", "sensor", "run", "-c", replay_config, "--pcap", pcap],
        check=True,
        capture_output=True,
        env=env,
        timeout=120,
    )
    replayed = _records(replay_spool)
    assert Counter(map(_comparable, replayed)) == Counter(map(_comparable, live))
    by_content = {_comparable(r): r for r in replayed}
    for record in live:  # and the times agree to within what two taps can differ by
        twin = by_content[_comparable(record)]
        assert all(abs(a - b) < 0.001 for a, b in zip(_times(record), _times(twin), strict=True))
