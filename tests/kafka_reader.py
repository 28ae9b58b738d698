"""Read records back from Kafka with an independent client (confluent_kafka, not aiokafka)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Message


@dataclass(frozen=True)
class Record:
    """One consumed Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes  # a tombstone (null value) reads as b""
    headers: list[tuple[str, bytes]]
    timestamp: int  # milliseconds since the epoch

    def header(self, name: str) -> bytes | None:
        """Return the last value of header ``name``, or None."""
        found = [value for key, value in self.headers if key == name]
        return found[-1] if found else None


ReadBack = Callable[..., list[Record]]
"""Type of the ``read_back`` fixture (this module's :func:`read_back`)."""


def to_record(msg: Message) -> Record:
    """Convert a confluent_kafka message into a :class:`Record`."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return Record(
        topic=topic,
        partition=partition,
        offset=offset,
        key=msg.key(),
        value=msg.value() or b"",
        headers=_headers(msg),
        timestamp=msg.timestamp()[1],
    )


def _headers(msg: Message) -> list[tuple[str, bytes]]:
    raw = msg.headers() or []
    items = list(raw.items()) if isinstance(raw, dict) else raw
    return [
        (name, value.encode() if isinstance(value, str) else value or b"") for name, value in items
    ]


def read_back(
    bootstrap: str,
    topics: str | Sequence[str],
    expected_count: int,
    timeout: float = 30.0,
    *,
    linger: float = 0.0,
    config: Mapping[str, str | int | bool] | None = None,
) -> list[Record]:
    """Consume ``topics`` from the earliest offset with a fresh group.

    Returns as soon as ``expected_count`` records arrived (after ``linger`` more seconds
    of polling, to catch duplicates), or whatever arrived when ``timeout`` passes.
    Records come in arrival order, which keeps each partition's order. A topic name
    starting with ``^`` is a regex subscription. Reads committed data only by default.
    """
    names = [topics] if isinstance(topics, str) else list(topics)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-back-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "topic.metadata.refresh.interval.ms": 500,
            **(config or {}),
        }
    )
    try:
        consumer.subscribe(names)
        return _poll_records(consumer, expected_count, timeout, linger)
    finally:
        consumer.close()


def _poll_records(
    consumer: Consumer, expected_count: int, timeout: float, linger: float
) -> list[Record]:
    """Poll until ``expected_count`` records (+ ``linger`` seconds) or ``timeout``."""
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = consumer.poll(min(0.2, max(0.0, deadline - time.monotonic())))
        if msg is not None:
            error = msg.error()
            if error is None:
                records.append(to_record(msg))
            elif error.fatal():  # others (unknown topic yet, broker down) are retried
                raise KafkaException(error)
        if len(records) >= expected_count:
            deadline = min(deadline, time.monotonic() + linger)
            if linger <= 0:
                break
    return records
