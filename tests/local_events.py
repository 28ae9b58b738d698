"""Read what the embedded sink wrote: one dict per event, in write order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def read_local_events(local_dir: Path) -> list[dict[str, Any]]:
    """Every envelope under ``<local_dir>/events/<topic>/*.jsonl``, with its topic."""
    events = []
    for path in sorted((local_dir / "events").glob("*/*.jsonl")):
        for line in path.read_bytes().splitlines():
            event = orjson.loads(line)
            event["_topic"] = path.parent.name
            events.append(event)
    return sorted(events, key=lambda e: e["seq"])
