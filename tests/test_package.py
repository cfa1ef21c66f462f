"""Packaging: the .debs an operator installs, end to end; the rpm; static checks.

The end-to-end test changes the machine (installs and purges the package,
adds a veth to the root namespace), so it runs where CI=true or
SIE_PACKAGE_TEST=1, as root, and is skipped elsewhere. The static checks
(shellcheck, rpmbuild) run wherever their tools are.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid

import pytest

from collector import config as collector_config
from collector import incoming, sensors
from sensor.service import config
from sensor.spool import formats as spoolfile
from sensor.spool import spooldir
from tests import netns
from tests import sshd as sshd_helper
from tests.collectorkit import ROOT_HINTS, resolution, write_spool
from tests.dnstraffic import ASKER, RESPONDER
from tests.polling import wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHELL_SCRIPTS = [
    "initscripts/sie-dns-sensor.init",
    "initscripts/sie_dns_sensor.rc",
    "debian/sie-dns-sensor.postinst",
    "debian/sie-dns-sensor.postrm",
    "debian/sie-dns-sensor.prerm",
    "initscripts/sie-dns-collector.init",
    "debian/sie-dns-collector.postinst",
    "debian/sie-dns-collector.postrm",
    "debian/sie-dns-collector.prerm",
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


COLLECTOR_SCRIPTS = {
    "postinst": "debian/sie-dns-collector.postinst",
    "prerm": "debian/sie-dns-collector.prerm",
    "postrm": "debian/sie-dns-collector.postrm",
}


def _read(name: str) -> str:
    with open(os.path.join(REPO, name), encoding="utf-8") as handle:
        return handle.read()


def test_the_collector_package_scripts_take_their_names_from_the_collector():
    """Folders, the store's file, the key marker, user and home: each defined once, in collector/."""
    scripts = {kind: _read(name) for kind, name in COLLECTOR_SCRIPTS.items()}
    defaults = collector_config.load(os.devnull, environ={})
    named = {kind: set(re.findall(r'\$HOME_DIR/([^/"\s]+)', text)) for kind, text in scripts.items()}
    # the folders are made by the collector's own code, never listed in the script
    assert "incoming.make_folders(config.load().collector_dir)" in scripts["postinst"]
    assert named["postinst"] == {".ssh"}
    # what purge counts and names
    assert named["postrm"] <= {*incoming.FOLDERS, ".ssh", os.path.basename(defaults.store_path)}
    assert {incoming.INCOMING, incoming.WORK} <= named["postrm"]
    assert f"' {sensors.MARKER}'" in scripts["postrm"]
    for kind in ("postinst", "postrm"):
        assert f"HOME_DIR={defaults.collector_dir}\n" in scripts[kind], kind
    assert f"USER_NAME={collector_config.SERVICE_USER}\n" in scripts["postinst"]
    sshd_config = _read("etc/sie-dns-collector.sshd_config")
    assert f"AllowUsers {collector_config.SERVICE_USER}\n" in sshd_config
    assert f"AuthorizedKeysFile {defaults.authorized_keys_path}\n" in sshd_config
    assert f"Port {collector_config.SUBMIT_PORT}\n" in sshd_config


SENSOR_WAITING = spooldir.folder(spooldir.DEFAULT_ROOT, spooldir.WAITING, "ch202")  # the installed sensor's
SENSOR_SCRIPTS = {
    "postinst": "debian/sie-dns-sensor.postinst",
    "prerm": "debian/sie-dns-sensor.prerm",
    "postrm": "debian/sie-dns-sensor.postrm",
    "rpm": "rpm/sie-dns-sensor.spec",
}


def test_the_sensor_package_scripts_take_their_names_from_spooldir():
    """The spool root, its folders, the key and the state files the scripts name: spooldir's, one definition."""
    scripts = {kind: _read(name) for kind, name in SENSOR_SCRIPTS.items()}
    root = spooldir.DEFAULT_ROOT
    keys = f"{spooldir.KEYS}/"
    made = {  # script: (its loop over the folders it makes, how a folder is written there)
        "postinst": (re.search(r'for dir in "\$SPOOL"((?: "\$SPOOL/\w+")*); do', scripts["postinst"]), r"\$SPOOL/"),
        "rpm": (re.search(rf"for dir in {root}((?:[ \\\n]+{root}/\w+)*); do", scripts["rpm"]), f"{root}/"),
    }
    for kind, (found, prefix) in made.items():
        assert found, kind
        assert tuple(re.findall(rf"{prefix}(\w+)", found.group(1))) == spooldir.PACKAGE_FOLDERS, kind
    for kind in ("postinst", "postrm"):
        assert f"\nSPOOL={root}\n" in scripts[kind], kind
    known_hosts = f"{keys}{spooldir.KNOWN_HOSTS}"
    assert scripts["postinst"].count(f'"$SPOOL/{known_hosts}"') == 2
    assert scripts["rpm"].count(f"{root}/{known_hosts}") == 2
    assert f"\nUPLOAD_KEY=$SPOOL/{keys}{spooldir.UPLOAD_KEY}\n" in scripts["postrm"]
    assert f'find "$SPOOL/{spooldir.NEW}" "$SPOOL/{spooldir.WAITING}" -type f' in scripts["postrm"]
    state_files = f"{root}/{spooldir.LOCKS}/{spooldir.locks_name(spooldir.SENSOR, '*', spooldir.STATE)}"
    assert f"for state in {state_files}; do" in scripts["prerm"]
    defaults = config.load(os.devnull, environ={})
    assert (defaults.spooldir, defaults.uploadkey, defaults.knownhosts) == (
        root, f"{root}/{keys}{spooldir.UPLOAD_KEY}", f"{root}/{known_hosts}")


def test_installing_from_source_shows_no_build_deprecation_warning(tmp_path):
    """`pip install .` as an operator runs it (build isolation, setuptools from the index), metadata only."""
    source = _tracked_copy(str(tmp_path / "src"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed", "-v", source],
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = result.stdout + result.stderr
    assert result.returncode == 0, said[-3000:]
    assert "Preparing metadata" in said  # the build backend ran, and -v shows what it printed
    assert not re.search(r"\w*(Deprecation|BuildBackend)Warning|project\.license", said), said[-3000:]


# the spec's own Requires: the distribution's packages (Fedora's names)
RPM_SYSTEM_PACKAGES = {"python3", "libpcap", "rsync", "openssh-clients", "shadow-utils"}


def _system_libraries() -> set[str]:
    """The sonames this machine's dynamic linker knows (what the distribution ships)."""
    listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listing.splitlines()[1:] if line.strip()}


def _rpm_names(rpm: str, tag: str) -> list[str]:
    """One dependency tag's names (REQUIRENAME, PROVIDENAME), without versions."""
    query = ["rpm", "-qp", "--qf", f"[%{{{tag}}}\\n]", rpm]
    return subprocess.run(query, capture_output=True, text=True, check=True).stdout.splitlines()


def _unmet_requirements(rpm: str, listing: list[str]) -> list[str]:
    """What `rpm -qpR` names that neither the package provides nor the system ships.

    A library the package bundles counts as unmet: it is private (nothing
    provides it), so an rpm that requires it cannot be installed.
    """
    provides = _rpm_names(rpm, "PROVIDENAME")
    bundled = {os.path.basename(path) for path in listing if fnmatch.fnmatch(os.path.basename(path), "lib*.so*")}
    system = _system_libraries()
    unmet = []
    for name in _rpm_names(rpm, "REQUIRENAME"):
        soname = re.match(r"([^()\s]+\.so[.\d]*)\(", name)
        if soname:
            met = soname.group(1) in system and soname.group(1) not in bundled
        elif name.startswith("/"):
            met = os.path.exists(name)
        else:
            met = name in provides or name.startswith(("rpmlib(", "rtld(")) or name in RPM_SYSTEM_PACKAGES
        if not met:
            unmet.append(name)
    return unmet


@pytest.mark.skipif(shutil.which("rpmbuild") is None, reason="needs rpmbuild (Debian's rpm package)")
def test_rpmbuild_builds_the_same_content(tmp_path):
    source = _tracked_copy(str(tmp_path / "src"))
    top = tmp_path / "top"
    result = subprocess.run(
        [
            "rpmbuild",
            "-bb",
            "--nodeps",  # BuildRequires name Fedora packages; this rpm database is empty
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
        "/usr/lib/sie-dns-sensor/sensor/matching/matcher.py",
        "/usr/lib/sie-dns-sensor/pcapy.cpython-311-x86_64-linux-gnu.so",
        "/usr/lib/sie-dns-sensor/sensor/matching/__pycache__/matcher.cpython-311.pyc",
        "/usr/share/doc/sie-dns-sensor/README.md.gz",
        "/etc/logrotate.d/sie-dns-sensor",
    ):
        assert path in listing, path
    for module in ("sensor/matching/_udpdns", "sensor/spool/_nmsgpack", "sensor/spool/_cborpack", "collector/_ingest"):
        assert fnmatch.filter(listing, f"/usr/lib/sie-dns-sensor/{module}*.so"), module  # setup.py's C modules
    assert not any("dpkt" in path for path in listing)  # a test dependency only
    assert _unmet_requirements(rpm, listing) == []
    requires = subprocess.run(["rpm", "-qp", "--requires", rpm], capture_output=True, text=True, check=True).stdout
    for needed in ("python3 >= 3.11", "python3 < 3.12", "libpcap"):
        assert needed in requires, requires
    scripts = subprocess.run(["rpm", "-qp", "--scripts", rpm], capture_output=True, text=True, check=True).stdout
    assert "%systemd" not in scripts and "systemctl" in scripts and "try-restart" in scripts


# ------------------------------------------------------------- the .deb
def _why_not_end_to_end() -> str | None:
    if not (os.environ.get("CI") == "true" or os.environ.get("SIE_PACKAGE_TEST") == "1"):
        return "installs a package: runs in CI or with SIE_PACKAGE_TEST=1"
    for tool in ("dpkg-buildpackage", "lintian", "service", "systemd-analyze"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return netns.available() or sshd_helper.available()


REASON = _why_not_end_to_end()


def _build_deb(work) -> str:
    source = _tracked_copy(str(work / "sie-dns-sensor"))
    result = subprocess.run(
        ["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=source, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (path,) = glob.glob(str(work / "sie-dns-sensor_*.deb"))
    return path


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    return _build_deb(tmp_path_factory.mktemp("deb"))


@pytest.fixture(scope="module")
def collector_deb(deb):
    """Built with the sensor's, from the same source package."""
    (path,) = glob.glob(os.path.join(os.path.dirname(deb), "sie-dns-collector_*_all.deb"))
    return path


def _libraries(deb_path: str) -> list[str]:
    """The bundled distributions and versions (their .dist-info folders)."""
    listing = subprocess.run(["dpkg-deb", "-c", deb_path], capture_output=True, text=True, check=True).stdout
    return sorted({line.split("/usr/lib/sie-dns-sensor/")[1].split("/")[0]
                   for line in listing.splitlines() if ".dist-info/" in line})


def _sh(*argv: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


# each deliberate; README ("Packages") lists them, with the reason
LINTIAN_WARNINGS = {
    "sie-dns-sensor": {
        "init.d-script-does-not-source-init-functions",
        "systemd-service-file-refers-to-unusual-wantedby-target",
    },
    "sie-dns-collector": {"init.d-script-does-not-source-init-functions"},
}


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_lintian_reports_no_errors_and_only_the_deliberate_warnings(deb, collector_deb):
    result = _sh("lintian", "--no-tag-display-limit", deb, collector_deb, check=False)
    errors = [line for line in result.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], result.stdout
    for package, expected in LINTIAN_WARNINGS.items():
        warnings = {line.split()[2] for line in result.stdout.splitlines() if line.startswith(f"W: {package}: ")}
        assert warnings == expected, result.stdout


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_two_builds_carry_the_same_libraries_at_the_same_versions(deb, tmp_path):
    """Built from the lock file: nothing is resolved at build time."""
    first = _libraries(deb)
    assert any(name.startswith("paramiko-") for name in first) and any(n.startswith("dnspython-") for n in first)
    assert not any(name.startswith("dpkt-") for name in first)  # a test dependency only
    assert _libraries(_build_deb(tmp_path)) == first


CONFIG = "/etc/default/sie-dns-sensor"
LOG = "/var/log/sie-dns-sensor/sie-dns-sensor.log"
ARRIVED_GLOB = "[!.]*"  # finished spool files at the collector (not the .part temporaries)


class Wire:
    """The sensor's interface in the root namespace, an authority behind it."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:5]
        self.host_if, self.peer_if, self.ns = f"vsen{tag}", f"vaut{tag}", f"sieauth{tag}"
        self.responder: subprocess.Popen | None = None
        self.env = dict(os.environ, PYTHONPATH=REPO)
        _sh("ip", "netns", "add", self.ns)

    def up(self) -> None:
        """Make (or make again) the link, its addresses and the authority."""
        _sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if, "netns", self.ns)
        _sh("ip", "addr", "add", "192.0.2.53/32", "dev", self.host_if)
        _sh("ip", "link", "set", self.host_if, "up")
        _sh("ip", "route", "add", "198.51.100.0/24", "dev", self.host_if, "src", "192.0.2.53")
        _sh("ip", "-n", self.ns, "addr", "add", "198.51.100.1/24", "dev", self.peer_if)
        _sh("ip", "-n", self.ns, "addr", "add", "2001:db8:1::1/64", "dev", self.peer_if, "nodad")
        _sh("ip", "-n", self.ns, "link", "set", self.peer_if, "up")
        _sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        _sh("ip", "-n", self.ns, "route", "add", "192.0.2.53/32", "dev", self.peer_if)
        _sh("ip", "netns", "exec", self.ns, "ethtool", "-K", self.peer_if, "tx", "off")
        _sh("ethtool", "-K", self.host_if, "tx", "off")
        self.stop_responder()
        self.responder = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-c", RESPONDER], stdout=subprocess.PIPE, env=self.env
        )
        assert self.responder.stdout.readline().strip() == b"ready"

    def ask(self, count: int) -> None:
        """`count` IPv4 queries from the resolver's address (see dnstraffic.ASKER)."""
        subprocess.run([sys.executable, "-c", ASKER, str(count), "4"], check=True, env=self.env, timeout=120)

    def cut(self) -> None:
        _sh("ip", "link", "del", self.host_if)

    def stop_responder(self) -> None:
        if self.responder is not None:
            self.responder.kill()
            self.responder.wait()
            self.responder = None

    def close(self) -> None:
        self.stop_responder()
        _sh("ip", "link", "del", self.host_if, check=False)
        _sh("ip", "netns", "del", self.ns, check=False)


def _pids() -> tuple[int, int]:
    found = []
    for name in ("sensor", "upload"):
        with open(f"/run/sie-dns-sensor/{name}.pid") as handle:
            found.append(int(handle.read()))
    return found[0], found[1]


def _status() -> tuple[int, dict]:
    result = _sh("sie-dns-sensor", "status", "--json", check=False)
    return result.returncode, json.loads(result.stdout)


def _set(name: str, value: str, path: str = CONFIG) -> None:
    """Change one variable of an installed configuration file (the sensor's unless `path`)."""
    _replace_line(path, f"{name}=", f'{name}="{value}"')


def _replace_line(path: str, start: str, line: str) -> None:
    """`line` instead of the lines of `path` that begin with `start` (at the end)."""
    with open(path) as handle:
        lines = [kept for kept in handle.read().splitlines() if not kept.startswith(start)]
    with open(path, "w") as handle:
        handle.write("\n".join([*lines, line]) + "\n")


def _daemons_left() -> str:
    """The service user's processes running our programs (after a short grace)."""
    left = ""
    for _ in range(20):
        left = _sh("ps", "-o", "pid=,stat=,cmd=", "-u", "sie-dns-sensor", check=False).stdout
        if not any(program in left for program in ("sie-dns-sensor", "sie-upload")):
            return ""
        time.sleep(0.25)
    return left


@contextlib.contextmanager
def _starts_forbidden():
    """A policy-rc.d that refuses every start, as in containers and image builds."""
    path = "/usr/sbin/policy-rc.d"
    kept = f"{path}.sie-test-kept"
    if os.path.exists(path):
        os.rename(path, kept)
    try:
        with open(path, "w") as handle:
            handle.write("#!/bin/sh\nexit 101\n")
        os.chmod(path, 0o755)
        yield
    finally:
        os.unlink(path)
        if os.path.exists(kept):
            os.rename(kept, path)


def _records(paths) -> list[dict]:
    records = []
    for path in paths:
        records += spoolfile.records(path)
    return records


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_installed_package_runs_as_a_service_end_to_end(deb, tmp_path):
    """Install, configure, run; every mistake an operator makes; purge while running."""
    wire = None
    server = None
    try:
        _sh("dpkg", "-i", deb, timeout=300)
        _sh(
            "systemd-analyze",
            "verify",
            "/lib/systemd/system/sie-dns-sensor.service",
            "/lib/systemd/system/sie-upload.service",
        )
        assert os.path.exists("/etc/logrotate.d/sie-dns-sensor")
        assert os.path.exists("/usr/lib/sie-dns-sensor/sensor/__pycache__")  # py3compile ran
        # unconfigured: the start refuses with the reasons, nothing keeps running
        refused = _sh("service", "sie-dns-sensor", "start", check=False)
        assert refused.returncode != 0 and "DNSQR_RES_ADDRS or DNSQR_AUTH_ADDRS" in refused.stderr
        assert _daemons_left() == ""

        wire = Wire()
        wire.up()
        # what the operator does: a key, the collector's host key, the settings
        made = _sh("sie-gen-key")
        assert "ssh-ed25519" in made.stdout
        with open("/var/spool/sie/keys/upload.pub") as handle:
            server = sshd_helper.Sshd(handle.read(), mode="rsync")  # as the SIE collector: forced rrsync
        with open("/var/spool/sie/keys/known_hosts", "a") as handle:
            handle.write(server.known_hosts_line())
        server.start()
        for name, value in (("interface", wire.host_if), ("DNSQR_RES_ADDRS", "192.0.2.53"), ("login", server.user),
                            ("submitserver", f"127.0.0.1:{server.port}"), ("interval", "2")):
            _set(name, value)
        _sh("service", "sie-dns-sensor", "start")
        status = _sh("service", "sie-dns-sensor", "status").stdout
        assert "sie-dns-sensor is running" in status and "sie-upload is running" in status
        sensor_pid, upload_pid = _pids()
        for pid in (sensor_pid, upload_pid):
            assert _sh("ps", "-o", "user=", "-p", str(pid)).stdout.strip() == "sie-dns-sensor"
        time.sleep(1)

        wire.ask(30)
        arrived = server.path("up", "ch202")
        wait_for(lambda: glob.glob(os.path.join(arrived, ARRIVED_GLOB)), 60, "a spool file at the collector")
        _code, found = wait_for(lambda: (s := _status())[0] == 0 and s[1]["uploader"].get("last_success")
                                and (s[1]["sensor"]["records_last_interval"] or s[1]["sensor"]["records"]) and s, 30,
                                "status ok, with the upload and the records (state files are rewritten every 5 s)")
        assert found["sensor"]["capturing"]

        if not os.path.exists("/dev/log"):  # no syslog daemon here: the log file has it all
            with open(LOG) as handle:
                logged = handle.read()
            assert "capturing from interface" in logged and "uploaded " in logged

        # a typo: restart and reload refuse, say why, and leave both daemons as they are
        _set("interval", "sixty")
        for action in ("restart", "reload"):
            result = _sh("service", "sie-dns-sensor", action, check=False)
            assert result.returncode != 0, action
            assert "interval: 'sixty' is not a whole number" in result.stdout + result.stderr, action
            assert _pids() == (sensor_pid, upload_pid)
            for pid in (sensor_pid, upload_pid):
                assert os.path.exists(f"/proc/{pid}"), action
        _set("interval", "2")

        # an upload failure, induced by a reload with a wrong login: status says so
        _set("login", "nobody-registered")
        _sh("service", "sie-dns-sensor", "reload")
        wire.ask(10)
        _code, found = wait_for(lambda: (s := _status())[0] == 1 and s, 60, "status reports the stalled upload")
        assert any("no upload succeeded" in problem for problem in found["problems"]), found
        assert found["uploader"]["last_error"] and found["backlog"]["files"] > 0
        # fixed by a reload, not a restart: the files go
        _set("login", server.user)
        _sh("service", "sie-dns-sensor", "reload")
        wait_for(lambda: _status()[0] == 0, 60, "status ok again")
        assert _pids() == (sensor_pid, upload_pid)

        # the interface goes away and comes back under the running sensor
        wire.ask(10)
        time.sleep(3)
        wire.cut()
        wait_for(lambda: not _status()[1]["sensor"].get("capturing", True), 30, "status: capture lost")
        wire.up()
        wait_for(lambda: _status()[1]["sensor"].get("capturing"), 60, "status: capturing again")
        time.sleep(1)
        wire.ask(10)
        time.sleep(3)
        assert _pids() == (sensor_pid, upload_pid)

        _sh("service", "sie-dns-sensor", "stop", timeout=180)
        for pid in (sensor_pid, upload_pid):
            assert not os.path.exists(f"/proc/{pid}"), f"pid {pid} still running"
        assert _daemons_left() == ""
        assert os.listdir(spooldir.folder(spooldir.DEFAULT_ROOT, spooldir.NEW, "ch202")) == []  # no partial file
        assert _sh("service", "sie-dns-sensor", "status", check=False).returncode == 3
        assert _sh("sie-dns-sensor", "status", check=False).returncode == 3

        files = glob.glob(os.path.join(arrived, ARRIVED_GLOB)) + glob.glob(os.path.join(SENSOR_WAITING, "*"))
        names = sorted(os.path.basename(path) for path in files)
        assert len(names) == len(set(names))
        records = _records(files)
        kinds = sorted(r[1] for r in records)
        # 30 + 4 runs of 10 queries: every tenth is never answered, one per run has RD set (filtered)
        assert kinds.count(1) == 26 + 3 * 8 and kinds.count(2) == 3 + 3, kinds
        if not os.path.exists("/dev/log"):
            with open(LOG) as handle:
                logged = handle.read()
            assert "capture lost" in logged and "again after" in logged
            assert "Traceback" not in logged

        # a reinstall where starts are forbidden: both stop for it, and the package says they stay down
        _sh("service", "sie-dns-sensor", "start")
        sensor_pid, upload_pid = _pids()
        with _starts_forbidden():
            reinstalled = _sh("dpkg", "-i", deb, timeout=300)
        assert "sie-dns-sensor: not started again after the upgrade" in reinstalled.stderr, reinstalled.stderr
        for pid in (sensor_pid, upload_pid):
            assert not os.path.exists(f"/proc/{pid}"), f"pid {pid} still running after the reinstall"
        assert _daemons_left() == ""

        # purge while the service runs, with files the collector refused: both stop, and it says what goes
        _set("login", "nobody-registered")
        _sh("service", "sie-dns-sensor", "start")
        sensor_pid, upload_pid = _pids()
        time.sleep(1)
        wire.ask(10)
        unsent = wait_for(lambda: len(glob.glob(os.path.join(SENSOR_WAITING, "*"))), 60, "a file waiting for upload")
        purged = _sh("dpkg", "--purge", "sie-dns-sensor", timeout=300)
        assert "error" not in purged.stderr.lower() and "warning" not in purged.stderr.lower(), purged.stderr
        said = re.search(r"purge deletes /var/spool/sie: (\d+) spool file\(s\) not yet uploaded and the upload key",
                         purged.stderr)
        assert said and int(said.group(1)) >= unsent, purged.stderr
        for pid in (sensor_pid, upload_pid):
            assert not os.path.exists(f"/proc/{pid}"), f"pid {pid} still running after purge"
        assert _daemons_left() == ""
    finally:
        _sh("service", "sie-dns-sensor", "stop", check=False, timeout=180)
        if server is not None:
            server.close()
        if wire is not None:
            wire.close()
        _sh("dpkg", "--purge", "sie-dns-sensor", check=False, timeout=300)
    # purge removes what the package made, except the system user (Debian policy)
    assert _sh("getent", "passwd", "sie-dns-sensor", check=False).returncode == 0
    assert not os.path.exists("/var/spool/sie")
    assert not os.path.exists("/var/log/sie-dns-sensor")
    assert not os.path.exists(CONFIG)
    assert not os.path.exists("/usr/lib/sie-dns-sensor")
    # the test's own cleanup: other tests run tools as root that would become this user
    _sh("userdel", "sie-dns-sensor", check=False)
    _sh("groupdel", "sie-dns-sensor", check=False)


# ---------------------------------------------------------- the collector's .deb
COLLECTOR_CONFIG = "/etc/default/sie-dns-collector"
COLLECTOR_SSHD_CONFIG = "/etc/sie-dns-collector/sshd_config"
COLLECTOR_HOME = "/var/lib/sie-dns-collector"
COLLECTOR_LOG = "/var/log/sie-dns-collector/sie-dns-collector.log"
COLLECTOR_USER = collector_config.SERVICE_USER
# the lab's root server (tests.collectorkit), whose referrals the records start from
LAB_HINTS = "/etc/sie-dns-collector/lab-root.hints"


def _collector_pids() -> tuple[int, int]:
    """(ingester, sshd), from the pidfiles the SysV script and sshd_config name."""
    found = []
    for path in ("/run/sie-dns-collector/ingest.pid", "/run/sie-dns-collector-sshd.pid"):
        with open(path) as handle:
            found.append(int(handle.read()))
    return found[0], found[1]


def _api_pid() -> int:
    """The query server's pid, from the pidfile the SysV script gives it."""
    with open("/run/sie-dns-collector/api.pid") as handle:
        return int(handle.read())


def _api_get(port: int, path: str, key: str = "") -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a GET to the installed query server."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={"X-API-Key": key} if key else {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def _collector_status() -> tuple[int, dict]:
    result = _sh("sie-dns-collector", "status", "--json", check=False)
    return result.returncode, json.loads(result.stdout)


def _owner(path: str) -> str:
    return pwd.getpwuid(os.stat(path).st_uid).pw_name


def _register_sensor(port: int) -> None:
    """What the operators do: the sensor's key made and registered at the
    collector, the collector's host keys and address given to the sensor."""
    _sh("sie-gen-key")
    added = _sh("sie-dns-collector", "add-sensor", "sensor1", "/var/spool/sie/keys/upload.pub", "--from", "127.0.0.1",
                "--host", "127.0.0.1", "--port", str(port)).stdout
    authorized_keys = os.path.join(COLLECTOR_HOME, ".ssh", "authorized_keys")
    with open(authorized_keys) as handle:
        (line,) = handle.read().splitlines()
    assert line.startswith('restrict,from="127.0.0.1",command="/usr/bin/rrsync -wo -munge '
                           f'{COLLECTOR_HOME}/incoming/sensor1" ssh-ed25519 '), line
    assert line.endswith(" sie-sensor=sensor1"), line
    assert _owner(authorized_keys) == COLLECTOR_USER and stat.S_IMODE(os.stat(authorized_keys).st_mode) == 0o600
    known = [said.strip() for said in added.splitlines() if said.strip().startswith(f"[127.0.0.1]:{port} ")]
    assert known, added
    with open("/var/spool/sie/keys/known_hosts", "a") as handle:
        handle.write("\n".join(known) + "\n")
    _set("login", COLLECTOR_USER)
    _set("submitserver", f"127.0.0.1:{port}")


def _upload_a_resolution(now: int) -> None:
    """One spool file in the sensor's waiting/, sent by the sensor package's sie-upload."""
    sensor_user = pwd.getpwnam("sie-dns-sensor")
    folder = SENSOR_WAITING
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"sensor1.{now}.000000.nmsg")
    write_spool(path, resolution("www.example.test", "example.test", "203.0.113.80", now))
    for made in (folder, path):
        os.chown(made, sensor_user.pw_uid, sensor_user.pw_gid)
    _sh("sie-upload", "--once", timeout=120)


@pytest.fixture
def users_removed_afterwards():
    """Whatever happens: other tests run tools as root that would become these users."""
    yield
    for name in (COLLECTOR_USER, "sie-dns-sensor"):
        _sh("userdel", name, check=False)
        _sh("groupdel", name, check=False)


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_installed_collector_receives_ingests_and_answers_as_a_service(deb, collector_deb, users_removed_afterwards):
    """Both packages; the collector's SysV service receives a sensor's upload
    through its own sshd (the shipped sshd_config, add-sensor's key line),
    ingests it and answers; a bad file is refused; purge while it runs."""
    try:
        installed = _sh("dpkg", "-i", deb, collector_deb, timeout=300)
        assert "sie-dns-collector:" not in installed.stderr, installed.stderr  # check-config and the folders
        with open("/lib/systemd/system/ssh.service.d/sie-dns-collector.conf") as handle:
            assert "RuntimeDirectoryPreserve=yes" in handle.read()  # /run/sshd outlives ssh.service's stop
        _sh("systemd-analyze", "verify", "/lib/systemd/system/sie-dns-collector.service",
            "/lib/systemd/system/sie-dns-collector-sshd.service", "/lib/systemd/system/sie-dns-collector-api.service")
        conffiles = _sh("dpkg-query", "-W", "-f=${Conffiles}", "sie-dns-collector").stdout
        for path in (COLLECTOR_CONFIG, COLLECTOR_SSHD_CONFIG, "/etc/init.d/sie-dns-collector",
                     "/etc/logrotate.d/sie-dns-collector"):
            assert f" {path} " in conffiles, conffiles
        user = pwd.getpwnam(COLLECTOR_USER)
        assert (user.pw_dir, user.pw_shell) == (COLLECTOR_HOME, "/bin/sh")  # sshd runs the forced rrsync with it
        for name in (*incoming.FOLDERS, ".ssh"):
            assert _owner(os.path.join(COLLECTOR_HOME, name)) == COLLECTOR_USER, name
        assert stat.S_IMODE(os.stat(os.path.join(COLLECTOR_HOME, ".ssh")).st_mode) == 0o700
        assert _sh("service", "sie-dns-collector", "status", check=False).returncode == 3  # installed, not started

        # the operator's settings: the lab's root, quick batches, a free port for the sensors
        with open(LAB_HINTS, "w") as handle:
            handle.write(ROOT_HINTS)
        _set("root_hints", LAB_HINTS, path=COLLECTOR_CONFIG)
        _set("dedup_window", "1", path=COLLECTOR_CONFIG)
        api_port = sshd_helper.free_port()
        _set("api_listen", f"127.0.0.1:{api_port}", path=COLLECTOR_CONFIG)
        port = sshd_helper.free_port()
        _replace_line(COLLECTOR_SSHD_CONFIG, "Port ", f"Port {port}")
        _register_sensor(port)

        _sh("service", "sie-dns-collector", "start")
        status = _sh("service", "sie-dns-collector", "status").stdout
        assert "sie-dns-collector is running" in status and "sie-dns-collector sshd is running" in status, status
        assert "sie-dns-collector api is running" in status, status
        ingest_pid, sshd_pid = _collector_pids()
        api_pid = _api_pid()
        for pid in (ingest_pid, api_pid):
            assert _sh("ps", "-o", "user=", "-p", str(pid)).stdout.strip() == COLLECTOR_USER
        assert _api_get(api_port, "/dnsdb/v2/ping")[2] == b'{"ping":"ok"}\n'
        code, headers, html = _api_get(api_port, "/")  # the search page's files are in the installed package
        assert code == 200 and b'src="search.js"' in html and "content-security-policy" in headers
        assert _api_get(api_port, "/search.js")[0] == 200
        wait_for(lambda: _collector_status()[0] == 0, 30, "status: the ingester runs")

        now = int(time.time())
        _upload_a_resolution(now)
        _code, found = wait_for(lambda: (s := _collector_status())[1]["ingested_files"] and s, 60,
                                "the upload ingested")
        assert found["problems"] == [] and found["damaged_files"] == 0 and found["backlog_files"] == 0, found
        assert found["errors"] == 0 and found["records_per_second"] is not None, found
        answer = _sh("sie-dns-collector", "query", "rrset", "www.example.test", "--json").stdout
        assert "203.0.113.80" in answer, answer
        key = _sh("sie-dns-collector", "add-key", "analyst").stdout.strip()
        code, _headers, answer = _api_get(api_port, "/dnsdb/v2/lookup/rrset/name/www.example.test", key)
        assert code == 200 and b'"203.0.113.80"' in answer and answer.endswith(b'{"cond":"succeeded"}\n'), answer
        if not os.path.exists("/dev/log"):  # no syslog daemon here: the collector's own log file has it
            with open(COLLECTOR_LOG) as handle:
                logged = handle.read()
            assert f"ingesting {COLLECTOR_HOME}/incoming" in logged and "Traceback" not in logged, logged
            assert _owner(COLLECTOR_LOG) == COLLECTOR_USER

        # an upgrade while the ingester is dead and the sensors' door and the query server are up:
        # status says so, and the upgrade means to start all three again (here starts are
        # forbidden, as in containers: it says they stay down; before, it said nothing)
        os.kill(ingest_pid, signal.SIGKILL)
        wait_for(lambda: not os.path.exists(f"/proc/{ingest_pid}"), 30, "the ingester gone")
        dead = _sh("service", "sie-dns-collector", "status", check=False)
        assert dead.returncode == 1 and f"sie-dns-collector sshd is running (pid {sshd_pid})" in dead.stdout, dead
        with _starts_forbidden():
            upgraded = _sh("dpkg", "-i", collector_deb, timeout=300)
        assert "sie-dns-collector: not started again after the upgrade" in upgraded.stderr, upgraded.stderr
        assert "cannot open" not in upgraded.stderr, upgraded.stderr  # the dead ingester's pidfile, read quietly
        for pid in (sshd_pid, api_pid):
            assert not os.path.exists(f"/proc/{pid}"), f"pid {pid} still running after the upgrade"
        _sh("service", "sie-dns-collector", "start")
        ingest_pid, sshd_pid = _collector_pids()
        api_pid = _api_pid()

        # a typo: restart refuses, says why, and leaves both daemons as they are
        _set("dedup_window", "sixty", path=COLLECTOR_CONFIG)
        refused = _sh("service", "sie-dns-collector", "restart", check=False)
        assert refused.returncode != 0
        assert "dedup_window: 'sixty' is not a whole number" in refused.stdout + refused.stderr, refused
        assert _collector_pids() == (ingest_pid, sshd_pid) and _api_pid() == api_pid
        assert all(os.path.exists(f"/proc/{pid}") for pid in (ingest_pid, sshd_pid, api_pid))
        _set("dedup_window", "1", path=COLLECTOR_CONFIG)

        _sh("service", "sie-dns-collector", "stop", timeout=180)
        for pid in (ingest_pid, sshd_pid, api_pid):
            assert not os.path.exists(f"/proc/{pid}"), f"pid {pid} still running"
        assert _sh("service", "sie-dns-collector", "status", check=False).returncode == 3

        # purge while the service runs: both stop, and it says what goes
        _sh("service", "sie-dns-collector", "start")
        ingest_pid, sshd_pid = _collector_pids()
        api_pid = _api_pid()
        os.unlink(LAB_HINTS)  # read at the first start; not the package's, so dpkg would keep its folder
        purged = _sh("dpkg", "--purge", "sie-dns-collector", timeout=300)
        assert "error" not in purged.stderr.lower() and "warning" not in purged.stderr.lower(), purged.stderr
        assert re.search(rf"purge deletes {COLLECTOR_HOME}: the passive DNS database \(\S+\), 0 upload\(s\) not yet "
                         r"ingested, the keys of 1 registered sensor\(s\)", purged.stderr), purged.stderr
        for pid in (ingest_pid, sshd_pid, api_pid):
            assert not os.path.exists(f"/proc/{pid}"), f"pid {pid} still running after purge"
    finally:
        _sh("service", "sie-dns-collector", "stop", check=False, timeout=180)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(LAB_HINTS)
        _sh("dpkg", "--purge", "sie-dns-collector", "sie-dns-sensor", check=False, timeout=300)
    # purge removes what the package made, except the system user (Debian policy)
    assert _sh("getent", "passwd", COLLECTOR_USER, check=False).returncode == 0
    for path in (COLLECTOR_HOME, "/var/log/sie-dns-collector", "/run/sie-dns-collector", COLLECTOR_CONFIG,
                 "/etc/sie-dns-collector"):
        assert not os.path.exists(path), path
