"""The collector with real parts: the DNS lab, rsync over the shipped sshd, hostile input.

End to end: the lab's unbound resolves through its nsd authorities and a
poisoner while the sensor captures the resolver's upstream interface; the
sensor's file goes by `sie-upload` (rsync) to an OpenSSH sshd running
etc/sie-dns-collector.sshd_config, with the key `add-sensor` registered;
`sie-dns-collector ingest --once` fills the store. tshark on the same
interface is the witness: every paired UDP response it saw is decoded
with dnspython, each of its RRsets given the bailiwick the lab's own
configuration says (the deepest zone the responding server serves above
the owner). The store must hold exactly those RRsets, each with that
bailiwick and a count equal to the number of responses that carried it,
and agree with the zone files; none of the poisoner's records for names
outside its zone may enter, and each is counted.

Hostile: damaged, truncated and bomb files among good ones are set aside
in bounded time and memory; a registered key, against the real sshd,
gets no shell, no forwarding, no reading, and writes only into its own
folder, only from its `from=` addresses.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest

from collector import sensors
from collector.cli import host_key_lines
from sensor.spool import nmsg
from tests import lab as lab_module
from tests import netns
from tests import sshd as sshd_helper
from tests.collectorkit import resolution, upload, write_spool
from tests.uploadkit import code_readable_by_others, run_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHANNEL = "ch202"
SSHD_REASON = sshd_helper.shipped_available()
LAB_REASON = lab_module.available() or SSHD_REASON or (None if shutil.which("tshark") else "needs tshark")
needs_sshd = pytest.mark.skipif(SSHD_REASON is not None, reason=SSHD_REASON or "")
needs_lab = pytest.mark.skipif(LAB_REASON is not None, reason=LAB_REASON or "")
needs_code_for_others = pytest.mark.skipif(not code_readable_by_others(), reason="the ingester runs as the collector "
                                           "user, who cannot read this checkout (it is under a private folder)")

QUESTIONS = [
    ("www.lab.test", "A"), ("www.lab.test", "AAAA"), ("lab.test", "MX"), ("mail.lab.test", "A"),
    ("nx.lab.test", "A"), ("big.signed.test", "TXT"), ("www.signed.test", "A"), ("big.signed6.test", "TXT"),
    ("big.tc.test", "TXT"), ("www.refused.test", "A"), ("www.poison.test", "A"), ("mail.poison.test", "MX"),
]
# The questions with an answer the store must hold (not nx: NXDOMAIN; not tc:
# over TCP only, which a packet capture does not pair; not refused; the poisoner has no MX).
ANSWERED = [q for q in QUESTIONS if not q[0].startswith(("nx.", "big.tc.", "www.refused.", "mail.poison."))]


def collector_env() -> dict[str, str]:
    """This checkout's collector, its log lines on stderr (no syslog, even where there is one)."""
    return dict(os.environ, PYTHONPATH=REPO, SIE_DNS_SENSOR_SYSLOG_SOCKET="/nonexistent/sie-test-no-syslog")


def collector(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`sie-dns-collector ARGS`."""
    return subprocess.run([sys.executable, "-m", "collector", *args], capture_output=True, text=True,
                          timeout=timeout, env=collector_env())


def root_hints() -> str:
    root4, root6 = lab_module.SERVERS["root"]
    return (f". 3600000 NS a.root-servers.lab.\na.root-servers.lab. 3600000 A {root4}\n"
            f"a.root-servers.lab. 3600000 AAAA {root6}\n")


def write_collector_config(path: str, root: str) -> str:
    """The collector's file: `root` as collector_dir, the lab's root as its hints
    (in `root`: the ingester reads them after it has become the collector user)."""
    with open(os.path.join(root, "root.hints"), "w") as handle:
        handle.write(root_hints())
    with open(path, "w") as handle:
        handle.write(f'collector_dir="{root}"\nroot_hints="{root}/root.hints"\n')
    return path


@dataclass
class Registration:
    """What `add-sensor` printed for the sensor's settings."""

    login: str
    submitserver: str
    known_hosts: str


@dataclass
class Site:
    """A collector: its user (the sshd's, standing in for sie-dns-collector),
    its folder (the user's home), its configuration and the shipped sshd."""

    root: str
    user: str
    config: str
    sshd: sshd_helper.ShippedSshd

    def add_sensor(self, name: str, public_key: str, *options: str) -> Registration:
        done = collector("add-sensor", "-c", self.config, name, public_key, "--host", "127.0.0.1",
                         "--port", str(self.sshd.port), "--login", self.user, *options)
        assert done.returncode == 0, done.stderr
        # add-sensor gives what it makes to the user sie-dns-collector when that
        # exists; here this site's user stands in for it
        entry = pwd.getpwnam(self.user)
        for folder, _, files in os.walk(self.root):
            for path in [folder, *(os.path.join(folder, f) for f in files)]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        settings = dict(line.strip().split("=", 1) for line in done.stdout.splitlines() if '="' in line)
        hosts = "".join(line.strip() + "\n" for line in done.stdout.splitlines() if line.startswith("  ["))
        return Registration(settings["login"].strip('"'), settings["submitserver"].strip('"'), hosts)

    def files(self) -> set[str]:
        """Every file and folder under the collector's folder, relative to it."""
        return {os.path.relpath(os.path.join(folder, name), self.root)
                for folder, dirs, files in os.walk(self.root) for name in files + dirs}


@pytest.fixture
def site(tmp_path):
    # under /tmp, readable on the way down: sshd reads authorized_keys as the user
    root = tempfile.mkdtemp(prefix="sie-collector-", dir="/tmp")
    os.chmod(root, 0o755)
    user = sshd_helper.add_user(root)
    config = write_collector_config(str(tmp_path / "sie-dns-collector"), root)
    server = sshd_helper.ShippedSshd(user, os.path.join(root, ".ssh", "authorized_keys"))
    try:
        server.start()
        yield Site(root, user, config, server)
    finally:
        server.close()
        sshd_helper.remove_user(user)
        shutil.rmtree(root, ignore_errors=True)


def make_key(path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return f"{path}.pub"


def ssh_command(site: Site, key, known_hosts, *extra: str) -> list[str]:
    """ssh as the uploader runs it: this key only, the host key checked, never a prompt."""
    return ["ssh", "-F", "/dev/null", "-p", str(site.sshd.port), "-i", str(key), "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "ConnectTimeout=20", *extra]


def rsync(site: Site, key, known_hosts, *args: str, ssh_extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(["rsync", "--timeout=60", "-e", " ".join(ssh_command(site, key, known_hosts, *ssh_extra)),
                           *args], capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- end to end
Key = tuple[str, str, str, frozenset]  # (owner, type, bailiwick, rdata texts), presentation forms


def served_by() -> dict[str, list[dns.name.Name]]:
    """Each authority address -> the zones it serves (the lab's configuration)."""
    out = {}
    for role, zones in lab_module.ZONES_OF.items():
        for address in lab_module.SERVERS[role]:
            out[address] = [dns.name.from_text(zone) for zone in zones]
    return out


def bailiwick_of(zones: list[dns.name.Name], owner: dns.name.Name) -> str | None:
    enclosing = [zone for zone in zones if owner.is_subdomain(zone)]
    return max(enclosing, key=len).to_text() if enclosing else None


def rrsets_of(message: dns.message.Message) -> dict[tuple[str, str], set[str]]:
    """{(owner, type): rdata} over the three sections, one RRset per owner and
    type whatever section (or RRSIG's covered type) it came in, as an RRset
    is one observation of a response."""
    found: dict[tuple[str, str], set[str]] = {}
    for section in (message.answer, message.authority, message.additional):
        for rrset in section:
            if rrset.rdclass != dns.rdataclass.IN:
                continue
            key = (rrset.name.to_text().lower(), dns.rdatatype.to_text(rrset.rdtype))
            found.setdefault(key, set()).update(rdata.to_text() for rdata in rrset)
    return found


def witness(pcap: str) -> list[tuple[str, dns.message.Message]]:
    """(server address, response) of every UDP response tshark saw that
    answers a query it saw (fragments reassembled), as the collector keeps them."""
    fields = ["ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "udp.srcport", "udp.dstport", "udp.payload"]
    argv = ["tshark", "-r", pcap, "-Y", "udp.port == 53", "-T", "fields", "-E", "separator=|",
            "-E", "occurrence=f"]
    for field in fields:
        argv += ["-e", field]
    rows = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()
    asked: Counter = Counter()
    out = []
    for row in rows:
        src4, src6, dst4, dst6, sport, dport, payload = row.split("|")
        src, dst = src4 or src6, dst4 or dst6
        message = dns.message.from_wire(bytes.fromhex(payload.replace(":", "")))
        question = (message.id, message.question[0].name.to_text().lower(), message.question[0].rdtype)
        if not message.flags & dns.flags.QR:
            asked[(src, dst, sport, dport, *question)] += 1
            continue
        if asked[(dst, src, dport, sport, *question)] == 0:
            continue  # unsolicited: not a pair
        asked[(dst, src, dport, sport, *question)] -= 1
        if not message.flags & dns.flags.TC:
            out.append((src, message))
    return out


def expected_from(responses: list[tuple[str, dns.message.Message]]) -> tuple[Counter, Counter]:
    """(entries the store must hold -> count, RRsets it must drop -> count)."""
    zones = served_by()
    kept: Counter = Counter()
    dropped: Counter = Counter()
    for server, message in responses:
        for (owner, rrtype), rdatas in rrsets_of(message).items():
            zone = bailiwick_of(zones[server], dns.name.from_text(owner))
            if zone is None:
                dropped[(owner, rrtype, frozenset(rdatas))] += 1
            else:
                kept[(owner, rrtype, zone, frozenset(rdatas))] += 1
    return kept, dropped


def store_entries(config: str) -> dict[Key, dict]:
    done = collector("query", "rrset", "-c", config, "*.", "--json")
    assert done.returncode == 0, done.stderr
    entries = {}
    for line in done.stdout.splitlines():
        entry = json.loads(line)
        key = (entry["rrname"].lower(), entry["rrtype"], entry["bailiwick"].lower(), frozenset(entry["rdata"]))
        entries[key] = entry
    return entries


def served_zones(lab: lab_module.DnsLab) -> dict[str, dns.zone.Zone]:
    """The zones as the lab's nsd instances load them (the signed files for signed zones)."""
    return {origin: dns.zone.from_file(path, origin=origin, relativize=False)
            for origin, path in lab.zone_files.items()}


def in_zone_file(zones: dict[str, dns.zone.Zone], key: Key) -> bool:
    """Does the RRset come, whole, from its bailiwick's zone file (RRSIGs:
    some of the owner's, whatever types they cover)? The poisoner's zone is
    its one answer."""
    owner, rrtype, zone, rdatas = key
    if zone == lab_module.ZONES_OF["poisoner"][0]:
        return (rrtype, rdatas) == ("A", frozenset([lab_module.POISON_ANSWER]))
    node = zones[zone].get_node(owner)
    if node is None:
        return False
    if rrtype == "RRSIG":
        signatures = {rdata.to_text() for rdataset in node if rdataset.rdtype == dns.rdatatype.RRSIG
                      for rdata in rdataset}
        return rdatas <= signatures
    rdataset = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rrtype))
    return rdataset is not None and frozenset(rdata.to_text() for rdata in rdataset) == rdatas


def sensor_settings(path, spool, registration: Registration | None = None) -> str:
    lines = [f'spooldir="{spool}"', f'DNSQR_RES_ADDRS="{lab_module.RESOLVER4},{lab_module.RESOLVER6}"',
             'DNSQR_CAPTURE_RD="0"', 'interval="3600"', 'upload="yes"', 'upload_method="rsync"',
             f'uploadkey="{spool}/keys/upload"', f'knownhosts="{spool}/keys/known_hosts"']
    if registration:
        lines += [f'login="{registration.login}"', f'submitserver="{registration.submitserver}"']
    path.write_text("\n".join(lines) + "\n")
    return str(path)


PROBE = "import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'probe', (sys.argv[1], 9))"


def until_tshark_has_seen_a_probe(lab: lab_module.DnsLab, printed: str) -> None:
    """Send a datagram over the upstream link (to the black hole's port 9:
    no DNS) until tshark prints it: then it has every packet sent before.
    ("Capturing on" comes before packets are really captured.)"""
    target = lab_module.SERVERS["dead"][0]
    with open(printed) as handle:
        seen = handle.read().count(target)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        subprocess.run(["ip", "netns", "exec", lab.resolver, sys.executable, "-c", PROBE, target], check=True)
        time.sleep(0.2)
        with open(printed) as handle:
            if handle.read().count(target) > seen:
                return
    raise AssertionError(f"tshark printed no probe in 30 s: {printed}")


def capture_while_resolving(lab: lab_module.DnsLab, config: str, pcap: str) -> tuple[int, int]:
    """The sensor and tshark on the upstream interface while the client asks
    QUESTIONS of a resolver with an empty cache; (first, last) second."""
    env = dict(os.environ, PYTHONPATH=REPO)
    printed = pcap + ".txt"
    tshark = subprocess.Popen(["ip", "netns", "exec", lab.resolver, "tshark", "-i", lab.upstream_if, "-F", "pcap",
                               "-w", pcap, "-n", "-l", "-P"], stdout=open(printed, "w"),  # noqa: SIM115 - its own
                              stderr=subprocess.PIPE, text=True)
    sensor = subprocess.Popen(["ip", "netns", "exec", lab.resolver, sys.executable, "-m", "sensor", "run", "-c", config,
                               "--interface", lab.upstream_if, *netns.STAY_AS_IS],
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        netns.wait_for_line(tshark, "Capturing on")
        netns.wait_for_line(sensor, "capturing from")
        until_tshark_has_seen_a_probe(lab, printed)
        started = int(time.time())
        lab.restart_resolver()
        for name, qtype in QUESTIONS:
            lab.ask(name, qtype)
        lab.stop_resolver()
        ended = int(time.time()) + 1
        until_tshark_has_seen_a_probe(lab, printed)
        time.sleep(1)  # as tests/test_lab.py: the sensor stops reading at SIGTERM, so let it read the last
    finally:
        sensor.send_signal(signal.SIGTERM)
        _, log = sensor.communicate(timeout=60)
        tshark.send_signal(signal.SIGINT)
        tshark.communicate(timeout=60)
    assert sensor.returncode == 0, log
    return started, ended


@needs_lab
@needs_code_for_others
def test_the_store_holds_what_the_authorities_served_with_bailiwick_and_counts_and_no_poison(site, tmp_path):
    spool = tmp_path / "spool"
    config = sensor_settings(tmp_path / "sie-dns-sensor", spool)
    made = run_tool("gen-key", "-c", config)
    assert made.returncode == 0, made.stderr
    registration = site.add_sensor("lab-sensor", f"{spool}/keys/upload.pub")
    config = sensor_settings(tmp_path / "sie-dns-sensor", spool, registration)
    (spool / "keys" / "known_hosts").write_text(registration.known_hosts)
    pcap = str(tmp_path / "witness.pcap")
    with lab_module.DnsLab() as lab:
        started, ended = capture_while_resolving(lab, config, pcap)
        zones = served_zones(lab)

    sent = run_tool("upload", "-c", config, "--once")
    assert sent.returncode == 0, sent.stderr
    assert "uploaded " in sent.stderr and not os.listdir(spool / "waiting" / CHANNEL)
    ingested = collector("ingest", "-c", site.config, "--once", "--user", site.user)
    assert ingested.returncode == 0, ingested.stderr
    assert "files=1 damaged=0" in ingested.stderr
    status = collector("status", "-c", site.config, "--json")
    assert status.returncode == 0, status.stdout
    counts = json.loads(status.stdout)["counts"]

    expected, dropped = expected_from(witness(pcap))
    entries = store_entries(site.config)
    got = Counter({key: entry["count"] for key, entry in entries.items()})
    assert got == expected, (f"missing or miscounted: {dict(expected - got)}; "
                             f"unexpected or overcounted: {dict(got - expected)}")
    for key, entry in entries.items():
        assert started <= entry["time_first"] <= entry["time_last"] <= ended, key
        assert in_zone_file(zones, key), f"{key} is not what its zone file says"
    for name, qtype in ANSWERED:  # the answer to each question, from its zone, with its zone as bailiwick
        owner = dns.name.from_text(name)
        zone = next(z for z in sorted([*zones, *lab_module.ZONES_OF["poisoner"]], key=len, reverse=True)
                    if owner.is_subdomain(dns.name.from_text(z)))
        assert any(k[:3] == (owner.to_text(), qtype, zone) for k in entries), (name, qtype, zone)
    poison = [(owner, rrtype, frozenset([rdata])) for _, owner, rrtype, rdata in lab_module.POISONED]
    assert not [key for key in entries if (key[0], key[1], key[3]) in poison]
    poisoned = sum(dropped[key] for key in poison)
    assert poisoned >= 2 * len(poison)  # both poisoner questions reached it (the resolver may retry)
    assert counts["out_of_bailiwick"] == sum(dropped.values()) >= poisoned
    assert counts.get("unknown_server", 0) == 0  # every server was learned from the walk down from the root
    print(f"\n{len(expected)} RRsets, {sum(expected.values())} observations in "
          f"{counts['responses']} responses; {sum(dropped.values())} dropped out of bailiwick "
          f"({poisoned} poisoned)")


# -------------------------------------------------------------- hostile files
def bomb(path: str, inflated: int = 64 << 20) -> None:
    """One zlib NMSG container inflating to `inflated` bytes of empty payloads
    (`0a 00`: Nmsg.payloads, length 0), about 64 KB on disk."""
    body = inflated.to_bytes(4, "big") + zlib.compress(b"\x0a\x00" * (inflated // 2), 9)
    with open(path, "wb") as handle:
        handle.write(nmsg.HEADER.pack(nmsg.MAGIC, nmsg.FLAG_ZLIB, nmsg.VERSION, len(body)) + body)


def hostile_file(kind: str, path: str) -> None:
    """A file of many resolutions, then damaged (bytes overwritten mid-stream), cut short, or a bomb."""
    if kind == "bomb":
        bomb(path)
        return
    records = []
    for n in range(300):
        records += resolution(f"h{n}.bad.test", "bad.test", "192.0.2.99", 1001)
    write_spool(path, records)
    with open(path, "r+b") as handle:
        size = os.path.getsize(path)
        if kind == "damaged":
            handle.seek(size // 2)
            handle.write(b"\xff" * 16)
        else:
            handle.truncate(size * 6 // 10)


# Linux charges a child's max RSS with the memory of the process it was
# forked from (the mm it had before exec): a child of this test would carry
# pytest's peak. So a small launcher starts it and reports its wait4 usage.
LAUNCHER = ("import json, os, subprocess, sys; child = subprocess.Popen(sys.argv[1:]); "
            "_, status, usage = os.wait4(child.pid, 0); child.returncode = os.waitstatus_to_exitcode(status); "
            "print(json.dumps([child.returncode, usage.ru_maxrss]))")


def timed(argv: list[str]) -> tuple[int, str, float, float]:
    """(exit status, stderr, seconds, max RSS in MB) of one process."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *argv], capture_output=True, text=True, timeout=600,
                          env=collector_env())
    status, max_rss_kb = json.loads(done.stdout)
    return status, done.stderr, time.monotonic() - started, max_rss_kb / 1024


@pytest.mark.parametrize("kind", ["damaged", "truncated", "bomb"])
def test_a_bad_file_among_good_ones_is_set_aside_in_bounded_time_and_memory(tmp_path, kind):
    root = str(tmp_path / "collector")
    os.makedirs(root)
    config = write_collector_config(str(tmp_path / "conf"), root)
    upload(root, "sensor-a", "s.1000.000000.nmsg", resolution("www.before.test", "before.test", "192.0.2.1", 1000))
    bad = os.path.join(root, "incoming", "sensor-a", "up", CHANNEL, "s.1001.000000.nmsg")
    hostile_file(kind, bad)
    upload(root, "sensor-a", "s.1002.000000.nmsg", resolution("www.after.test", "after.test", "192.0.2.2", 1002))
    status, log, seconds, rss = timed([sys.executable, "-m", "collector", "ingest", "-c", config, "--once",
                                       "--user", "root"])
    assert status == 0, log
    assert f"sensor-a/{CHANNEL}/s.1001.000000.nmsg set aside in damaged/" in log
    assert os.listdir(os.path.join(root, "damaged", "sensor-a", CHANNEL)) == ["s.1001.000000.nmsg"]
    assert os.listdir(os.path.join(root, "incoming", "sensor-a", "up", CHANNEL)) == []
    for name in ("www.before.test", "www.after.test"):  # the good files, before and after it, are in
        found = collector("query", "rrset", "-c", config, name, "--json").stdout.splitlines()
        assert [json.loads(line)["count"] for line in found] == [1], name
    print(f"\n{kind}: ingest of 3 files {seconds:.2f} s, max RSS {rss:.0f} MB")
    assert seconds < 10 and rss < 200, (seconds, rss)


# ------------------------------------------------------------ hostile keys
@needs_sshd
def test_a_registered_key_gets_no_shell_no_tty_no_forwarding_and_cannot_read(site, tmp_path):
    key = tmp_path / "key"
    registration = site.add_sensor("sensor-a", make_key(key))
    known = tmp_path / "known_hosts"
    known.write_text(registration.known_hosts)
    target = f"{site.user}@127.0.0.1"
    uploaded = tmp_path / "f.nmsg"
    uploaded.write_bytes(b"x" * 100)
    assert rsync(site, key, known, str(uploaded), f"{target}:up/{CHANNEL}/").returncode == 0  # the key works

    for extra, refusal in (((), "does not run rsync"), (("-tt",), "PTY allocation request failed")):
        shell = subprocess.run([*ssh_command(site, key, known, *extra), target, "id; touch pwned"],
                               capture_output=True, text=True, timeout=60)
        assert shell.returncode != 0 and "uid=" not in shell.stdout and refusal in shell.stderr, shell
    forward = subprocess.run([*ssh_command(site, key, known, "-W", f"127.0.0.1:{site.sshd.port}"), target],
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert forward.returncode == 255 and "administratively prohibited" in forward.stderr, forward.stderr
    remote = subprocess.run([*ssh_command(site, key, known, "-N", "-o", "ExitOnForwardFailure=yes",
                                          "-R", "127.0.0.1:0:127.0.0.1:22"), target],
                            capture_output=True, text=True, timeout=60)
    assert remote.returncode == 255 and "remote port forwarding failed" in remote.stderr, remote.stderr
    back = rsync(site, key, known, f"{target}:up/{CHANNEL}/f.nmsg", str(tmp_path / "back"))
    assert back.returncode != 0 and "write-only" in back.stderr and not (tmp_path / "back").exists()
    assert site.files() == {".ssh", ".ssh/authorized_keys", "root.hints", "incoming", "incoming/sensor-a",
                            "incoming/sensor-a/up", f"incoming/sensor-a/up/{CHANNEL}",
                            f"incoming/sensor-a/up/{CHANNEL}/f.nmsg"}  # no pwned anywhere


@needs_sshd
def test_a_key_writes_only_into_its_own_folder(site, tmp_path):
    keys = {name: tmp_path / f"key-{name}" for name in ("sensor-a", "sensor-b")}
    for name, key in keys.items():
        registration = site.add_sensor(name, make_key(key))
    known = tmp_path / "known_hosts"
    known.write_text(registration.known_hosts)
    target = f"{site.user}@127.0.0.1"
    payload = tmp_path / "f.nmsg"
    payload.write_bytes(b"x" * 100)
    for name, key in keys.items():
        assert rsync(site, key, known, str(payload), f"{target}:up/{CHANNEL}/").returncode == 0
        assert os.path.exists(os.path.join(site.root, "incoming", name, "up", CHANNEL, "f.nmsg"))
    before = site.files()
    elsewhere = f"sie-test-{uuid.uuid4().hex[:8]}"
    for destination in ("../sensor-b/up/ch202/", "up/../../sensor-b/up/ch202/",
                        f"{site.root}/incoming/sensor-b/up/{CHANNEL}/", f"/tmp/{elsewhere}/"):
        rsync(site, keys["sensor-a"], known, str(payload), f"{target}:{destination}")
    assert not os.path.exists(f"/tmp/{elsewhere}")
    new = site.files() - before
    assert all(path.startswith("incoming/sensor-a/") for path in new), new  # an absolute path lands inside
    empty = tmp_path / "empty"
    empty.mkdir()  # --delete is let through (see collector/sensors.py): it reaches the sensor's own folder only
    for destination in (f"up/{CHANNEL}/", "../sensor-b/up/ch202/", f"/incoming/sensor-b/up/{CHANNEL}/"):
        rsync(site, keys["sensor-a"], known, "-r", "--delete", f"{empty}/", f"{target}:{destination}")
    assert {path for path in before if not path.startswith("incoming/sensor-a/")} <= site.files()
    assert os.path.exists(os.path.join(site.root, "incoming", "sensor-b", "up", CHANNEL, "f.nmsg"))


@needs_sshd
def test_a_key_registered_from_one_address_is_refused_from_another(site, tmp_path):
    key = tmp_path / "key"
    registration = site.add_sensor("sensor-c", make_key(key), "--from", "127.0.0.2")
    known = tmp_path / "known_hosts"
    known.write_text(registration.known_hosts)
    payload = tmp_path / "f.nmsg"
    payload.write_bytes(b"x" * 100)
    destination = f"{site.user}@127.0.0.1:up/{CHANNEL}/"
    refused = rsync(site, key, known, str(payload), destination)  # from 127.0.0.1
    assert refused.returncode != 0 and "Permission denied (publickey)" in refused.stderr, refused.stderr
    assert not os.path.exists(os.path.join(site.root, "incoming", "sensor-c", "up", CHANNEL))
    taken = rsync(site, key, known, str(payload), destination, ssh_extra=("-b", "127.0.0.2"))
    assert taken.returncode == 0, taken.stderr
    assert os.path.exists(os.path.join(site.root, "incoming", "sensor-c", "up", CHANNEL, "f.nmsg"))


@needs_sshd
def test_a_sensor_registered_by_root_for_the_service_user_can_upload(site, tmp_path):
    """What `add-sensor` does as root when the service user exists (`owner`)
    and the folder of `authorized_keys` does not (the package makes ~/.ssh,
    but `authorized_keys=` may name another place, or ~/.ssh was removed)."""
    key = tmp_path / "key"
    entry = pwd.getpwnam(site.user)
    sensors.add(site.root, os.path.join(site.root, ".ssh", "authorized_keys"), "sensor-d", make_key(key),
                owner=(entry.pw_uid, entry.pw_gid))
    known = tmp_path / "known_hosts"
    known.write_text("".join(f"{line}\n" for line in host_key_lines("127.0.0.1", site.sshd.port)))
    payload = tmp_path / "f.nmsg"
    payload.write_bytes(b"x" * 100)
    sent = rsync(site, key, known, str(payload), f"{site.user}@127.0.0.1:up/{CHANNEL}/")
    assert sent.returncode == 0, site.sshd.read_log()[-2000:]
