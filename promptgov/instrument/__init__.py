"""One-line instrumentation of the LLM clients an application already uses.

::

    import promptgov

    promptgov.instrument()                      # every supported client installed
    promptgov.instrument("openai", "anthropic")  # or by name

Each call of an instrumented client records what ``@promptgov.llm_call``
records around it: a ``prompt`` event when the request starts (messages or
input, model, request parameters, ``streaming``) and a ``response`` event when
it ends (output, tool calls, finish reasons, usage, response model and id,
latency, time to first token, status, error). Sync and async clients, plain
and streamed calls and the SDKs' stream helpers are covered; the clients'
return values (stream objects included) and exceptions are unchanged.

``uninstrument()`` restores the clients. Both are idempotent and thread-safe;
a library that is not installed is skipped.
"""

from __future__ import annotations

import importlib
import threading

from promptgov import governor as _gov
from promptgov.instrument._core import STATE, patch, unpatch

SUPPORTED = ("openai", "anthropic")
_lock = threading.Lock()


def instrument(*libraries: str, governor: _gov.Governor | None = None) -> list[str]:
    """Patch the named clients (default: every supported one that is installed).

    Returns the libraries instrumented now or before, in the order asked.
    ``governor``: record into this governor rather than the one current at
    each call. An unknown name raises ``ValueError``; a supported library that
    is not installed is skipped.
    """
    names = libraries or SUPPORTED
    unknown = [n for n in names if n not in SUPPORTED]
    if unknown:
        raise ValueError(f"cannot instrument {', '.join(map(repr, unknown))}; "
                         f"supported: {', '.join(SUPPORTED)}")
    done: list[str] = []
    with _lock:
        if governor is not None:
            STATE.governor = governor
        for name in names:
            if name in STATE.patches:
                done.append(name)
                continue
            try:
                module = importlib.import_module(f"promptgov.instrument.{name}")
                targets = module.targets()
            except ImportError:
                continue  # the client is not installed
            patch(name, targets)
            done.append(name)
    return done


def uninstrument(*libraries: str) -> list[str]:
    """Restore the named clients (default: all); returns those that were instrumented."""
    with _lock:
        names = libraries or tuple(STATE.patches)
        restored = [name for name in names if unpatch(name)]
        if not STATE.patches:
            STATE.governor = None
    return restored


def instrumented() -> list[str]:
    """The libraries instrumented now."""
    return list(STATE.patches)


__all__ = ["SUPPORTED", "instrument", "instrumented", "uninstrument"]
