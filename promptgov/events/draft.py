"""The hot path's hand-off: a draft of an event, completed on the publisher's side."""

from __future__ import annotations

from typing import Any


class Draft:
    """Everything the host's thread knows about one event, captured cheaply.

    ``payload`` may still hold raw Python objects (snapshots of arguments,
    return values, stream chunks); the publisher turns them into JSON,
    redacts, hashes and serialises them, off the host's thread.
    """

    __slots__ = (
        "attributes",
        "context",
        "event_id",
        "event_type",
        "model",
        "occurred_ns",
        "parent_event_id",
        "payload",
        "policy",
        "prompt_template",
        "seq",
        "span_id",
        "trace_id",
    )

    def __init__(
        self,
        event_type: str,
        event_id: str,
        seq: int,
        occurred_ns: int,
        payload: dict[str, Any],
        *,
        context: Any = None,
        parent_event_id: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
        model: dict[str, Any] | None = None,
        prompt_template: dict[str, Any] | None = None,
        policy: dict[str, Any] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        self.event_type = event_type
        self.event_id = event_id
        self.seq = seq
        self.occurred_ns = occurred_ns
        self.payload = payload
        self.context = context
        self.parent_event_id = parent_event_id
        self.trace_id = trace_id
        self.span_id = span_id
        self.model = model
        self.prompt_template = prompt_template
        self.policy = policy
        self.attributes = attributes

    def __repr__(self) -> str:
        return f"Draft({self.event_type!r}, {self.event_id!r}, seq={self.seq})"


class CallSite:
    """Static facts about one decorated function or ``with`` block, computed once."""

    __slots__ = (
        "function",
        "input_mapper",
        "kind",
        "model",
        "operation",
        "output_mapper",
        "prompt_template",
        "signature",
        "skip_first",
        "tool_name",
    )

    def __init__(
        self,
        kind: str,
        function: str,
        *,
        operation: str,
        signature: Any = None,
        skip_first: bool = False,
        model: dict[str, Any] | None = None,
        prompt_template: dict[str, Any] | None = None,
        tool_name: str | None = None,
        input_mapper: Any = None,
        output_mapper: Any = None,
    ) -> None:
        self.kind = kind
        self.function = function
        self.operation = operation
        self.signature = signature
        self.skip_first = skip_first
        self.model = model
        self.prompt_template = prompt_template
        self.tool_name = tool_name
        self.input_mapper = input_mapper
        self.output_mapper = output_mapper
