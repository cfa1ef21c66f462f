"""The collector's commands where the machine gets in their way: check-config
says, before the service starts, what its sandbox keeps the configuration
from doing (a folder it may not write, on a real read-only mount; a
ClickHouse store with no network); add-sensor's settings for an IPv6
collector on another port read back as the sensor reads them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from collector import cli
from collector import config as configuration
from sensor.service.config import _server
from tests import apikit
from tests.collectorkit import collector_config


def test_check_config_names_a_folder_the_service_may_not_write(tmp_path):
    """ReadWritePaths names the package's folder: a collector_dir moved elsewhere is read-only
    under the unit's ProtectSystem=strict, and the ingester died making its folders."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a read-only bind mount")
    root = tmp_path / "pdns"
    root.mkdir()
    config = collector_config(str(tmp_path), str(root))
    read_only = (f"mount --bind {root} {root} && mount -o remount,bind,ro {root} && "
                 f"exec {sys.executable} -m collector check-config -c {config}")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", read_only],
                          env=apikit.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done
    assert f"collector_dir: {root} may not be written by this service" in done.stderr
    assert "ReadWritePaths=" in done.stderr and "Traceback" not in done.stderr
    writable = subprocess.run([sys.executable, "-m", "collector", "check-config", "-c", config],
                              env=apikit.env(), capture_output=True, text=True, timeout=60)
    assert writable.returncode == 0, writable.stderr


def test_check_config_says_a_clickhouse_store_needs_the_network(tmp_path, monkeypatch):
    """The unit's RestrictAddressFamilies=AF_UNIX: the ingester backed off for ever, its status
    saying only that the store did not answer."""
    config = collector_config(str(tmp_path), str(tmp_path), store="clickhouse://127.0.0.1:9000/pdns")
    cfg = configuration.load(config)
    assert cli._sandbox_problem(cfg) is None

    def refused(*_args, **_kwargs):
        raise OSError(97, "Address family not supported by protocol")  # what the seccomp filter answers

    monkeypatch.setattr(cli.socket, "socket", refused)
    problem = cli._sandbox_problem(cfg)
    assert problem.startswith("store: ClickHouse is reached over the network")
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in problem
    monkeypatch.setattr(cli.socket, "socket", socket.socket)


@pytest.mark.parametrize(("host", "port", "expected"), [
    ("2001:db8::5", 2222, ("2001:db8::5", 2222)),
    ("2001:db8::5", 49222, ("2001:db8::5", None)),  # the default port: the sensor's own default
    ("collector.example", 2222, ("collector.example", 2222)),
    ("192.0.2.5", 2222, ("192.0.2.5", 2222)),
])
def test_the_submitserver_add_sensor_prints_is_read_back_as_meant(host, port, expected):
    assert _server(cli.submit_server(host, port)) == expected
