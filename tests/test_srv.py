"""submitserver as an SRV domain, resolved through a real nsd.

Two namespaces: the sensor's, whose resolv.conf (`/etc/netns/<ns>/`, which
`ip netns exec` mounts over /etc/resolv.conf) names the authority; and the
collector's, running nsd for `collector.test` and an sshd forced to rrsync
on a port that is not 49222. The SRV records list, first, a target that
refuses connections, then the real one: the uploader must follow RFC 2782
order and move on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

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
pytestmark = [pytest.mark.network, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

ZONE = """$TTL 300
@ IN SOA ns.collector.test. hostmaster.collector.test. 1 3600 600 86400 300
@ IN NS ns.collector.test.
ns IN A {authority}
_rsync._tcp IN SRV 5 0 1 refusing.collector.test.
_rsync._tcp IN SRV 10 0 {port} upload.collector.test.
refusing IN A {collector}
upload IN A {collector}
"""


def _nsd(lab: netns.Lab, work: str, port: int) -> None:
    zone = os.path.join(work, "collector.test.zone")
    with open(zone, "w") as handle:
        handle.write(ZONE.format(authority=AUTHORITY, collector=COLLECTOR, port=port))
    conf = os.path.join(work, "nsd.conf")
    with open(conf, "w") as handle:
        handle.write(
            f'server:\n  ip-address: {AUTHORITY}\n  port: 53\n  username: ""\n  zonesdir: "{work}"\n'
            f'  pidfile: "{work}/nsd.pid"\n  database: ""\n  xfrdfile: "{work}/nsd.xfrd"\n'
            f'  zonelistfile: "{work}/nsd.zonelist"\n  logfile: "{work}/nsd.log"\n  server-count: 1\n'
            "  reuseport: no\nremote-control:\n  control-enable: no\n"
            f'zone:\n  name: "collector.test."\n  zonefile: "{zone}"\n'
        )
    lab.popen(lab.b, [NSD, "-d", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        probe = lab.run(lab.a, ["dig", "+short", "+time=1", "+tries=1", f"@{AUTHORITY}", "upload.collector.test"],
                        capture_output=True, text=True)
        if probe.stdout.strip() == COLLECTOR:
            return
        time.sleep(0.2)
    raise AssertionError("nsd did not answer")


def test_submitserver_srv_domain_leads_to_the_collector_on_its_own_port(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    keys.generate(str(spool / "keys" / "upload"), comment="sensor1.example")
    server = sshd_helper.Sshd((spool / "keys" / "upload.pub").read_text(), mode="rsync", address=COLLECTOR)
    resolv_dir = None
    with netns.Lab([f"{SENSOR}/24"], [f"{AUTHORITY}/24", f"{COLLECTOR}/24"]) as lab:
        try:
            resolv_dir = f"/etc/netns/{lab.a}"
            os.makedirs(resolv_dir)
            with open(os.path.join(resolv_dir, "resolv.conf"), "w") as handle:
                handle.write(f"nameserver {AUTHORITY}\n")
            server.start(wrap=["ip", "netns", "exec", lab.b])
            _nsd(lab, str(tmp_path), server.port)
            kind, blob = server.known_hosts_line().split()[1:3]
            (spool / "keys" / "known_hosts").write_text(f"[upload.collector.test]:{server.port} {kind} {blob}\n")
            config = write_config(tmp_path / "conf", spool, login=server.user, submitserver="collector.test",
                                  upload_method="rsync")
            paths = spool_files(spool, [4000, 9000])
            sent = contents(paths)
            code = "import sys; from uploader.cli import upload_main; sys.argv[0] = 'sie-upload'; upload_main()"
            result = lab.run(lab.a, [sys.executable, "-c", code, "-c", config, "--once", *netns.STAY_AS_IS],
                             capture_output=True,
                             text=True, timeout=120, env=dict(os.environ, PYTHONPATH=REPO))
            assert result.returncode == 0, result.stderr
            assert "refusing.collector.test port 1" in result.stderr  # tried first: priority 5
            assert f"to upload.collector.test:{server.port}/up/{CHANNEL}" in result.stderr
            assert same(sent, server)
        finally:
            server.close()
            if resolv_dir:
                shutil.rmtree(resolv_dir, ignore_errors=True)
