"""Publishing to a real broker, read back with an independent client (confluent-kafka)."""

from __future__ import annotations

import asyncio
import io
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient
from kafka_broker import KafkaBroker
from kafka_reader import ReadBack, Record
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from promptgov import Governor, interaction
from promptgov.events import EVENT_TYPES, canonical_json, parse_event

pytestmark = pytest.mark.broker

ALL_TOPIC_CLASSES = ("events", "decisions", "feedback", "erasures", "raw")


def topics(prefix: str) -> list[str]:
    return [f"{prefix}.{cls}" for cls in ALL_TOPIC_CLASSES]


def make_governor(bootstrap: str, prefix: str, tmp_path: Path, **extra: Any) -> Governor:
    return Governor(app="itest", environment="ci", bootstrap_servers=bootstrap,
                    topic_prefix=prefix, local_dir=tmp_path, register_atexit=False,
                    flush_interval_ms=10, **extra)


def envelopes(records: list[Record]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


def test_every_kind_is_published_with_every_field(
    kafka_bootstrap: str, unique_topic_prefix: str, tmp_path: Path, read_back: ReadBack
) -> None:
    gov = make_governor(kafka_bootstrap, unique_topic_prefix, tmp_path,
                        policy={"id": "default-policy", "version": "1"},
                        attributes={"deployment": "blue"})

    @gov.retrieval
    def search(query: str) -> list[dict[str, Any]]:
        return [{"id": "d1", "content": "Reset at jane@example.com", "score": 0.9}]

    @gov.tool(name="calc")
    def calc(a: int, b: int) -> int:
        return a + b

    @gov.llm_call(provider="openai", model="gpt-4o-mini", prompt_template="qa",
                  template_version="2")
    def answer(messages: list[dict[str, str]]) -> dict[str, Any]:
        gov.policy_decision("allow", policy=("pii", "4"), reasons=["clean"])
        return {"choices": [{"message": {"role": "assistant", "content": "4"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 1}, "model": "gpt-4o",
                "id": "r-1"}

    with interaction(conversation_id="conv-all", user_id="u", session_id="s", tenant_id="t"):
        search("how to reset?")
        calc(2, 2)
        answer([{"role": "user", "content": "2+2? mail me at bob@example.org"}])
        gov.feedback(score=1, comment="good")
        gov.emit_event("redaction", {"target_event_id": "x", "fields": ["payload.input"],
                                     "reason": "late pii", "findings": []})
        gov.emit_event("erasure", {"subject_type": "user", "subject_id": "u",
                                   "reason": "gdpr art. 17", "requested_by": "dpo",
                                   "key_id": None})
    report = gov.flush(30)
    assert report.complete, report
    overflow = make_governor(kafka_bootstrap, unique_topic_prefix, tmp_path, max_queue_size=1,
                             batch_size=1, durability="memory")  # spill would not drop
    for _ in range(50):  # a burst into a queue of one: drops, then one gap event
        overflow.emit_event("feedback", {"target_event_id": "t", "name": "burst"})
    assert overflow.flush(30).complete
    dropped = overflow.stats()["dropped"]
    assert dropped > 0

    expected = 8 + (50 - dropped) + 1
    records = read_back(kafka_bootstrap, topics(unique_topic_prefix), expected, linger=1.0)
    events = envelopes(records)
    assert len(events) == expected
    assert {e["event_type"] for e in events} == set(EVENT_TYPES)
    for record, event in zip(records, events, strict=True):
        assert canonical_json(parse_event(record.value)) == record.value  # valid, canonical
        assert record.header("ce_id") == event["event_id"].encode()
    by_type = {e["event_type"]: e for e in events if e["app"] == "itest"
               and e["producer_id"] == gov.producer_id}
    prompt, response = by_type["prompt"], by_type["response"]
    assert prompt["conversation_id"] == "conv-all" and prompt["tenant_id"] == "t"
    assert prompt["model"]["name"] == "gpt-4o-mini" and prompt["model"]["provider"] == "openai"
    assert prompt["prompt_template"] == {"id": "qa", "version": "2"}
    assert prompt["policy"] == {"id": "default-policy", "version": "1"}
    assert prompt["attributes"] == {"deployment": "blue"}
    assert prompt["sdk"]["name"] == "promptgov" and prompt["schema_version"] == "1.1"
    assert prompt["classification"] == "redacted"
    assert "bob@example.org" not in prompt["payload"]["messages"][0]["content"]
    assert {"kind": "email", "field": "payload.messages[0].content", "count": 1} in \
        prompt["redaction"]["findings"]
    assert response["payload"]["usage"]["input_tokens"] == 9
    assert response["payload"]["finish_reasons"] == ["stop"]
    assert response["integrity"]["prev_hash"] == prompt["integrity"]["content_hash"] or \
        response["integrity"]["prev_hash"] is not None
    assert by_type["retrieval"]["payload"]["documents"][0]["content_hash"].startswith("sha256:")
    assert by_type["policy_decision"]["payload"]["target_event_id"] == prompt["event_id"]
    assert by_type["policy_decision"]["policy"] == {"id": "pii", "version": "4"}
    gap = next(e for e in events if e["event_type"] == "gap")
    assert gap["payload"]["count"] == dropped
    assert gap["payload"]["reason"] == "queue_full"
    assert gap["payload"]["event_types"] == {"feedback": dropped}
    topic_of = {r.value: r.topic for r in records}
    classes = {orjson.loads(v)["event_type"]: t.rsplit(".", 1)[1] for v, t in topic_of.items()}
    assert classes == {"prompt": "events", "response": "events", "retrieval": "events",
                       "tool_call": "events", "redaction": "events", "gap": "events",
                       "policy_decision": "decisions", "feedback": "feedback",
                       "erasure": "erasures"}
    seqs = sorted(e["seq"] for e in events if e["producer_id"] == gov.producer_id)
    assert seqs == list(range(1, 9))
    gov.shutdown(10)
    overflow.shutdown(10)


async def test_per_conversation_order_under_concurrency(
    kafka_bootstrap: str, unique_topic_prefix: str, tmp_path: Path, read_back: ReadBack
) -> None:
    gov = make_governor(kafka_bootstrap, unique_topic_prefix, tmp_path)

    @gov.tool
    async def step(index: int) -> int:
        await asyncio.sleep(0)
        return index

    async def conversation(n: int) -> None:
        with interaction(conversation_id=f"conv-{n}"):
            for i in range(20):
                await step(i)

    await asyncio.gather(*(conversation(n) for n in range(50)))
    assert (await asyncio.to_thread(gov.flush, 60)).complete
    records = await asyncio.to_thread(read_back, kafka_bootstrap,
                                      f"{unique_topic_prefix}.events", 1000, 60.0)
    assert len(records) == 1000
    per_conv: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        per_conv[orjson.loads(record.value)["conversation_id"]].append(record)
    assert len(per_conv) == 50
    partitions_used = set()
    for conv, recs in per_conv.items():
        assert {r.partition for r in recs} == {recs[0].partition}, conv
        assert all(r.key == conv.encode() for r in recs)
        offsets = [r.offset for r in recs]
        assert offsets == sorted(offsets)
        assert [orjson.loads(r.value)["payload"]["result"] for r in recs] == list(range(20))
        partitions_used.add(recs[0].partition)
    assert len(partitions_used) > 1  # conversations spread over the topic's partitions
    gov.shutdown(10)


def test_headers_follow_the_cloudevents_kafka_binding(
    kafka_bootstrap: str, unique_topic_prefix: str, tmp_path: Path, read_back: ReadBack
) -> None:
    gov = make_governor(kafka_bootstrap, unique_topic_prefix, tmp_path)
    with interaction(session_id="sess-h"):
        event_id = gov.emit_event("feedback", {"target_event_id": "t", "score": 1.0})
    assert gov.flush(30).complete
    (record,) = read_back(kafka_bootstrap, f"{unique_topic_prefix}.feedback", 1)
    event = orjson.loads(record.value)
    assert record.key == b"sess-h"  # no conversation: the session keys the record
    assert record.header("ce_specversion") == b"1.0"
    assert record.header("ce_id") == event_id.encode()
    assert record.header("ce_type") == b"io.promptgov.feedback"
    assert record.header("ce_source") == b"/promptgov/itest/ci"
    assert record.header("ce_time") == event["occurred_at"].encode()
    assert record.header("content-type") == b"application/json"
    assert record.header("promptgov_schema_version") == b"1.1"
    traceparent = record.header("traceparent")
    assert traceparent is not None and traceparent.startswith(b"00-")
    assert len(traceparent.split(b"-")) == 4
    gov.shutdown(10)


def test_trace_ids_equal_the_active_span_and_genai_spans_are_opened(
    kafka_bootstrap: str, unique_topic_prefix: str, tmp_path: Path, read_back: ReadBack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    monkeypatch.setattr("promptgov.telemetry.tracer", lambda: provider.get_tracer("promptgov"))
    gov = make_governor(kafka_bootstrap, unique_topic_prefix, tmp_path)

    @gov.llm_call(provider="openai", model="gpt-4o-mini")
    def answer(q: str) -> dict[str, Any]:
        return {"choices": [{"message": {"content": "a"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1}, "model": "gpt-4o"}

    with tracer.start_as_current_span("request") as outer:
        answer("q")
        outer_ctx = outer.get_span_context()
    assert gov.flush(30).complete
    records = read_back(kafka_bootstrap, f"{unique_topic_prefix}.events", 2)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    llm_span = spans["chat gpt-4o-mini"]
    assert llm_span.parent is not None and llm_span.parent.span_id == outer_ctx.span_id
    assert llm_span.attributes is not None
    assert llm_span.attributes["gen_ai.operation.name"] == "chat"
    assert llm_span.attributes["gen_ai.provider.name"] == "openai"
    assert llm_span.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert llm_span.attributes["gen_ai.usage.input_tokens"] == 3
    assert llm_span.attributes["gen_ai.response.model"] == "gpt-4o"
    trace_hex = f"{outer_ctx.trace_id:032x}"
    span_hex = f"{llm_span.context.span_id:016x}"
    for record in records:
        event = orjson.loads(record.value)
        assert (event["trace_id"], event["span_id"]) == (trace_hex, span_hex)
        assert record.header("traceparent") == f"00-{trace_hex}-{span_hex}-01".encode()
    gov.shutdown(10)


async def test_four_shapes_pass_results_and_exceptions_through(
    kafka_bootstrap: str, unique_topic_prefix: str, tmp_path: Path, read_back: ReadBack
) -> None:
    gov = make_governor(kafka_bootstrap, unique_topic_prefix, tmp_path)
    error = ValueError("upstream failed")

    @gov.llm_call
    def sync_ok(x: int) -> int:
        return x + 1

    @gov.llm_call
    async def async_fail() -> None:
        raise error

    @gov.llm_call
    def gen_ok() -> Iterator[str]:
        yield from "ab"

    @gov.llm_call
    async def agen_fail() -> AsyncIterator[str]:
        yield "a"
        raise error

    assert sync_ok(1) == 2
    with pytest.raises(ValueError) as caught:
        await async_fail()
    assert caught.value is error
    assert list(gen_ok()) == ["a", "b"]
    with pytest.raises(ValueError) as caught_stream:
        [c async for c in agen_fail()]
    assert caught_stream.value is error
    assert (await asyncio.to_thread(gov.flush, 30)).complete
    records = await asyncio.to_thread(read_back, kafka_bootstrap,
                                      f"{unique_topic_prefix}.events", 8)
    statuses = sorted((e["payload"]["function"].rsplit(".", 1)[1], e["payload"]["status"])
                      for e in envelopes(records) if e["event_type"] == "response")
    assert statuses == [("agen_fail", "error"), ("async_fail", "error"), ("gen_ok", "ok"),
                        ("sync_ok", "ok")]
    gov.shutdown(10)


def test_topics_are_created_with_the_configured_partitions(
    kafka_bootstrap: str, unique_topic_prefix: str, tmp_path: Path
) -> None:
    gov = make_governor(kafka_bootstrap, unique_topic_prefix, tmp_path, topic_partitions=3)
    gov.emit_event("gap", {"count": 0, "reason": "test", "first_occurred_at":
                           "2026-01-01T00:00:00.000000Z",
                           "last_occurred_at": "2026-01-01T00:00:00.000000Z"})
    assert gov.flush(30).complete
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
    assert len(metadata.topics[f"{unique_topic_prefix}.events"].partitions) == 3
    gov.shutdown(10)


def test_broker_down_at_start_then_up_delivers_everything(
    disposable_broker: KafkaBroker, unique_topic_prefix: str, tmp_path: Path,
    read_back: ReadBack
) -> None:
    disposable_broker.stop()
    gov = make_governor(disposable_broker.bootstrap, unique_topic_prefix, tmp_path,
                        producer={"request_timeout_ms": 2000})
    emitted = [gov.emit_event("feedback", {"target_event_id": "t", "score": float(i)})
               for i in range(200)]
    report = gov.flush(3)
    assert not report.complete and report.delivered == 0  # nowhere to go yet, nothing lost
    disposable_broker.restart()
    report = gov.flush(60)
    assert report.complete and report.delivered == 200, report
    records = read_back(disposable_broker.bootstrap, f"{unique_topic_prefix}.feedback", 200,
                        timeout=60, linger=1.0)
    received = [orjson.loads(r.value)["event_id"] for r in records]
    assert sorted(set(received)) == sorted(emitted)
    assert gov.stats()["retries"] > 0
    gov.shutdown(10)


def test_demo_publishes_and_reads_back_from_the_broker(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from promptgov import demo

    out = io.StringIO()
    assert demo.run(kafka_bootstrap, str(tmp_path), out) == 0
    text = out.getvalue()
    assert "from the broker" in text
    assert "BLOCK policy=prompt-injection" in text
    assert "promptgov-demo.events[" in text  # lineage: topic[partition]@offset
    assert text.count("interaction ") == 2


def test_shutdown_reports_what_remains(
    disposable_broker: KafkaBroker, unique_topic_prefix: str, tmp_path: Path
) -> None:
    disposable_broker.ensure_running()
    gov = make_governor(disposable_broker.bootstrap, unique_topic_prefix, tmp_path)
    gov.emit_event("feedback", {"target_event_id": "t"})
    assert gov.flush(30).complete
    disposable_broker.stop()
    gov.emit_event("feedback", {"target_event_id": "t"})
    report = gov.shutdown(1.0)
    assert (report.delivered, report.pending) == (1, 1)
    disposable_broker.ensure_running()
