"""Freshness per stage: how far behind each stage runs, and how long events take.

For a stage (its consumer group ``<prefix>.stage.<name>``):

- records behind: per input partition, the end offset (last stable offset, as a
  ``read_committed`` reader sees it) minus the group's committed offset;
- time behind: the age of the oldest unprocessed record, ``now - occurred_at``
  (event time: when the call happened in the application), and, beside it, by
  the record's broker timestamp;
- latency distributions (p50/p95/p99) over the stage's latest outputs, from
  their ``lineage``: source ``occurred_at`` (event time) to the output's
  ``occurred_at`` (processing time, the stage's clock) and to the output
  record's timestamp (the broker's record time); ``prompt->decision`` for
  policy decisions derived from prompts.

The record timestamp is the producer's create time unless the topic sets
``message.timestamp.type=LogAppendTime``; a record retried after an outage keeps
its first attempt's time, so figures from record timestamps understate outages.
That is why time behind and latencies are computed from event time, with the
broker's figures beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from promptgov.stages.runner import parse_time_ms


@dataclasses.dataclass
class PartitionLag:
    """One input partition of a stage."""

    topic: str
    partition: int
    end_offset: int
    committed: int
    behind: int
    oldest_age_s: float | None = None
    oldest_broker_age_s: float | None = None


@dataclasses.dataclass
class Percentiles:
    """A latency distribution in milliseconds."""

    count: int
    p50: float
    p95: float
    p99: float


@dataclasses.dataclass
class StageLag:
    """Freshness figures of one stage."""

    stage: str
    group: str
    records_behind: int
    time_behind_s: float | None
    broker_time_behind_s: float | None
    partitions: list[PartitionLag]
    latencies_ms: dict[str, Percentiles]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self)


def percentiles(values: Sequence[float]) -> Percentiles | None:
    """Nearest-rank p50/p95/p99 of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(int(q * len(ordered) + 0.999999) - 1, 0))]

    return Percentiles(len(ordered), rank(0.50), rank(0.95), rank(0.99))


async def stage_lag(bootstrap_servers: str, *, topic_prefix: str = "promptgov",
                    stages: Sequence[str] | None = None, sample: int = 500,
                    client_options: Mapping[str, Any] | None = None) -> list[StageLag]:
    """Freshness of the named stages (default: every ``<prefix>.stage.*`` group)."""
    options = dict(client_options or {})
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **options)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                                isolation_level="read_committed", **options)
    try:
        await admin.start()
        await consumer.start()
        group_prefix = f"{topic_prefix}.stage."
        if stages is None:
            groups = await admin.list_consumer_groups()
            names = sorted(g[0][len(group_prefix):] for g in groups
                           if g[0].startswith(group_prefix))
        else:
            names = list(stages)
        topics = await consumer.topics()
        outputs = sorted(t for t in topics if t.startswith(f"{topic_prefix}.")
                         and ".dlq." not in t and not t.endswith(".raw"))
        described = await admin.describe_topics(outputs) if outputs else []
        output_partitions = [TopicPartition(d["topic"], p["partition"]) for d in described
                             for p in d.get("partitions") or ()]
        samples = await _sample_outputs(consumer, output_partitions, sample)
        result = []
        for name in names:
            group = group_prefix + name
            committed = await admin.list_consumer_group_offsets(group)
            parts = await _partitions(consumer, {tp: meta.offset for tp, meta in
                                                 committed.items() if meta.offset >= 0})
            ages = [p.oldest_age_s for p in parts if p.oldest_age_s is not None]
            broker = [p.oldest_broker_age_s for p in parts if p.oldest_broker_age_s is not None]
            result.append(StageLag(
                stage=name, group=group, records_behind=sum(p.behind for p in parts),
                time_behind_s=max(ages) if ages else (0.0 if parts else None),
                broker_time_behind_s=max(broker) if broker else (0.0 if parts else None),
                partitions=parts, latencies_ms=_latencies(name, samples)))
        return result
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(admin.close(), 10)


async def _partitions(consumer: AIOKafkaConsumer,
                      committed: Mapping[TopicPartition, int]) -> list[PartitionLag]:
    if not committed:
        return []
    ends = await consumer.end_offsets(list(committed))
    parts = []
    for tp in sorted(committed, key=lambda t: (t.topic, t.partition)):
        end, done = ends[tp], committed[tp]
        lag = PartitionLag(tp.topic, tp.partition, end, done, max(end - done, 0))
        if lag.behind:
            record = await _record_at(consumer, tp, done)
            if record is not None:
                now_ms = time.time() * 1000
                lag.oldest_broker_age_s = max(now_ms - record.timestamp, 0) / 1000
                occurred = _field(record.value, "occurred_at")
                millis = parse_time_ms(occurred) if isinstance(occurred, str) else None
                if millis is not None:
                    lag.oldest_age_s = max(now_ms - millis, 0) / 1000
        parts.append(lag)
    return parts


async def _record_at(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> Any:
    consumer.assign([tp])
    consumer.seek(tp, offset)
    batch = await consumer.getmany(tp, timeout_ms=5000, max_records=1)
    records = batch.get(tp) or []
    return records[0] if records else None


async def _sample_outputs(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition],
                          sample: int) -> list[tuple[dict[str, Any], int]]:
    """The latest ``sample`` records of each partition that carry lineage."""
    if not tps:
        return []
    ends = await consumer.end_offsets(tps)
    starts = await consumer.beginning_offsets(tps)
    wanted = {tp: max(ends[tp] - sample, starts[tp]) for tp in tps if ends[tp] > starts[tp]}
    if not wanted:
        return []
    consumer.assign(list(wanted))
    for tp, offset in wanted.items():
        consumer.seek(tp, offset)
    out: list[tuple[dict[str, Any], int]] = []
    remaining = dict(wanted)
    deadline = time.monotonic() + 30
    while remaining and time.monotonic() < deadline:
        batch = await consumer.getmany(timeout_ms=500, max_records=5000)
        if not batch:
            break
        for tp, records in batch.items():
            for record in records:
                with contextlib.suppress(ValueError, TypeError):
                    event = orjson.loads(record.value)
                    if isinstance(event, dict) and isinstance(event.get("lineage"), dict):
                        out.append((event, record.timestamp))
            if records and records[-1].offset + 1 >= ends[tp]:
                remaining.pop(tp, None)
    return out


def _latencies(stage: str, samples: list[tuple[dict[str, Any], int]]
               ) -> dict[str, Percentiles]:
    series: dict[str, list[float]] = {"source->output (processing)": [],
                                      "source->output (broker)": [],
                                      "prompt->decision (processing)": []}
    for event, timestamp_ms in samples:
        lineage = event["lineage"]
        if lineage.get("stage") != stage:
            continue
        source = parse_time_ms(str(lineage.get("source_occurred_at") or ""))
        derived = parse_time_ms(str(event.get("occurred_at") or ""))
        if source is None:
            continue
        if derived is not None:
            series["source->output (processing)"].append(derived - source)
            if (lineage.get("source_event_type") == "prompt"
                    and event.get("event_type") == "policy_decision"):
                series["prompt->decision (processing)"].append(derived - source)
        series["source->output (broker)"].append(timestamp_ms - source)
    out = {}
    for name, values in series.items():
        figures = percentiles(values)
        if figures is not None:
            out[name] = figures
    return out


def _field(value: bytes | None, name: str) -> Any:
    try:
        event = orjson.loads(value or b"")
    except (ValueError, TypeError):
        return None
    return event.get(name) if isinstance(event, dict) else None


def format_lag(lags: Sequence[StageLag]) -> str:
    """A human-readable report (what ``promptgov lag`` prints)."""
    lines: list[str] = []
    for lag in lags:
        lines.append(f"stage {lag.stage} (group {lag.group})")
        if not lag.partitions:
            lines.append("  no committed offsets yet")
            continue
        behind = "-" if lag.time_behind_s is None else f"{lag.time_behind_s:.1f} s"
        broker = "-" if lag.broker_time_behind_s is None else f"{lag.broker_time_behind_s:.1f} s"
        lines.append(f"  records behind: {lag.records_behind}   time behind: {behind} "
                     f"(event time; broker time {broker})")
        lines.append(f"  {'partition':<32}{'end':>10}{'committed':>11}{'behind':>9}"
                     f"{'oldest age':>12}")
        for p in lag.partitions:
            age = "-" if p.oldest_age_s is None else f"{p.oldest_age_s:.1f} s"
            lines.append(f"  {p.topic + '[' + str(p.partition) + ']':<32}{p.end_offset:>10}"
                         f"{p.committed:>11}{p.behind:>9}{age:>12}")
        if lag.latencies_ms:
            lines.append(f"  {'latency (ms, latest outputs)':<32}{'p50':>10}{'p95':>11}"
                         f"{'p99':>9}{'n':>12}")
            for name, f in lag.latencies_ms.items():
                lines.append(f"  {name:<32}{f.p50:>10.1f}{f.p95:>11.1f}{f.p99:>9.1f}"
                             f"{f.count:>12}")
    return "\n".join(lines)
