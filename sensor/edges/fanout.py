"""Live capture across processes: one Linux PACKET_FANOUT group.

Each worker opens the interface with libpcap as usual, then puts its
packet socket into the same fanout group (pcapy-ng's `set_fanout`); the kernel hands each packet to
exactly one member. Hash mode keeps a flow in one worker: the kernel's
fanout hash is `__skb_get_hash_symmetric` (since Linux 4.x), the same for
both directions, so a query and its response meet in the same query table.
The defrag flag makes the kernel reassemble IPv4 fragments before it
chooses (the worker then sees the whole datagram, as one packet); IPv6
fragments are not reassembled by the kernel and hash on their addresses
alone, so a fragmented IPv6 response may reach another worker than its
query and be recorded unpaired (rare: resolvers cap UDP at 1,232 bytes).
"""

from __future__ import annotations

PACKET_FANOUT_HASH = 0  # <linux/if_packet.h>
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
# what pcapy-ng's set_fanout(group, type) puts in the high half of PACKET_FANOUT
MODE = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG


def group_id(pid: int) -> int:
    """A 16-bit group id for one sensor's workers (groups are per network
    namespace; the starting process's id keeps two sensors apart)."""
    return pid & 0xFFFF
