"""dnstap traffic made in code: messages, Frame Streams files, a sender.

For the benchmark and the tests. Messages are what a resolver reports for
its upstream exchanges (RESOLVER_QUERY, then RESOLVER_RESPONSE with the
query time), encoded with the sensor's own schema; `write_file` writes a
file as fstrm_capture does (START, data frames, STOP) and `Sender` speaks
the bidirectional handshake as a resolver does (READY, wait for ACCEPT,
START, data, STOP, wait for FINISH).

    python -m bench.dnstap_traffic --count 1000000 --seed 1 out.fstrm
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct

import click

from sensor.edges.dnstap_schema import CONTENT_TYPE, Dnstap, DnstapType, MessageType, SocketFamily, SocketProtocol
from sensor.edges.framestream import Control, control_frame, data_frame

RESOLVER4 = ipaddress.ip_address("192.0.2.53").packed
RESOLVER6 = ipaddress.ip_address("2001:db8::53").packed
CLIENT4 = ipaddress.ip_address("203.0.113.10").packed
_HEADER = struct.Struct("!HHHHHH")
_TAIL = struct.Struct("!HH")
_ANSWER_A = struct.Struct("!HHHIH4s")


def dns_query(ident: int, qname: bytes, qtype: int = 1, flags: int = 0) -> bytes:
    return _HEADER.pack(ident, flags, 1, 0, 0, 0) + qname + _TAIL.pack(qtype, 1)


def dns_response(query: bytes, rcode: int = 0, answer: bytes | None = b"\xc6\x33\x64\x50") -> bytes:
    """The response to `query`: QR and AA set, the question, one A record."""
    ident, flags = struct.unpack_from("!HH", query)
    answers = 1 if answer and rcode == 0 else 0
    body = query[12:]
    if answers:
        body += _ANSWER_A.pack(0xC00C, 1, 1, 300, 4, answer)
    return _HEADER.pack(ident, flags | 0x8400 | rcode, 1, answers, 0, 0) + body


def name(text: str) -> bytes:
    return b"".join(bytes((len(p),)) + p.encode() for p in text.rstrip(".").split(".") if p) + b"\x00"


def message(
    kind: MessageType,
    query_address: bytes,
    response_address: bytes,
    query_port: int,
    response_port: int,
    *,
    query: bytes | None = None,
    response: bytes | None = None,
    query_time: tuple[int, int] | None = None,
    response_time: tuple[int, int] | None = None,
    protocol: SocketProtocol = SocketProtocol.UDP,
    identity: bytes = b"bench",
) -> bytes:
    """One serialized Dnstap message."""
    dnstap = Dnstap(identity=identity, version=b"sie-dns-sensor bench", type=DnstapType.MESSAGE)
    m = dnstap.message
    m.type = kind
    m.socket_family = SocketFamily.INET if len(query_address) == 4 else SocketFamily.INET6
    m.socket_protocol = protocol
    m.query_address, m.response_address = query_address, response_address
    m.query_port, m.response_port = query_port, response_port
    if query_time:
        m.query_time_sec, m.query_time_nsec = query_time
    if response_time:
        m.response_time_sec, m.response_time_nsec = response_time
    if query is not None:
        m.query_message = query
    if response is not None:
        m.response_message = response
    return dnstap.SerializeToString()


def exchanges(count: int, seed: int = 1, start: int = 1_700_000_000) -> list[bytes]:
    """`count` messages: count/2 RESOLVER_QUERY/RESOLVER_RESPONSE pairs over
    a skewed set of names and 64 authorities, 10% over IPv6, 1-80 ms apart."""
    rng = random.Random(seed)
    names = [name(f"w{i}.example{i % 97}.test") for i in range(5000)]
    authorities4 = [bytes((198, 51, 100, i + 1)) for i in range(64)]
    authorities6 = [ipaddress.ip_address(f"2001:db8:1::{i + 1:x}").packed for i in range(64)]
    out = []
    nsec_clock = 0
    for _ in range(count // 2):
        nsec_clock += rng.randrange(5_000, 15_000)  # ~100k exchanges per second of traffic
        sec, nsec = start + nsec_clock // 10**9, nsec_clock % 10**9
        v6 = rng.random() < 0.1
        resolver = RESOLVER6 if v6 else RESOLVER4
        authority = rng.choice(authorities6 if v6 else authorities4)
        port = rng.randrange(1024, 65536)
        query = dns_query(rng.randrange(65536), names[int(rng.paretovariate(1.2)) % len(names)], rng.choice((1, 28)))
        delay = rng.randrange(1_000_000, 80_000_000)
        reply_ns = nsec_clock + delay
        response = dns_response(query, rcode=3 if rng.random() < 0.12 else 0)
        out.append(message(MessageType.RESOLVER_QUERY, resolver, authority, port, 53,
                           query=query, query_time=(sec, nsec)))
        out.append(message(MessageType.RESOLVER_RESPONSE, resolver, authority, port, 53, response=response,
                           query_time=(sec, nsec), response_time=(start + reply_ns // 10**9, reply_ns % 10**9)))
    return out


def file_bytes(payloads: list[bytes]) -> bytes:
    """A unidirectional Frame Streams file: START, data frames, STOP."""
    return (
        control_frame(Control.START, (CONTENT_TYPE,))
        + b"".join(data_frame(p) for p in payloads)
        + control_frame(Control.STOP)
    )


def write_file(path: str, payloads: list[bytes]) -> None:
    with open(path, "wb") as handle:
        handle.write(file_bytes(payloads))


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed during the handshake")
        data += chunk
    return data


def read_control(sock: socket.socket) -> tuple[int, bytes]:
    """(control type, body) of the next control frame from the reader."""
    escape, length = struct.unpack("!II", _read_exactly(sock, 8))
    if escape != 0:
        raise ConnectionError("expected a control frame")
    body = _read_exactly(sock, length)
    return struct.unpack_from("!I", body)[0], body


class Sender:
    """A resolver's side of a Frame Streams socket (bidirectional)."""

    def __init__(self, address, family: int = socket.AF_UNIX, content_type: bytes = CONTENT_TYPE) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(address)
        self.content_type = content_type

    def handshake(self) -> None:
        self.sock.sendall(control_frame(Control.READY, (self.content_type,)))
        kind, _ = read_control(self.sock)
        if kind != Control.ACCEPT:
            raise ConnectionError(f"expected ACCEPT, got {kind}")
        self.sock.sendall(control_frame(Control.START, (self.content_type,)))

    def send(self, payloads: list[bytes], chunk: int = 4096) -> None:
        for i in range(0, len(payloads), chunk):
            self.sock.sendall(b"".join(data_frame(p) for p in payloads[i : i + chunk]))

    def finish(self) -> None:
        self.sock.sendall(control_frame(Control.STOP))
        kind, _ = read_control(self.sock)
        if kind != Control.FINISH:
            raise ConnectionError(f"expected FINISH, got {kind}")
        self.sock.close()


@click.command()
@click.option("--count", default=1_000_000, show_default=True, help="messages (half queries, half responses)")
@click.option("--seed", default=1, show_default=True)
@click.argument("path")
def main(count: int, seed: int, path: str) -> None:
    """Write a Frame Streams file of resolver query/response messages."""
    write_file(path, exchanges(count, seed))
    click.echo(f"{path}: {count} messages")


if __name__ == "__main__":
    main()
