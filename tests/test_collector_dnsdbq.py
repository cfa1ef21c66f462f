"""Debian's dnsdbq against `sie-dns-collector serve`: every answer parses and
equals what the store holds for that lookup.

dnsdbq speaks the DNSDB API v2 (SAF) to DNSDB_SERVER with DNSDB_API_KEY,
and COF with `-u circl` (CIRCL_SERVER and CIRCL_AUTH from the file
DNSDBQ_CONFIG_FILE names). The server is the real command on a loopback
port; the store is filled from records built in code.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess

import pytest

from collector import present
from collector.sqlite_store import SqliteStore
from collector.store import Fences
from tests import apikit
from tests.apikit import wire

pytestmark = pytest.mark.skipif(shutil.which("dnsdbq") is None, reason="needs dnsdbq (apt-get install dnsdbq)")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("dnsdbq"))
    apikit.fill(os.path.join(folder, "pdns.sqlite"))
    config = apikit.write_config(folder)
    key = apikit.add_key(config, "analyst")
    server = apikit.Server(config)
    store = SqliteStore(os.path.join(folder, "pdns.sqlite"))
    circl = os.path.join(folder, "dnsdbq.conf")
    with open(circl, "w") as handle:
        handle.write(f"CIRCL_SERVER={server.url}/pdns/query\nCIRCL_AUTH=analyst:{key}\n")
    yield server, store, key, circl
    store.close()
    server.stop()


def dnsdbq(served, *args: str, circl: bool = False) -> subprocess.CompletedProcess:
    server, _, key, config = served
    env = dict(os.environ, DNSDB_SERVER=server.url, DNSDB_API_KEY=key,
               DNSDBQ_CONFIG_FILE=config if circl else os.devnull)
    return subprocess.run(["dnsdbq", *(["-u", "circl"] if circl else []), *args], capture_output=True, text=True,
                          timeout=60, env=env)


def objects(done: subprocess.CompletedProcess) -> list[dict]:
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr and "API" not in done.stderr, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def rrsets(store, name: str, **options) -> list[dict]:
    return [present.entry_json(entry) for entry in store.rrsets(wire(name), **options)]


def rdata(rows) -> list[dict]:
    return [present.rdata_entry_json(entry) for entry in rows]


def address(text: str) -> tuple[bytes, bytes]:
    network = ipaddress.ip_network(text)
    return network.network_address.packed, network.broadcast_address.packed


LOOKUPS = [
    (["-r", "www.example.test"], lambda s: rrsets(s, "www.example.test")),
    (["-r", "www.example.test/AAAA"], lambda s: rrsets(s, "www.example.test", rrtype=28)),
    (["-r", "example.test/NS/test"], lambda s: rrsets(s, "example.test", rrtype=2, bailiwick=wire("test"))),
    (["-r", "example.test", "-b", "example.test"], lambda s: rrsets(s, "example.test", bailiwick=wire("example.test"))),
    (["-r", "*.example.test"], lambda s: rrsets(s, "example.test", under=True)),
    (["-r", "www.example.*"], lambda s: rrsets(s, "www.example", starts=True)),
    (["-r", "*.test/A", "-l", "2"], lambda s: rrsets(s, "test", under=True, rrtype=1, limit=2)),
    (["-r", "*.test", "-A", "2500"], lambda s: rrsets(s, "test", under=True, fences=Fences(last_after=2500))),
    (["-r", "*.test", "-B", "1500"], lambda s: rrsets(s, "test", under=True, fences=Fences(first_before=1500))),
    (["-r", "*.test", "-A", "1200", "-B", "4000", "-c"],
     lambda s: rrsets(s, "test", under=True, fences=Fences(first_after=1200, last_before=4000))),
    (["-n", "www.example.test"], lambda s: rdata(s.rdata_name(wire("www.example.test")))),
    (["-n", "*.example.test/NS"], lambda s: rdata(s.rdata_name(wire("example.test"), under=True, rrtype=2))),
    (["-n", "ns1.example.*"], lambda s: rdata(s.rdata_name(wire("ns1.example"), starts=True))),
    (["-i", "203.0.113.80"], lambda s: rdata(s.rdata_ip_range(*address("203.0.113.80/32")))),
    (["-i", "203.0.113.0/24"], lambda s: rdata(s.rdata_ip_range(*address("203.0.113.0/24")))),
    (["-i", "2001:db8::/32"], lambda s: rdata(s.rdata_ip_range(*address("2001:db8::/32")))),
]


@pytest.mark.parametrize(("args", "expected"), LOOKUPS, ids=[" ".join(args) for args, _ in LOOKUPS])
def test_dnsdbq_lookups_equal_the_store(served, args, expected):
    want = expected(served[1])
    assert want, "every lookup here finds something"
    assert objects(dnsdbq(served, "-j", *args)) == want


def test_dnsdbq_text_output_reads_the_same_answer(served):
    done = dnsdbq(served, "-r", "www.example.test/A")
    assert done.returncode == 0, done.stderr
    assert "www.example.test.  A  203.0.113.80" in done.stdout
    assert "bailiwick: example.test." in done.stdout


def test_dnsdbq_summarize_equals_the_store(served):
    store = served[1]
    summary = store.summarize("rrsets", wire("test"), under=True)
    assert objects(dnsdbq(served, "-j", "-V", "summarize", "-r", "*.test")) == [present.summary_json(summary)]
    assert summary.num_results == len(rrsets(store, "test", under=True)) > 5


def test_dnsdbq_rate_limit_info(served):
    done = dnsdbq(served, "-I")
    assert done.returncode == 0, done.stderr
    assert "results_max: 1000000" in done.stdout and "burst rate: 600 per minute" in done.stdout


def test_dnsdbq_cof_name_and_address(served):
    store = served[1]
    by_name = objects(dnsdbq(served, "-j", "-r", "www.example.test", circl=True))
    want = [obj for entry in store.rrsets(wire("www.example.test")) for obj in present.entry_cof(entry)]
    want += [present.rdata_entry_cof(entry) for entry in store.rdata_name(wire("www.example.test"))]
    assert by_name == want and len(want) == 4
    by_address = objects(dnsdbq(served, "-j", "-i", "203.0.113.81", circl=True))
    want = [present.rdata_entry_cof(entry) for entry in store.rdata_ip_range(*address("203.0.113.81/32"))]
    assert by_address == want and len(want) == 1


def test_a_server_killed_mid_answer_is_a_truncated_answer_to_dnsdbq(tmp_path):
    bulk = [((wire(f"h{i:06d}.bulk.example.test"), 1, wire("example.test"), (bytes([192, 0, 2, i % 256]),)),
             1000, 2000, 1) for i in range(200_000)]
    apikit.fill(str(tmp_path / "pdns.sqlite"), extra=bulk)
    config = apikit.write_config(str(tmp_path))
    key = apikit.add_key(config, "analyst")
    server = apikit.Server(config)
    env = dict(os.environ, DNSDB_SERVER=server.url, DNSDB_API_KEY=key, DNSDBQ_CONFIG_FILE=os.devnull)
    # about 30 MB of answer: more than the socket buffers and the pipe hold, so while this
    # test reads dnsdbq's first line only, the server is still in the middle of its answer
    client = subprocess.Popen(["dnsdbq", "-j", "-l", "0", "-r", "*.bulk.example.test"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = client.stdout.readline()
        assert json.loads(first)["rrname"] == "h000000.bulk.example.test."
        server.kill()
        rest, errors = client.communicate(timeout=60)
    finally:
        server.stop()
        if client.poll() is None:
            client.kill()
    received = 1 + len(rest.splitlines())
    assert received < len(bulk)
    assert "No SAF terminator" in errors or "curl error" in errors, errors
