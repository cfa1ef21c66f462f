"""The libpcap edge: a live interface or a pcap file, through pcapy-ng.

Packets come in batches (`next_batch`: one call, one buffer, a packed
index) because a Python call per packet is too slow at resolver rates.
Each batch becomes a list of (IP datagram, seconds, nanoseconds); the link
header is stripped here so the matcher only ever sees IP. The same filter
expression is set on files as on interfaces, so replay and live capture
look at the same packets.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct

import pcapy

from .bpf import with_vlans
from .linklayer import DLT_EN10MB, finder_for

SNAPLEN = 65535
BATCH = 1024
LIVE_TIMEOUT_MS = 200
LIVE_BUFFER_BYTES = 64 * 1024 * 1024

_META = struct.Struct("=IIII")  # sec, usec, offset, caplen (native, as pcapy packs it)

Datagram = tuple[bytes, int, int]


class CaptureError(RuntimeError):
    """The interface or file could not be opened or filtered, or a live
    capture failed while running (the interface went away)."""


def device_exists(device: str) -> bool:
    """Whether the kernel knows this interface now (libpcap's own message
    for a missing one, "not-yet-activated pcap_t passed to pcap_compile",
    says nothing useful)."""
    if device == "any":
        return True
    try:
        socket.if_nametoindex(device)
    except OSError:
        return False
    return True


def _set_filter(handle, bpf: str) -> None:
    """Apply the sensor's filter, widened for VLAN tags on Ethernet."""
    if bpf:
        handle.setfilter(with_vlans(bpf) if handle.datalink() == DLT_EN10MB else bpf)


class Capture:
    """One open pcap handle and how to find IP inside its frames."""

    def __init__(self, handle, description: str, live: bool) -> None:
        self.handle = handle
        self.description = description
        self.live = live
        self.find_ip = finder_for(handle.datalink())
        self.not_ip = 0  # frames that carried no IP (ARP, LLDP, ...)
        self.fd = -1
        if live:
            handle.setnonblock(1)
            self.fd = handle.getfd()

    @classmethod
    def open_live(cls, device: str, promiscuous: bool, bpf: str) -> Capture:
        if not device_exists(device):
            raise CaptureError(f"interface {device!r} names no network device (configuration variable `interface`)")
        try:
            handle = pcapy.create(device)
            handle.set_snaplen(SNAPLEN)
            handle.set_promisc(1 if promiscuous else 0)
            handle.set_timeout(LIVE_TIMEOUT_MS)
            handle.set_buffer_size(LIVE_BUFFER_BYTES)
            handle.activate()
            _set_filter(handle, bpf)
        except pcapy.PcapError as exc:
            raise CaptureError(f"cannot capture on {device}: {exc}") from None
        return cls(handle, f"interface {device}", live=True)

    @classmethod
    def open_file(cls, path: str, bpf: str) -> Capture:
        try:
            handle = pcapy.open_offline(path)
            _set_filter(handle, bpf)
        except pcapy.PcapError as exc:
            raise CaptureError(f"cannot read {path}: {exc}") from None
        return cls(handle, f"file {path}", live=False)

    def read_batch(self) -> list[Datagram] | None:
        """The next datagrams; [] when a live capture timed out, None at EOF."""
        if self.live and not self._readable():
            return []
        try:
            buf, meta = self.handle.next_batch(BATCH)
        except pcapy.PcapError as exc:
            if self.live:
                raise CaptureError(f"{self.description}: {exc}") from None
            return None  # a file cut short ends where it is cut
        if not meta:
            return [] if self.live else None
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
