"""Stage throughput: a trivial transform through the stage runtime (exactly once, one
transaction per partition batch) against a raw aiokafka consume -> produce copy with the
same transaction settings (read_committed consumer, transactional idempotent producer,
acks=all, 500 records per fetch), in the same run on the same broker and input.

``python -m benchmarks.stages`` starts a broker of its own; ``python -m benchmarks``
includes it.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BATCH = 500
PARTITIONS = 6


def _fill(bootstrap: str, topic: str, value: bytes, n: int, others: list[str]) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, PARTITIONS, 1)
                                       for t in (topic, *others)]).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "compression.type": "lz4"})
    for i in range(n):
        while True:
            try:
                producer.produce(topic, value, key=f"c{i % 50}".encode())
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(120)


def raw_copy(bootstrap: str, source: str, target: str, n: int) -> float:
    """Events/s of a plain aiokafka read-process-write loop: one transaction per fetch."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async def run() -> float:
        group = f"bench-raw-{uuid.uuid4().hex[:6]}"
        consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=group,
                                    enable_auto_commit=False, isolation_level="read_committed",
                                    auto_offset_reset="earliest")
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=group,
                                    enable_idempotence=True, acks="all", linger_ms=5)
        await consumer.start()
        await producer.start()
        done = 0
        started = None
        while done < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=BATCH)
            if not batch:
                continue
            started = started or time.perf_counter()
            async with producer.transaction():
                for records in batch.values():
                    for record in records:
                        await producer.send(target, record.value, key=record.key)
                await producer.send_offsets_to_transaction(
                    {tp: records[-1].offset + 1 for tp, records in batch.items()}, group)
            done += sum(len(r) for r in batch.values())
        elapsed = time.perf_counter() - (started or time.perf_counter())
        await producer.stop()
        await consumer.stop()
        return n / elapsed

    return asyncio.run(run())


def stage_copy(bootstrap: str, prefix: str, n: int) -> float:
    """Events/s through the stage runtime with a one-output transform."""
    from promptgov.stages import Output, Stage, StageRunner

    def transform(event: dict[str, Any], source: Any) -> list[Output]:
        return [Output("policy_decision", {"decision": "allow",
                                           "target_event_id": event.get("event_id")})]

    async def run() -> float:
        runner = StageRunner(Stage("bench", "1", transform), bootstrap_servers=bootstrap,
                             topic_prefix=prefix, batch_size=BATCH,
                             topic_partitions=PARTITIONS)
        stop = asyncio.Event()
        task = asyncio.ensure_future(runner.run(stop))
        while runner.stats.consumed == 0:
            await asyncio.sleep(0.001)
        started = time.perf_counter()
        first = runner.stats.consumed
        while runner.stats.consumed < n:
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        return (n - first) / elapsed

    return asyncio.run(run())


def run(bootstrap: str, n: int) -> dict[str, Any]:
    from benchmarks.throughput import _envelope_bytes

    value = _envelope_bytes()
    prefix = f"benchstage{uuid.uuid4().hex[:6]}"
    source = f"{prefix}.events"
    _fill(bootstrap, source, value, n, [f"{prefix}.rawcopy"])
    raw = raw_copy(bootstrap, source, f"{prefix}.rawcopy", n)
    staged = stage_copy(bootstrap, prefix, n)
    return {"events": n, "event_bytes": len(value), "batch": BATCH, "partitions": PARTITIONS,
            "raw_aiokafka_copy": round(raw), "stage": round(staged),
            "stage_ratio_to_raw": round(staged / raw, 2)}


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "tools"))
    from kafka_broker import KafkaBroker

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    with KafkaBroker(Path(tempfile.mkdtemp(prefix="pg-bench-kafka-"))) as broker:
        print(run(broker.bootstrap, n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
