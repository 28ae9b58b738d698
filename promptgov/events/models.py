"""Prompt-event envelopes: the common envelope and one model per event kind.

Field names follow the OpenTelemetry GenAI semantic conventions where the
concept exists there (see ``docs/schema.md`` for the mapping). The models are
the contract for consumers: ``parse_event(data)`` validates any record value
published by promptgov, and ``canonical_json(event)`` gives back the exact
bytes that were published.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_serializer, field_validator

SCHEMA_VERSION = "1.1"

EventType = Literal[
    "prompt",
    "response",
    "retrieval",
    "tool_call",
    "policy_decision",
    "feedback",
    "redaction",
    "erasure",
    "gap",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]

Classification = Literal["raw", "redacted", "metadata"]
CallStatus = Literal["ok", "error", "cancelled", "closed_early", "abandoned", "blocked"]
Decision = Literal["allow", "block", "redact", "escalate"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- common parts ---------------------------------------------------------


class SdkInfo(_Model):
    """The library that produced the event."""

    name: str
    version: str


class ModelInfo(_Model):
    """The model called: ``gen_ai.provider.name``, ``gen_ai.request.model``."""

    provider: str | None = None
    name: str | None = None
    version: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


class PromptTemplateRef(_Model):
    """The prompt template and its version."""

    id: str
    version: str | None = None


class PolicyRef(_Model):
    """A policy and its version: ``gen_ai.guardrail.policy.id`` / ``.version``."""

    id: str
    version: str | None = None


class RedactionFinding(_Model):
    """What a redactor found in one field: the kind and count, never the value."""

    kind: str
    field: str
    count: int


class RedactionInfo(_Model):
    """Which redactor ran over the event's content and what it replaced."""

    redactor: str
    version: str
    findings: list[RedactionFinding] = Field(default_factory=list)


class Integrity(_Model):
    """SHA-256 of the canonical payload, chained per producer."""

    content_hash: str
    prev_hash: str | None = None
    chain_id: str


class Lineage(_Model):
    """Where a derived event came from (set by downstream stages)."""

    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    source_event_id: str | None = None
    source_event_type: str | None = None
    source_occurred_at: str | None = None
    stage: str | None = None
    stage_version: str | None = None
    output_index: int | None = None


class ErrorInfo(_Model):
    """An exception raised by the wrapped call (``error.type`` in OTel)."""

    type: str
    message: str


class Usage(_Model):
    """Token usage: ``gen_ai.usage.input_tokens`` / ``output_tokens``."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None


# --- payloads -------------------------------------------------------------


class PromptPayload(_Model):
    """An LLM call has started."""

    operation: str
    function: str
    input: Any = None
    messages: list[Any] | None = None
    streaming: bool = False


class ResponsePayload(_Model):
    """An LLM call has ended, successfully or not."""

    operation: str
    function: str
    prompt_event_id: str
    status: CallStatus
    output: Any = None
    response_model: str | None = None
    response_id: str | None = None
    finish_reasons: list[str] | None = None
    usage: Usage | None = None
    latency_ms: float
    time_to_first_token_ms: float | None = None
    chunks: int | None = None
    error: ErrorInfo | None = None


class RetrievedDocument(_Model):
    """One retrieved document (OpenInference: id, content, score, metadata)."""

    id: str | None = None
    score: float | None = None
    source: str | None = None
    content_hash: str | None = None
    content: Any = None
    metadata: dict[str, Any] | None = None


class RetrievalPayload(_Model):
    """A retrieval call: the query and the documents it returned."""

    function: str
    query: Any = None
    documents: list[RetrievedDocument] = Field(default_factory=list)
    output: Any = None
    status: CallStatus
    duration_ms: float
    error: ErrorInfo | None = None


class ToolCallPayload(_Model):
    """A tool call: ``gen_ai.tool.name`` / ``gen_ai.tool.call.id``."""

    name: str
    call_id: str | None = None
    function: str
    arguments: Any = None
    result: Any = None
    status: CallStatus
    duration_ms: float
    error: ErrorInfo | None = None


class PolicyDecisionPayload(_Model):
    """A guardrail decision: ``gen_ai.guardrail.result.*``.

    Reasons are codes or short texts that must not contain user content.
    """

    decision: Decision
    target_event_id: str | None = None
    reasons: list[str] = Field(default_factory=list)
    rules: list[str] = Field(default_factory=list)
    score: float | None = None


class FeedbackPayload(_Model):
    """Feedback on an event (OpenInference annotation fields)."""

    target_event_id: str
    name: str = "user_feedback"
    score: float | None = None
    label: str | None = None
    comment: str | None = None
    reviewer: str | None = None
    reviewer_kind: Literal["human", "llm", "code"] = "human"


class RedactionPayload(_Model):
    """Content of an already-published event was redacted after the fact."""

    target_event_id: str
    fields: list[str]
    reason: str
    findings: list[RedactionFinding] = Field(default_factory=list)


class ErasurePayload(_Model):
    """A data subject's content was erased (for example by key destruction)."""

    subject_type: Literal["user", "tenant", "session", "conversation"]
    subject_id: str
    reason: str
    requested_by: str | None = None
    key_id: str | None = None


class GapPayload(_Model):
    """Events that were lost, accounted for so an auditor sees the hole."""

    count: int
    reason: str
    first_occurred_at: datetime
    last_occurred_at: datetime
    event_types: dict[str, int] = Field(default_factory=dict)

    @field_serializer("first_occurred_at", "last_occurred_at")
    def _ser_time(self, value: datetime) -> str:
        return _format_dt(value)


# --- envelopes ------------------------------------------------------------


def _format_dt(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Envelope(_Model):
    """Fields common to every event kind."""

    event_id: str
    event_type: EventType
    schema_version: str = SCHEMA_VERSION
    occurred_at: datetime
    app: str
    environment: str
    sdk: SdkInfo
    producer_id: str
    seq: int
    tenant_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    conversation_id: str | None = None
    interaction_id: str | None = None
    parent_event_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    model: ModelInfo | None = None
    prompt_template: PromptTemplateRef | None = None
    policy: PolicyRef | None = None
    classification: Classification = "metadata"
    redaction: RedactionInfo | None = None
    integrity: Integrity | None = None
    lineage: Lineage | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    payload: Any

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("occurred_at must carry a UTC offset")
        return value.astimezone(timezone.utc)

    @field_serializer("occurred_at")
    def _ser_time(self, value: datetime) -> str:
        return _format_dt(value)


class PromptEvent(Envelope):
    event_type: Literal["prompt"] = "prompt"
    payload: PromptPayload


class ResponseEvent(Envelope):
    event_type: Literal["response"] = "response"
    payload: ResponsePayload


class RetrievalEvent(Envelope):
    event_type: Literal["retrieval"] = "retrieval"
    payload: RetrievalPayload


class ToolCallEvent(Envelope):
    event_type: Literal["tool_call"] = "tool_call"
    payload: ToolCallPayload


class PolicyDecisionEvent(Envelope):
    event_type: Literal["policy_decision"] = "policy_decision"
    payload: PolicyDecisionPayload


class FeedbackEvent(Envelope):
    event_type: Literal["feedback"] = "feedback"
    payload: FeedbackPayload


class RedactionEvent(Envelope):
    event_type: Literal["redaction"] = "redaction"
    payload: RedactionPayload


class ErasureEvent(Envelope):
    event_type: Literal["erasure"] = "erasure"
    payload: ErasurePayload


class GapEvent(Envelope):
    event_type: Literal["gap"] = "gap"
    payload: GapPayload


EVENT_MODELS: dict[str, type[Envelope]] = {
    "prompt": PromptEvent,
    "response": ResponseEvent,
    "retrieval": RetrievalEvent,
    "tool_call": ToolCallEvent,
    "policy_decision": PolicyDecisionEvent,
    "feedback": FeedbackEvent,
    "redaction": RedactionEvent,
    "erasure": ErasureEvent,
    "gap": GapEvent,
}

PAYLOAD_MODELS: dict[str, type[_Model]] = {
    kind: model.model_fields["payload"].annotation  # type: ignore[misc]
    for kind, model in EVENT_MODELS.items()
}

AnyEvent = Annotated[
    Union[  # noqa: UP007 - a discriminated union needs typing.Union on 3.10
        PromptEvent,
        ResponseEvent,
        RetrievalEvent,
        ToolCallEvent,
        PolicyDecisionEvent,
        FeedbackEvent,
        RedactionEvent,
        ErasureEvent,
        GapEvent,
    ],
    Field(discriminator="event_type"),
]
_ANY_EVENT: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


def parse_event(data: bytes | str | dict[str, Any]) -> Envelope:
    """Validate one published record value into its event model."""
    if isinstance(data, dict):
        return _ANY_EVENT.validate_python(data)
    return _ANY_EVENT.validate_json(data)
