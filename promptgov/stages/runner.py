"""Runs a stage: consume with a consumer group, transform, produce and commit in one
Kafka transaction per partition batch.

Exactly once, rebalances included, without KIP-447 (aiokafka's
``send_offsets_to_transaction`` takes only the group id): each input partition
has a transactional producer of its own, ``transactional_id`` =
``<group>.<topic>.<partition>``. When a partition moves to another copy, the new
owner's producer starts with that id, which fences the old owner's producer and
aborts its open transaction; only then does the new owner read the committed
offset and seek to it. Outputs and input offsets of a batch commit together or
not at all; downstream readers use ``isolation_level="read_committed"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import signal
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kerr
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from opentelemetry import metrics

from promptgov.events.ids import format_time, now_ns
from promptgov.governance.redaction import DefaultRedactor
from promptgov.governance.routing import record_headers, record_key
from promptgov.stages.stage import MAX_OUTPUTS, Output, Source, Stage, derive, derived_event_id

logger = logging.getLogger("promptgov.stages")

_FENCED = (kerr.ProducerFenced, kerr.InvalidProducerEpoch, kerr.TransactionalIdAuthorizationFailed)
_SORTED = orjson.OPT_SORT_KEYS
_TOPIC_EXISTS = 36
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_redactor = DefaultRedactor()


@dataclasses.dataclass
class StageStats:
    """What a runner has done so far."""

    consumed: int = 0
    outputs: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    transactions: int = 0
    aborted: int = 0
    rebalances: int = 0


@dataclasses.dataclass
class _Owned:
    """An input partition this copy owns, with its transactional producer."""

    producer: AIOKafkaProducer
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    revoked: bool = False


class StageRunner:
    """One copy of a stage. Start more copies (processes, machines) to scale out.

    ``client_options`` go to the consumer, the producers and the admin client
    (security settings: ``security_protocol``, ``ssl_context``, ``sasl_*``);
    ``consumer_options`` to the consumer only (``session_timeout_ms``...).
    """

    def __init__(
        self,
        stage: Stage,
        *,
        bootstrap_servers: str,
        topic_prefix: str = "promptgov",
        batch_size: int = 500,
        client_options: Mapping[str, Any] | None = None,
        consumer_options: Mapping[str, Any] | None = None,
        create_topics: bool = True,
        topic_partitions: int = 6,
        topic_replication_factor: int = 1,
        transaction_timeout_ms: int = 60_000,
        max_output_bytes: int = 1_000_000,
    ) -> None:
        self.stage = stage
        self.bootstrap = bootstrap_servers
        self.prefix = topic_prefix
        self.batch_size = batch_size
        self.client_options = dict(client_options or {})
        self.consumer_options = dict(consumer_options or {})
        self.create_topics = create_topics
        self.partitions = topic_partitions
        self.replication = topic_replication_factor
        self.transaction_timeout_ms = transaction_timeout_ms
        self.max_output_bytes = max_output_bytes  # below the producer's max request size
        self.group_id = stage.group_id(topic_prefix)
        self.source = f"/promptgov/stage/{stage.name}"
        self.stats = StageStats()
        self._owned: dict[TopicPartition, _Owned] = {}
        self._next: dict[TopicPartition, int] = {}  # next offset to process, per partition
        self._consumer: AIOKafkaConsumer | None = None
        self._known_topics: set[str] = set()
        meter = metrics.get_meter("promptgov.stages")
        self._latency = meter.create_histogram(
            "promptgov.stage.latency", unit="ms",
            description="event time (occurred_at) of a source event to its processing")
        self._processed = meter.create_counter(
            "promptgov.stage.processed", description="source records processed")
        meter.create_observable_gauge(
            "promptgov.stage.records_behind", callbacks=[self._observe_lag],
            description="end offset minus position, per input partition")

    # --- lifecycle ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> StageStats:
        """Process until ``stop`` is set; the batch in progress is finished first."""
        stop = stop or asyncio.Event()
        if self.create_topics:
            await self._ensure_topics({*self.stage.input_topics(self.prefix),
                                       self.stage.dlq_topic(self.prefix),
                                       f"{self.prefix}.stage.{self.stage.name}",
                                       *(self.stage.output_topic(self.prefix, Output(k, {}))
                                         for k in self.stage.routes)})
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group_id,
            enable_auto_commit=False, isolation_level="read_committed",
            auto_offset_reset="earliest", client_id=f"promptgov-stage-{self.stage.name}",
            **{**self.client_options, **self.consumer_options})
        self._consumer = consumer
        consumer.subscribe(self.stage.input_topics(self.prefix), listener=_Listener(self))
        await consumer.start()
        logger.info("promptgov: stage %s@%s consuming %s as group %s", self.stage.name,
                    self.stage.version, ", ".join(self.stage.input_topics(self.prefix)),
                    self.group_id)
        try:
            while not stop.is_set():
                fetch = asyncio.ensure_future(
                    consumer.getmany(timeout_ms=200, max_records=self.batch_size))
                stopped = asyncio.ensure_future(stop.wait())
                await asyncio.wait({fetch, stopped}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if not fetch.done():
                    fetch.cancel()
                    with contextlib.suppress(BaseException):
                        await fetch
                    break
                batches = fetch.result()
                if batches:
                    await asyncio.gather(*(self._process(tp, records)
                                           for tp, records in batches.items()))
        finally:
            await self._release(list(self._owned))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 10)
        return self.stats

    # --- partitions -------------------------------------------------------------------

    async def _acquire(self, partitions: list[TopicPartition]) -> None:
        """Assigned: fence the previous owner, then resume from the committed offset."""
        consumer = self._consumer
        assert consumer is not None
        self.stats.rebalances += 1
        for tp in partitions:
            if tp in self._owned:
                continue
            producer = await self._start_producer(tp)
            committed = await self._settled_offset(tp)
            if committed is None:
                committed = (await consumer.beginning_offsets([tp]))[tp]
            consumer.seek(tp, committed)
            # aiokafka starts fetching before this callback ends: records fetched from
            # another position are dropped by _process, which starts at _next[tp].
            self._next[tp] = committed
            self._owned[tp] = _Owned(producer)

    async def _start_producer(self, tp: TopicPartition) -> AIOKafkaProducer:
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                transactional_id=f"{self.group_id}.{tp.topic}.{tp.partition}",
                enable_idempotence=True, acks="all", linger_ms=5,
                transaction_timeout_ms=self.transaction_timeout_ms,
                client_id=f"promptgov-stage-{self.stage.name}", **self.client_options)
            try:
                await producer.start()  # InitProducerId: fences the old owner, aborts its txn
                return producer
            except Exception as exc:
                logger.warning("promptgov: stage %s: producer for %s not ready (%s); retrying",
                               self.stage.name, tp, type(exc).__name__)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 5)
                await asyncio.sleep(1.0)

    async def _settled_offset(self, tp: TopicPartition) -> int | None:
        """The committed offset once it stops moving.

        A transaction's offsets become readable only after its markers reach the
        group coordinator, a little after the commit (or after a new owner's
        InitProducerId completed a dying owner's commit); aiokafka's OffsetFetch
        cannot ask the broker to wait for them (KIP-447's require_stable), so the
        offset is read until two reads 50 ms apart agree.
        """
        consumer = self._consumer
        assert consumer is not None
        previous: int | None = await consumer.committed(tp)
        for _ in range(100):
            await asyncio.sleep(0.05)
            current = await consumer.committed(tp)
            if current == previous:
                break
            previous = current
        return previous

    async def _release(self, partitions: list[TopicPartition]) -> None:
        """Revoked (or stopping): finish the batch in progress, then drop the producer.

        Before the partition is given up, its last committed offset must be readable:
        the next owner reads it as soon as the rebalance completes.
        """
        consumer = self._consumer
        deadline = time.monotonic() + 10  # for all of them: a broker may be down
        for tp in partitions:
            owned = self._owned.get(tp)
            if owned is None:
                continue
            async with owned.lock:
                owned.revoked = True
                self._owned.pop(tp, None)
            expected = self._next.get(tp)
            if consumer is not None and expected is not None:
                with contextlib.suppress(Exception):
                    while (await consumer.committed(tp) or 0) < expected and \
                            time.monotonic() < deadline:
                        await asyncio.sleep(0.01)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(owned.producer.stop(),
                                       max(deadline - time.monotonic(), 1.0))

    # --- one partition's batch ----------------------------------------------------------

    async def _process(self, tp: TopicPartition, records: list[Any]) -> None:
        owned = self._owned.get(tp)
        if owned is None or not records:
            return
        async with owned.lock:
            if owned.revoked:
                return
            expected = self._next.get(tp, 0)
            records = [r for r in records if r.offset >= expected]  # never twice
            if not records:
                return
            outputs: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []
            for record in records:
                outputs.extend(await self._derive(record))
            await self._ensure_topics({topic for topic, *_ in outputs})
            try:
                await self._commit(owned.producer, tp, records, outputs)
            except _FENCED:
                logger.warning("promptgov: stage %s lost %s to another copy", self.stage.name, tp)
                owned.revoked = True
                return
            except Exception as exc:
                self.stats.aborted += 1
                logger.warning("promptgov: stage %s: transaction on %s failed (%s); retrying "
                               "from offset %d", self.stage.name, tp, type(exc).__name__,
                               records[0].offset)
                await self._recover(tp, owned, records[0].offset)
                return
        self._next[tp] = records[-1].offset + 1
        dead = sum(1 for topic, *_ in outputs if topic == self.stage.dlq_topic(self.prefix))
        self.stats.consumed += len(records)
        self.stats.outputs += len(outputs) - dead
        self.stats.dead_lettered += dead
        self.stats.transactions += 1
        self._processed.add(len(records), {"stage": self.stage.name})

    async def _commit(self, producer: AIOKafkaProducer, tp: TopicPartition,
                      records: list[Any],
                      outputs: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]
                      ) -> None:
        await producer.begin_transaction()
        try:
            for topic, key, value, headers in outputs:
                await producer.send(topic, value, key=key, headers=headers)
            await producer.send_offsets_to_transaction({tp: records[-1].offset + 1},
                                                       self.group_id)
            await producer.commit_transaction()
        except BaseException:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(producer.abort_transaction(), 10)
            raise

    async def _recover(self, tp: TopicPartition, owned: _Owned, offset: int) -> None:
        """After a failed transaction: a fresh producer (same id), then resume from the
        committed offset. A commit can fail on the client and still have happened on the
        broker: the new producer's start completes or aborts it, and the committed offset
        says which (``offset``, the batch's first, only when nothing was ever committed)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(owned.producer.stop(), 10)
        await asyncio.sleep(0.5)
        owned.producer = await self._start_producer(tp)
        consumer = self._consumer
        if consumer is not None and tp in consumer.assignment():
            committed = await self._settled_offset(tp)
            position = offset if committed is None else committed
            consumer.seek(tp, position)
            self._next[tp] = position

    async def _derive(self, record: Any
                      ) -> list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]:
        """The output records for one input record (a dead letter when it fails)."""
        source = Source(record.topic, record.partition, record.offset, record.timestamp,
                        record.key)
        try:
            event = orjson.loads(record.value)
            if not isinstance(event, dict):
                raise ValueError("not a JSON object")
        except (ValueError, TypeError) as exc:
            return [self._dead_letter(source, None, record.value, exc)]
        if self.stage.kinds is not None and event.get("event_type") not in self.stage.kinds:
            self.stats.skipped += 1
            return []
        self._observe_latency(event)
        try:
            result = self.stage.transform(event, source)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
            produced = list(result or ())  # type: ignore[arg-type]
            if len(produced) > MAX_OUTPUTS:
                raise ValueError(f"{len(produced)} outputs for one event (at most "
                                 f"{MAX_OUTPUTS})")
            out = []
            for index, output in enumerate(produced):
                if not isinstance(output, Output) or not isinstance(output.payload, dict):
                    raise TypeError("a transform returns promptgov.stages.Output objects with "
                                    "a dict payload")
                envelope = derive(self.stage, event, source, output, index)
                topic = self.stage.output_topic(self.prefix, output)
                value = orjson.dumps(envelope, option=_SORTED)
                if not _TOPIC_NAME.match(topic):
                    raise ValueError(f"output topic {topic!r} is not a valid topic name")
                if len(value) > self.max_output_bytes:
                    raise ValueError(f"an output of {len(value)} bytes is larger than "
                                     f"{self.max_output_bytes}")
                out.append((topic, record.key or record_key(envelope), value,
                            record_headers(envelope, self.source)))
            return out
        except Exception as exc:
            return [self._dead_letter(source, event, record.value, exc)]

    def _dead_letter(self, source: Source, event: dict[str, Any] | None, value: bytes | None,
                     exc: BaseException) -> tuple[str, bytes | None, bytes,
                                                  list[tuple[str, bytes]]]:
        message, _ = _redactor.redact_text(str(exc)[:2000])
        raw = source.topic.endswith(".raw")  # raw content never goes to a dead-letter topic
        entry = {
            "event_id": derived_event_id(
                str((event or {}).get("event_id") or
                    f"{source.topic}/{source.partition}/{source.offset}"),
                self.stage.name, self.stage.version, -1),
            "dead_lettered_at": format_time(now_ns()),
            "stage": self.stage.name,
            "stage_version": self.stage.version,
            "error": {"type": type(exc).__name__, "message": message},
            "lineage": {"source_topic": source.topic, "source_partition": source.partition,
                        "source_offset": source.offset,
                        "source_event_id": (event or {}).get("event_id"),
                        "stage": self.stage.name, "stage_version": self.stage.version},
            "source_value": None if raw or value is None else
            value.decode("utf-8", "replace"),
        }
        logger.warning("promptgov: stage %s: %s@%d dead-lettered (%s)", self.stage.name,
                       source.topic, source.offset, type(exc).__name__)
        return (self.stage.dlq_topic(self.prefix), source.key, orjson.dumps(entry),
                [("content-type", b"application/json")])

    # --- metrics, topics ----------------------------------------------------------------

    def _observe_latency(self, event: dict[str, Any]) -> None:
        occurred = event.get("occurred_at")
        if isinstance(occurred, str):
            millis = parse_time_ms(occurred)
            if millis is not None:
                self._latency.record(time.time() * 1000 - millis,
                                     {"stage": self.stage.name,
                                      "source_kind": str(event.get("event_type"))})

    def _observe_lag(self, options: Any) -> list[metrics.Observation]:
        consumer = self._consumer
        if consumer is None:
            return []
        out = []
        for tp, position in list(self._next.items()):
            end = consumer.highwater(tp)
            if end is not None:
                out.append(metrics.Observation(max(end - position, 0), {
                    "stage": self.stage.name, "topic": tp.topic, "partition": tp.partition}))
        return out

    async def _ensure_topics(self, topics: set[str]) -> None:
        missing = topics - self._known_topics
        if not missing or not self.create_topics:
            self._known_topics |= missing
            return
        admin_options = {k: v for k, v in self.client_options.items()
                         if k.startswith(("security", "ssl", "sasl"))}
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **admin_options)
        try:
            await asyncio.wait_for(admin.start(), 30)
            response = await asyncio.wait_for(admin.create_topics(
                [NewTopic(t, self.partitions, self.replication) for t in sorted(missing)]), 30)
            for topic, code, *_ in response.topic_errors:
                if code not in (0, _TOPIC_EXISTS):
                    logger.error("promptgov: stage %s could not create %s (error %s)",
                                 self.stage.name, topic, code)
            self._known_topics |= missing
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(admin.close(), 5)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: StageRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.runner._release(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.runner._acquire(list(assigned))


def parse_time_ms(text: str) -> float | None:
    """Milliseconds since the epoch of an RFC 3339 UTC time (``...Z``), or None."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        return None


def run_stage(stage: Stage, **options: Any) -> StageStats:
    """Run a stage in this thread until SIGTERM or SIGINT; the batch in progress finishes
    (its transaction commits) before the copy leaves its group."""

    async def main() -> StageStats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        return await StageRunner(stage, **options).run(stop)

    return asyncio.run(main())
