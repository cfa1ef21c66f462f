"""Offline capture through libpcap: every supported link type, same records."""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from sensor.edges.libpcap import Capture
from sensor.edges.linklayer import UnsupportedLinkType
from sensor.matching.bpf import build_filter, parse_networks
from sensor.matching.matcher import Matcher
from sensor.records.record import Field, RecordType
from tests import packets as P

T0 = 1_700_000_000.25
FILTER = build_filter(parse_networks(f"{P.RESOLVER},{P.RESOLVER6}"))


def _sll(datagram: bytes) -> bytes:
    proto = 0x86DD if datagram[0] >> 4 == 6 else 0x0800
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02\x00\x00\x00\x00\x01\x00\x00", proto) + datagram


def _sll2(datagram: bytes) -> bytes:
    proto = 0x86DD if datagram[0] >> 4 == 6 else 0x0800
    return struct.pack("!HHIHBB8s", proto, 0, 2, 1, 0, 6, b"\x02\x00\x00\x00\x00\x01\x00\x00") + datagram


def _null(datagram: bytes) -> bytes:
    family = 24 if datagram[0] >> 4 == 6 else 2
    return struct.pack("<I", family) + datagram


def _loop(datagram: bytes) -> bytes:
    family = 24 if datagram[0] >> 4 == 6 else 2
    return struct.pack("!I", family) + datagram


LINKS = {
    "ethernet": (1, P.ethernet),
    "vlan": (1, lambda d: P.ethernet(d, vlan=42)),
    "qinq": (1, lambda d: P.ethernet(d, vlan=7)[:12] + b"\x88\xa8\x00\x07" + P.ethernet(d, vlan=42)[12:]),
    "linux_sll": (113, _sll),
    "linux_sll2": (276, _sll2),
    "raw": (101, lambda d: d),
    "null": (0, _null),
    "loop": (108, _loop),
}


def _replay(path: str) -> tuple[list, Capture]:
    capture = Capture.open_file(path, FILTER)
    matcher = Matcher()
    records = []
    while (batch := capture.read_batch()) is not None:
        for packet, sec, nsec in batch:
            records += matcher.feed(packet, sec, nsec)
    records += matcher.flush()
    return records, capture


@pytest.mark.parametrize("link", sorted(LINKS))
@pytest.mark.parametrize("version", [4, 6])
def test_each_link_type_gives_the_same_pair(tmp_path, link, version):
    linktype, wrap = LINKS[link]
    if version == 4:
        q, r = P.query(), P.response()
    else:
        q = P.query(src=P.RESOLVER6, dst=P.AUTHORITY6)
        r = P.response(src=P.AUTHORITY6, dst=P.RESOLVER6)
    path = str(tmp_path / "c.pcap")
    P.write_pcap(path, [(wrap(q), T0), (wrap(r), T0 + 0.002)], linktype=linktype)
    (rec,), _ = _replay(path)
    assert rec[Field.TYPE] == RecordType.UDP_QUERY_RESPONSE
    assert rec[Field.QUERY_PACKET] == [q] and rec[Field.RESPONSE_PACKET] == [r]
    assert rec[Field.QUERY_TIME_SEC] == [1_700_000_000]
    assert rec[Field.QUERY_TIME_NSEC] == [250_000_000]
    assert rec[Field.RESPONSE_TIME_NSEC] == [252_000_000]


def test_filter_applies_to_files_and_non_ip_frames_are_counted(tmp_path):
    arp = b"\xff" * 6 + b"\x02" + b"\x00" * 5 + b"\x08\x06" + b"\x00" * 28
    user = P.ethernet(P.query(src="203.0.113.9", dst=P.RESOLVER))
    path = str(tmp_path / "c.pcap")
    P.write_pcap(path, [(arp, T0), (user, T0), (P.ethernet(P.query()), T0)])
    records, _ = _replay(path)
    assert [r[Field.TYPE] for r in records] == [RecordType.UDP_UNANSWERED_QUERY]
    unfiltered = Capture.open_file(path, "")
    batch = unfiltered.read_batch()
    assert len(batch) == 2 and unfiltered.not_ip == 1


def test_truncated_pcap_file_ends_quietly(tmp_path):
    path = tmp_path / "c.pcap"
    P.write_pcap(str(path), [(P.ethernet(P.query(ident=i, sport=1000 + i)), T0 + i) for i in range(50)])
    data = path.read_bytes()
    path.write_bytes(data[:-30])
    records, _ = _replay(str(path))
    assert len(records) < 50


def test_unsupported_link_type_is_a_clear_error(tmp_path):
    path = str(tmp_path / "c.pcap")
    P.write_pcap(path, [(b"\x00" * 40, T0)], linktype=105)  # 802.11
    with pytest.raises(UnsupportedLinkType, match="link type"):
        Capture.open_file(path, "")


def _damaged_pcap(path, damage: str, total: int = 2000, at: int = 1500) -> list[bytes]:
    """`total` frames, every 10th end-user traffic (filtered out), record `at`
    (1-based) damaged; returns the resolver's queries before it."""
    frames, kept = [], []
    for i in range(total):
        if i % 10 == 9:
            datagram = P.query(src="203.0.113.9", dst=P.RESOLVER, ident=i)
        else:
            datagram = P.query(ident=i % 65536, sport=1024 + i)
            if i < at - 1:
                kept.append(datagram)
        frames.append((P.ethernet(datagram), T0 + i / 1000))
    P.write_pcap(str(path), frames)
    data = bytearray(path.read_bytes())
    offset = 24
    for _ in range(at - 1):
        offset += 16 + struct.unpack_from("<I", data, offset + 8)[0]
    if damage == "lying caplen":
        struct.pack_into("<I", data, offset + 8, 0x7FFFFFFF)
    else:  # cut short in the middle of the record
        data = data[: offset + 16 + 20]
    path.write_bytes(bytes(data))
    return kept


@pytest.mark.parametrize("damage", ["lying caplen", "cut short"])
def test_damaged_record_ends_the_file_keeping_the_packets_before_it_and_says_where(tmp_path, caplog, damage):
    path = tmp_path / "damaged.pcap"
    kept = _damaged_pcap(path, damage)
    records, capture = _replay(str(path))
    assert sorted(r[Field.QUERY_PACKET][0] for r in records) == sorted(kept)  # nothing before it lost
    assert len(kept) == 1350
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warning) == 1 and warning[0] == capture.damaged
    assert warning[0].startswith(f"file {path} is damaged at packet 1500 (")
    assert warning[0].endswith("): read 1499 packets before it, nothing after")


@pytest.mark.skipif(os.geteuid() != 0, reason="a live capture needs root (or CAP_NET_RAW)")
@pytest.mark.parametrize("index_now", [None, 4242])
def test_an_idle_live_capture_whose_interface_is_gone_or_replaced_says_so(monkeypatch, index_now):
    """libpcap almost always reports a deleted interface; once in CI it did not within 30 s, and
    the sensor said it was capturing on an interface that no longer existed (nor reopened the
    new one). An idle capture now looks for its interface once a second. Here loopback, with a
    filter nothing matches, stands for the interface; its index is made to vanish or change."""
    from sensor.edges import libpcap

    capture = Capture.open_live("lo", False, "udp and host 192.0.2.77 and port 9")
    try:
        assert capture.device_index == socket.if_nametoindex("lo")
        for _ in range(3):
            assert capture.read_batch() == []  # idle, there: nothing said
        monkeypatch.setattr(libpcap, "_index_of", lambda device: index_now)
        deadline = time.monotonic() + 5
        with pytest.raises(libpcap.CaptureError, match=r"interface lo: the interface (is gone|was replaced)"):
            while time.monotonic() < deadline:
                capture.read_batch()
    finally:
        capture.close()
