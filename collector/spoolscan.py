"""A spool file read for the chain: per container, what the chain takes from each record.

The ingest needs of a record only its response (server, time, DNS message)
and the message's RRsets; building and checking the record's dict and
walking the container's fields in Python cost more than the rest of the
chain together. So an NMSG file's containers are read as `nmsg.Reader`
reads them (the same header checks, fragment joining and bounded inflating,
`_Body`), but each body's payloads are walked in C (`collector._ingest`,
see collector/_nmsgscan.c), which gives per record either

- (server, response time, RRsets as ((owner, type, rdatas), ...)), or
- the name of the counter the record goes to (`Chain.take`), or
- a record dict, read in Python (`dnsqr.decode`, `record.check`) because
  the C part does not take it (TCP, fragments, anything unusual).

A container the C part gives up on (damage, another payload type, a CRC
that does not match) is read again by `nmsg.Reader`, so what is yielded
and the error raised are what `spoolfile.read` gives: the records before
the damage, then SpoolError naming the file, container, payload and byte.
A CBOR file is read by `spoolfile.read`, one record dict each.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from sensor.records.record import MAX_LIST, Field, RecordType, UdpChecksum, check
from sensor.spool import dnsqr, nmsg
from sensor.spool.cbor import SpoolError
from sensor.spool.formats import open_regular, read

from . import _ingest, chain


def _built_for_these_rules() -> bool:
    """Whether the numbers the C part was built with are the Python ones."""
    layout = dnsqr._LAYOUT
    wires = tuple(layout[n][0] if n in layout else -1 for n in range(len(_ingest.DNSQR_WIRES)))
    return (
        (_ingest.VENDOR_BASE, _ingest.MSGTYPE_DNSQR) == (nmsg.VENDOR_BASE, nmsg.MSGTYPE_DNSQR)
        and (_ingest.TYPE_UDP_QUERY_RESPONSE, _ingest.TYPE_TCP) == (RecordType.UDP_QUERY_RESPONSE, RecordType.TCP)
        and max(RecordType) == _ingest.TYPE_MAX_KNOWN and _ingest.TIME_MAX == chain.TIME_MAX
        and _ingest.CHECKSUM_INCORRECT == UdpChecksum.INCORRECT and _ingest.MAX_LIST == MAX_LIST
        and nmsg.MAX_PAYLOADS == _ingest.MAX_PAYLOADS
        and all(getattr(Field, name) == number for name, number in _ingest.FIELDS.items())
        and wires == _ingest.DNSQR_WIRES and max(layout) < len(wires)
    )


if not _built_for_these_rules():  # a stale build would read records by other numbers: refused at start
    raise ImportError("collector._ingest was built for other NMSG or record numbers: rebuild it")

BATCH = 4096  # records per list from a CBOR file (an NMSG file gives one list a container)


def batches(path: str) -> Iterator[list]:
    """Lists of items (see the module's text) for every record of a spool
    file, in order; SpoolError as `spoolfile.read` raises it."""
    with open_regular(path) as stream:
        if nmsg.is_nmsg(stream.read(4)):
            stream.seek(0)
            try:
                yield from _Scanner(stream).batches()
            except (nmsg.NmsgError, zlib.error) as exc:
                raise SpoolError(f"{path}: {exc}") from None
            return
    batch = []
    try:
        for record, _ in read(path):
            batch.append(record)
            if len(batch) == BATCH:
                yield batch
                batch = []
    except SpoolError:
        if batch:  # what decoded before the damage is ingested (it was dropped with its batch)
            yield batch
        raise
    if batch:
        yield batch


class _Scanner(nmsg.Reader):
    """nmsg.Reader whose containers' payloads are walked in C while they are well-formed."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.number = 0  # base:dnsqr records so far (nmsg.records' count, for its errors)

    def batches(self) -> Iterator[list]:
        """nmsg.Reader.containers, each container's records as items."""
        for number, (flags, body, end) in enumerate(nmsg.containers(self.stream, self.allow_cut), 1):
            where = f"container {number} at byte {end - nmsg.HEADER.size - len(body)}"
            if flags & nmsg.FLAG_FRAGMENT:
                body = self.defragmenter.add(body, where)
                if body is None:
                    continue
                where += " (joined from its fragments)"
            fast = self._fast(flags, body, where)
            if fast is None:
                yield from self._slow(self._payloads(nmsg._Body(flags, body, where)))
            else:
                yield from self._records(*fast, where)
        if not self.allow_cut:
            self.defragmenter.check_complete()

    def _fast(self, flags: int, raw: bytes, where: str) -> tuple[list, list[int]] | None:
        """The container's items from the C walk, and the indices of those
        left to Python; None when it gives up (nmsg.Reader then reads the
        container and says what is wrong)."""
        try:
            body = nmsg._Body(flags, raw, where)
            declared = body.declared if body.inflater is not None else len(raw)
            items: list = []
            odd: list[int] = []  # the indices of the items left to Python
            computed: list[int] = []
            crcs: list[int] = []
            while True:
                body.pos, status = _ingest.scan(body.buf, body.pos, declared - body.base, body.base, items, odd,
                                                computed, crcs)
                if status == _ingest.GIVE_UP or len(items) > nmsg.MAX_PAYLOADS or len(crcs) > nmsg.MAX_PAYLOADS:
                    return None
                if not body.more():
                    break
            body.check_end()
        except nmsg.NmsgError:
            return None
        if body.pos != len(body.buf) or (crcs and crcs != computed):
            return None
        return items, odd

    def _records(self, items: list, odd: list[int], where: str) -> Iterator[list]:
        """The items, those left to Python read as records: up to the first
        bad one, then the error nmsg.records raises for it."""
        for index in odd:
            offset, data = items[index]
            try:
                items[index] = check(dnsqr.decode(data))
            except ValueError as exc:
                if index:
                    yield items[:index]
                payload = nmsg.Payload((where, index + 1, offset))
                raise nmsg.NmsgError(f"{payload.where()}: record {self.number + index + 1}: undecodable dnsqr "
                                     f"payload ({exc})") from None
        self.number += len(items)
        if items:
            yield items

    def _slow(self, payloads: list[nmsg.Payload]) -> Iterator[list]:
        """Records of a container nmsg.Reader read, as nmsg.records gives them."""
        batch = []
        for payload in payloads:
            if payload.vid != nmsg.VENDOR_BASE or payload.msgtype != nmsg.MSGTYPE_DNSQR:
                continue
            self.number += 1
            try:
                batch.append(check(dnsqr.decode(payload.data)))
            except ValueError as exc:
                if batch:
                    yield batch
                raise nmsg.NmsgError(f"{payload.where()}: record {self.number}: undecodable dnsqr payload "
                                     f"({exc})") from None
        if batch:
            yield batch
