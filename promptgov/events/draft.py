"""The hot path's hand-off: a draft of an event, completed on the publisher's side."""

from __future__ import annotations

import os
import threading
from typing import Any

from promptgov.events.ids import uuid7

_ref_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child gets a fresh lock: the parent's may have been copied while held."""
    global _ref_lock
    _ref_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class EventRef:
    """An event id taken on first use: on the publisher thread, unless the host asks.

    Keeps UUIDv7 generation off the host's thread for the events nobody asks
    about; ids stay unique and time-ordered (by processing time).
    """

    __slots__ = ("_id",)

    def __init__(self, event_id: str | None = None) -> None:
        self._id = event_id

    @property
    def id(self) -> str:
        """The event id (generated now if it has none yet)."""
        value = self._id
        if value is None:
            with _ref_lock:
                value = self._id
                if value is None:
                    value = self._id = uuid7()
        return value

    def __repr__(self) -> str:
        return f"EventRef({self._id!r})"


def resolve(value: Any) -> Any:
    """The id behind an :class:`EventRef`; anything else unchanged."""
    return value.id if type(value) is EventRef else value


class Draft:
    """Everything the host's thread knows about one event, captured cheaply.

    ``payload`` may still hold raw Python objects (snapshots of arguments,
    return values, stream chunks); the publisher turns them into JSON,
    redacts, hashes and serialises them, off the host's thread.
    """

    __slots__ = (
        "attributes",
        "context",
        "event_type",
        "model",
        "occurred_ns",
        "parent_event_id",
        "payload",
        "policy",
        "prompt_template",
        "ref",
        "seq",
        "span_id",
        "trace_id",
    )

    def __init__(
        self,
        event_type: str,
        ref: EventRef,
        seq: int,
        occurred_ns: int,
        payload: dict[str, Any],
        context: Any = None,
        parent_event_id: EventRef | str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
        model: dict[str, Any] | None = None,
        prompt_template: dict[str, Any] | None = None,
        policy: dict[str, Any] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        self.event_type = event_type
        self.ref = ref
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

    @property
    def event_id(self) -> str:
        """This event's id."""
        return self.ref.id

    def __repr__(self) -> str:
        return f"Draft({self.event_type!r}, {self.ref!r}, seq={self.seq})"


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
