"""Small DNS programs run inside test namespaces (python -c SCRIPT).

RESPONDER plays an authoritative server on 198.51.100.1 and 2001:db8:1::1
port 53: it answers every query except names under drop.example. ASKER
plays the resolver: from 192.0.2.53 (and 2001:db8::53) it sends argv[1]
iterative queries per address family, every tenth under drop.example and
the sixth with RD set; with argv[2] == "4" it uses IPv4 only. USER is an
end user asking the resolver (never to be recorded).
"""

import textwrap

RESPONDER = textwrap.dedent(
    """
    import socket, sys, dpkt
    socks = []
    for family, addr in ((socket.AF_INET, "198.51.100.1"), (socket.AF_INET6, "2001:db8:1::1")):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((addr, 53))
        socks.append(s)
    print("ready", flush=True)
    import select
    while True:
        ready, _, _ = select.select(socks, [], [])
        for s in ready:
            data, peer = s.recvfrom(4096)
            msg = dpkt.dns.DNS(data)
            if msg.qd[0].name.endswith("drop.example"):
                continue
            msg.qr = dpkt.dns.DNS_R
            rr = dpkt.dns.DNS.RR(name=msg.qd[0].name, type=dpkt.dns.DNS_A, ttl=60)
            rr.ip = bytes([203, 0, 113, 7])
            msg.an = [rr]
            s.sendto(bytes(msg), peer)
    """
)

ASKER = textwrap.dedent(
    """
    import socket, sys, dpkt
    count = int(sys.argv[1])
    pairs = [(socket.AF_INET, "192.0.2.53", "198.51.100.1"), (socket.AF_INET6, "2001:db8::53", "2001:db8:1::1")]
    if len(sys.argv) > 2 and sys.argv[2] == "4":
        pairs = pairs[:1]
    for family, src, dst in pairs:
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((src, 0))
        s.settimeout(0.3)
        for i in range(count):
            name = f"q{i}.drop.example" if i % 10 == 9 else f"q{i}.example"
            q = dpkt.dns.DNS(id=i, qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A)], an=[], ns=[], ar=[])
            q.op = 0  # iterative, as a resolver asks (RD clear); a query with RD set goes too
            if i == 5:
                q.op = dpkt.dns.DNS_RD
            s.sendto(bytes(q), (dst, 53))
            try:
                s.recvfrom(4096)
            except socket.timeout:
                pass
    """
)

# a user's query to the resolver: must never be recorded
USER = textwrap.dedent(
    """
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("198.51.100.1", 0))
    s.sendto(b"\\x00\\x01\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x04user\\x00\\x00\\x01\\x00\\x01",
             ("192.0.2.53", 53))
    """
)
