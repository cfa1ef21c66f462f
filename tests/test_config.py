"""Configuration: the shell-style file, defaults, environment, clear errors."""

from __future__ import annotations

import ipaddress
import os

import pytest

from sensor.records.dns import text_to_wire
from sensor.service import config
from sensor.service.config import ConfigError

SHIPPED = os.path.join(os.path.dirname(__file__), "..", "etc", "sie-dns-sensor")


def load_text(tmp_path, text: str, environ: dict | None = None) -> config.Config:
    path = tmp_path / "sie-dns-sensor"
    path.write_text(text)
    return config.load(str(path), environ or {})


def test_shipped_file_parses_and_matches_the_documented_defaults():
    cfg = config.load(SHIPPED, {})
    assert cfg.spooldir == "/var/spool/sie"
    assert cfg.interval == 60 and cfg.maxper == 16 and cfg.channel == "ch202"
    assert cfg.interface == "eth0" and not cfg.promiscuous
    assert cfg.capture_rd == 0  # as shipped
    assert cfg.capture_qr is None
    assert cfg.state_table_max == 131072 and cfg.query_timeout == 60
    assert cfg.archive is False and cfg.upload is True
    assert cfg.syslog_priority == "local5.info"
    assert cfg.max_spool_size_kbytes == 524288 == cfg.memory_ulimit_kbytes
    # every variable the sensor knows is in the shipped file (some commented)
    with open(SHIPPED) as handle:
        text = handle.read()
    for name in config.VARIABLES:
        assert name + "=" in text, name


def test_defaults_without_a_file_leave_rd_unset():
    cfg = config.defaults()
    assert cfg.capture_rd is None and cfg.res_addrs == ()


def test_values_quotes_comments_and_export(tmp_path):
    cfg = load_text(
        tmp_path,
        "# comment\n\nexport interval=30\nchannel='ch204'  # trailing\n"
        'interface="eth1+"\nDNSQR_RES_ADDRS="192.0.2.1, 2001:db8::/64,198.51.100.0/24"\n'
        'archive="YES"\nupload="False"\nsubmitserver="[2001:db8::9]:2222"\n'
        'DNSQR_FILTER_QNAMES_EXCLUDE="example.com:Example.NET."\n',
    )
    assert cfg.interval == 30 and cfg.channel == "ch204"
    assert cfg.promiscuous and cfg.device == "eth1"
    assert cfg.res_addrs == (
        ipaddress.ip_network("192.0.2.1/32"),
        ipaddress.ip_network("2001:db8::/64"),
        ipaddress.ip_network("198.51.100.0/24"),
    )
    assert cfg.archive is True and cfg.upload is False
    assert cfg.submitserver == ("2001:db8::9", 2222)
    assert cfg.qnames_exclude == (text_to_wire("example.com"), text_to_wire("example.net"))
    assert cfg.origins["interval"].endswith(":3")


def test_submitserver_without_a_port_leaves_it_to_srv_discovery(tmp_path):
    assert load_text(tmp_path, 'submitserver="collector.example"\n').submitserver == ("collector.example", None)
    assert load_text(tmp_path, 'submitserver="[2001:db8::9]"\n').submitserver == ("2001:db8::9", None)


def test_environment_overrides_the_file(tmp_path):
    cfg = load_text(tmp_path, 'interval="30"\n', {"interval": "15", "DNSQR_RES_ADDRS": "192.0.2.7"})
    assert cfg.interval == 15
    assert cfg.origins["interval"] == "environment"
    assert cfg.res_addrs == (ipaddress.ip_network("192.0.2.7/32"),)


def test_file_is_never_executed(tmp_path):
    marker = tmp_path / "ran"
    load_text(tmp_path, f'SOME_OTHER_TOOL="$(touch {marker})"\n')
    with pytest.raises(ConfigError, match="login"):  # read as text, and no user name
        load_text(tmp_path, f'login="$(touch {marker})"\n')
    assert not marker.exists()


@pytest.mark.parametrize(
    "line, variable",
    [
        ('interval="sixty"', "interval"),
        ('interval="0"', "interval"),
        ('DNSQR_STATE_TABLE_MAX="-5"', "DNSQR_STATE_TABLE_MAX"),
        ('DNSQR_RES_ADDRS="192.0.2.300"', "DNSQR_RES_ADDRS"),
        ('DNSQR_RES_ADDRS="192.0.2.1/24"', "DNSQR_RES_ADDRS"),  # host bits set
        ('DNSQR_CAPTURE_RD="2"', "DNSQR_CAPTURE_RD"),
        ('archive="maybe"', "archive"),
        ('syslog_priority="local9.info"', "syslog_priority"),
        ('submitserver="host:99999"', "submitserver"),
        ('spooldir="relative/path"', "spooldir"),
        ('DNSQR_FILTER_QNAMES_INCLUDE="' + "a" * 64 + '.com"', "DNSQR_FILTER_QNAMES_INCLUDE"),
        ('DNSQR_RES_ADRS="192.0.2.1"', "DNSQR_RES_ADRS"),  # a typo of a known name
        ('Interval="60"', "Interval"),
        # issue 20 item 6: what would reach ssh or rsync's command line
        ('login="sie/../../var/spool/sie"', "login"),  # rsync: a local path, not the collector
        ('login="sensor@elsewhere.example"', "login"),
        ('login="sensor:up"', "login"),
        ('login="-oProxyCommand=x"', "login"),
        ('login="two words"', "login"),
        ('login="' + "a" * 33 + '"', "login"),
        ('submitserver="-oProxyJump.example"', "submitserver"),  # ssh would read an option
        ('submitserver="-collector.example:49222"', "submitserver"),
        ('submitserver="a..b.example"', "submitserver"),
        ('submitserver="2001:db8::zz"', "submitserver"),
        ('knownhosts="/var/spool/sie/keys/known hosts"', "knownhosts"),  # ssh splits it: two files
        ('knownhosts="/var/spool/sie/keys/known\thosts"', "knownhosts"),
        ('uploadkey="/var/spool/sie/keys/%u"', "uploadkey"),  # ssh would expand %u
        ('uploadkey="/var/spool/sie/keys/up load"', "uploadkey"),
    ],
)
def test_bad_value_names_the_variable_and_the_line(tmp_path, line, variable):
    with pytest.raises(ConfigError) as error:
        load_text(tmp_path, "# first line\n" + line + "\n")
    message = str(error.value)
    assert variable in message
    assert "sie-dns-sensor:2" in message


def test_control_bytes_in_ssh_paths_and_login_are_refused(tmp_path):
    for name, value in (("knownhosts", "/var/spool/sie/keys/known\x01"), ("uploadkey", "/var/spool/sie/\nkey"),
                        ("login", "sensor\x00")):
        with pytest.raises(ConfigError, match=f"environment: {name}"):
            load_text(tmp_path, "", {name: value})


def test_host_name_syntax_and_what_it_lets_through(tmp_path):
    assert config.is_host_name("collector.example") and config.is_host_name("c.example.")
    assert config.is_host_name("a" * 63 + ".example")
    for bad in ("", ".", "-oProxyCommand=x", "a b", "a\x07b", "a..b", "a" * 64 + ".example",
                ".".join(["a" * 60] * 5), "a/b", "a@b", "\\032.example"):
        assert not config.is_host_name(bad), bad
    cfg = load_text(tmp_path, 'login="sie_sensor-1.a"\nsubmitserver="Collector-1.example."\n'
                    'knownhosts="/etc/sie/known_hosts"\n')
    assert cfg.login == "sie_sensor-1.a" and cfg.submitserver == ("Collector-1.example.", None)
    for text, parsed in (("[192.0.2.1]:49222", ("192.0.2.1", 49222)), ("2001:db8::9", ("2001:db8::9", None)),
                         ("198.51.100.7:22", ("198.51.100.7", 22)), ("_rsync.example", ("_rsync.example", None))):
        assert load_text(tmp_path, f'submitserver="{text}"\n').submitserver == parsed


def test_bad_environment_value_says_so(tmp_path):
    with pytest.raises(ConfigError, match="environment: maxper"):
        load_text(tmp_path, "", {"maxper": "many"})


def test_unreadable_line_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=":1: cannot read"):
        load_text(tmp_path, "this is not an assignment\n")


def test_unrelated_unknown_variables_are_ignored(tmp_path):
    assert load_text(tmp_path, 'SOME_OTHER_TOOL="x"\n').interval == 60


def test_missing_named_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        config.load(str(tmp_path / "absent"), {})


def test_capture_needs_addresses_and_upload_needs_a_collector():
    cfg = config.defaults()
    with pytest.raises(ConfigError, match="DNSQR_RES_ADDRS or DNSQR_AUTH_ADDRS"):
        cfg.require_capture_addresses()
    with pytest.raises(ConfigError, match="login"):
        cfg.require_upload_settings()


def test_effective_settings_render_back_to_parseable_lines(tmp_path):
    cfg = load_text(tmp_path, 'DNSQR_RES_ADDRS="192.0.2.1,2001:db8::1"\nsubmitserver="c.example"\n')
    rendered = "\n".join(line.split("  #")[0] for line in cfg.as_text_lines())
    again = load_text(tmp_path, rendered)
    assert again == cfg


def test_nmsg_compress_level_defaults_to_the_measured_level_and_takes_1_to_12(tmp_path):
    """issue 25 item 20: the level is a setting; its default is the one nmsg.py measured."""
    from sensor.spool import nmsg

    assert config.defaults().nmsg_compress_level == nmsg.COMPRESSION_LEVEL
    assert config.load(SHIPPED, {}).nmsg_compress_level == nmsg.COMPRESSION_LEVEL
    assert load_text(tmp_path, 'nmsg_compress_level="1"\n').nmsg_compress_level == 1
    assert load_text(tmp_path, "", {"nmsg_compress_level": "12"}).nmsg_compress_level == 12
    for bad in ("0", "13", "-1", "six", "", "6.5"):
        with pytest.raises(ConfigError, match=r"sie-dns-sensor:1: nmsg_compress_level.*from 1 to 12"):
            load_text(tmp_path, f'nmsg_compress_level="{bad}"\n')
