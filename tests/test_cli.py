"""The command line: check-config, run --pcap, read."""

from __future__ import annotations

import glob
import json
import os

import pytest
from click.testing import CliRunner

from sensor.cli import main
from sensor.spool import spooldir
from tests import packets as P

T0 = 1_700_000_000


@pytest.fixture
def runner(monkeypatch):
    for name in ("DNSQR_RES_ADDRS", "DNSQR_AUTH_ADDRS", "DNSQR_CAPTURE_RD", "interval", "archive"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def write_config(tmp_path, text: str) -> str:
    path = tmp_path / "sie-dns-sensor"
    path.write_text(f'spooldir="{tmp_path / "spool"}"\n' + text)
    return str(path)


def test_check_config_prints_effective_settings_and_filter(runner, tmp_path):
    (tmp_path / "key").write_text("a key")
    path = write_config(tmp_path, f'DNSQR_RES_ADDRS="192.0.2.53"\nlogin="sensor1"\nsubmitserver="c.example"\n'
                                  f'uploadkey="{tmp_path}/key"\ninterface="lo"\n')
    result = runner.invoke(main, ["check-config", "-c", path])
    assert result.exit_code == 0, result.output
    assert 'DNSQR_RES_ADDRS="192.0.2.53/32"' in result.output
    assert 'submitserver="c.example"' in result.output  # no port: SRV lookup, then 49222
    assert "src host 192.0.2.53" in result.output


def test_check_config_names_a_bad_variable_and_line(runner, tmp_path):
    path = write_config(tmp_path, 'interval="1m"\n')
    result = runner.invoke(main, ["check-config", "-c", path])
    assert result.exit_code != 0
    assert f"{path}:2: interval" in result.output


def test_check_config_reports_missing_addresses(runner, tmp_path):
    path = write_config(tmp_path, 'upload="no"\n')
    result = runner.invoke(main, ["check-config", "-c", path])
    assert result.exit_code == 1
    assert "DNSQR_RES_ADDRS or DNSQR_AUTH_ADDRS" in result.output


def test_run_refuses_to_start_on_a_bad_value(runner, tmp_path):
    path = write_config(tmp_path, 'DNSQR_RES_ADDRS="192.0.2.999"\n')
    pcap = str(tmp_path / "c.pcap")
    P.write_pcap(pcap, [(P.ethernet(P.query()), T0)])
    result = runner.invoke(main, ["run", "-c", path, "--pcap", pcap])
    assert result.exit_code != 0
    assert "DNSQR_RES_ADDRS" in result.output and ":2:" in result.output
    assert not os.path.exists(tmp_path / "spool")


def test_replay_without_addresses_pairs_all_dns_in_the_file(runner, tmp_path):
    """As the reference: no address list, every exchange, direction from QR."""
    user, resolver = "203.0.113.9", P.RESOLVER
    frames = [
        (P.ethernet(P.query()), T0),
        (P.ethernet(P.response()), T0 + 0.01),
        (P.ethernet(P.query(src=user, dst=resolver, sport=5555)), T0 + 0.02),  # a user's query
        (P.ethernet(P.response(src=resolver, dst=user, dport=5555)), T0 + 0.03),
    ]
    pcap = str(tmp_path / "c.pcap")
    P.write_pcap(pcap, frames)
    path = write_config(tmp_path, 'upload="no"\narchive="yes"\nspool_format="cbor"\n')
    result = runner.invoke(main, ["run", "-c", path, "--pcap", pcap])
    assert result.exit_code == 0, result.output
    assert "no address filter is set" in result.output  # logged on stderr in the foreground
    files = glob.glob(os.path.join(spooldir.folder(tmp_path / "spool", spooldir.ARCHIVE, "ch202"), "*"))
    lines = [json.loads(line)["message"] for line in runner.invoke(main, ["read", *files]).output.splitlines()]
    assert [(m["type"], m["query_ip"]) for m in lines] == [
        ("UDP_QUERY_RESPONSE", resolver),
        ("UDP_QUERY_RESPONSE", user),
    ]


def test_live_capture_refuses_without_addresses(runner, tmp_path):
    result = runner.invoke(main, ["run", "-c", write_config(tmp_path, 'upload="no"\n'), "--interface", "lo"])
    assert result.exit_code != 0 and "DNSQR_RES_ADDRS" in result.output
    assert not os.path.exists(tmp_path / "spool")


def test_replay_rotates_archives_and_reads_back(runner, tmp_path):
    path = write_config(tmp_path, 'DNSQR_RES_ADDRS="192.0.2.53"\ninterval="10"\narchive="yes"\n')
    frames = []
    for i in range(30):  # one exchange a second for 30 seconds: three intervals
        frames.append((P.ethernet(P.query(ident=i, sport=20000 + i)), T0 + i))
        frames.append((P.ethernet(P.response(ident=i, dport=20000 + i)), T0 + i + 0.01))
    frames.append((P.ethernet(P.query(ident=99, sport=30000)), T0 + 30))  # never answered
    pcap = str(tmp_path / "c.pcap")
    P.write_pcap(pcap, frames)
    result = runner.invoke(main, ["run", "-c", path, "--pcap", pcap])
    assert result.exit_code == 0, result.output
    waiting = sorted(glob.glob(os.path.join(spooldir.folder(tmp_path / "spool", spooldir.WAITING, "ch202"), "*")))
    archived = sorted(glob.glob(os.path.join(spooldir.folder(tmp_path / "spool", spooldir.ARCHIVE, "ch202"), "*")))
    assert len(waiting) == 4 and [os.path.basename(f) for f in waiting] == [os.path.basename(f) for f in archived]
    assert not glob.glob(os.path.join(spooldir.folder(tmp_path / "spool", spooldir.NEW, "ch202"), "*"))
    result = runner.invoke(main, ["read", *waiting])
    lines = [json.loads(line) for line in result.output.splitlines()]
    types = [line["message"]["type"] for line in lines]
    assert types.count("UDP_QUERY_RESPONSE") == 30 and types[-1] == "UDP_UNANSWERED_QUERY"
    assert lines[0]["vname"] == "base" and lines[0]["mname"] == "dnsqr"
    text = runner.invoke(main, ["read", "--format", "text", waiting[0]]).output.splitlines()
    assert "192.0.2.53#20000 -> 198.51.100.1#53 UDP id=0 www.example.com. IN A NOERROR" in text[0]


def test_read_reports_a_bad_file_and_fails(runner, tmp_path):
    bad = tmp_path / "bad.cbor.gz"
    bad.write_bytes(b"not gzip")
    result = runner.invoke(main, ["read", str(bad)])
    assert result.exit_code == 1
    assert "bad.cbor.gz" in result.output


@pytest.mark.parametrize("field, value", [(20, 10**400), (7, 1 << 32), (14, [1 << 40]), (13, [1 << 64]), (5, -1)])
@pytest.mark.parametrize("print_format", ["json", "text", "pres"])
def test_read_refuses_an_integer_wider_than_its_field_and_reads_the_next_file(runner, tmp_path, field, value,
                                                                            print_format):
    """A CBOR bignum (or a long varint) in a field took `read` down with a traceback (float() of
    10**400 in json and text, struct.error packing it in pres), and the files named after it
    were never read."""
    import cbor2

    from sensor.spool.cbor import Compressor, encode_header

    record = {1: 2, 2: b"\xc0\x00\x02\x01", 3: b"\xc6\x33\x64\x01", 4: 17, 5: 5353, 6: 53, 7: 1,
              13: [1000], 14: [0], 20: 1.5}
    paths = []
    for name, fields in (("wide", {field: value}), ("fine", {})):
        path = tmp_path / f"{name}.cbor.gz"
        with open(path, "wb") as handle:
            sink = Compressor(handle)
            sink.write(encode_header("h", "c", 0, 0) + cbor2.dumps({**record, **fields}))
            sink.finish()
        paths.append(str(path))
    result = runner.invoke(main, ["read", "--format", print_format, *paths])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception  # no traceback
    said = result.output
    assert "wide.cbor.gz: record 1 at byte" in said and (f"field {field} is not" in said or "a tag" in said
                                                           or "depth" in said), said
    assert "5353" in result.output  # the next file's record


def test_live_start_refuses_without_the_upload_key(runner, tmp_path):
    path = write_config(tmp_path, f'DNSQR_RES_ADDRS="192.0.2.53"\nuploadkey="{tmp_path}/keys/none"\n')
    result = runner.invoke(main, ["run", "-c", path, "--interface", "lo"])
    assert result.exit_code != 0
    assert "upload key" in result.output and "sie-gen-key" in result.output
    assert not os.path.exists(tmp_path / "spool")


def test_times_after_2038_are_kept(runner, tmp_path):
    """The reference wraps these to 1901; the sensor keeps them."""
    t2040 = 2_208_988_800  # 2040-01-01, past the signed 32-bit limit
    pcap = str(tmp_path / "c.pcap")
    P.write_pcap(pcap, [(P.ethernet(P.query()), t2040), (P.ethernet(P.response()), t2040 + 0.5)])
    path = write_config(tmp_path, 'DNSQR_RES_ADDRS="192.0.2.53"\nupload="no"\narchive="yes"\n')
    assert runner.invoke(main, ["run", "-c", path, "--pcap", pcap]).exit_code == 0
    files = glob.glob(os.path.join(spooldir.folder(tmp_path / "spool", spooldir.ARCHIVE, "ch202"), "*"))
    (line,) = [json.loads(x) for x in runner.invoke(main, ["read", *files]).output.splitlines()]
    assert line["time"].startswith("2040-01-01 00:00:00")
    assert line["message"]["query_time_sec"] == [t2040]
    assert line["message"]["response_time_sec"] == [t2040]


def test_check_config_fails_when_the_upload_key_is_missing(runner, tmp_path):
    """start refuses without the key, so check-config (what the scripts run first) must too."""
    path = write_config(tmp_path, f'DNSQR_RES_ADDRS="192.0.2.53"\nlogin="sensor1"\nsubmitserver="c.example"\n'
                                  f'uploadkey="{tmp_path}/keys/none"\n')
    result = runner.invoke(main, ["check-config", "-c", path])
    assert result.exit_code == 1
    assert f"upload key {tmp_path}/keys/none is missing" in result.output


def test_check_config_accepts_upload_no_without_login_or_key(runner, tmp_path):
    """The archive-only debugging setup: no login, no server, no key."""
    path = write_config(tmp_path, f'DNSQR_RES_ADDRS="192.0.2.53"\nupload="no"\narchive="yes"\n'
                                  f'uploadkey="{tmp_path}/keys/none"\ninterface="lo"\n')
    result = runner.invoke(main, ["check-config", "-q", "-c", path])
    assert result.exit_code == 0, result.output
    assert result.output == ""


def test_a_missing_interface_is_named_as_such(runner, tmp_path):
    path = write_config(tmp_path, 'DNSQR_RES_ADDRS="192.0.2.53"\nupload="no"\ninterface="sienosuch9"\n')
    result = runner.invoke(main, ["run", "-c", path])
    assert result.exit_code != 0
    assert "interface 'sienosuch9' names no network device" in result.output


def test_reload_warning_names_the_variable_as_written_in_the_file(tmp_path, caplog):
    from types import SimpleNamespace

    from sensor.service import config as configuration
    from sensor.startup import _reloader

    path = write_config(tmp_path, 'DNSQR_RES_ADDRS="192.0.2.53"\n')
    started = configuration.load(path)
    applied = []
    sensor = SimpleNamespace(matcher=SimpleNamespace(apply=applied.append), writer=SimpleNamespace())
    (tmp_path / "sie-dns-sensor").write_text(f'spooldir="{tmp_path / "spool"}"\nDNSQR_RES_ADDRS="192.0.2.54"\n')
    with caplog.at_level("WARNING"):
        _reloader(path, started)(sensor)
    assert "SIGHUP: DNSQR_RES_ADDRS changed" in caplog.text
    assert "res_addrs" not in caplog.text
    assert len(applied) == 1  # the rest applied at once


def test_reload_applies_the_spool_format_and_the_compression_level_to_the_next_file(tmp_path):
    from types import SimpleNamespace

    from sensor.service import config as configuration
    from sensor.spool.formats import CborFormat
    from sensor.startup import _reloader

    path = write_config(tmp_path, 'DNSQR_RES_ADDRS="192.0.2.53"\nspool_format="nmsg"\nnmsg_compress_level="6"\n')
    started = configuration.load(path)
    sensor = SimpleNamespace(matcher=SimpleNamespace(apply=lambda settings: None), writer=SimpleNamespace())
    write_config(tmp_path, 'DNSQR_RES_ADDRS="192.0.2.53"\nspool_format="nmsg"\nnmsg_compress_level="9"\n')
    _reloader(path, started)(sensor)
    assert sensor.writer.format.level == 9
    write_config(tmp_path, 'DNSQR_RES_ADDRS="192.0.2.53"\nspool_format="cbor"\n')
    _reloader(path, started)(sensor)
    assert isinstance(sensor.writer.format, CborFormat)


@pytest.mark.parametrize("option, value, message", [
    ("--spooldir", "relative/spool", "'relative/spool' must be an absolute path"),
    ("--interface", "eth0;reboot", "'eth0;reboot' is not an interface name"),
])
def test_command_line_overrides_get_the_checks_the_file_gets(runner, tmp_path, monkeypatch, option, value, message):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path, "")
    pcap = str(tmp_path / "c.pcap")
    P.write_pcap(pcap, [(P.ethernet(P.query()), T0)])
    result = runner.invoke(main, ["run", "-c", path, "--pcap", pcap, "--user", "nobody-here", option, value])
    assert result.exit_code == 2, result.output
    assert option in result.output and message in result.output
    assert not os.path.exists(tmp_path / "relative") and not os.path.exists(tmp_path / "spool")
