"""Records of resolutions, built in code, for the collector's tests.

A resolution walks from the root down, as a resolver does: the root's
referral to `test.`, the TLD's referral to the zone, the zone's answer.
Each response becomes the spool record the sensor would write for it.
"""

from __future__ import annotations

import dns.message
import dns.rrset

from sensor.records.record import Field, RecordType, UdpChecksum
from tests.packets import RESOLVER, _packed, udp

ROOT, TLD, ZONE, POISONER, STRANGER = "198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.6", "198.51.100.9"
ROOT_HINTS = f""". 3600000 NS a.root-servers.lab.
a.root-servers.lab. 3600000 A {ROOT}
"""


def response_record(server: str, message: dns.message.Message, when: int, checksum: int = UdpChecksum.CORRECT,
                    kind: int = RecordType.UDP_QUERY_RESPONSE) -> dict:
    """The spool record of one query and `message` as its response."""
    wire = message.to_wire()
    query = dns.message.make_query(message.question[0].name, message.question[0].rdtype)
    query.id = message.id
    return {
        Field.TYPE: kind, Field.QUERY_IP: _packed(RESOLVER), Field.RESPONSE_IP: _packed(server),
        Field.PROTO: 17, Field.QUERY_PORT: 40000, Field.RESPONSE_PORT: 53, Field.ID: message.id,
        Field.QUERY_PACKET: [udp(RESOLVER, server, 40000, 53, query.to_wire())],
        Field.QUERY_TIME_SEC: [when], Field.QUERY_TIME_NSEC: [0],
        Field.RESPONSE_PACKET: [udp(server, RESOLVER, 53, 40000, wire)],
        Field.RESPONSE_TIME_SEC: [when], Field.RESPONSE_TIME_NSEC: [500_000],
        Field.UDP_CHECKSUM: checksum,
    }


def message(qname: str, qtype: str = "A", answer=(), authority=(), additional=(), aa: bool = False,
            ident: int = 0x1234) -> dns.message.Message:
    """A response with RRsets given as (name, type, [rdata text]) tuples."""
    query = dns.message.make_query(qname, qtype)
    query.id = ident
    reply = dns.message.make_response(query)
    if aa:
        reply.flags |= dns.flags.AA
    for section, rrsets in ((reply.answer, answer), (reply.authority, authority), (reply.additional, additional)):
        for name, rrtype, datas in rrsets:
            section.append(dns.rrset.from_text_list(name, 300, "IN", rrtype, datas))
    return reply


def resolution(host: str, zone: str, address: str, when: int, zone_server: str = ZONE) -> list[dict]:
    """Root referral, TLD referral, the zone's answer: three records."""
    tld = zone.split(".", 1)[1]
    return [
        response_record(ROOT, message(host, authority=[(f"{tld}.", "NS", [f"ns1.nic.{tld}."])],
                                      additional=[(f"ns1.nic.{tld}.", "A", [TLD])]), when),
        response_record(TLD, message(host, authority=[(f"{zone}.", "NS", [f"ns1.{zone}."])],
                                     additional=[(f"ns1.{zone}.", "A", [zone_server])]), when),
        response_record(zone_server, message(host, answer=[(f"{host}.", "A", [address])],
                                             authority=[(f"{zone}.", "NS", [f"ns1.{zone}."])], aa=True), when),
    ]


def hints_file(folder: str) -> str:
    """ROOT_HINTS written to `folder`/root.hints; its path."""
    import os

    path = os.path.join(folder, "root.hints")
    with open(path, "w") as handle:
        handle.write(ROOT_HINTS)
    return path


def collector_config(folder: str, root: str, store: str = "", **settings: str) -> str:
    """A configuration file in `folder` for the collector at `root`: `store` (empty: the embedded
    file), the test root's hints, quick batches and a small front table, then `settings`; its path."""
    import os

    path = os.path.join(folder, f"collector-{os.path.basename(root)}.conf")
    values = {"collector_dir": root, "store": store, "root_hints": hints_file(folder), "dedup_window": "1",
              "dedup_max_entries": "1000", **settings}
    with open(path, "w") as handle:
        handle.writelines(f'{name}="{value}"\n' for name, value in values.items())
    return path


def write_spool(path: str, records: list[dict], compress: bool = True) -> None:
    """An NMSG spool file as the sensor writes it."""
    from sensor.spool.formats import NmsgFormat

    with open(path, "wb") as handle:
        stream = NmsgFormat(compress=compress).open(handle, "sensor", "ch202", 0, 0)
        stream.write(records)
        stream.finish()


def upload(root: str, sensor: str, name: str, records: list[dict], channel: str = "ch202") -> str:
    """Put a spool file where a sensor's upload lands; its path."""
    import os

    folder = os.path.join(root, "incoming", sensor, "up", channel)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    write_spool(path, records)
    return path
