"""A time bound on host code that promptgov runs: ``__repr__``, ``__str__``, mappers.

Converting the host's objects into JSON runs the host's own methods, on the
publisher thread (or, in ``wal`` mode, on the host's thread). A method that
loops, sleeps or raises ``SystemExit`` must not stall or kill promptgov. Code
run under :func:`bounded` gets a deadline; a watchdog thread raises
:class:`HostCodeTimeout` in the running thread when it passes (at the next
bytecode boundary: a C extension stuck in a single call cannot be stopped).

The caller catches :class:`HostCodeTimeout` and degrades the event to its
metadata; the exception never reaches the host.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_POLL = 0.01
_REFIRE = 0.05


class HostCodeTimeout(BaseException):
    """Host code ran past its deadline (raised by the watchdog; never reaches the host)."""


class _Watchdog:
    """One thread for the process: injects HostCodeTimeout into overdue threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arms: dict[int, float] = {}
        self._fired: set[int] = set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        ident = threading.get_ident()
        with self._lock:
            idle = not self._arms
            self._arms[ident] = time.monotonic() + seconds
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="promptgov-watchdog",
                                                daemon=True)
                self._thread.start()
        if idle:
            self._wake.set()
        return ident

    def armed(self, ident: int) -> bool:
        """Whether the thread runs under a bound already (an inner bound keeps the outer)."""
        return ident in self._arms or ident in self._fired

    def disarm(self, ident: int) -> None:
        """Stop watching; clears a timeout injected but not yet raised, so none escapes."""
        with self._lock:
            self._arms.pop(ident, None)
            if ident in self._fired:
                self._fired.discard(ident)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)

    def _run(self) -> None:
        while True:
            if not self._arms:
                self._wake.wait()
                self._wake.clear()
            time.sleep(_POLL)
            now = time.monotonic()
            with self._lock:  # check and inject atomically with respect to disarm()
                for ident, deadline in list(self._arms.items()):
                    if now >= deadline:
                        # again every _REFIRE until disarmed: host code that catches
                        # BaseException in a loop is interrupted outside its try block
                        self._arms[ident] = now + _REFIRE
                        self._fired.add(ident)
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(ident), ctypes.py_object(HostCodeTimeout))

    def after_fork_in_child(self) -> None:
        self.__init__()  # type: ignore[misc]  # the thread did not survive the fork


_watchdog = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_watchdog.after_fork_in_child)


def bounded(seconds: float, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)``; raise :class:`HostCodeTimeout` if it runs past ``seconds``.

    Any other exception of ``fn`` (``SystemExit`` included) propagates unchanged.
    Nested calls keep the outermost bound.
    """
    if _watchdog.armed(threading.get_ident()):
        return fn(*args)
    ident = _watchdog.arm(seconds)
    try:
        return fn(*args)
    finally:
        _watchdog.disarm(ident)
