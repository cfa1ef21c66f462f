"""Frame Streams, the transport dnstap rides on, as a sans-I/O reader.

A stream is a sequence of frames, each a big-endian 32-bit length and that
many bytes. A length of 0 escapes a control frame: its own 32-bit length,
a 32-bit type, then fields (32-bit field type, 32-bit length, bytes); the
only field defined is the content type. A file, or a unidirectional
sender, starts with START and ends with STOP. A bidirectional sender (the
resolver on a socket) first offers READY with the content types it can
send, waits for ACCEPT naming the one chosen, then sends START ... STOP
and waits for FINISH.

`Reader.feed` takes whatever bytes arrived and returns the data frames
they completed; control frames that need an answer leave it in
`outgoing` for the caller to send. A violation (garbage, a frame over the
size limit, a content type other than dnstap's) sets `error` to a counter
name and the reader takes nothing more: the caller counts it and closes
the connection. Data frames before the violation are still returned.
"""

from __future__ import annotations

import enum
import struct

from sensor.edges.dnstap_schema import CONTENT_TYPE

_U32 = struct.Struct("!I")
_U32_PAIR = struct.Struct("!II")

# A dnstap message may carry a largest DNS message each way (64 KiB each)
# plus addresses, times and identity: twice 64 KiB and 1 KiB is room for
# any real one. fstrm caps control frames at 512 bytes.
MAX_DATA_FRAME = 2 * 65536 + 1024
MAX_CONTROL_FRAME = 512


class Control(enum.IntEnum):
    ACCEPT = 1
    START = 2
    STOP = 3
    READY = 4
    FINISH = 5


FIELD_CONTENT_TYPE = 1


def control_frame(kind: Control, content_types: tuple[bytes, ...] = ()) -> bytes:
    """A control frame, escape included, with content type fields."""
    body = _U32.pack(kind) + b"".join(
        _U32_PAIR.pack(FIELD_CONTENT_TYPE, len(ct)) + ct for ct in content_types
    )
    return _U32_PAIR.pack(0, len(body)) + body


def data_frame(payload: bytes) -> bytes:
    return _U32.pack(len(payload)) + payload


def _content_types(body: bytes) -> list[bytes] | None:
    """The content type fields of a control frame body (after its type);
    None when the fields do not add up to the frame."""
    found = []
    pos = 4
    while pos < len(body):
        if pos + 8 > len(body):
            return None
        field, length = _U32_PAIR.unpack_from(body, pos)
        pos += 8
        if pos + length > len(body):
            return None
        if field == FIELD_CONTENT_TYPE:
            found.append(body[pos : pos + length])
        pos += length
    return found


class State(enum.Enum):
    WAITING = "waiting"  # for READY (bidirectional) or START (a file)
    READY = "ready"  # ACCEPT sent, waiting for START
    DATA = "data"  # data frames until STOP
    STOPPED = "stopped"  # STOP seen (FINISH queued when bidirectional)


class Reader:
    """One stream's reader. `bidirectional` allows READY and answers it; a
    file has no one to answer and must start with START."""

    def __init__(self, bidirectional: bool, content_type: bytes = CONTENT_TYPE) -> None:
        self.bidirectional = bidirectional
        self.content_type = content_type
        self.state = State.WAITING
        self.outgoing = b""  # control frames to send back
        self.error: str | None = None
        self._pending = b""

    @property
    def idle(self) -> bool:
        """No partial frame held: the stream may end here without loss."""
        return not self._pending

    def feed(self, data: bytes) -> list[bytes]:
        """Data frames completed by `data` (in order)."""
        if self.error is not None or self.state is State.STOPPED:
            if data and self.error is None:
                self.error = "fstrm_after_stop"
            return []
        buf = self._pending + data if self._pending else data
        frames: list[bytes] = []
        append = frames.append
        pos = 0
        end = len(buf)
        unpack = _U32.unpack_from
        in_data = self.state is State.DATA
        while pos + 4 <= end:
            (length,) = unpack(buf, pos)
            if length:
                if not in_data:
                    self.error = "fstrm_data_before_start"
                    break
                if length > MAX_DATA_FRAME:
                    self.error = "fstrm_oversized_frame"
                    break
                stop = pos + 4 + length
                if stop > end:
                    break
                append(buf[pos + 4 : stop])
                pos = stop
                continue
            if pos + 8 > end:
                break
            (length,) = unpack(buf, pos + 4)
            if length < 4 or length > MAX_CONTROL_FRAME:
                self.error = "fstrm_bad_control_frame"
                break
            stop = pos + 8 + length
            if stop > end:
                break
            self._control(buf[pos + 8 : stop])
            pos = stop
            if self.error is not None or self.state is State.STOPPED:
                if self.error is None and pos < end:
                    self.error = "fstrm_after_stop"
                break
            in_data = self.state is State.DATA
        self._pending = b"" if self.error is not None else buf[pos:]
        return frames

    def _control(self, body: bytes) -> None:
        (kind,) = _U32.unpack_from(body, 0)
        types = _content_types(body)
        if types is None:
            self.error = "fstrm_bad_control_frame"
            return
        state = self.state
        if kind == Control.READY and state is State.WAITING and self.bidirectional:
            if self.content_type not in types:
                self.error = "fstrm_wrong_content_type"
                return
            self.outgoing += control_frame(Control.ACCEPT, (self.content_type,))
            self.state = State.READY
        elif kind == Control.START and (state is State.READY or (state is State.WAITING)):
            # fstrm puts at most one content type in START; none means "as agreed"
            if types and types[0] != self.content_type:
                self.error = "fstrm_wrong_content_type"
                return
            self.state = State.DATA
        elif kind == Control.STOP and state is State.DATA:
            if self.bidirectional:
                self.outgoing += control_frame(Control.FINISH)
            self.state = State.STOPPED
        else:
            self.error = "fstrm_unexpected_control_frame"

    def take_outgoing(self) -> bytes:
        out, self.outgoing = self.outgoing, b""
        return out
