"""Packaging: the .deb an operator installs, end to end; the rpm; static checks.

The end-to-end test changes the machine (installs and purges the package,
adds a veth to the root namespace), so it runs where CI=true or
SIE_PACKAGE_TEST=1, as root, and is skipped elsewhere. The static checks
(shellcheck, rpmbuild) run wherever their tools are.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from sensor import spoolfile
from tests import netns
from tests import sshd as sshd_helper
from tests.dnstraffic import ASKER, RESPONDER

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHELL_SCRIPTS = [
    "initscripts/sie-dns-sensor.init",
    "initscripts/sie_dns_sensor.rc",
    "debian/sie-dns-sensor.postinst",
    "debian/sie-dns-sensor.postrm",
    "debian/sie-dns-sensor.prerm",
    "tests/setup.sh",
    "examples/run-example.sh",
    ".ci/run",
]


def _tracked_copy(destination: str) -> str:
    """The repository's tracked files (what a clean checkout has)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = os.path.join(REPO, name)
        target = os.path.join(destination, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)
    return destination


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="needs shellcheck")
def test_shellcheck_passes_on_every_shell_script():
    result = subprocess.run(["shellcheck", "-s", "sh", *SHELL_SCRIPTS], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.skipif(shutil.which("rpmbuild") is None, reason="needs rpmbuild (Debian's rpm package)")
def test_rpmbuild_builds_the_same_content(tmp_path):
    source = _tracked_copy(str(tmp_path / "src"))
    top = tmp_path / "top"
    result = subprocess.run(
        [
            "rpmbuild",
            "-bb",
            "--define",
            f"_topdir {top}",
            "--define",
            f"_sourcedir {source}",
            os.path.join(source, "rpm", "sie-dns-sensor.spec"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (rpm,) = glob.glob(str(top / "RPMS" / "*" / "*.rpm"))
    listing = subprocess.run(["rpm", "-qpl", rpm], capture_output=True, text=True, check=True).stdout.split()
    for path in (
        "/usr/bin/sie-dns-sensor",
        "/usr/bin/sie-upload",
        "/usr/bin/sie-gen-key",
        "/etc/default/sie-dns-sensor",
        "/etc/rc.d/init.d/sie-dns-sensor",
        "/usr/lib/systemd/system/sie-dns-sensor.service",
        "/usr/lib/systemd/system/sie-upload.service",
        "/usr/lib/sie-dns-sensor/sensor/matcher.py",
        "/usr/lib/sie-dns-sensor/pcapy.cpython-311-x86_64-linux-gnu.so",
    ):
        assert path in listing, path


# ------------------------------------------------------------- the .deb
def _why_not_end_to_end() -> str | None:
    if not (os.environ.get("CI") == "true" or os.environ.get("SIE_PACKAGE_TEST") == "1"):
        return "installs a package: runs in CI or with SIE_PACKAGE_TEST=1"
    for tool in ("dpkg-buildpackage", "lintian", "service", "systemd-analyze"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return netns.available() or sshd_helper.available()


REASON = _why_not_end_to_end()


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    work = tmp_path_factory.mktemp("deb")
    source = _tracked_copy(str(work / "sie-dns-sensor"))
    result = subprocess.run(
        ["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=source, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (path,) = glob.glob(str(work / "sie-dns-sensor_*.deb"))
    return path


def _sh(*argv: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_lintian_reports_no_errors(deb):
    result = _sh("lintian", "--no-tag-display-limit", deb, check=False)
    errors = [line for line in result.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], result.stdout


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_installed_package_runs_as_a_service_end_to_end(deb, tmp_path):
    tag = uuid.uuid4().hex[:5]
    host_if, peer_if, auth_ns = f"vsen{tag}", f"vaut{tag}", f"sieauth{tag}"
    server = None
    responder = None
    try:
        _sh("dpkg", "-i", deb, timeout=300)
        _sh(
            "systemd-analyze",
            "verify",
            "/lib/systemd/system/sie-dns-sensor.service",
            "/lib/systemd/system/sie-upload.service",
        )
        # the wire: the sensor's interface in the root namespace, an authority behind it
        _sh("ip", "netns", "add", auth_ns)
        _sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns", auth_ns)
        _sh("ip", "addr", "add", "192.0.2.53/32", "dev", host_if)
        _sh("ip", "link", "set", host_if, "up")
        _sh("ip", "route", "add", "198.51.100.0/24", "dev", host_if, "src", "192.0.2.53")
        _sh("ip", "-n", auth_ns, "addr", "add", "198.51.100.1/24", "dev", peer_if)
        _sh("ip", "-n", auth_ns, "addr", "add", "2001:db8:1::1/64", "dev", peer_if, "nodad")
        _sh("ip", "-n", auth_ns, "link", "set", peer_if, "up")
        _sh("ip", "-n", auth_ns, "link", "set", "lo", "up")
        _sh("ip", "-n", auth_ns, "route", "add", "192.0.2.53/32", "dev", peer_if)
        for ns_argv in (["ip", "netns", "exec", auth_ns], []):
            dev = peer_if if ns_argv else host_if
            _sh(*ns_argv, "ethtool", "-K", dev, "tx", "off")
        env = dict(os.environ, PYTHONPATH=REPO)
        responder = subprocess.Popen(
            ["ip", "netns", "exec", auth_ns, sys.executable, "-c", RESPONDER], stdout=subprocess.PIPE, env=env
        )
        assert responder.stdout.readline().strip() == b"ready"

        # what the operator does: a key, the collector's host key, the settings
        made = _sh("sie-gen-key")
        assert "ssh-ed25519" in made.stdout
        with open("/var/spool/sie/keys/upload.pub") as handle:
            server = sshd_helper.Sshd(handle.read(), mode="rsync")  # as the SIE collector: forced rrsync
        with open("/var/spool/sie/keys/known_hosts", "a") as handle:
            handle.write(server.known_hosts_line())
        server.start()
        with open("/etc/default/sie-dns-sensor", "a") as handle:
            handle.write(
                f'\ninterface="{host_if}"\nDNSQR_RES_ADDRS="192.0.2.53"\nlogin="{server.user}"\n'
                f'submitserver="127.0.0.1:{server.port}"\ninterval="2"\n'
            )
        _sh("service", "sie-dns-sensor", "start")
        status = _sh("service", "sie-dns-sensor", "status").stdout
        assert "sie-dns-sensor is running" in status and "sie-upload is running" in status
        with open("/run/sie-dns-sensor/sensor.pid") as handle:
            sensor_pid = int(handle.read())
        with open("/run/sie-dns-sensor/upload.pid") as handle:
            upload_pid = int(handle.read())
        for pid in (sensor_pid, upload_pid):
            assert _sh("ps", "-o", "user=", "-p", str(pid)).stdout.strip() == "sie-dns-sensor"
        time.sleep(1)

        subprocess.run([sys.executable, "-c", ASKER, "30", "4"], check=True, env=env, timeout=120)
        arrived = server.path("up", "ch202")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not glob.glob(os.path.join(arrived, "*.nmsg")):
            time.sleep(0.5)
        assert glob.glob(os.path.join(arrived, "*.nmsg")), "no spool file reached the collector"

        _sh("service", "sie-dns-sensor", "stop", timeout=180)
        for pid in (sensor_pid, upload_pid):
            assert not os.path.exists(f"/proc/{pid}"), f"pid {pid} still running"
        assert _sh("pgrep", "-u", "sie-dns-sensor", check=False).stdout == ""
        assert os.listdir("/var/spool/sie/new/ch202") == []  # no partial file
        assert _sh("service", "sie-dns-sensor", "status", check=False).returncode == 3

        records = []
        for path in glob.glob(os.path.join(arrived, "*.nmsg")) + glob.glob("/var/spool/sie/waiting/ch202/*"):
            records += spoolfile.records(path)
        kinds = sorted(r[1] for r in records)
        assert kinds.count(1) == 26 and kinds.count(2) == 3, kinds  # 27 answered, one with RD; 3 dropped
        assert len(records) == 29
    finally:
        if responder is not None:
            responder.kill()
            responder.wait()
        _sh("service", "sie-dns-sensor", "stop", check=False, timeout=180)
        if server is not None:
            server.close()
        _sh("ip", "link", "del", host_if, check=False)
        _sh("ip", "netns", "del", auth_ns, check=False)
        _sh("dpkg", "--purge", "sie-dns-sensor", check=False, timeout=300)
    # purge removes what the package made
    assert _sh("getent", "passwd", "sie-dns-sensor", check=False).returncode != 0
    assert not os.path.exists("/var/spool/sie")
    assert not os.path.exists("/etc/default/sie-dns-sensor")
    assert not os.path.exists("/usr/lib/sie-dns-sensor")
