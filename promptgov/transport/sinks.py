"""Where records go: a Kafka cluster (aiokafka) or the embedded local directory.

A sink's ``send`` never raises for delivery problems: it sorts the records
into delivered, to-retry (in their original order) and fatal (with a reason).
Every await on the producer is bounded, because aiokafka's ``send``/``stop``
can hang while the broker is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kerr
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from promptgov.transport.record import Record

logger = logging.getLogger("promptgov")

# Record-level errors: retrying cannot help, the record goes to the dead-letter file.
FATAL_RECORD_ERRORS: tuple[type[BaseException], ...] = (
    kerr.RecordTooLargeError,
    kerr.MessageSizeTooLargeError,
    kerr.InvalidTopicError,
    kerr.TopicAuthorizationFailedError,
    kerr.UnsupportedForMessageFormatError,
    kerr.PolicyViolationError,
)
# Producer-state errors: the producer is rebuilt (aiokafka #1017), the records retried.
PRODUCER_STATE_ERRORS: tuple[type[BaseException], ...] = (
    kerr.OutOfOrderSequenceNumber,
    kerr.ProducerFenced,
    kerr.InvalidProducerEpoch,
    kerr.IllegalStateError,
    kerr.ProducerClosed,
    kerr.UnsupportedVersionError,
    kerr.ClusterAuthorizationFailedError,
)
_ADMIN_OPTIONS = {
    "client_id",
    "security_protocol",
    "ssl_context",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
    "sasl_kerberos_service_name",
    "sasl_kerberos_domain_name",
    "sasl_oauth_token_provider",
    "request_timeout_ms",
    "metadata_max_age_ms",
    "api_version",
}
_TOPIC_ALREADY_EXISTS = 36
_AUTHORIZATION_ERRORS = {29, 31}
_INVALID_TOPIC = 17


@dataclasses.dataclass
class SendOutcome:
    """How one ``send`` went, record by record."""

    delivered: list[Record] = dataclasses.field(default_factory=list)
    retry: list[Record] = dataclasses.field(default_factory=list)
    fatal: list[tuple[Record, str]] = dataclasses.field(default_factory=list)
    error: str | None = None


class Sink(Protocol):
    """Destination of records; used only from the publisher's event loop."""

    description: str

    async def send(self, records: list[Record],
                   abort: asyncio.Event | None = None) -> SendOutcome: ...

    async def close(self, timeout: float) -> None: ...


class KafkaSink:
    """Publishes to Kafka with aiokafka; creates topics on first use when allowed."""

    def __init__(
        self,
        bootstrap_servers: str,
        producer_options: dict[str, Any],
        *,
        client_id: str,
        create_topics: bool,
        topic_partitions: int,
        topic_replication_factor: int,
    ) -> None:
        self.description = f"kafka://{bootstrap_servers}"
        self._bootstrap = bootstrap_servers
        self._options = {"client_id": client_id, **producer_options}
        self._create_topics = create_topics
        self._partitions = topic_partitions
        self._replication = topic_replication_factor
        self._timeout = self._options.get("request_timeout_ms", 40_000) / 1000 + 5
        self._producer: AIOKafkaProducer | None = None
        self._known_topics: set[str] = set()
        self._unwritable: dict[str, str] = {}  # topic -> why records to it are dead letters

    async def send(self, records: list[Record],
                   abort: asyncio.Event | None = None) -> SendOutcome:
        outcome = SendOutcome()
        until = asyncio.get_running_loop().time() + self._timeout
        error = await _bounded_by(self._prepare({r.topic for r in records}), until, abort)
        producer = self._producer
        if error is not None or producer is None:
            outcome.retry = list(records)
            outcome.error = _describe(error or ProducerDiscarded("no producer"))
            return outcome
        in_flight: list[tuple[Record, asyncio.Future[Any]]] = []
        done = [0]  # records handed to the producer so far
        # One bound for the whole hand-over: a wait_for per record costs a task each.
        handed = asyncio.ensure_future(self._hand_over(producer, records, in_flight, outcome,
                                                       done))
        error = await _bounded_by(handed, until, abort)
        if error is None and in_flight:
            # asyncio.wait, not gather: cutting the wait short must not cancel the futures
            error = await _bounded_by(asyncio.wait([f for _, f in in_flight]), until, abort)
        if error is not None:
            outcome.error = _describe(error)
            if not isinstance(error, PRODUCER_STATE_ERRORS + FATAL_RECORD_ERRORS):
                # Timed out or aborted: the producer still holds the records and would
                # deliver them whenever the broker answers, behind the retry's back.
                await self._discard_producer()
        outcome.retry.extend(records[done[0]:])
        if in_flight:
            await self._settle(in_flight, outcome)
        if error is not None and isinstance(error, PRODUCER_STATE_ERRORS):
            await self._after_error(error)
        return outcome

    async def _hand_over(
        self,
        producer: AIOKafkaProducer,
        records: list[Record],
        in_flight: list[tuple[Record, asyncio.Future[Any]]],
        outcome: SendOutcome,
        done: list[int],
    ) -> None:
        for record in records:
            reason = self._unwritable.get(record.topic)
            if reason is not None:
                outcome.fatal.append((record, reason))
            else:
                try:
                    future = await producer.send(record.topic, record.value, key=record.key,
                                                 headers=record.headers)
                except FATAL_RECORD_ERRORS as exc:
                    outcome.fatal.append((record, _describe(exc)))
                else:
                    in_flight.append((record, future))
            done[0] += 1

    async def _settle(
        self, in_flight: list[tuple[Record, asyncio.Future[Any]]], outcome: SendOutcome
    ) -> None:
        """Sort handed-over records by their futures (all done: delivered or failed)."""
        retry: list[Record] = []
        for record, future in in_flight:
            result = _future_result(future)
            if not isinstance(result, BaseException):
                outcome.delivered.append(record)
            elif isinstance(result, FATAL_RECORD_ERRORS):
                outcome.fatal.append((record, _describe(result)))
            else:
                retry.append(record)
                outcome.error = outcome.error or _describe(result)
                if isinstance(result, PRODUCER_STATE_ERRORS):
                    await self._after_error(result)
        outcome.retry = retry + outcome.retry

    async def _prepare(self, topics: set[str]) -> None:
        """Start the producer and create the topics, as needed."""
        if self._producer is None:
            producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, **self._options)
            try:
                await producer.start()
            except BaseException:
                await _bounded(asyncio.shield(_discard(producer)), 2.0)
                raise
            self._producer = producer
        await self._ensure_topics(topics)

    async def _after_error(self, exc: BaseException) -> None:
        if isinstance(exc, PRODUCER_STATE_ERRORS) and self._producer is not None:
            logger.warning("promptgov: rebuilding the Kafka producer after %s", _describe(exc))
            await self._discard_producer()

    async def _discard_producer(self) -> None:
        """Drop the producer so that nothing it still holds is ever delivered.

        aiokafka's ``stop()`` waits until every buffered batch is delivered, and an
        idempotent producer retries a batch forever: a send that timed out would
        still reach the broker after the publisher has retried it with a new
        producer. So the sender task is cancelled, the connections closed, and the
        buffered batches failed, bounded in time.
        """
        producer, self._producer = self._producer, None
        if producer is not None:
            await _discard(producer)

    async def _ensure_topics(self, topics: set[str]) -> None:
        missing = topics - self._known_topics
        if not missing:
            return
        if not self._create_topics:
            self._known_topics |= missing
            return
        options = {k: v for k, v in self._options.items() if k in _ADMIN_OPTIONS}
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, **options)
        try:
            await asyncio.wait_for(admin.start(), self._timeout)
            new = [NewTopic(t, self._partitions, self._replication) for t in sorted(missing)]
            response = await asyncio.wait_for(admin.create_topics(new), self._timeout)
            for topic, code, *rest in response.topic_errors:
                if code in (0, _TOPIC_ALREADY_EXISTS):
                    continue
                message = rest[0] if rest else ""
                if code in _AUTHORIZATION_ERRORS:
                    logger.error(
                        "promptgov: not authorised to create topic %r (error %s %s); create it "
                        "beforehand or grant CREATE, or set create_topics=False", topic, code,
                        message)
                elif code == _INVALID_TOPIC:
                    self._unwritable[topic] = f"InvalidTopicError: {message or topic}"
                    logger.error("promptgov: %r is not a valid topic name; its records go to "
                                 "the dead-letter file", topic)
                else:
                    logger.error("promptgov: could not create topic %r: error %s %s",
                                 topic, code, message)
            self._known_topics |= missing
        finally:
            await _bounded(admin.close(), 5.0)

    async def close(self, timeout: float) -> None:
        producer, self._producer = self._producer, None
        # stop() delivers what is buffered; past the bound, nothing may leave later.
        if producer is not None and not await _bounded(producer.stop(), max(timeout, 0.1)):
            await _discard(producer)


class DirectorySink:
    """The embedded default: append-only JSON-lines segments per topic in a directory."""

    segment_bytes = 64 * 1024 * 1024

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.description = f"file://{directory.resolve()}"
        self._files: dict[str, Any] = {}

    async def send(self, records: list[Record],
                   abort: asyncio.Event | None = None) -> SendOutcome:
        outcome = SendOutcome()
        try:
            touched = set()
            for record in records:
                handle = self._file(record.topic)
                handle.write(record.value + b"\n")
                touched.add(record.topic)
                outcome.delivered.append(record)
            for topic in touched:
                self._files[topic].flush()
        except OSError as exc:  # nothing of this batch counts as written: retry it all
            outcome.delivered = []
            outcome.retry = list(records)
            outcome.error = _describe(exc)
            self._close_all()
        return outcome

    def _file(self, topic: str) -> Any:
        handle = self._files.get(topic)
        if handle is not None and handle.tell() < self.segment_bytes:
            return handle
        if handle is not None:
            handle.close()
        folder = self.directory / topic
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        existing = sorted(folder.glob("*.jsonl"))
        number = int(existing[-1].stem) if existing else 0
        if existing and existing[-1].stat().st_size >= self.segment_bytes:
            number += 1
        path = folder / f"{number:08d}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        handle = os.fdopen(fd, "ab")
        self._files[topic] = handle
        return handle

    def _close_all(self) -> None:
        for handle in self._files.values():
            try:
                handle.close()
            except OSError:
                pass
        self._files.clear()

    async def close(self, timeout: float) -> None:
        self._close_all()


async def _bounded(awaitable: Any, timeout: float) -> bool:
    """Await with a bound; True when it finished without error."""
    try:
        await asyncio.wait_for(awaitable, timeout)
    except Exception as exc:
        logger.debug("promptgov: bounded wait ended with %s", _describe(exc))
        return False
    return True


async def _bounded_by(awaitable: Any, until: float, abort: asyncio.Event | None
                      ) -> BaseException | None:
    """Await until the loop time ``until`` or ``abort`` is set: None when it finished,
    else the error it raised or a timeout. The awaitable is cancelled when cut short."""
    work = asyncio.ensure_future(awaitable)
    waiters: set[asyncio.Future[Any]] = {work}
    stop = asyncio.ensure_future(abort.wait()) if abort is not None else None
    if stop is not None:
        waiters.add(stop)
    try:
        timeout = max(until - asyncio.get_running_loop().time(), 0.0)
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if stop is not None:
            stop.cancel()
    if work.done():
        error: BaseException | None = work.exception()
        return error
    work.cancel()
    with contextlib.suppress(BaseException):
        await work
    if abort is not None and abort.is_set():
        return DeliveryAborted("shutdown deadline reached")
    return asyncio.TimeoutError("no answer from the broker in time")


class DeliveryAborted(Exception):
    """The publisher's deadline cut a send short."""


def _future_result(future: asyncio.Future[Any]) -> Any:
    if not future.done():
        return asyncio.TimeoutError("not delivered in time")
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception() or future.result()


async def _discard(producer: AIOKafkaProducer) -> None:
    """Stop a producer without delivering what it buffers (see KafkaSink._discard_producer)."""
    discarded = ProducerDiscarded("the producer was discarded after a timeout")
    try:
        producer._closed = True
        sender = getattr(producer, "_sender", None)
        task = getattr(sender, "sender_task", None)
        if task is not None and not task.done():
            task.cancel()
        await _bounded(producer.client.close(), 1.0)  # in-flight requests fail now
        if task is not None:
            await _bounded(asyncio.shield(task), 1.0)
        accumulator = producer._message_accumulator
        batches = [b for tp in accumulator._batches.values() for b in tp]
        batches += list(accumulator._pending_batches)
        accumulator.fail_all(discarded)
        for batch in batches:  # retrieved: asyncio must not log them as unhandled
            for future in (batch.future, getattr(batch, "_drain_waiter", None)):
                if future is not None and future.done() and not future.cancelled():
                    future.exception()
    except Exception as exc:  # aiokafka internals changed: fall back to a bounded stop
        logger.debug("promptgov: discarding the producer: %s", _describe(exc))
        await _bounded(producer.stop(), 2.0)


class ProducerDiscarded(kerr.KafkaError):  # type: ignore[misc]
    """Raised into the futures of records a discarded producer still held."""

    retriable = True


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
