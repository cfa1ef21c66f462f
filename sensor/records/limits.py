"""The bounds the matcher works within unless told otherwise, in one place.

`config.py` offers the first two as the defaults of DNSQR_STATE_TABLE_MAX
and DNSQR_QUERY_TIMEOUT; the matcher, the fragment reassembler and the
dnstap decoder take them when they are given none (tests, `read`, tools).
Nothing here imports anything, so the uploader's configuration and the
sans-I/O core can both use it without one importing the other.
"""

from __future__ import annotations

STATE_TABLE_MAX = 131072  # outstanding queries held at once (DNSQR_STATE_TABLE_MAX)
QUERY_TIMEOUT = 60  # seconds of packet time a query waits for its response (DNSQR_QUERY_TIMEOUT)
FRAGMENT_BYTES = 8 * 1024 * 1024  # bytes of fragments held for reassembly
FRAGMENT_DATAGRAMS = 8192  # datagrams being reassembled at once
FRAGMENT_TIMEOUT = 30  # seconds of packet time a datagram's fragments wait for the rest
