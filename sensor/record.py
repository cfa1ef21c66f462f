"""What a record is beyond its fields: the time it is filed under.

A record is a dict keyed by `constants.Field` numbers (nmsg base:dnsqr's
field numbers), built by the matcher and written by either spool format.
"""

from __future__ import annotations

from dataclasses import dataclass

from .constants import Field


@dataclass
class Envelope:
    """What an NMSG payload carries around the message (None: not known).

    A CBOR spool record has none of it: its time then comes from its first
    packet, as the reference sets it, and the payload length is computed.
    """

    time: tuple[int, int] | None = None
    source: int | None = None
    operator: int | None = None
    group: int | None = None
    payload_len: int | None = None


def record_time(record: dict) -> tuple[int, int]:
    """(sec, nsec) of the record: its first query packet, else its first
    response packet, as the reference stamps its NMSG payloads."""
    secs = record.get(Field.QUERY_TIME_SEC)
    if secs:
        return secs[0], record[Field.QUERY_TIME_NSEC][0]
    secs = record.get(Field.RESPONSE_TIME_SEC)
    if secs:
        return secs[0], record[Field.RESPONSE_TIME_NSEC][0]
    return 0, 0
