"""`run --pcap` as a tool: its exit status says whether the whole file was read (issue 20, item 7c)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

from sensor.spool import formats as spoolfile
from sensor.spool import spooldir
from tests import packets as P
from tests.uploadkit import CHANNEL, REPO, write_config

T0 = 1_700_000_000


def _pcap_whose_last_record_lies(path: str, pairs: int) -> None:
    """`pairs` query/response exchanges, then one more query whose record
    header claims 2 GiB of frame."""
    frames = []
    for i in range(pairs):
        frames.append((P.ethernet(P.query(ident=i, sport=20000 + i)), T0 + i))
        frames.append((P.ethernet(P.response(ident=i, dport=20000 + i)), T0 + i + 0.01))
    frames.append((P.ethernet(P.query(ident=pairs, sport=20000 + pairs)), T0 + pairs))
    P.write_pcap(path, frames)
    with open(path, "r+b") as handle:
        data = bytearray(handle.read())
        offset = 24  # the file header; then each record: 16 bytes of header, caplen bytes of frame
        for _ in range(len(frames) - 1):
            offset += 16 + struct.unpack_from("<I", data, offset + 8)[0]
        struct.pack_into("<I", data, offset + 8, 0x7FFFFFFF)
        handle.seek(0)
        handle.write(data)


def test_a_replay_that_meets_a_lying_record_exits_non_zero_and_keeps_what_came_before(tmp_path):
    pcap = str(tmp_path / "lying.pcap")
    _pcap_whose_last_record_lies(pcap, pairs=5)
    spool = tmp_path / "spool"
    config = write_config(tmp_path / "conf", spool, upload="no", archive="yes", DNSQR_RES_ADDRS=P.RESOLVER)
    result = subprocess.run([sys.executable, "-m", "sensor", "run", "-c", config, "--pcap", pcap],
                            capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"file {pcap} is damaged at packet 11 (" in result.stderr
    assert f"read 10 packets before it, nothing after; the 5 records from the packets before it were written " \
           f"to the spool {spool} as usual" in result.stderr
    archive = spooldir.folder(str(spool), spooldir.ARCHIVE, CHANNEL)
    records = [record for name in os.listdir(archive) for record, _ in spoolfile.read(os.path.join(archive, name))]
    assert len(records) == 5  # the five pairs; the damaged query is not read


def test_a_whole_file_exits_zero(tmp_path):
    pcap = str(tmp_path / "whole.pcap")
    P.write_pcap(pcap, [(P.ethernet(P.query()), T0), (P.ethernet(P.response()), T0 + 0.01)])
    config = write_config(tmp_path / "conf", tmp_path / "spool", upload="no", DNSQR_RES_ADDRS=P.RESOLVER)
    result = subprocess.run([sys.executable, "-m", "sensor", "run", "-c", config, "--pcap", pcap],
                            capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 0, result.stderr
