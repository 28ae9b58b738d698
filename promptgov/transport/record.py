"""What the transport moves: bytes with a topic, key and headers."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import orjson


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


# A spool entry that holds records already governed (rather than an event to govern):
# re-sending them later publishes the very same bytes.
RECORDS_MARK = b"R"


def to_rows(records: list[Record]) -> list[list[Any]]:
    """Records as JSON-safe rows (values stay byte-exact: they are UTF-8 JSON)."""
    return [
        [r.topic, base64.b64encode(r.key).decode("ascii"), r.value.decode("utf-8"),
         [[name, base64.b64encode(value).decode("ascii")] for name, value in r.headers],
         r.event_id, r.enqueued_ns, r.settles]
        for r in records
    ]


def from_rows(rows: list[list[Any]]) -> list[Record]:
    """The records of :func:`to_rows`'s rows."""
    return [
        Record(topic, base64.b64decode(key), value.encode("utf-8"),
               [(name, base64.b64decode(v)) for name, v in headers], event_id, enqueued_ns,
               settles)
        for topic, key, value, headers, event_id, enqueued_ns, settles in rows
    ]


def encode_records(records: list[Record]) -> bytes:
    """Records as one spool entry: ``RECORDS_MARK`` + JSON rows."""
    return RECORDS_MARK + orjson.dumps(to_rows(records))


def decode_records(data: bytes) -> list[Record]:
    """The records of an entry written by :func:`encode_records`."""
    return from_rows(orjson.loads(data[1:]))
