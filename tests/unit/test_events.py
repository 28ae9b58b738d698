"""Envelopes, identifiers, the codec, routing and the content modes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from local_events import read_local_events
from pydantic import BaseModel, ValidationError

from promptgov import Governor
from promptgov.cli import main as cli_main
from promptgov.events import EVENT_TYPES, canonical_json, parse_event
from promptgov.events.codec import snapshot, to_jsonable
from promptgov.events.ids import format_time, uuid7, uuid7_time
from promptgov.governance.routing import Router, record_key, traceparent


def test_uuid7_is_rfc9562_and_monotonic_across_threads() -> None:
    ids: list[str] = []

    def make() -> None:
        ids.extend(uuid7() for _ in range(5000))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 20000
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    single = [uuid7() for _ in range(10000)]
    assert single == sorted(single)
    age = dt.datetime.now(dt.timezone.utc) - uuid7_time(single[-1])
    assert abs(age.total_seconds()) < 5


def test_format_time_has_six_fraction_digits_and_z() -> None:
    assert format_time(1_700_000_000_000_000_000) == "2023-11-14T22:13:20.000000Z"
    assert format_time(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456Z"


SAMPLE_PAYLOADS: dict[str, dict[str, Any]] = {
    "prompt": {"operation": "chat", "function": "m.f", "input": {"q": 1}, "messages": None,
               "streaming": False},
    "response": {"operation": "chat", "function": "m.f", "prompt_event_id": "p", "status": "ok",
                 "output": "x", "response_model": None, "response_id": None,
                 "finish_reasons": None, "usage": None, "latency_ms": 1.5,
                 "time_to_first_token_ms": None, "chunks": None, "error": None},
    "retrieval": {"function": "m.r", "query": "q", "documents": [], "output": None,
                  "status": "ok", "duration_ms": 0.5, "error": None},
    "tool_call": {"name": "t", "call_id": None, "function": "m.t", "arguments": {},
                  "result": 1, "status": "ok", "duration_ms": 0.1, "error": None},
    "policy_decision": {"decision": "block", "target_event_id": None, "reasons": ["r"],
                        "rules": [], "score": None},
    "feedback": {"target_event_id": "e", "name": "user_feedback", "score": 1.0, "label": None,
                 "comment": None, "reviewer": None, "reviewer_kind": "human"},
    "redaction": {"target_event_id": "e", "fields": ["payload.input"], "reason": "late",
                  "findings": []},
    "erasure": {"subject_type": "user", "subject_id": "u", "reason": "gdpr",
                "requested_by": None, "key_id": None},
    "gap": {"count": 3, "reason": "queue_full", "first_occurred_at":
            "2026-01-01T00:00:00.000000Z", "last_occurred_at": "2026-01-01T00:00:01.000000Z",
            "event_types": {"prompt": 3}},
}


def test_every_kind_validates_and_round_trips_through_the_sdk(tmp_path: Path) -> None:
    assert set(SAMPLE_PAYLOADS) == set(EVENT_TYPES)
    gov = Governor(local_dir=tmp_path, register_atexit=False)
    for kind, payload in SAMPLE_PAYLOADS.items():
        gov.emit_event(kind, payload)
    assert gov.flush(10).complete
    events = read_local_events(tmp_path)
    assert [e["event_type"] for e in events] == list(SAMPLE_PAYLOADS)
    for event in events:
        event.pop("_topic")
        raw = canonical_json(event)
        model = parse_event(raw)
        assert type(model).__name__.lower().startswith(event["event_type"].replace("_", ""))
        assert canonical_json(model) == raw
        assert model.occurred_at.tzinfo is not None
    gov.shutdown(5)


def test_envelope_rejects_unknown_fields_and_bad_kinds() -> None:
    base = {"event_id": "e", "event_type": "feedback", "occurred_at": "2026-01-01T00:00:00Z",
            "app": "a", "environment": "e", "sdk": {"name": "p", "version": "1"},
            "producer_id": "p", "seq": 1, "payload": SAMPLE_PAYLOADS["feedback"]}
    assert parse_event(base).event_type == "feedback"
    with pytest.raises(ValidationError):
        parse_event({**base, "unexpected": 1})
    with pytest.raises(ValidationError):
        parse_event({**base, "event_type": "nope"})
    with pytest.raises(ValidationError):
        parse_event({**base, "payload": SAMPLE_PAYLOADS["gap"]})


def test_canonical_json_is_sorted_and_compact() -> None:
    assert canonical_json({"b": 1, "a": {"d": 2, "c": [1, "é"]}}) == \
        '{"a":{"c":[1,"é"],"d":2},"b":1}'.encode()


def test_schema_export_writes_one_schema_per_kind(tmp_path: Path) -> None:
    assert cli_main(["schema", "export", str(tmp_path)]) == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(f"{kind}.schema.json" for kind in EVENT_TYPES)
    schema = json.loads((tmp_path / "prompt.schema.json").read_text())
    assert schema["$schema"].endswith("2020-12/schema")
    assert {"event_id", "payload", "trace_id"} <= set(schema["properties"])


# --- codec -----------------------------------------------------------------------------


def test_snapshot_copies_containers_so_later_mutation_is_not_recorded() -> None:
    messages = [{"role": "user", "content": "hi"}]
    copied = snapshot((messages,))
    messages.append({"role": "assistant", "content": "later"})
    messages[0]["content"] = "changed"
    assert copied == [[{"role": "user", "content": "hi"}]]


def test_to_jsonable_handles_common_and_hostile_values() -> None:
    class Model(BaseModel):
        x: int

    @dataclasses.dataclass
    class Data:
        when: dt.date

    value = {"model": Model(x=1), "data": Data(dt.date(2026, 1, 2)), "set": {3, 1},
             "bytes": b"\x00\x01", "big": 2**80, "nan": float("nan"), 7: "int key",
             "uuid": uuid.UUID(int=1), "path": Path("/tmp/x"), "exc": ValueError("v")}
    result, warnings = to_jsonable(value)
    assert result["model"] == {"x": 1}
    assert result["data"] == {"when": "2026-01-02"}
    assert result["set"] == [1, 3]
    assert result["bytes"] == {"$bytes_text": "\x00\x01"}
    assert result["big"] == str(2**80)
    assert result["nan"] == "nan"
    assert result["7"] == "int key"
    assert result["path"] == "/tmp/x"
    assert result["exc"] == {"type": "builtins.ValueError", "message": "v"}
    assert set(warnings) == {"big_int", "non_finite_float"}
    orjson.dumps(result)  # always serialisable


def test_to_jsonable_bounds_depth_items_and_size() -> None:
    deep: Any = "leaf"
    for _ in range(50):
        deep = [deep]
    result, warnings = to_jsonable({"deep": deep, "many": list(range(5000)),
                                    "long": "x" * 100_000})
    assert "depth_exceeded" in warnings and "items_truncated" in warnings
    assert len(result["many"]) == 1001
    assert len(result["long"]) < 66_000


# --- routing ---------------------------------------------------------------------------


def test_router_defaults_and_overrides() -> None:
    router = Router("pg")
    assert router.topic("prompt", "redacted") == "pg.events"
    assert router.topic("policy_decision", "metadata") == "pg.decisions"
    assert router.topic("prompt", "raw") == "pg.raw"
    custom = Router("pg", lambda kind, cls: "audit.x" if kind == "feedback" else "")
    assert custom.topic("feedback", "metadata") == "audit.x"
    assert custom.topic("prompt", "redacted") == "pg.events"


def test_record_key_prefers_conversation_then_session_then_interaction() -> None:
    assert record_key({"conversation_id": "c", "session_id": "s"}) == b"c"
    assert record_key({"conversation_id": None, "session_id": "s"}) == b"s"
    assert record_key({"interaction_id": "i"}) == b"i"
    assert record_key({"event_id": "e"}) == b"e"


def test_traceparent_without_a_span_is_valid_and_unsampled() -> None:
    event_id = uuid7()
    header = traceparent(None, None, event_id)
    version, trace_id, span_id, flags = header.split("-")
    assert (version, flags) == ("00", "00")
    assert len(trace_id) == 32 and len(span_id) == 16 and int(trace_id, 16) and int(span_id, 16)
    assert traceparent("a" * 32, "b" * 16, event_id) == f"00-{'a' * 32}-{'b' * 16}-01"


# --- content modes ---------------------------------------------------------------------


def test_metadata_mode_publishes_no_content(tmp_path: Path) -> None:
    gov = Governor(local_dir=tmp_path, capture_content="metadata", register_atexit=False)

    @gov.llm_call
    def answer(q: str) -> str:
        return "the answer"

    answer("the question")
    assert gov.flush(10).complete
    prompt, response = read_local_events(tmp_path)
    assert prompt["classification"] == "metadata" and prompt["payload"]["input"] is None
    assert response["payload"]["output"] is None and response["redaction"] is None
    gov.shutdown(5)


def test_raw_mode_adds_an_unredacted_copy_on_the_raw_topic(tmp_path: Path) -> None:
    gov = Governor(local_dir=tmp_path, capture_content="raw", register_atexit=False,
                   topic_prefix="pg")

    @gov.tool
    def send(to: str) -> bool:
        return True

    send("alice@example.com")
    assert gov.flush(10).complete
    events = read_local_events(tmp_path)
    by_topic = {e["_topic"]: e for e in events}
    assert set(by_topic) == {"pg.events", "pg.raw"}
    assert by_topic["pg.raw"]["payload"]["arguments"] == {"to": "alice@example.com"}
    assert by_topic["pg.raw"]["classification"] == "raw"
    assert "alice@example.com" not in json.dumps(by_topic["pg.events"]["payload"])
    assert by_topic["pg.raw"]["event_id"] == by_topic["pg.events"]["event_id"]
    gov.shutdown(5)


def test_oversized_event_keeps_metadata_and_says_why(tmp_path: Path) -> None:
    gov = Governor(local_dir=tmp_path, register_atexit=False, max_event_bytes=10_000)

    @gov.tool
    def big(text: str) -> int:
        return len(text)

    big("y" * 50_000)
    assert gov.flush(10).complete
    (event,) = read_local_events(tmp_path)
    assert event["payload"]["arguments"] is None and event["payload"]["result"] is None
    assert event["attributes"]["promptgov.content_withheld"] == "event_too_large"
    assert gov.stats()["warnings"]["event_too_large"] == 1
    gov.shutdown(5)


def test_integrity_chain_links_each_event_to_the_previous(tmp_path: Path) -> None:
    import hashlib

    gov = Governor(local_dir=tmp_path, register_atexit=False)
    for i in range(5):
        gov.emit_event("feedback", {"target_event_id": f"e{i}", "score": float(i)})
    assert gov.flush(10).complete
    events = read_local_events(tmp_path)
    previous = None
    for event in events:
        integrity = event["integrity"]
        digest = hashlib.sha256(canonical_json(event["payload"])).hexdigest()
        assert integrity["content_hash"] == f"sha256:{digest}"
        assert integrity["prev_hash"] == previous
        assert integrity["chain_id"] == event["producer_id"]
        previous = integrity["content_hash"]
    gov.shutdown(5)


def test_queue_overflow_is_accounted_for_by_a_gap_event(tmp_path: Path) -> None:
    gov = Governor(local_dir=tmp_path, register_atexit=False, max_queue_size=5,
                   durability="memory")
    gov._publisher._thread = threading.Thread()  # hold the publisher: nothing drains
    for _ in range(20):
        gov.emit_event("feedback", {"target_event_id": "t"})
    assert gov.stats()["dropped"] == 15 and gov.stats()["emitted"] == 20
    gov._publisher._thread = None
    gov._publisher._start()
    assert gov.flush(10).complete
    events = read_local_events(tmp_path)
    gaps = [e for e in events if e["event_type"] == "gap"]
    assert len(gaps) == 1 and gaps[0]["payload"]["count"] == 15
    assert gaps[0]["payload"]["event_types"] == {"feedback": 15}
    assert len(events) == 6
    gov.shutdown(5)
