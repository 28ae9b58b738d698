"""Identifiers: UUIDv7 event ids (RFC 9562) and timestamps."""

from __future__ import annotations

import os
import random
import threading
import time
from datetime import datetime, timezone

_lock = threading.Lock()
_last = 0
# A generator of our own (seeded from os.urandom), never the host's global one:
# drawing from ``random`` would shift the host's seeded sequences. Event ids need
# uniqueness, not secrecy.
_rng = random.Random()
_getrandbits = _rng.getrandbits
_time_ns = time.time_ns
_RAND_B = (1 << 62) - 1


def uuid7() -> str:
    """A time-ordered UUIDv7 string (RFC 9562), strictly increasing within the process.

    48-bit Unix milliseconds, 12 bits of sub-millisecond time (method 3), 62
    random bits; when the clock does not move (or goes back) the previous id
    plus one is used, so ids never repeat or go backwards.
    """
    global _last
    ns = _time_ns()
    ms, sub = divmod(ns, 1_000_000)
    logical = (ms << 74) | ((sub * 4096 // 1_000_000) << 62) | _getrandbits(62)
    with _lock:
        if logical <= _last:
            logical = _last + 1
        _last = logical
    value = ((logical >> 74) << 80) | (0x7000 | ((logical >> 62) & 0xFFF)) << 64 | (
        0x8000000000000000 | (logical & _RAND_B))
    h = value.to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _after_fork_in_child() -> None:
    """A forked child: a fresh lock (the parent's may have been copied while held) and
    a re-seeded generator, so parent and child never draw the same ids."""
    global _lock, _last
    _lock = threading.Lock()
    _rng.seed()
    # Also leave the parent's "previous id + 1" path: if neither clock moves, the
    # parent and the child would otherwise both take ``_last + 1``.
    _last += 1 + _rng.getrandbits(40)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
