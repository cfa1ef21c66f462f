"""A real DNS lab in network namespaces: client, recursive resolver, authorities.

    client (203.0.113.10, 2001:db8:c::10)
      |  veth
    resolver: unbound on 203.0.113.1 / 2001:db8:c::1; it asks upstream from
      |  veth   192.0.2.53 / 2001:db8:53::53   <- the sensor's interface
    auth: nsd instances and a black hole, one address each:
      198.51.100.1 / 2001:db8:1::1  root "."
      198.51.100.2 / 2001:db8:1::2  "test."
      198.51.100.3 / 2001:db8:1::3  lab.test, signed.test (DNSSEC, IPv4-only
                                     glue), signed6.test (DNSSEC, IPv6-only
                                     glue), tc.test (answers too big for UDP)
      198.51.100.4 / 2001:db8:1::4  serves other.test only: REFUSED for
                                     refused.test, which is delegated to it
      198.51.100.5 / 2001:db8:1::5  reads queries for dead.test, never answers
      198.51.100.6 / 2001:db8:1::6  the poisoner, delegated poison.test: answers
                                     every query with poison.test's A (for an
                                     A question) and POISONED, records outside
                                     its zone (see POISONER)

Names worth asking: www.lab.test A, mail.lab.test MX, nx.lab.test
(NXDOMAIN), big.signed.test TXT and big.signed6.test TXT (signed answers
of ~2.5 kB: fragmented over IPv4 and IPv6), big.tc.test TXT (truncated,
retried over TCP), www.refused.test A (REFUSED), www.dead.test A (timeouts),
www.poison.test A (an answer with poison the resolver must scrub).

    python -m tests.lab      # brings it up, prints how to use it; Ctrl-C tears it down
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import click

PACKAGES = {"unbound": "/usr/sbin/unbound", "nsd": "/usr/sbin/nsd", "ldns-signzone": "/usr/bin/ldns-signzone"}

CLIENT4, CLIENT6 = "203.0.113.10", "2001:db8:c::10"
RESOLVER_FRONT4, RESOLVER_FRONT6 = "203.0.113.1", "2001:db8:c::1"
RESOLVER4, RESOLVER6 = "192.0.2.53", "2001:db8:53::53"
SERVERS = {  # role: (IPv4, IPv6)
    "root": ("198.51.100.1", "2001:db8:1::1"),
    "tld": ("198.51.100.2", "2001:db8:1::2"),
    "zones": ("198.51.100.3", "2001:db8:1::3"),
    "refuser": ("198.51.100.4", "2001:db8:1::4"),
    "dead": ("198.51.100.5", "2001:db8:1::5"),
    "poisoner": ("198.51.100.6", "2001:db8:1::6"),
}
# What each authority serves; the black hole serves nothing.
ZONES_OF = {
    "root": ["."],
    "tld": ["test."],
    "zones": ["lab.test.", "signed.test.", "signed6.test.", "tc.test."],
    "refuser": ["other.test."],
    "poisoner": ["poison.test."],
}
POISON_ANSWER = "192.0.2.7"  # the poisoner's answer to every A question, in its own zone
POISONED = (  # (section, owner, type, rdata) the poisoner adds to every response: none of its zone
    ("answer", "www.lab.test.", "A", "192.0.2.66"),  # an answer for a name in another zone
    ("authority", "test.", "NS", "ns.poison.test."),  # NS for its parent
    ("additional", "ns1.lab.test.", "A", "192.0.2.66"),  # glue for a name it does not serve
)
SOA = "@ 3600 IN SOA ns1 hostmaster 2026112201 3600 900 604800 300"


def available() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for name, path in PACKAGES.items():
        if not os.path.exists(path):
            return f"needs {name} (Debian packages unbound, nsd, ldnsutils)"
    return None


def _run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


def _txt(size: int, tag: str) -> str:
    """TXT rdata of about `size` bytes in 200-byte strings."""
    chunk = (tag * 200)[:200]
    return " ".join(f'"{chunk}"' for _ in range(max(1, size // 201)))


def _zones() -> dict[str, str]:
    root4, root6 = SERVERS["root"]
    tld4, tld6 = SERVERS["tld"]
    z4, z6 = SERVERS["zones"]
    r4, r6 = SERVERS["refuser"]
    d4, d6 = SERVERS["dead"]
    p4, p6 = SERVERS["poisoner"]
    return {
        ".": f"""$ORIGIN .
$TTL 3600
. 3600 IN SOA a.root-servers.lab. hostmaster.lab. 2026112201 3600 900 604800 300
. IN NS a.root-servers.lab.
a.root-servers.lab. IN A {root4}
a.root-servers.lab. IN AAAA {root6}
test. IN NS ns1.nic.test.
ns1.nic.test. IN A {tld4}
ns1.nic.test. IN AAAA {tld6}
""",
        "test.": f"""$ORIGIN test.
$TTL 3600
{SOA.replace("ns1", "ns1.nic").replace("hostmaster", "hostmaster.nic")}
@ IN NS ns1.nic
ns1.nic IN A {tld4}
ns1.nic IN AAAA {tld6}
lab IN NS ns1.lab
ns1.lab IN A {z4}
ns1.lab IN AAAA {z6}
signed IN NS ns4.signed
ns4.signed IN A {z4}
signed6 IN NS ns6.signed6
ns6.signed6 IN AAAA {z6}
tc IN NS ns1.tc
ns1.tc IN A {z4}
refused IN NS ns1.refused
ns1.refused IN A {r4}
ns1.refused IN AAAA {r6}
dead IN NS ns1.dead
ns1.dead IN A {d4}
ns1.dead IN AAAA {d6}
poison IN NS ns.poison
ns.poison IN A {p4}
ns.poison IN AAAA {p6}
""",
        "lab.test.": f"""$ORIGIN lab.test.
$TTL 300
{SOA}
@ IN NS ns1
ns1 IN A {z4}
ns1 IN AAAA {z6}
www IN A 203.0.113.80
www IN AAAA 2001:db8:80::80
mail IN A 203.0.113.25
@ IN MX 10 mail
""",
        "signed.test.": f"""$ORIGIN signed.test.
$TTL 300
{SOA.replace("ns1", "ns4")}
@ IN NS ns4
ns4 IN A {z4}
www IN A 203.0.113.81
big IN TXT {_txt(2400, "s")}
""",
        "signed6.test.": f"""$ORIGIN signed6.test.
$TTL 300
{SOA.replace("ns1", "ns6")}
@ IN NS ns6
ns6 IN AAAA {z6}
www IN AAAA 2001:db8:80::81
big IN TXT {_txt(2400, "6")}
""",
        "tc.test.": f"""$ORIGIN tc.test.
$TTL 300
{SOA}
@ IN NS ns1
ns1 IN A {z4}
big IN TXT {_txt(6000, "t")}
""",
        "other.test.": f"""$ORIGIN other.test.
$TTL 300
{SOA}
@ IN NS ns1
ns1 IN A {r4}
""",
    }


BLACKHOLE = """
import select, socket, sys
socks = []
for family, addr in ((socket.AF_INET, sys.argv[1]), (socket.AF_INET6, sys.argv[2])):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((addr, 53))
    socks.append(s)
while True:
    for s in select.select(socks, [], [])[0]:
        s.recvfrom(65535)  # and never a word back
"""

# A hostile authority: every response carries, beside what its zone holds,
# records for names it does not serve (argv: v4, v6, A answer, POISONED as JSON).
POISONER = """
import json, select, socket, sys
import dns.flags, dns.message, dns.rdatatype, dns.rrset
answer, poisoned = sys.argv[3], json.loads(sys.argv[4])
socks = []
for family, addr in ((socket.AF_INET, sys.argv[1]), (socket.AF_INET6, sys.argv[2])):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((addr, 53))
    socks.append(s)
while True:
    for s in select.select(socks, [], [])[0]:
        data, peer = s.recvfrom(65535)
        try:
            query = dns.message.from_wire(data)
        except Exception:
            continue
        if len(query.question) != 1:
            continue
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        question = query.question[0]
        if question.rdtype == dns.rdatatype.A:
            reply.answer.append(dns.rrset.from_text(question.name, 300, "IN", "A", answer))
        for section, owner, rrtype, rdata in poisoned:
            getattr(reply, section).append(dns.rrset.from_text(owner, 300, "IN", rrtype, rdata))
        s.sendto(reply.to_wire(), peer)
"""


class DnsLab:
    """Context manager: everything up on enter, everything gone on exit."""

    def __init__(self, dnstap_socket: str | None = None, resolver: str = "unbound", named_options: str = "") -> None:
        """`dnstap_socket`: a unix socket path that the resolver sends dnstap
        to (its resolver query and response messages); the listener must be
        there before the lab starts. `resolver`: "unbound", or "named"
        (BIND 9, Debian package bind9: not in tests/setup.sh, for
        measurements), with `named_options` added to its options."""
        self.dnstap_socket = dnstap_socket
        self.named_options = named_options
        self.resolver_program = f"/usr/sbin/{resolver}"
        tag = uuid.uuid4().hex[:5]
        self.client, self.resolver, self.auth = f"siec{tag}", f"sier{tag}", f"siea{tag}"
        self.client_if, self.front_if = f"lc{tag}", f"lf{tag}"
        self.upstream_if, self.auth_if = f"lu{tag}", f"la{tag}"  # the sensor captures on upstream_if
        self.work = tempfile.mkdtemp(prefix="sie-lab-")
        os.chmod(self.work, 0o755)
        self.processes: list[subprocess.Popen] = []
        self.zone_files: dict[str, str] = {}  # origin -> the file its server loads (signed: the signed one)

    # ------------------------------------------------------------ network
    def _wire(self) -> None:
        for ns in (self.client, self.resolver, self.auth):
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        links = (
            (
                self.client,
                self.client_if,
                [f"{CLIENT4}/24", f"{CLIENT6}/64"],
                self.resolver,
                self.front_if,
                [f"{RESOLVER_FRONT4}/24", f"{RESOLVER_FRONT6}/64"],
            ),
            (
                self.resolver,
                self.upstream_if,
                [f"{RESOLVER4}/24", f"{RESOLVER6}/64"],
                self.auth,
                self.auth_if,
                [f"{a}/24" for a, _ in SERVERS.values()] + [f"{b}/64" for _, b in SERVERS.values()],
            ),
        )
        for ns_a, if_a, addrs_a, ns_b, if_b, addrs_b in links:
            _run("ip", "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
            for ns, dev, addrs in ((ns_a, if_a, addrs_a), (ns_b, if_b, addrs_b)):
                for addr in addrs:
                    _run("ip", "-n", ns, "addr", "add", addr, "dev", dev, *(["nodad"] if ":" in addr else []))
                _run("ip", "-n", ns, "link", "set", dev, "up")
                # veth leaves UDP/TCP checksums to a NIC that does not exist
                _run("ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off")
        _run("ip", "-n", self.client, "route", "add", "default", "via", RESOLVER_FRONT4)
        _run("ip", "-n", self.client, "-6", "route", "add", "default", "via", RESOLVER_FRONT6)
        _run("ip", "-n", self.resolver, "route", "add", "198.51.100.0/24", "dev", self.upstream_if)
        _run("ip", "-n", self.resolver, "-6", "route", "add", "2001:db8:1::/64", "dev", self.upstream_if)
        _run("ip", "-n", self.auth, "route", "add", "192.0.2.0/24", "dev", self.auth_if)
        _run("ip", "-n", self.auth, "-6", "route", "add", "2001:db8:53::/64", "dev", self.auth_if)

    # -------------------------------------------------------------- zones
    def _write_zones(self) -> dict[str, str]:
        files = {}
        for origin, text in _zones().items():
            name = "root" if origin == "." else origin.rstrip(".")
            path = os.path.join(self.work, f"{name}.zone")
            with open(path, "w") as handle:
                handle.write(text)
            files[origin] = path
        for origin in ("signed.test.", "signed6.test."):
            files[origin] = self._sign(origin, files[origin])
        return files

    def _sign(self, origin: str, path: str) -> str:
        """Sign with a KSK and a ZSK; the KSK becomes unbound's trust anchor."""
        zone = origin.rstrip(".")
        ksk = _run("ldns-keygen", "-k", "-a", "ECDSAP256SHA256", zone, cwd=self.work).stdout.strip()
        zsk = _run("ldns-keygen", "-a", "ECDSAP256SHA256", zone, cwd=self.work).stdout.strip()
        _run("ldns-signzone", "-n", path, zsk, ksk, cwd=self.work)
        with (
            open(os.path.join(self.work, f"{ksk}.key")) as source,
            open(os.path.join(self.work, "anchors.keys"), "a") as anchors,
        ):
            anchors.write(source.read())
        return path + ".signed"

    # ------------------------------------------------------------ servers
    def _nsd(self, role: str, origins: list[str], files: dict[str, str]) -> None:
        v4, v6 = SERVERS[role]
        conf = os.path.join(self.work, f"nsd-{role}.conf")
        zones = "".join(f'zone:\n  name: "{o}"\n  zonefile: "{files[o]}"\n' for o in origins)
        with open(conf, "w") as handle:
            handle.write(
                f'server:\n  ip-address: {v4}\n  ip-address: {v6}\n  port: 53\n  username: ""\n'
                f'  zonesdir: "{self.work}"\n  pidfile: "{self.work}/nsd-{role}.pid"\n  database: ""\n'
                f'  xfrdfile: "{self.work}/nsd-{role}.xfrd"\n  zonelistfile: "{self.work}/nsd-{role}.zonelist"\n'
                f'  logfile: "{self.work}/nsd-{role}.log"\n  ipv4-edns-size: 4096\n  ipv6-edns-size: 4096\n'
                "  server-count: 1\n  verbosity: 1\n  refuse-any: no\n  reuseport: no\n"
                f"remote-control:\n  control-enable: no\n{zones}"
            )
        self._start(self.auth, ["/usr/sbin/nsd", "-d", "-c", conf], f"nsd-{role}")

    def _unbound(self) -> None:
        hints = os.path.join(self.work, "root.hints")
        root4, root6 = SERVERS["root"]
        with open(hints, "w") as handle:
            handle.write(
                f". 3600 IN NS a.root-servers.lab.\na.root-servers.lab. 3600 IN A {root4}\n"
                f"a.root-servers.lab. 3600 IN AAAA {root6}\n"
            )
        conf = os.path.join(self.work, "unbound.conf")
        with open(conf, "w") as handle:
            handle.write(
                f"server:\n  interface: {RESOLVER_FRONT4}\n  interface: {RESOLVER_FRONT6}\n"
                f"  outgoing-interface: {RESOLVER4}\n  outgoing-interface: {RESOLVER6}\n"
                "  access-control: 203.0.113.0/24 allow\n  access-control: 2001:db8:c::/64 allow\n"
                '  do-ip4: yes\n  do-ip6: yes\n  do-tcp: yes\n  username: ""\n  chroot: ""\n'
                f'  directory: "{self.work}"\n  pidfile: "{self.work}/unbound.pid"\n'
                f'  logfile: "{self.work}/unbound.log"\n  use-syslog: no\n  verbosity: 1\n'
                f'  root-hints: "{hints}"\n  edns-buffer-size: 4096\n  max-udp-size: 4096\n'
                '  module-config: "validator iterator"\n'
                f'  trust-anchor-file: "{self.work}/anchors.keys"\n'
                "  qname-minimisation: no\n  num-threads: 1\n  so-reuseport: no\n  prefetch: no\n"
                '  local-zone: "test." nodefault\n'  # RFC 6761 keeps test. local otherwise
                '  harden-referral-path: no\n  target-fetch-policy: "0 0 0 0 0"\n'
                "remote-control:\n  control-enable: no\n"
                + self._dnstap_section()
            )
        _run("unbound-checkconf", conf)
        self._start(self.resolver, ["/usr/sbin/unbound", "-d", "-c", conf], "unbound")

    def _dnstap_section(self) -> str:
        if not self.dnstap_socket:
            return ""
        return (
            f'dnstap:\n  dnstap-enable: yes\n  dnstap-socket-path: "{self.dnstap_socket}"\n'
            "  dnstap-send-identity: yes\n  dnstap-send-version: yes\n"
            "  dnstap-log-resolver-query-messages: yes\n  dnstap-log-resolver-response-messages: yes\n"
            "  dnstap-log-client-query-messages: yes\n  dnstap-log-client-response-messages: yes\n"
        )

    def _named(self) -> None:
        """BIND as the resolver, configured as unbound is above (no DNSSEC
        validation: the anchors are unbound's file)."""
        root4, root6 = SERVERS["root"]
        hints = os.path.join(self.work, "named.hints")
        with open(hints, "w") as handle:
            handle.write(f". 3600 IN NS a.root-servers.lab.\na.root-servers.lab. 3600 IN A {root4}\n"
                         f"a.root-servers.lab. 3600 IN AAAA {root6}\n")
        dnstap = (f'  dnstap {{ resolver; }};\n  dnstap-output unix "{self.dnstap_socket}";\n'
                  f'  dnstap-identity "lab";\n{self.named_options}') if self.dnstap_socket else ""
        conf = os.path.join(self.work, "named.conf")
        with open(conf, "w") as handle:
            handle.write(
                f'options {{\n  directory "{self.work}";\n  pid-file "{self.work}/named.pid";\n'
                f"  listen-on {{ {RESOLVER_FRONT4}; }};\n  listen-on-v6 {{ {RESOLVER_FRONT6}; }};\n"
                f"  query-source address {RESOLVER4};\n  query-source-v6 address {RESOLVER6};\n"
                "  recursion yes;\n  allow-recursion { 203.0.113.0/24; 2001:db8:c::/64; };\n"
                "  dnssec-validation no;\n  qname-minimization off;\n  edns-udp-size 4096;\n"
                f"  max-udp-size 4096;\n  empty-zones-enable no;\n{dnstap}}};\n"
                f'zone "." {{ type hint; file "{hints}"; }};\n'
            )
        self._start(self.resolver, ["/usr/sbin/named", "-g", "-n", "1", "-c", conf], "named")

    def stop_resolver(self) -> None:
        """Stop the resolver: no more upstream traffic (and the end of its
        dnstap stream), so every observer has seen all there was."""
        for process in self.processes:
            if self.resolver_program in process.args:
                process.terminate()
                process.wait(timeout=30)

    def restart_resolver(self) -> None:
        """The resolver again, its cache empty: what it resolves next starts
        from the root, in view of whoever watches the upstream interface
        (the start-up check has taught the first one the way to lab.test)."""
        old = [process for process in self.processes if self.resolver_program in process.args]
        self.stop_resolver()
        for process in old:
            self.processes.remove(process)
            self._start(self.resolver, list(process.args[4:]), os.path.basename(self.resolver_program) + "-again")
        self._wait_ready()

    def _start(self, ns: str, argv: list[str], name: str) -> None:
        log = open(os.path.join(self.work, f"{name}.out"), "w")  # noqa: SIM115 - owned by the process
        self.processes.append(
            subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=log, stderr=subprocess.STDOUT)
        )

    def _wait_ready(self) -> None:
        """Until the resolver answers through the whole chain."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[3:]} exited: see {self.work}")
            result = self.ask("www.lab.test", "A", timeout=1)
            if "203.0.113.80" in result:
                return
            time.sleep(0.3)
        raise RuntimeError(f"the lab's resolver does not answer; logs in {self.work}")

    # --------------------------------------------------------------- use
    def ask(self, name: str, qtype: str, timeout: float = 10) -> str:
        """dig from the client through the resolver (over TCP, so big answers
        come back whole); the answer section."""
        argv = ["dig", f"@{RESOLVER_FRONT4}", name, qtype, "+short", "+tcp", f"+time={max(1, int(timeout))}"]
        argv.append("+tries=1")
        result = subprocess.run(
            ["ip", "netns", "exec", self.client, *argv], capture_output=True, text=True, timeout=timeout + 5
        )
        return result.stdout

    def __enter__(self) -> DnsLab:
        try:
            self._wire()
            files = self.zone_files = self._write_zones()
            for role in ("root", "tld", "zones", "refuser"):
                self._nsd(role, ZONES_OF[role], files)
            self._start(self.auth, [sys.executable, "-c", BLACKHOLE, *SERVERS["dead"]], "blackhole")
            self._start(self.auth, [sys.executable, "-c", POISONER, *SERVERS["poisoner"], POISON_ANSWER,
                                    json.dumps(POISONED)], "poisoner")
            if self.resolver_program.endswith("named"):
                self._named()
            else:
                self._unbound()
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for ns in (self.client, self.resolver, self.auth):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if not os.environ.get("SIE_LAB_KEEP"):
            shutil.rmtree(self.work, ignore_errors=True)


@click.command()
def main() -> None:
    """Bring the lab up until Ctrl-C (or SIGTERM), then remove all of it."""
    reason = available()
    if reason:
        raise click.ClickException(reason)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with DnsLab() as lab:
        click.echo(f"lab up: namespaces client={lab.client} resolver={lab.resolver} auth={lab.auth}")
        click.echo(f"  the resolver's upstream interface (capture here): {lab.upstream_if} in {lab.resolver}")
        click.echo(f"  ask: ip netns exec {lab.client} dig @{RESOLVER_FRONT4} big.signed.test TXT")
        click.echo(f"  files: {lab.work}; Ctrl-C to tear down")
        try:
            while not stop:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    click.echo("lab down")


if __name__ == "__main__":
    main()
