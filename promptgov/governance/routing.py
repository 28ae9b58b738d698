"""Topic routing, record keys and record headers (CloudEvents Kafka binding, binary mode)."""

from __future__ import annotations

from typing import Any

from promptgov.config import TopicRouter

# event type -> topic class; the topic is "<prefix>.<class>".
TOPIC_CLASSES: dict[str, str] = {
    "prompt": "events",
    "response": "events",
    "retrieval": "events",
    "tool_call": "events",
    "redaction": "events",
    "gap": "events",
    "policy_decision": "decisions",
    "feedback": "feedback",
    "erasure": "erasures",
}
RAW_CLASS = "raw"
CE_TYPE_PREFIX = "io.promptgov."


class Router:
    """Maps an event to its topic: the user's router first, then ``<prefix>.<class>``."""

    def __init__(self, prefix: str, override: TopicRouter | None = None) -> None:
        self.prefix = prefix
        self.override = override

    def topic(self, event_type: str, classification: str) -> str:
        if self.override is not None:
            chosen = self.override(event_type, classification)
            if chosen:
                return chosen
        cls = RAW_CLASS if classification == "raw" else TOPIC_CLASSES.get(event_type, "events")
        return f"{self.prefix}.{cls}"

    def all_default_topics(self) -> list[str]:
        classes = sorted({*TOPIC_CLASSES.values(), RAW_CLASS})
        return [f"{self.prefix}.{cls}" for cls in classes]


def record_key(envelope: dict[str, Any]) -> bytes:
    """The conversation, else the session, else the interaction, else the event itself."""
    for name in ("conversation_id", "session_id", "interaction_id", "event_id"):
        value = envelope.get(name)
        if value:  # identifiers as given (the processor made them valid UTF-8)
            return str(value).encode("utf-8", "replace")
    return b""


def traceparent(trace_id: str | None, span_id: str | None, event_id: str) -> str:
    """W3C traceparent; without an OTel span, ids derived from the event (not sampled)."""
    if trace_id and span_id:
        return f"00-{trace_id}-{span_id}-01"
    hexid = event_id.replace("-", "")
    return f"00-{hexid}-{hexid[16:]}-00"


def record_headers(envelope: dict[str, Any], source: str) -> list[tuple[str, bytes]]:
    """CloudEvents binary-mode headers plus the schema version and ``traceparent``."""
    event_id = envelope["event_id"]
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode("utf-8", "replace")),
        ("ce_type", (CE_TYPE_PREFIX + envelope["event_type"]).encode("utf-8", "replace")),
        ("ce_source", source.encode("utf-8", "replace")),
        ("ce_time", envelope["occurred_at"].encode()),
        ("content-type", b"application/json"),
        ("promptgov_schema_version", envelope["schema_version"].encode()),
        ("traceparent", traceparent(envelope["trace_id"], envelope["span_id"], event_id)
         .encode("utf-8", "replace")),
    ]
