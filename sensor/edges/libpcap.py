"""The libpcap edge: a live interface or a pcap file, through pcapy-ng.

Packets come in batches (`next_batch`: one call, one buffer, a packed
index) because a Python call per packet is too slow at resolver rates.
Each batch becomes a list of (IP datagram, seconds, nanoseconds); the link
header is stripped here so the matcher only ever sees IP. The same filter
expression is set on files as on interfaces, so replay and live capture
look at the same packets.

A damaged record in a file (a lying length, a cut) makes libpcap fail the
whole batch it falls in, and with it the packets before it in that batch;
those are read again one at a time up to the damage, and a warning says
where the file ended and what was read before it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import struct
import time

import pcapy

from sensor.edges import fanout
from sensor.edges.linklayer import DLT_EN10MB, finder_for
from sensor.matching.bpf import with_vlans

SNAPLEN = 65535
BATCH = 1024
LIVE_TIMEOUT_MS = 200
STILL_THERE_EVERY = 1.0  # seconds between two looks, while idle, that the interface is still there
LIVE_BUFFER_BYTES = 64 * 1024 * 1024

_META = struct.Struct("=IIII")  # sec, usec, offset, caplen (native, as pcapy packs it)

Datagram = tuple[bytes, int, int]

log = logging.getLogger(__name__)


class CaptureError(RuntimeError):
    """The interface or file could not be opened or filtered, or a live
    capture failed while running (the interface went away)."""


def device_exists(device: str) -> bool:
    """Whether the kernel knows this interface now (libpcap's own message
    for a missing one, "not-yet-activated pcap_t passed to pcap_compile",
    says nothing useful)."""
    return device == "any" or _index_of(device) is not None


def _index_of(device: str) -> int | None:
    """The interface's index now, None when the kernel knows no such name."""
    try:
        return socket.if_nametoindex(device)
    except OSError:
        return None


def _set_filter(handle, bpf: str) -> None:
    """Apply the sensor's filter, widened for VLAN tags on Ethernet."""
    if bpf:
        handle.setfilter(with_vlans(bpf) if handle.datalink() == DLT_EN10MB else bpf)


class Capture:
    """One open pcap handle and how to find IP inside its frames."""

    def __init__(self, handle, description: str, live: bool, path: str = "", bpf: str = "") -> None:
        self.handle = handle
        self.description = description
        self.live = live
        self.path, self.bpf = path, bpf  # a file's, to re-read it up to a damaged record
        self.delivered = 0  # records handed out so far (a file's, after the filter)
        self.damaged = ""  # a file's: where it ended early, in words
        self.find_ip = finder_for(handle.datalink())
        self.not_ip = 0  # frames that carried no IP (ARP, LLDP, ...)
        self.fd = -1
        self.device = ""  # a live capture's interface
        self.device_index: int | None = None  # its index when opened (None: "any", or a file)
        self._next_look = 0.0  # when an idle live capture next checks its interface is still there
        if live:
            handle.setnonblock(1)
            self.fd = handle.getfd()

    @classmethod
    def open_live(cls, device: str, promiscuous: bool, bpf: str, fanout_group: int | None = None) -> Capture:
        """`fanout_group`: share the interface's packets with the other
        workers in this group (capture_workers > 1; see fanout.py)."""
        if not device_exists(device):
            raise CaptureError(f"interface {device!r} names no network device")
        try:
            handle = pcapy.create(device)
            handle.set_snaplen(SNAPLEN)
            handle.set_promisc(1 if promiscuous else 0)
            handle.set_timeout(LIVE_TIMEOUT_MS)
            handle.set_buffer_size(LIVE_BUFFER_BYTES)
            handle.activate()
            _set_filter(handle, bpf)
            if fanout_group is not None:
                handle.set_fanout(fanout_group, fanout.MODE)
        except (pcapy.PcapError, OSError) as exc:
            raise CaptureError(f"cannot capture on {device}: {exc}") from None
        capture = cls(handle, f"interface {device}", live=True)
        capture.device = device
        capture.device_index = None if device == "any" else _index_of(device)
        return capture

    @classmethod
    def open_file(cls, path: str, bpf: str) -> Capture:
        try:
            handle = pcapy.open_offline(path)
            _set_filter(handle, bpf)
        except pcapy.PcapError as exc:
            raise CaptureError(f"cannot read {path}: {exc}") from None
        return cls(handle, f"file {path}", live=False, path=path, bpf=bpf)

    def read_batch(self) -> list[Datagram] | None:
        """The next datagrams; [] when a live capture timed out, None at EOF."""
        if self.live and not self._readable():
            self._check_still_there()
            return []
        if self.damaged:
            return None
        try:
            buf, meta = self.handle.next_batch(BATCH)
        except pcapy.PcapError as exc:
            if self.live:
                raise CaptureError(f"{self.description}: {exc}") from None
            return self._up_to_damage(exc)
        if not meta:
            if self.live:
                self._check_still_there()
                return []
            return None
        self.delivered += len(meta) // _META.size
        find_ip = self.find_ip
        batch = []
        append = batch.append
        for sec, usec, offset, caplen in _META.iter_unpack(meta):
            end = offset + caplen
            start = find_ip(buf, offset, end)
            if start < 0:
                self.not_ip += 1
                continue
            append((buf[start:end], sec, usec * 1000))
        return batch

    def _up_to_damage(self, error: pcapy.PcapError) -> list[Datagram]:
        """The packets of the failed batch before the damaged record, and a warning.

        Off the hot path: the file is opened again, the records already
        handed out are skipped in batches, then read one at a time.
        """
        batch = []
        try:
            handle = pcapy.open_offline(self.path)
            _set_filter(handle, self.bpf)
            _skip(handle, self.delivered)
            while True:
                header, frame = handle.next()
                if header is None:
                    break
                sec, usec = header.getts()
                start = self.find_ip(frame, 0, len(frame))
                if start < 0:
                    self.not_ip += 1
                    continue
                batch.append((frame[start:], sec, usec * 1000))
        except pcapy.PcapError:
            pass  # the same damage, reached again
        self.delivered += len(batch)
        before = _records_before_damage(self.path)
        self.damaged = (
            f"{self.description} is damaged at packet {before + 1} ({error}): read {before} packets "
            f"before it, nothing after"
        )
        log.warning("%s", self.damaged)
        return batch

    def _check_still_there(self) -> None:
        """CaptureError when the interface opened is gone (or another took its name), looked at
        once a second while the capture is idle. libpcap says so itself, almost always; once in
        CI it did not within 30 s of an `ip link del`, and status said capturing on a deleted
        interface (and the sensor never reopened the new one)."""
        if self.device_index is None:
            return
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + STILL_THERE_EVERY
        index = _index_of(self.device)
        if index != self.device_index:
            raise CaptureError(f"{self.description}: the interface is gone" if index is None else
                               f"{self.description}: the interface was replaced (index {self.device_index} "
                               f"is now {index})")

    def _readable(self) -> bool:
        """Wait at most LIVE_TIMEOUT_MS for packets.

        libpcap's own wait (TPACKET_V3) does not come back on an idle link,
        and a signal does not end it, so a quiet sensor could not be stopped;
        the handle is non-blocking and this select() does the waiting.
        """
        try:
            ready, _, _ = select.select([self.fd], [], [], LIVE_TIMEOUT_MS / 1000)
        except (OSError, ValueError) as exc:
            raise CaptureError(f"{self.description}: {exc}") from None
        return bool(ready)

    def position(self) -> int:
        """Bytes of a capture file read so far (for a progress bar); 0 live."""
        if self.live:
            return 0
        try:
            return os.lseek(self.handle.getfd(), 0, os.SEEK_CUR)
        except (OSError, pcapy.PcapError):
            return 0

    def kernel_stats(self) -> tuple[int, int, int]:
        """(received, dropped by the kernel, dropped by the interface)."""
        try:
            return tuple(self.handle.stats())
        except (pcapy.PcapError, ValueError):  # ValueError: already closed
            return (0, 0, 0)

    def close(self) -> None:
        with contextlib.suppress(pcapy.PcapError):
            self.handle.close()


def _skip(handle, count: int) -> None:
    """Read past `count` records in batches."""
    while count > 0:
        _, meta = handle.next_batch(min(BATCH, count))
        if not meta:
            return
        count -= len(meta) // _META.size


def _records_before_damage(path: str) -> int:
    """How many records of the file (unfiltered) precede the first it cannot read."""
    count = 0
    try:
        handle = pcapy.open_offline(path)
        while True:  # whole batches while they read, then one at a time in the failing one
            _, meta = handle.next_batch(BATCH)
            if not meta:
                return count
            count += len(meta) // _META.size
    except pcapy.PcapError:
        pass
    try:
        handle = pcapy.open_offline(path)
        _skip(handle, count)
        while handle.next()[0] is not None:
            count += 1
    except pcapy.PcapError:
        pass
    return count
