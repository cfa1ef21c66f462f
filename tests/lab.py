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

Names worth asking: www.lab.test A, mail.lab.test MX, nx.lab.test
(NXDOMAIN), big.signed.test TXT and big.signed6.test TXT (signed answers
of ~2.5 kB: fragmented over IPv4 and IPv6), big.tc.test TXT (truncated,
retried over TCP), www.refused.test A (REFUSED), www.dead.test A (timeouts).

    python -m tests.lab      # brings it up, prints how to use it; Ctrl-C tears it down
"""

from __future__ import annotations

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
}
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


class DnsLab:
    """Context manager: everything up on enter, everything gone on exit."""

    def __init__(self, dnstap_socket: str | None = None) -> None:
        """`dnstap_socket`: a unix socket path that unbound sends dnstap to
        (its resolver query and response messages); the listener must be
        there before the lab starts."""
        self.dnstap_socket = dnstap_socket
        tag = uuid.uuid4().hex[:5]
        self.client, self.resolver, self.auth = f"siec{tag}", f"sier{tag}", f"siea{tag}"
        self.client_if, self.front_if = f"lc{tag}", f"lf{tag}"
        self.upstream_if, self.auth_if = f"lu{tag}", f"la{tag}"  # the sensor captures on upstream_if
        self.work = tempfile.mkdtemp(prefix="sie-lab-")
        os.chmod(self.work, 0o755)
        self.processes: list[subprocess.Popen] = []

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

    def stop_resolver(self) -> None:
        """Stop unbound: no more upstream traffic (and the end of its dnstap
        stream), so every observer has seen all there was."""
        for process in self.processes:
            if "/usr/sbin/unbound" in process.args:
                process.terminate()
                process.wait(timeout=30)

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
            files = self._write_zones()
            self._nsd("root", ["."], files)
            self._nsd("tld", ["test."], files)
            self._nsd("zones", ["lab.test.", "signed.test.", "signed6.test.", "tc.test."], files)
            self._nsd("refuser", ["other.test."], files)
            self._start(self.auth, [sys.executable, "-c", BLACKHOLE, *SERVERS["dead"]], "blackhole")
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
