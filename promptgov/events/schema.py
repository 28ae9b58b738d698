"""JSON Schema export: one schema per event kind."""

from __future__ import annotations

import json
from pathlib import Path

from promptgov.events.models import EVENT_MODELS, SCHEMA_VERSION

SCHEMA_ID_BASE = "https://promptgov.dev/schemas"


def event_schema(event_type: str) -> dict[str, object]:
    """The JSON Schema (draft 2020-12) of one event kind, as published."""
    model = EVENT_MODELS[event_type]
    schema = model.model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_ID_BASE}/{SCHEMA_VERSION}/{event_type}.schema.json",
        **schema,
        "title": f"promptgov {event_type} event (schema {SCHEMA_VERSION})",
    }


def export_schemas(directory: Path) -> list[Path]:
    """Write ``<kind>.schema.json`` for every event kind into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for event_type in EVENT_MODELS:
        path = directory / f"{event_type}.schema.json"
        path.write_text(json.dumps(event_schema(event_type), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
