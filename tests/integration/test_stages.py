"""Stages against a real broker: exactly once through kills, rebalances and broker restarts,
dead letters, and lag. Outputs are read back with an independent client (confluent-kafka,
``read_committed``) and counted by their lineage (source topic, partition, offset)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka_broker import KafkaBroker
from kafka_reader import ReadBack

from promptgov.events.ids import format_time, now_ns, uuid7
from promptgov.stages import StageRunner, StageStats
from promptgov.stages.lag import stage_lag

pytestmark = pytest.mark.broker

APP = Path(__file__).with_name("stage_app.py")
Report = Callable[..., None]
Source = tuple[str, int, int]  # topic, partition, offset


@pytest.fixture
def broker(disposable_broker: KafkaBroker) -> Iterator[KafkaBroker]:
    disposable_broker.ensure_running()
    yield disposable_broker
    disposable_broker.ensure_running()


def produce_sources(bootstrap: str, prefix: str, count: int, *, poison: int = 0,
                    garbage: int = 0) -> set[Source]:
    """``count`` prompt-like events (``poison`` of them make the transform raise, then
    ``garbage`` undecodable records) on ``<prefix>.events``; their coordinates."""
    topic = f"{prefix}.events"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 6, 1)]).values():
        try:
            future.result(30)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "enable.idempotence": True})
    written: set[Source] = set()

    def delivered(error: object, message: object) -> None:
        assert error is None, error
        written.add((message.topic(), message.partition(), message.offset()))  # type: ignore[attr-defined]

    for i in range(count + poison):
        event = {"event_id": uuid7(), "event_type": "prompt", "occurred_at": format_time(now_ns()),
                 "app": "stage-test", "environment": "test", "conversation_id": f"c{i % 20}",
                 "payload": {"poison": i >= count, "input": f"question {i}"}}
        producer.produce(topic, orjson.dumps(event), key=f"c{i % 20}".encode(),
                         on_delivery=delivered)
        producer.poll(0)
    for i in range(garbage):
        producer.produce(topic, b"\xff not json " + str(i).encode(), key=b"garbage",
                         on_delivery=delivered)
    assert producer.flush(60) == 0
    return written


class StageProcess:
    """``stage_app.py`` in a subprocess (the copy stage)."""

    def __init__(self, bootstrap: str, prefix: str, delay_ms: float) -> None:
        env = {**os.environ, "PYTHONPATH": str(APP.parent)}
        self.log = Path(os.environ.get("PROMPTGOV_STAGE_LOG_DIR", "/tmp")) / \
            f"stage-{prefix}-{uuid.uuid4().hex[:6]}.log"
        self.process = subprocess.Popen(
            [sys.executable, str(APP), bootstrap, prefix, str(delay_ms)], env=env,
            stdout=subprocess.PIPE, stderr=self.log.open("w"), text=True)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, out
        return out


def outputs(read_back: ReadBack, bootstrap: str, prefix: str, expected: int,
            timeout: float = 120.0, linger: float = 3.0, committed: bool = True
            ) -> list[dict[str, object]]:
    config = {} if committed else {"isolation.level": "read_uncommitted"}
    records = read_back(bootstrap, f"{prefix}.stage.copy", expected, timeout=timeout,
                        linger=linger, config=config)
    return [orjson.loads(r.value) for r in records]


def wait_for_outputs(read_back: ReadBack, bootstrap: str, prefix: str, at_least: int,
                     timeout: float = 120.0) -> None:
    found = outputs(read_back, bootstrap, prefix, at_least, timeout=timeout, linger=0.0,
                    committed=False)
    assert len(found) >= at_least, f"only {len(found)} outputs in {timeout} s"


def run_until_consumed(bootstrap: str, prefix: str, count: int,
                       name: str = "copy") -> StageStats:
    """Run the copy stage in this process until it has consumed ``count`` records."""
    import stage_app

    async def run() -> StageStats:
        runner = StageRunner(stage_app.copy_stage(name=name), bootstrap_servers=bootstrap,
                             topic_prefix=prefix)
        stop = asyncio.Event()
        task = asyncio.ensure_future(runner.run(stop))
        deadline = time.monotonic() + 60
        while runner.stats.consumed < count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        return await task

    return asyncio.run(run())


def exactly_once(events: list[dict[str, object]], sources: set[Source], report: Report,
                 **extra: object) -> None:
    by_source = Counter((e["lineage"]["source_topic"], e["lineage"]["source_partition"],  # type: ignore[index]
                         e["lineage"]["source_offset"]) for e in events)  # type: ignore[index]
    ids = Counter(e["event_id"] for e in events)
    duplicates = sum(n - 1 for n in by_source.values())
    missing = sources - set(by_source)
    report(sources=len(sources), outputs=len(events), distinct_sources=len(by_source),
           duplicates=duplicates, missing=len(missing), **extra)
    assert not missing, f"{len(missing)} sources without an output"
    assert duplicates == 0 and max(ids.values()) == 1, "a source derived twice"
    assert set(by_source) <= sources


def test_stage_killed_mid_transaction_and_restarted_exactly_once(
        broker: KafkaBroker, unique_topic_prefix: str, read_back: ReadBack,
        fault_report: Report) -> None:
    prefix = unique_topic_prefix
    sources = produce_sources(broker.bootstrap, prefix, 3000)
    first = StageProcess(broker.bootstrap, prefix, delay_ms=1.0)
    wait_for_outputs(read_back, broker.bootstrap, prefix, 700)
    first.kill()  # batches of 200 take ~0.2 s each: the kill lands inside a transaction
    second = StageProcess(broker.bootstrap, prefix, delay_ms=0.0)
    events = outputs(read_back, broker.bootstrap, prefix, 3000)
    second.terminate()
    seen_uncommitted = len(outputs(read_back, broker.bootstrap, prefix, 10**9, timeout=8,
                                   linger=0, committed=False))
    exactly_once(events, sources, fault_report,
                 aborted_outputs=seen_uncommitted - len(events))


def test_second_copy_added_then_first_killed_exactly_once(
        broker: KafkaBroker, unique_topic_prefix: str, read_back: ReadBack,
        fault_report: Report) -> None:
    prefix = unique_topic_prefix
    sources = produce_sources(broker.bootstrap, prefix, 4000)
    first = StageProcess(broker.bootstrap, prefix, delay_ms=2.0)
    wait_for_outputs(read_back, broker.bootstrap, prefix, 500)
    second = StageProcess(broker.bootstrap, prefix, delay_ms=2.0)  # rebalance: 2 copies
    wait_for_outputs(read_back, broker.bootstrap, prefix, 2000)
    first.kill()  # rebalance again once its session expires: the second takes all
    events = outputs(read_back, broker.bootstrap, prefix, 4000, timeout=180)
    second.terminate()
    exactly_once(events, sources, fault_report, copies=2)


def test_broker_restarted_while_a_stage_runs_exactly_once(
        broker: KafkaBroker, unique_topic_prefix: str, read_back: ReadBack,
        fault_report: Report) -> None:
    prefix = unique_topic_prefix
    sources = produce_sources(broker.bootstrap, prefix, 3000)
    stage = StageProcess(broker.bootstrap, prefix, delay_ms=1.0)
    wait_for_outputs(read_back, broker.bootstrap, prefix, 500)
    broker.stop()
    broker.start()
    events = outputs(read_back, broker.bootstrap, prefix, 3000, timeout=240)
    out = stage.terminate()  # SIGTERM: graceful, the stage says it stopped
    assert "stopped" in out
    exactly_once(events, sources, fault_report)


def test_poison_records_are_dead_lettered_with_lineage_and_the_rest_flows(
        broker: KafkaBroker, unique_topic_prefix: str, read_back: ReadBack,
        fault_report: Report) -> None:
    prefix = unique_topic_prefix
    written = produce_sources(broker.bootstrap, prefix, 100, poison=3, garbage=2)

    stats = run_until_consumed(broker.bootstrap, prefix, 105)
    assert stats.consumed == 105 and stats.dead_lettered == 5, stats
    events = outputs(read_back, broker.bootstrap, prefix, 100)
    dead = [orjson.loads(r.value) for r in read_back(
        broker.bootstrap, f"{prefix}.dlq.copy", 5, timeout=30, linger=2.0)]
    dead_sources = {(d["lineage"]["source_topic"], d["lineage"]["source_partition"],
                     d["lineage"]["source_offset"]) for d in dead}
    fault_report(sources=len(written), outputs=len(events), dead_lettered=len(dead))
    assert len(events) == 100 and len(dead) == 5
    assert dead_sources <= written and len(dead_sources) == 5
    assert sorted(d["error"]["type"] for d in dead) == ["JSONDecodeError"] * 2 + [
        "ValueError"] * 3
    assert all(d["stage"] == "copy" for d in dead)


def test_fresh_stages_derive_each_source_exactly_once(
        broker: KafkaBroker, unique_topic_prefix: str, read_back: ReadBack,
        fault_report: Report) -> None:
    """aiokafka fetches a new assignment before the assignment callback has sought the
    committed offset: a batch fetched from elsewhere must not be derived a second time."""
    prefix = unique_topic_prefix
    sources = produce_sources(broker.bootstrap, prefix, 300)
    for n in range(4):
        name = f"fresh{n}"
        assert run_until_consumed(broker.bootstrap, prefix, 300, name=name).consumed == 300
        records = read_back(broker.bootstrap, f"{prefix}.stage.{name}", 300, timeout=60,
                            linger=2.0)
        exactly_once([orjson.loads(r.value) for r in records], sources, fault_report,
                      stage=name)


def test_outputs_that_can_never_be_written_are_dead_lettered(
        broker: KafkaBroker, unique_topic_prefix: str, read_back: ReadBack,
        fault_report: Report) -> None:
    prefix = unique_topic_prefix
    produce_sources(broker.bootstrap, prefix, 50)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for flag in ("oversize", "bad_topic"):
        event = {"event_id": uuid7(), "event_type": "prompt",
                 "occurred_at": format_time(now_ns()), "payload": {flag: True}}
        producer.produce(f"{prefix}.events", orjson.dumps(event), key=b"c0")
    assert producer.flush(30) == 0
    stats = run_until_consumed(broker.bootstrap, prefix, 52)
    dead = [orjson.loads(r.value) for r in read_back(
        broker.bootstrap, f"{prefix}.dlq.copy", 2, timeout=30, linger=1.0)]
    fault_report(consumed=stats.consumed, outputs=stats.outputs, dead_lettered=len(dead),
                 aborted=stats.aborted)
    assert stats.consumed == 52 and stats.outputs == 50 and stats.aborted == 0, stats
    messages = sorted(d["error"]["message"] for d in dead)
    assert "larger than" in messages[0] and "not a valid topic name" in messages[1]


def test_lag_reports_a_known_backlog(broker: KafkaBroker, unique_topic_prefix: str,
                                     fault_report: Report) -> None:
    prefix = unique_topic_prefix
    produce_sources(broker.bootstrap, prefix, 300)

    assert run_until_consumed(broker.bootstrap, prefix, 300).consumed == 300
    produce_sources(broker.bootstrap, prefix, 200)  # the backlog
    # A transaction's offsets become visible once its markers are written: poll for them.
    deadline = time.monotonic() + 30
    while True:
        (lag,) = asyncio.run(stage_lag(broker.bootstrap, topic_prefix=prefix))
        if lag.records_behind == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    fault_report(produced=500, processed=300, records_behind=lag.records_behind,
                 time_behind_s=lag.time_behind_s)
    assert lag.stage == "copy" and lag.records_behind == 200, lag.partitions
    assert sum(p.end_offset for p in lag.partitions) == 500
    assert lag.time_behind_s is not None and lag.time_behind_s > 0
    assert lag.latencies_ms["source->output (processing)"].count == 300
    cli = subprocess.run([sys.executable, "-m", "promptgov", "lag", "--bootstrap-servers",
                          broker.bootstrap, "--topic-prefix", prefix], capture_output=True,
                         text=True, timeout=120, check=True)
    assert "records behind: 200" in cli.stdout, cli.stdout


def test_derived_ids_are_deterministic() -> None:
    from promptgov.stages import derived_event_id

    source = uuid7()
    first = derived_event_id(source, "policy", "1", 0)
    assert first == derived_event_id(source, "policy", "1", 0)
    assert len({first, derived_event_id(source, "policy", "2", 0),
                derived_event_id(source, "policy", "1", 1),
                derived_event_id(source, "other", "1", 0)}) == 4
    assert first[:13].replace("-", "") == source[:13].replace("-", "")  # time-ordered
    assert uuid.UUID(first).version == 7
