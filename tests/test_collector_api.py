"""`sie-dns-collector serve` over real HTTP on loopback: DNSDB API v2 framing,
parameters and status codes, COF's basic auth, bad input, hostile clients
(missing, wrong and guessed keys, bursts, clients that read nothing or
never end their headers); the store's wildcard, summarize and deadline;
`query` on the command line answering as the API does."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import sqlite3
import time

import pytest

from collector import present
from collector.api import stream
from collector.sqlite_store import SqliteStore
from collector.store import Fences
from tests import apikit
from tests.apikit import wire

BULK = 50_000  # rows under bulk.example.test: an answer far larger than the socket buffers


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("api"))
    bulk = [((wire(f"h{i:06d}.bulk.example.test"), 1, wire("example.test"), (bytes([192, 0, 2, i % 256]),)),
             1000, 2000, 1) for i in range(BULK)]
    apikit.fill(os.path.join(path, "pdns.sqlite"), extra=bulk)
    return path


@pytest.fixture(scope="module")
def served(folder):
    config = apikit.write_config(folder, api_send_timeout="2", api_auth_failures="50")
    keys = {"analyst": apikit.add_key(config, "analyst"),
            "small": apikit.add_key(config, "small", "--results-max", "3"),
            "bursty": apikit.add_key(config, "bursty", "--burst-size", "3"),
            "single": apikit.add_key(config, "single", "--lookups", "1"),
            "slow": apikit.add_key(config, "slow")}
    server = apikit.Server(config)
    yield server, keys, config
    server.stop()


@pytest.fixture
def store(folder):
    opened = SqliteStore(os.path.join(folder, "pdns.sqlite"))
    yield opened
    opened.close()


def lookup(served, path: str, key: str = "analyst", **headers: str) -> tuple[int, dict, bytes]:
    server, keys, _ = served
    return server.get(path, {"X-API-Key": keys[key], **headers})


def saf(body: bytes) -> tuple[list[dict], dict]:
    """(objects, terminating line) of a SAF answer, checking its framing."""
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert lines[0] == {"cond": "begin"}
    assert all(set(line) == {"obj"} for line in lines[1:-1])
    assert lines[-1]["cond"] in ("succeeded", "limited", "failed")
    return [line["obj"] for line in lines[1:-1]], lines[-1]


# ------------------------------------------------------------ the protocol
def test_a_lookup_is_saf_framed_json_lines(served, store):
    status, headers, body = lookup(served, "/dnsdb/v2/lookup/rrset/name/www.example.test")
    assert status == 200 and headers["content-type"].startswith("application/x-ndjson")
    found, end = saf(body)
    assert end == {"cond": "succeeded"}
    assert found == [present.entry_json(e) for e in store.rrsets(wire("www.example.test"))] and len(found) == 2


def test_ping_needs_no_key_and_rate_limit_reports_the_keys_limits(served):
    server = served[0]
    assert server.get("/dnsdb/v2/ping")[2] == b'{"ping":"ok"}\n'
    status, _, body = lookup(served, "/dnsdb/v2/rate_limit", "small")
    rate = json.loads(body)["rate"]
    assert status == 200 and rate["results_max"] == 3 and rate["burst_size"] == 600 and rate["burst_window"] == 60


def test_limit_offset_and_the_limited_condition(served, store):
    everything = [present.entry_json(e) for e in store.rrsets(wire("example.test"), under=True, limit=6)]
    found, end = saf(lookup(served, "/dnsdb/v2/lookup/rrset/name/*.example.test?limit=2")[2])
    assert found == everything[:2] and end == {"cond": "limited", "msg": "Result limit reached"}
    found, end = saf(lookup(served, "/dnsdb/v2/lookup/rrset/name/*.example.test?limit=4&offset=2")[2])
    assert found == everything[2:6] and end["cond"] == "limited"
    found, end = saf(lookup(served, "/dnsdb/v2/lookup/rrset/name/*.example.test/MX?limit=1")[2])
    assert len(found) == 1 and end == {"cond": "succeeded"}  # exactly the limit, nothing more: not limited


def test_a_huge_limit_is_capped_at_the_keys_results_max(served):
    for limit in ("1000000", "0"):
        found, end = saf(lookup(served, f"/dnsdb/v2/lookup/rrset/name/*.test?limit={limit}", "small")[2])
        assert len(found) == 3 and end["cond"] == "limited"


def test_time_fences_absolute_and_relative(served, store):
    found, _ = saf(lookup(served, "/dnsdb/v2/lookup/rrset/name/*?time_first_after=4000&time_last_before=6000")[2])
    assert {obj["rrname"] for obj in found} == {"ftp.example.test.", "www.example.other.", "alias.example.other.",
                                                "example.other.", "ns1.example.other.", "other.", "ns1.nic.other."}
    found, _ = saf(lookup(served, "/dnsdb/v2/lookup/rrset/name/*.test?time_last_after=-60")[2])
    assert found == []  # everything here was last seen decades ago
    ago = int(time.time()) - 1500
    found, _ = saf(lookup(served, f"/dnsdb/v2/lookup/rrset/name/*.test?time_first_before=-{ago}")[2])
    assert found and all(obj["time_first"] <= 1500 for obj in found)


def test_right_hand_wildcards_and_rdata_lookups(served, store):
    found, _ = saf(lookup(served, "/dnsdb/v2/lookup/rrset/name/www.example.%2A/A")[2])
    assert [obj["rrname"] for obj in found] == ["www.example.test.", "www.example.other."]  # forward-key order
    found, _ = saf(lookup(served, "/dnsdb/v2/lookup/rdata/name/www.example.test/CNAME")[2])
    assert {obj["rrname"] for obj in found} == {"ftp.example.test.", "alias.example.other."}
    assert all(isinstance(obj["rdata"], list) for obj in found)
    found, _ = saf(lookup(served, "/dnsdb/v2/lookup/rdata/ip/203.0.113.0%2C24")[2])
    assert [obj["rdata"] for obj in found] == [["203.0.113.25"], ["203.0.113.80"], ["203.0.113.81"]]
    found, _ = saf(lookup(served, "/dnsdb/v2/lookup/rdata/ip/203.0.113.26-203.0.113.80")[2])
    assert [obj["rrname"] for obj in found] == ["www.example.test."]
    found, _ = saf(lookup(served, "/dnsdb/v2/lookup/rdata/raw/cb007150")[2])  # 203.0.113.80
    assert [obj["rrname"] for obj in found] == ["www.example.test."]
    owner = wire("www.shop.test").hex()
    found, _ = saf(lookup(served, f"/dnsdb/v2/lookup/rrset/raw/{owner}/A")[2])
    assert [obj["rdata"] for obj in found] == [["198.51.100.50"]]


def test_summarize_with_and_without_max_count(served, store):
    found, _ = saf(lookup(served, "/dnsdb/v2/summarize/rrset/name/*.example.test")[2])
    summary = store.summarize("rrsets", wire("example.test"), under=True, limit=10000)
    assert found == [present.summary_json(summary)] and summary.num_results == 10000  # the default limit
    found, _ = saf(lookup(served, "/dnsdb/v2/summarize/rrset/name/*.test?max_count=5")[2])
    assert found[0]["count"] >= 5 and found[0]["num_results"] <= 5


@pytest.mark.parametrize(("path", "status", "says"), [
    ("/dnsdb/v2/lookup/rrset/name/" + "a" * 64 + ".test", 400, "1 to 63 octets"),
    ("/dnsdb/v2/lookup/rrset/name/" + ".".join(["abcdefghi"] * 30), 400, "255 octets"),
    ("/dnsdb/v2/lookup/rrset/name/" + "a." * 3000, 400, "too long"),
    ("/dnsdb/v2/lookup/rrset/name/www.*.example.test", 400, "wildcard"),
    ("/dnsdb/v2/lookup/rrset/name/*.example.*", 400, "wildcard"),
    ("/dnsdb/v2/lookup/rrset/name/ww*.example.test", 400, "wildcard"),
    ("/dnsdb/v2/lookup/rrset/name/example.test/A/*.test", 400, "no wildcard"),
    ("/dnsdb/v2/lookup/rrset/name/example.test/BOGUS", 400, "not a record type"),
    ("/dnsdb/v2/lookup/rrset/name/example.test/A,AAAA", 400, "not a record type"),
    ("/dnsdb/v2/lookup/rdata/ip/203.0.113.300", 400, "not an address"),
    ("/dnsdb/v2/lookup/rdata/ip/203.0.113.0,33", 400, "not an address"),
    ("/dnsdb/v2/lookup/rdata/ip/203.0.113.9-203.0.113.1", 400, "lower to the higher"),
    ("/dnsdb/v2/lookup/rdata/ip/192.0.2.1-2001:db8::1", 400, "one family"),
    ("/dnsdb/v2/lookup/rdata/raw/abc", 400, "hexadecimal"),
    ("/dnsdb/v2/lookup/rrset/raw/03777777", 400, "wire form"),
    ("/dnsdb/v2/lookup/rrset/name/example.test?limit=99999999999999", 400, "whole number"),
    ("/dnsdb/v2/lookup/rrset/name/example.test?limit=-1", 400, "0 or more"),
    ("/dnsdb/v2/lookup/rrset/name/example.test?time_first_after=yesterday", 400, "whole number"),
    ("/dnsdb/v2/lookup/rrset/name/example.test?limit=1&limit=2", 400, "twice"),
    ("/dnsdb/v2/lookup/rrset/name/example.test?frobnicate=1", 400, "unknown parameter"),
    ("/dnsdb/v2/lookup/rrset/name/example.test?aggr=maybe", 400, "true or false"),
    ("/dnsdb/v2/lookup/rrset/name/example.test?offset=2000000", 416, "offset"),
    ("/dnsdb/v2/lookup/rrset/bogus/example.test", 400, "no rrset lookup by"),
    ("/dnsdb/v2/lookup/rrset/name/example.test/A/test/extra", 400, "at most"),
    ("/dnsdb/v2/lookup/flex/name/example.test", 404, "no lookup named"),
    ("/dnsdb/v2/search/rrset/name/example.test", 404, "no verb"),
    ("/dnsdb/v2/lookup/rrset/name/%ff.test", 400, "UTF-8"),
])
def test_bad_input_is_a_clear_error(served, path, status, says):
    got, _, body = lookup(served, path)
    assert got == status, body
    assert body.startswith(b"Error: ") and says in body.decode(), body
    assert body.count(b"\n") == 1  # one line, no traceback


def test_an_accept_header_without_json_is_415(served):
    assert lookup(served, "/dnsdb/v2/lookup/rrset/name/example.test", Accept="text/html")[0] == 415


def test_the_server_still_answers_after_the_bad_input(served):
    assert lookup(served, "/dnsdb/v2/lookup/rrset/name/www.shop.test")[0] == 200


# ------------------------------------------------------------------- COF
def test_cof_needs_the_key_name_and_key_as_basic_auth(served, store):
    server, keys, _ = served

    def basic(user: str, secret: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}

    status, headers, _ = server.get("/pdns/query/www.shop.test")
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    assert server.get("/pdns/query/www.shop.test", basic("small", keys["analyst"]))[0] == 401
    status, headers, body = server.get("/pdns/query/www.shop.test", basic("analyst", keys["analyst"]))
    assert status == 200
    assert [json.loads(line) for line in body.splitlines()] == [
        {"rrname": "www.shop.test.", "rrtype": "A", "bailiwick": "shop.test.", "rdata": "198.51.100.50",
         "time_first": 9000, "time_last": 9000, "count": 1}]
    assert server.get("/pdns/query/a..b", basic("analyst", keys["analyst"]))[0] == 400


# --------------------------------------------------------- hostile clients
def test_missing_and_wrong_keys_are_403_and_logged_without_the_key(served):
    server, keys, _ = served
    wrong = "0" * 63 + "1"
    assert server.get("/dnsdb/v2/lookup/rrset/name/www.shop.test")[0] == 403
    status, _, body = server.get("/dnsdb/v2/lookup/rrset/name/www.shop.test", {"X-API-Key": wrong})
    assert status == 403 and body == b"Error: missing or invalid API key\n"
    assert server.get("/dnsdb/v2/lookup/rrset/name/www.shop.test", {"X-API-Key": "k" * 5000})[0] == 403
    assert server.log_has(r"refused no API key from 127\.0\.0\.1")
    assert server.log_has(r"refused an unknown API key from 127\.0\.0\.1")
    assert not any(wrong in line or keys["analyst"] in line for line in server.lines)


def test_key_guessing_is_stopped_per_address(folder):
    config = apikit.write_config(folder, api_auth_failures="5")
    key = apikit.add_key(config, "guessed")
    server = apikit.Server(config)
    try:
        statuses = [server.get("/dnsdb/v2/lookup/rrset/name/www.shop.test", {"X-API-Key": f"{guess:064x}"})[0]
                    for guess in range(8)]
        assert statuses == [403] * 5 + [429] * 3
        status, headers, body = server.get("/dnsdb/v2/lookup/rrset/name/www.shop.test", {"X-API-Key": "0" * 64})
        assert status == 429 and int(headers["retry-after"]) > 0 and b"refused keys" in body
        # but the right key is let in: behind a proxy every analyst shares the guesser's address
        assert server.get("/dnsdb/v2/lookup/rrset/name/www.shop.test", {"X-API-Key": key})[0] == 200
        assert server.log_has(r"from 127\.0\.0\.1; it is refused for 60 s")
        assert not any(f"{guess:064x}" in line for line in server.lines for guess in range(8))
    finally:
        server.stop()
        apikit.collector("remove-key", "-c", config, "guessed")


def test_a_key_past_its_burst_gets_429_until_its_window_ends(served):
    statuses = [lookup(served, "/dnsdb/v2/lookup/rrset/name/www.shop.test", "bursty")[0] for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    status, headers, _ = lookup(served, "/dnsdb/v2/lookup/rrset/name/www.shop.test", "bursty")
    assert status == 429 and 0 < int(headers["retry-after"]) <= 60
    assert lookup(served, "/dnsdb/v2/lookup/rrset/name/www.shop.test")[0] == 200  # another key is not held


def _stalled(served, key: str, path: str) -> socket.socket:
    """A client that asks for a big answer and reads none of it."""
    server, keys, _ = served
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {keys[key]}\r\n\r\n".encode())
    return sock


def test_clients_that_read_nothing_do_not_stop_the_others_and_are_cut_off(served):
    server = served[0]
    stalled = [_stalled(served, "slow", "/dnsdb/v2/lookup/rrset/name/*.bulk.example.test?limit=0")
               for _ in range(6)]
    try:
        for _ in range(20):
            status, _, body = lookup(served, "/dnsdb/v2/lookup/rrset/name/www.example.test")
            assert status == 200 and saf(body)[1] == {"cond": "succeeded"}
        assert server.log_has(r"client 127\.0\.0\.1 read nothing for 2 s: its answer is cut off", 60)
        # their lookups were let go: the key can look up again, up to its cap
        for sock in stalled:
            sock.settimeout(60)
            while sock.recv(65536):  # the server closed each, mid-answer
                pass
        assert lookup(served, "/dnsdb/v2/lookup/rrset/name/www.example.test", "slow")[0] == 200
    finally:
        for sock in stalled:
            sock.close()


def test_a_key_at_its_lookups_under_way_gets_503(served):
    sock = _stalled(served, "single", "/dnsdb/v2/lookup/rrset/name/*.bulk.example.test?limit=0")
    try:
        time.sleep(0.5)  # its lookup under way (stalled on its first chunks)
        status, _, body = lookup(served, "/dnsdb/v2/lookup/rrset/name/www.shop.test", "single")
        assert status == 503 and b"too many lookups" in body
    finally:
        sock.close()
    deadline = time.monotonic() + 30
    while lookup(served, "/dnsdb/v2/lookup/rrset/name/www.shop.test", "single")[0] != 200:
        assert time.monotonic() < deadline, "the slot is freed once the client is gone"
        time.sleep(0.2)


def test_a_client_that_never_ends_its_request_head_is_cut_off(served):
    server = served[0]
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        sock.sendall(b"GET /dnsdb/v2/ping HTTP/1.1\r\nHost: x\r\n")  # and never the empty line
        assert lookup(served, "/dnsdb/v2/lookup/rrset/name/www.shop.test")[0] == 200
        sock.settimeout(60)
        assert sock.recv(100) == b""  # closed by the server
        assert server.log_has(r"sent no whole request in 2 s")
    finally:
        sock.close()


def test_a_request_with_a_body_is_answered_and_its_connection_closed(served):
    """No deadline runs inside a body, and each byte put off the keep-alive timeout: a body
    trickled a byte at a time held a connection (and a slot of api_max_connections) for ever."""
    server = served[0]
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        sock.sendall(b"GET /dnsdb/v2/ping HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        sock.settimeout(30)
        answer = b""
        while not answer.endswith(b'{"ping":"ok"}\n'):
            answer += sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200") and b"connection: close" in answer.lower()
        with contextlib.suppress(OSError):  # closed already, perhaps
            sock.sendall(b"x")  # a byte of the body: before, it held the connection open for ever
        with contextlib.suppress(ConnectionResetError):  # closed with the body unread: a reset
            assert sock.recv(4096) == b""
    finally:
        sock.close()
    plain = socket.create_connection(("127.0.0.1", server.port))  # without a body: kept alive as before
    try:
        plain.sendall(b"GET /dnsdb/v2/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        plain.settimeout(30)
        assert b"connection: close" not in plain.recv(4096).lower()
    finally:
        plain.close()


def test_an_endless_request_head_is_cut_off(served):
    server = served[0]
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        sock.sendall(b"GET /dnsdb/v2/ping HTTP/1.1\r\n")
        with pytest.raises(OSError):  # reset, or closed under the writes
            for _ in range(100):
                sock.sendall(b"X-Filler: " + b"y" * 4000 + b"\r\n")
                time.sleep(0.01)
            sock.settimeout(10)
            if sock.recv(100) == b"":
                raise ConnectionResetError
        assert server.log_has(r"sent a request head over 65536 octets")
    finally:
        sock.close()


# --------------------------------------------------------------- the store
def test_a_right_hand_wildcard_is_a_range_scan_not_a_full_scan(store):
    select = store._rrsets_select(wire("www.example"), starts=True)
    plan = store.db.execute("EXPLAIN QUERY PLAN " + select.sql(10, 0), select.paged_args(10, 0)).fetchall()
    steps = [row[-1] for row in plan]
    assert any("SEARCH f USING PRIMARY KEY (fkey>? AND fkey<?)" in step for step in steps), steps
    assert not any(step.startswith("SCAN") or "TEMP B-TREE" in step for step in steps), steps


def test_a_store_made_before_the_forward_index_gets_it_when_opened(tmp_path):
    apikit.fill(str(tmp_path / "pdns.sqlite"))
    db = sqlite3.connect(tmp_path / "pdns.sqlite")
    db.execute("DELETE FROM name_forward")
    db.execute("PRAGMA user_version = 0")
    db.commit()
    db.close()
    store = SqliteStore(str(tmp_path / "pdns.sqlite"))
    try:
        assert [e.rrname for e in store.rrsets(wire("www.example"), starts=True, rrtype=1)] == [
            wire("www.example.test"), wire("www.example.other")]
        assert [e.rrname for e in store.rdata_name(wire("www.example"), starts=True)] == [
            wire("ftp.example.test"), wire("alias.example.other")]
    finally:
        store.close()


def test_a_lookup_past_its_time_ends_failed(folder):
    store = SqliteStore(os.path.join(folder, "pdns.sqlite"), query_timeout=0)
    try:
        rows = store.rrsets(wire("bulk.example.test"), under=True, fences=Fences(first_after=10**9))
        lines = b"".join(stream.saf_lookup(rows, present.entry_json, 10, time.monotonic() + 60)).splitlines()
    finally:
        store.close()
    assert [json.loads(line) for line in lines] == [
        {"cond": "begin"}, {"cond": "failed", "msg": "the lookup ran past its 0 s"}]


# ---------------------------------------------------------- the command line
def test_query_on_the_command_line_answers_as_the_api(served, store):
    _, _, config = served
    for args, path in (
        (["rrset", "www.example.*", "--type", "A"], "rrset/name/www.example.%2A/A"),
        (["rrset", wire("www.shop.test").hex(), "--raw"], f"rrset/raw/{wire('www.shop.test').hex()}"),
        (["rrset", "*.example.test", "--limit", "3", "--offset", "2"], "rrset/name/*.example.test?limit=3&offset=2"),
        (["rrset", "*.test", "--first-after", "4000", "--last-before", "6000"],
         "rrset/name/*.test?time_first_after=4000&time_last_before=6000"),
        (["rdata", "203.0.113.0/24"], "rdata/ip/203.0.113.0,24"),
        (["rdata", "203.0.113.26-203.0.113.81"], "rdata/ip/203.0.113.26-203.0.113.81"),
        (["rdata", "*.example.test", "--type", "NS"], "rdata/name/*.example.test/NS"),
        (["rdata", "cb007150", "--raw"], "rdata/raw/cb007150"),
    ):
        done = apikit.collector("query", *args, "-c", config, "--json")
        assert done.returncode == 0, done.stderr
        cli = [json.loads(line) for line in done.stdout.splitlines()]
        api, _ = saf(lookup(served, "/dnsdb/v2/lookup/" + path)[2])
        assert cli == api and cli, args
    done = apikit.collector("query", "rrset", "*.example.test", "-c", config, "--summarize", "--json")
    assert json.loads(done.stdout) == present.summary_json(store.summarize("rrsets", wire("example.test"),
                                                                           under=True))
    done = apikit.collector("query", "rrset", "www.*.test", "-c", config)
    assert done.returncode == 2 and "wildcard" in done.stderr
    done = apikit.collector("query", "rrset", "*.test", "--first-after", "9" * 20, "-c", config)
    assert done.returncode == 2 and "Traceback" not in done.stderr  # past SQLite's integers: refused, as by the API


def test_query_against_no_store_says_so_and_makes_none(tmp_path):
    """Opened, a missing store was made: an empty answer, and, run as root before the ingester's
    first start, a database the ingester could not write."""
    config = apikit.write_config(str(tmp_path))
    done = apikit.collector("query", "rrset", "www.example.test", "-c", config)
    assert done.returncode == 1 and "store: no database at" in done.stderr, done.stderr
    assert not os.path.exists(os.path.join(str(tmp_path), "pdns.sqlite"))


def test_key_commands(served):
    _, _, config = served
    listed = apikit.collector("list-keys", "-c", config)
    assert "small  results_max=3" in listed.stdout and "bursty  burst_size=3" in listed.stdout
    with open(os.path.join(os.path.dirname(config), "api-keys")) as handle:
        kept = handle.read()
    assert served[1]["analyst"] not in kept  # hashed
    assert apikit.collector("add-key", "-c", config, "analyst").returncode == 1  # taken
    assert apikit.collector("add-key", "-c", config, "no/slash").returncode == 1
    assert apikit.collector("remove-key", "-c", config, "nobody").returncode == 1
