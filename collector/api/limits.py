"""How much a key, and an address without one, may ask.

- `Windows`: at most `size` requests in a window of `seconds` per key
  (DNSDB's burst rate): the window opens with a key's first request and
  the next opens when it has passed; past the size, 429 until then.
- `Slots`: lookups under way at once per key (503 past it), so one key's
  slow readers cannot take every connection.
- `Guards`: refused keys per client address; past the allowance the
  address gets 429 for the rest of the window, whatever key it sends, so
  keys cannot be guessed at the speed of the server.

Each table is bounded (the oldest entries go first), so a flood of
addresses or names costs a fixed amount of memory.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

MAX_ENTRIES = 65536


class Windows:
    """Requests per window, per name."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.open: OrderedDict[str, tuple[float, int]] = OrderedDict()  # name -> (window start, requests)

    def take(self, name: str, size: int, seconds: int) -> float | None:
        """Count one request; None if it may go on, else seconds until the next window."""
        now = self.clock()
        start, used = self.open.get(name, (now, 0))
        if now - start >= seconds:
            start, used = now, 0
        if used >= size:
            return start + seconds - now
        self.open[name] = (start, used + 1)
        self.open.move_to_end(name)
        if len(self.open) > MAX_ENTRIES:
            self.open.popitem(last=False)
        return None

    def state(self, name: str, size: int, seconds: int) -> tuple[int, float]:
        """(requests left, seconds until the window resets) for the rate_limit report."""
        now = self.clock()
        start, used = self.open.get(name, (now, 0))
        if now - start >= seconds:
            return size, 0.0
        return max(size - used, 0), start + seconds - now


class Slots:
    """Lookups under way, per name."""

    def __init__(self) -> None:
        self.busy: dict[str, int] = {}

    def acquire(self, name: str, most: int) -> bool:
        if self.busy.get(name, 0) >= most:
            return False
        self.busy[name] = self.busy.get(name, 0) + 1
        return True

    def release(self, name: str) -> None:
        left = self.busy.get(name, 1) - 1
        if left:
            self.busy[name] = left
        else:
            self.busy.pop(name, None)


class Guards:
    """Refused keys per client address."""

    def __init__(self, allowance: int, seconds: int = 60, clock: Callable[[], float] = time.monotonic) -> None:
        self.allowance = allowance
        self.windows = Windows(clock)
        self.seconds = seconds

    def blocked(self, address: str) -> float | None:
        """Seconds this address must wait, or None."""
        left, wait = self.windows.state(address, self.allowance, self.seconds)
        return wait if left == 0 else None

    def refused(self, address: str) -> bool:
        """Count one refused key; True when this one used up the allowance (say so once)."""
        self.windows.take(address, self.allowance, self.seconds)
        return self.blocked(address) is not None
