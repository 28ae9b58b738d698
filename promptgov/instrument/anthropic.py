"""The ``anthropic`` client: messages, plain and streamed, and the ``stream`` helper.

Patched, sync and async: ``messages.create`` / ``parse``, ``messages.stream``
(the helper's manager makes its request on ``__enter__``: recorded from
there), the same under ``beta.messages``, and the ``close`` of ``Stream`` /
``AsyncStream`` (the helper streams close through it).

A client with its own OpenTelemetry tracing on (``open_telemetry`` option,
with a tracer provider) opens a GenAI span for each call; promptgov then opens
none of its own for that call.
"""

from __future__ import annotations

import importlib
from typing import Any

from promptgov import telemetry
from promptgov.instrument._core import Target

PROVIDER = "anthropic"

# (module, class, method, kind)
_METHODS = (
    ("anthropic.resources.messages", "Messages", "create", "sync"),
    ("anthropic.resources.messages", "Messages", "parse", "sync"),
    ("anthropic.resources.messages", "Messages", "stream", "manager"),
    ("anthropic.resources.messages", "AsyncMessages", "create", "async"),
    ("anthropic.resources.messages", "AsyncMessages", "parse", "async"),
    ("anthropic.resources.messages", "AsyncMessages", "stream", "async_manager"),
    ("anthropic.resources.beta.messages", "Messages", "create", "sync"),
    ("anthropic.resources.beta.messages", "Messages", "parse", "sync"),
    ("anthropic.resources.beta.messages", "Messages", "stream", "manager"),
    ("anthropic.resources.beta.messages", "AsyncMessages", "create", "async"),
    ("anthropic.resources.beta.messages", "AsyncMessages", "parse", "async"),
    ("anthropic.resources.beta.messages", "AsyncMessages", "stream", "async_manager"),
)
_CLOSES = (
    ("anthropic", "Stream", "close", "close"),
    ("anthropic", "AsyncStream", "close", "async_close"),
)


def targets() -> list[Target]:
    """What to patch in the installed ``anthropic`` (ImportError when it is not installed)."""
    importlib.import_module("anthropic")
    found: list[Target] = []
    for module, cls, method, kind in _METHODS:
        owner = _class(module, cls)
        if owner is not None and method in owner.__dict__:
            found.append(Target(owner, method, kind, "chat", PROVIDER,
                                streams=kind.endswith("manager"), client_span=client_span))
    for module, cls, method, kind in _CLOSES:
        owner = _class(module, cls)
        if owner is not None and method in owner.__dict__:
            found.append(Target(owner, method, kind))
    return found


def client_span(resource: Any) -> bool:
    """Whether the resource's client opens its own span for the call (its tracing on,
    with a tracer provider of its own or a configured global one)."""
    try:
        options = resource._client._open_telemetry
        if not options["traces"]["enabled"]:
            return False
        return options.get("tracer_provider") is not None or telemetry.tracer() is not None
    except Exception:
        return False


def _class(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name, None)
    except Exception:
        return None
