"""The ``openai`` client: chat completions, the Responses API, embeddings, legacy completions.

Patched, sync and async: ``chat.completions.create`` / ``parse`` (and
``stream``, which goes through ``create``), ``responses.create`` / ``parse``
(and ``stream``), ``embeddings.create`` (operation ``embeddings``),
``completions.create`` (``text_completion``), the older
``beta.chat.completions`` helpers where the installed version has them, and
the ``close`` of ``Stream`` / ``AsyncStream`` and of the chat and Responses
helper streams (to record an early close).
"""

from __future__ import annotations

import importlib
from typing import Any

from promptgov.instrument._core import Target

PROVIDER = "openai"

# (module, class, method, kind, operation)
_METHODS = (
    ("openai.resources.chat.completions", "Completions", "create", "sync", "chat"),
    ("openai.resources.chat.completions", "Completions", "parse", "sync", "chat"),
    ("openai.resources.chat.completions", "AsyncCompletions", "create", "async", "chat"),
    ("openai.resources.chat.completions", "AsyncCompletions", "parse", "async", "chat"),
    ("openai.resources.responses", "Responses", "create", "sync", "chat"),
    ("openai.resources.responses", "Responses", "parse", "sync", "chat"),
    ("openai.resources.responses", "AsyncResponses", "create", "async", "chat"),
    ("openai.resources.responses", "AsyncResponses", "parse", "async", "chat"),
    ("openai.resources.embeddings", "Embeddings", "create", "sync", "embeddings"),
    ("openai.resources.embeddings", "AsyncEmbeddings", "create", "async", "embeddings"),
    ("openai.resources.completions", "Completions", "create", "sync", "text_completion"),
    ("openai.resources.completions", "AsyncCompletions", "create", "async", "text_completion"),
    # older versions: the structured-output helpers lived under ``beta``
    ("openai.resources.beta.chat.completions", "Completions", "parse", "sync", "chat"),
    ("openai.resources.beta.chat.completions", "AsyncCompletions", "parse", "async", "chat"),
)
_CLOSES = (
    ("openai", "Stream", "close", "close"),
    ("openai", "AsyncStream", "close", "async_close"),
    ("openai.lib.streaming.chat", "ChatCompletionStream", "close", "close"),
    ("openai.lib.streaming.chat", "AsyncChatCompletionStream", "close", "async_close"),
    ("openai.lib.streaming.responses", "ResponseStream", "close", "close"),
    ("openai.lib.streaming.responses", "AsyncResponseStream", "close", "async_close"),
)


def targets() -> list[Target]:
    """What to patch in the installed ``openai`` (ImportError when it is not installed)."""
    importlib.import_module("openai")
    found: list[Target] = []
    for module, cls, method, kind, operation in _METHODS:
        owner = _class(module, cls)
        if owner is not None and method in owner.__dict__:
            found.append(Target(owner, method, kind, operation, PROVIDER))
    for module, cls, method, kind in _CLOSES:
        owner = _class(module, cls)
        if owner is not None and method in owner.__dict__:
            found.append(Target(owner, method, kind))
    return found


def _class(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name, None)
    except Exception:
        return None
