"""What the transport moves: bytes with a topic, key and headers."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(slots=True)
class Record:
    """One Kafka record, ready to send."""

    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    event_id: str
    enqueued_ns: int = 0
    settles: bool = False
    """True on the last record of an event: its delivery settles the event."""
