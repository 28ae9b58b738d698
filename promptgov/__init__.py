"""promptgov: prompt-event governance on Kafka.

Wrap LLM, retrieval and tool calls; get typed, redacted, ordered prompt-event
envelopes published asynchronously to Kafka (or a local directory)::

    import promptgov

    promptgov.configure(app="copilot", bootstrap_servers="localhost:9092")

    @promptgov.llm_call(provider="openai", model="gpt-4o-mini")
    def answer(messages): ...

    with promptgov.interaction(conversation_id="c-1", user_id="u-7"):
        answer([{"role": "user", "content": "hi"}])
"""

from __future__ import annotations

from typing import Any

from promptgov._version import __version__
from promptgov.capture.calls import CallRecorder, CallSpec, current_call, llm_call, retrieval, tool
from promptgov.capture.context import (
    ContextThreadPoolExecutor,
    InteractionContext,
    bind_context,
    current_interaction,
    interaction,
    last_event_id,
)
from promptgov.errors import ConfigurationError, PromptGovError
from promptgov.events.models import SCHEMA_VERSION, parse_event
from promptgov.governance.redaction import DefaultRedactor, Finding, NullRedactor, Redactor
from promptgov.governor import Governor, configure, get_governor, resolve_governor
from promptgov.instrument import instrument, uninstrument
from promptgov.transport.publisher import DeliveryReport


def policy_decision(decision: str, **kwargs: Any) -> str:
    """Record a guardrail decision with the current governor; returns the event id
    ("" if none was recorded: capture off, after shutdown, invalid arguments)."""
    governor = resolve_governor()
    return governor.policy_decision(decision, **kwargs) if governor is not None else ""


def feedback(target_event_id: str | None = None, **kwargs: Any) -> str:
    """Record feedback on an event with the current governor; returns the event id
    ("" if none was recorded: capture off, after shutdown, no target)."""
    governor = resolve_governor()
    return governor.feedback(target_event_id, **kwargs) if governor is not None else ""


def flush(timeout: float = 10.0) -> DeliveryReport | None:
    """Wait for the current governor's events to be delivered."""
    governor = get_governor()
    return governor.flush(timeout) if governor is not None else None


def shutdown(timeout: float | None = None) -> DeliveryReport | None:
    """Shut the current governor down (also done at exit)."""
    governor = get_governor()
    return governor.shutdown(timeout) if governor is not None else None


__all__ = [
    "SCHEMA_VERSION",
    "CallRecorder",
    "CallSpec",
    "ConfigurationError",
    "ContextThreadPoolExecutor",
    "DefaultRedactor",
    "DeliveryReport",
    "Finding",
    "Governor",
    "InteractionContext",
    "NullRedactor",
    "PromptGovError",
    "Redactor",
    "__version__",
    "bind_context",
    "configure",
    "current_call",
    "current_interaction",
    "feedback",
    "flush",
    "get_governor",
    "instrument",
    "interaction",
    "last_event_id",
    "llm_call",
    "parse_event",
    "policy_decision",
    "retrieval",
    "shutdown",
    "tool",
    "uninstrument",
]
