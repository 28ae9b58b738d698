"""Identifiers: UUIDv7 event ids (RFC 9562) and timestamps."""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timezone

_lock = threading.Lock()
# random is re-seeded in forked children by the interpreter; event ids need
# uniqueness, not secrecy.
_getrandbits = random.getrandbits
_last_ms = 0
_counter = 0


def uuid7() -> str:
    """A time-ordered UUIDv7 string; monotonic within the process.

    48-bit Unix milliseconds, then a 12-bit counter seeded randomly each
    millisecond (RFC 9562 method 1), then 62 random bits.
    """
    global _last_ms, _counter
    ms = time.time_ns() // 1_000_000
    rand = _getrandbits(74)
    with _lock:
        if ms > _last_ms:
            _last_ms = ms
            _counter = rand >> 63  # 11 random bits: leaves room to count up
        else:
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms += 1
                ms = _last_ms
                _counter = 0
        counter = _counter
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7_time(event_id: str) -> datetime:
    """The millisecond timestamp embedded in a UUIDv7 string."""
    ms = int(event_id.replace("-", "")[:12], 16)
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def format_time(ns: int) -> str:
    """RFC 3339 UTC timestamp with exactly six fractional digits and a ``Z``."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1000:06d}Z"


def now_ns() -> int:
    """Wall-clock nanoseconds since the epoch."""
    return time.time_ns()
