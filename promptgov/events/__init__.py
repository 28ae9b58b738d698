"""Envelope models, identifiers and the canonical JSON codec."""

from promptgov.events.codec import canonical_json
from promptgov.events.models import (
    EVENT_MODELS,
    EVENT_TYPES,
    SCHEMA_VERSION,
    AnyEvent,
    Envelope,
    parse_event,
)

__all__ = [
    "EVENT_MODELS",
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "AnyEvent",
    "Envelope",
    "canonical_json",
    "parse_event",
]
