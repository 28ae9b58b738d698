"""End-to-end throughput to a real broker: promptgov per durability mode vs raw clients.

Every client sends the same serialised realistic envelope (about 3 KB) with
the same settings: acks=all, idempotence, lz4, linger 5 ms, 256 KB batches.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from typing import Any

import promptgov
from benchmarks.workload import COMPLETION, MESSAGES
from promptgov.config import DEFAULT_PRODUCER

SETTINGS = {k: DEFAULT_PRODUCER[k] for k in ("acks", "enable_idempotence", "compression_type",
                                               "linger_ms", "max_batch_size")}


def _envelope_bytes() -> bytes:
    gov = promptgov.Governor(local_dir=tempfile.mkdtemp(), register_atexit=False,
                             durability="memory")

    @gov.llm_call(provider="openai", model="gpt-4o-mini")
    def answer(messages: list[dict[str, str]], temperature: float = 0.2) -> Any:
        return COMPLETION

    answer(MESSAGES)
    gov.flush(10)
    gov.shutdown(1)
    path = next((gov.settings.local_dir / "events").glob("*/*.jsonl"))
    return path.read_bytes().splitlines()[0]


def raw_aiokafka(bootstrap: str, topic: str, value: bytes, n: int) -> float:
    from aiokafka import AIOKafkaProducer

    async def run() -> float:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **SETTINGS)
        await producer.start()
        await producer.send_and_wait(topic, value, key=b"warm")
        start = time.perf_counter()
        futures = [await producer.send(topic, value, key=str(i % 50).encode())
                   for i in range(n)]
        await asyncio.gather(*futures)
        elapsed = time.perf_counter() - start
        await producer.stop()
        return n / elapsed

    return asyncio.run(run())


def raw_confluent(bootstrap: str, topic: str, value: bytes, n: int) -> float:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "compression.type": "lz4",
                         "linger.ms": SETTINGS["linger_ms"],
                         "batch.size": SETTINGS["max_batch_size"]})
    producer.produce(topic, value, key=b"warm")
    producer.flush(30)
    start = time.perf_counter()
    for i in range(n):
        while True:
            try:
                producer.produce(topic, value, key=str(i % 50).encode())
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(120)
    return n / (time.perf_counter() - start)


def promptgov_mode(bootstrap: str, durability: str, n: int) -> dict[str, float]:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    gov = promptgov.Governor(app="bench", bootstrap_servers=bootstrap, topic_prefix=prefix,
                             local_dir=tempfile.mkdtemp(), register_atexit=False,
                             durability=durability, max_queue_size=max(n, 1000))

    @gov.llm_call(provider="openai", model="gpt-4o-mini")
    def answer(messages: list[dict[str, str]], temperature: float = 0.2) -> Any:
        return COMPLETION

    with promptgov.interaction(conversation_id="warm"):
        answer(MESSAGES)
    assert gov.flush(60).complete
    start = time.perf_counter()
    for i in range(n // 2):  # two events per call: prompt and response
        with promptgov.interaction(conversation_id=f"c{i % 50}"):
            answer(MESSAGES)
    emitted = time.perf_counter() - start
    report = gov.flush(600)
    elapsed = time.perf_counter() - start
    gov.shutdown(10)
    if not report.complete:
        raise RuntimeError(f"{durability}: not everything was delivered: {report}")
    return {"events_per_s": (n // 2) * 2 / elapsed, "host_emit_s": emitted}


def run(bootstrap: str, n: int) -> dict[str, Any]:
    value = _envelope_bytes()
    topic = f"bench-raw-{uuid.uuid4().hex[:6]}"
    results: dict[str, Any] = {"event_bytes": len(value), "events": n,
                               "raw_aiokafka": round(raw_aiokafka(bootstrap, topic, value, n)),
                               "raw_confluent_kafka": round(
                                   raw_confluent(bootstrap, topic, value, n))}
    for durability in ("memory", "spill", "wal"):
        figures = promptgov_mode(bootstrap, durability, n)
        results[f"promptgov_{durability}"] = round(figures["events_per_s"])
        results[f"promptgov_{durability}_ratio_to_aiokafka"] = round(
            figures["events_per_s"] / results["raw_aiokafka"], 2)
    return results
