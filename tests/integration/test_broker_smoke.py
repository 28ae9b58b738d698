"""Smoke tests of the real-broker test tooling (tools/kafka_broker.py, tests/kafka_reader.py)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from kafka_broker import KafkaBroker
from kafka_reader import ReadBack, Record

pytestmark = pytest.mark.broker


def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=30)
    futures[topic].result(timeout=30)


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i, value in enumerate(values):
        producer.produce(topic, value=value, key=f"k{i % 3}".encode(), headers=[("n", b"%d" % i)])
    assert producer.flush(30) == 0, "producer could not deliver everything"


def _values(records: list[Record]) -> set[bytes]:
    return {record.value for record in records}


def test_produce_and_read_back(
    kafka_bootstrap: str, unique_topic_prefix: str, read_back: ReadBack
) -> None:
    topic = f"{unique_topic_prefix}.smoke"
    _create_topic(kafka_bootstrap, topic, partitions=3)
    values = [b"value-%d" % i for i in range(10)]
    _produce(kafka_bootstrap, topic, values)

    records = read_back(kafka_bootstrap, [topic], 10, linger=0.5)

    assert len(records) == 10
    assert _values(records) == set(values)
    for record in records:
        assert record.topic == topic
        assert record.key is not None and record.key.startswith(b"k")
        assert record.header("n") == record.value.removeprefix(b"value-")
        assert record.timestamp > 0
    by_partition: dict[int, list[int]] = {}
    for record in records:
        by_partition.setdefault(record.partition, []).append(record.offset)
    assert all(offsets == sorted(offsets) for offsets in by_partition.values())


def test_disposable_broker_pause_resume_restart(
    disposable_broker: KafkaBroker, unique_topic_prefix: str, read_back: ReadBack
) -> None:
    broker = disposable_broker
    topic = f"{unique_topic_prefix}.lifecycle"
    port = broker.port
    _produce(broker.bootstrap, topic, [b"before-pause"])  # auto-created topic

    broker.pause()
    assert broker.is_paused
    with pytest.raises(KafkaException):
        AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=1.0)
    broker.resume()
    _produce(broker.bootstrap, topic, [b"after-resume"])

    broker.restart()
    assert broker.port == port and broker.is_running
    _produce(broker.bootstrap, topic, [b"after-restart"])

    broker.restart(hard=True)  # SIGKILL, then start on the same data
    records = read_back(broker.bootstrap, topic, 3, linger=0.5)
    assert _values(records) == {b"before-pause", b"after-resume", b"after-restart"}
    assert len(records) == 3
