"""What a record is beyond its fields: the time it is filed under.

A record is a dict keyed by `constants.Field` numbers (nmsg base:dnsqr's
field numbers), built by the matcher and written by either spool format.
"""

from __future__ import annotations

from .constants import Field


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
