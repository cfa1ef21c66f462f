"""submitserver as an SRV domain, resolved through a real nsd.

Two namespaces: the sensor's, whose resolv.conf (`/etc/netns/<ns>/`, which
`ip netns exec` mounts over /etc/resolv.conf) names the authority; and the
collector's, running nsd for `collector.test` and an sshd forced to rrsync
on a port that is not 49222. The SRV records list, first, a target that
refuses connections, then the real one: the uploader must follow RFC 2782
order and move on. An SRV answer is hostile too (issue 20 item 6): 2,000
targets, or targets named like options or with spaces and control bytes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests import netns
from tests import sshd as sshd_helper
from tests.uploadkit import CHANNEL, REPO, contents, same, spool_files, write_config
from uploader import keys

SENSOR = "198.51.100.10"
AUTHORITY = "198.51.100.53"
COLLECTOR = "198.51.100.22"
NSD = "/usr/sbin/nsd"

REASON = netns.available() or sshd_helper.available()
if REASON is None and not (os.path.exists(NSD) and os.path.exists(sshd_helper.RRSYNC)):
    REASON = "needs nsd and rsync (rrsync)"
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")  # marks: conftest.MARKS

HEAD = """$TTL 300
@ IN SOA ns hostmaster 1 3600 600 86400 300
@ IN NS ns
ns IN A {authority}
refusing IN A {collector}
upload IN A {collector}
"""
ORDERED = """_rsync._tcp IN SRV 5 0 1 refusing.collector.test.
_rsync._tcp IN SRV 10 0 {port} upload.collector.test.
"""
# zone file escapes: \032 a space, \007 a bell; dnspython gives them back escaped the same
# way (and nsd gives names back in lower case)
HOSTILE = r"""_rsync._tcp IN SRV 1 0 22 -oProxyCommand=touch\032pwned.collector.test.
_rsync._tcp IN SRV 2 0 22 two\032words.collector.test.
_rsync._tcp IN SRV 3 0 22 bell\007.collector.test.
_rsync._tcp IN SRV 4 0 0 upload.collector.test.
_rsync._tcp IN SRV 10 0 {port} upload.collector.test.
"""
# 2,000 collectors that refuse (each one a try of up to 20 s), in a zone with a
# one-letter name: SRV targets are never compressed, and the answer must fit 64 KiB
MANY = 2000
CROWD = "r IN A {collector}\n" + "".join(f"_sftp-ssh._tcp IN SRV 5 0 {1000 + n} r\n" for n in range(MANY))


def _nsd(lab: netns.Lab, work: str, records: str, domain: str = "collector.test") -> None:
    zone = os.path.join(work, f"{domain}.zone")
    with open(zone, "w") as handle:
        handle.write(HEAD.format(authority=AUTHORITY, collector=COLLECTOR) + records)
    conf = os.path.join(work, "nsd.conf")
    with open(conf, "w") as handle:
        handle.write(
            f'server:\n  ip-address: {AUTHORITY}\n  port: 53\n  username: ""\n  zonesdir: "{work}"\n'
            f'  pidfile: "{work}/nsd.pid"\n  database: ""\n  xfrdfile: "{work}/nsd.xfrd"\n'
            f'  zonelistfile: "{work}/nsd.zonelist"\n  logfile: "{work}/nsd.log"\n  server-count: 1\n'
            "  reuseport: no\nremote-control:\n  control-enable: no\n"
            f'zone:\n  name: "{domain}."\n  zonefile: "{zone}"\n'
        )
    lab.popen(lab.b, [NSD, "-d", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        probe = lab.run(lab.a, ["dig", "+short", "+time=1", "+tries=1", f"@{AUTHORITY}", f"upload.{domain}"],
                        capture_output=True, text=True)
        if probe.stdout.strip() == COLLECTOR:
            return
        time.sleep(0.2)
    raise AssertionError("nsd did not answer")


@contextlib.contextmanager
def _srv_lab(tmp_path, records: str, method: str, domain: str = "collector.test") -> Iterator[tuple]:
    """(run the uploader in the sensor's namespace, sshd, spool): nsd serves
    `domain` with `records` ({port}: the sshd's, {collector}: its address), the
    sshd serves `method`; `submitserver` is `domain`."""
    spool = tmp_path / "spool"
    spool.mkdir()
    keys.generate(str(spool / "keys" / "upload"), comment="sensor1.example")
    server = sshd_helper.Sshd((spool / "keys" / "upload.pub").read_text(), mode=method, address=COLLECTOR)
    resolv_dir = None
    with netns.Lab([f"{SENSOR}/24"], [f"{AUTHORITY}/24", f"{COLLECTOR}/24"]) as lab:
        try:
            resolv_dir = f"/etc/netns/{lab.a}"
            os.makedirs(resolv_dir)
            with open(os.path.join(resolv_dir, "resolv.conf"), "w") as handle:
                handle.write(f"nameserver {AUTHORITY}\n")
            server.start(wrap=["ip", "netns", "exec", lab.b])
            _nsd(lab, str(tmp_path), records.format(port=server.port, collector=COLLECTOR), domain)
            kind, blob = server.known_hosts_line().split()[1:3]
            (spool / "keys" / "known_hosts").write_text(f"[upload.collector.test]:{server.port} {kind} {blob}\n")
            config = write_config(tmp_path / "conf", spool, login=server.user, submitserver=domain,
                                  upload_method=method)
            code = "import sys; from uploader.cli import upload_main; sys.argv[0] = 'sie-upload'; upload_main()"

            def upload() -> subprocess.CompletedProcess:
                return lab.run(lab.a, [sys.executable, "-c", code, "-c", config, "--once", *netns.STAY_AS_IS],
                               capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=REPO))

            yield upload, server, spool
        finally:
            server.close()
            if resolv_dir:
                shutil.rmtree(resolv_dir, ignore_errors=True)


def test_submitserver_srv_domain_leads_to_the_collector_on_its_own_port(tmp_path):
    with _srv_lab(tmp_path, ORDERED, "rsync") as (upload, server, spool):
        paths = spool_files(spool, [4000, 9000])
        sent = contents(paths)
        result = upload()
        assert result.returncode == 0, result.stderr
        assert "refusing.collector.test port 1" in result.stderr  # tried first: priority 5
        assert f"to upload.collector.test:{server.port}/up/{CHANNEL}" in result.stderr
        assert same(sent, server)


def test_srv_targets_that_are_not_host_names_are_skipped_and_never_reach_rsync(tmp_path):
    with _srv_lab(tmp_path, HOSTILE, "rsync") as (upload, server, spool):
        sent = contents(spool_files(spool, [4000]))
        result = upload()
        assert result.returncode == 0, result.stderr
        assert same(sent, server)
        err = result.stderr
        domain = "_rsync._tcp.collector.test."
        skipped = [line for line in err.splitlines() if f"{domain}: skipped target" in line]
        for start, end in (("'-oproxycommand=touch", "032pwned.collector.test'"),
                           ("'two", "032words.collector.test'"), ("'bell", "007.collector.test'")):
            assert any(start in line and f"{end} port 22 (not a host name)" in line for line in skipped), err
        assert f"{domain}: skipped target 'upload.collector.test' port 0 (port 0)" in err
        assert "upload failed" not in err  # none of them was tried
        assert err.count("uploaded ") == 1


def test_an_srv_answer_of_2000_collectors_is_cut_to_the_first_16(tmp_path):
    with _srv_lab(tmp_path, CROWD, "sftp", domain="c") as (upload, _, spool):
        paths = spool_files(spool, [1000])
        result = upload()
        assert result.returncode == 1
        err = result.stderr
        assert f"_sftp-ssh._tcp.c. names {MANY} collectors; trying the first 16" in err, err[-2000:]
        assert err.count("upload failed: cannot connect to r.c port ") == 16, err[-2000:]
        assert "trying the next of 16" in err
        assert os.path.exists(paths[0])
