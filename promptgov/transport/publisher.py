"""The publisher: a bounded queue drained by a background thread with its own event loop.

The host only appends to a deque (thread-safe, no lock, no syscall in the
common case). The publisher thread processes drafts into records in batches,
sends them through a sink and retries with capped, jittered backoff until they
are delivered, dead-lettered (fatal errors) or the shutdown deadline passes.
When the queue is full, new events are dropped and accounted for by a ``gap``
event published once the path is open again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from promptgov.transport.dead_letter import DeadLetterFile
from promptgov.transport.record import Record
from promptgov.transport.sinks import SendOutcome, Sink

logger = logging.getLogger("promptgov")

Process = Callable[[Any], list[Record]]
MakeGap = Callable[["GapInfo"], Any]


@dataclasses.dataclass
class GapInfo:
    """Events dropped since the last gap event."""

    count: int = 0
    first_ns: int = 0
    last_ns: int = 0
    reason: str = ""
    event_types: Counter[str] = dataclasses.field(default_factory=Counter)


@dataclasses.dataclass(frozen=True)
class DeliveryReport:
    """What a flush or shutdown achieved."""

    delivered: int
    pending: int
    dropped: int
    dead_lettered: int
    seconds: float

    @property
    def complete(self) -> bool:
        """True when nothing accepted is still waiting for delivery."""
        return self.pending == 0


class PublisherStats:
    """Counters written by the publisher thread (single writer) and read by metrics."""

    def __init__(self) -> None:
        self.delivered = 0
        self.dead_lettered = 0
        self.retries = 0
        self.failed_sends = 0
        self.dropped = 0
        self.abandoned_at_shutdown = 0
        self.last_error: str | None = None
        self.latencies_ms: deque[float] = deque(maxlen=4096)


class _Retry(Exception):
    """Some records of the batch must be sent again."""


class Publisher:
    """Moves drafts from any thread to a sink, in order, with retries."""

    def __init__(
        self,
        process: Process,
        sink_factory: Callable[[], Sink],
        *,
        make_gap: MakeGap,
        dead_letter: DeadLetterFile,
        max_queue_size: int,
        batch_size: int,
        flush_interval: float,
        name: str = "promptgov-publisher",
    ) -> None:
        self._process = process
        self._sink_factory = sink_factory
        self._make_gap = make_gap
        self._dead_letter = dead_letter
        self._max_queue = max_queue_size
        self._batch_size = batch_size
        self._interval = flush_interval
        self._name = name
        self.stats = PublisherStats()
        self._init_state()

    def _init_state(self) -> None:
        self._queue: deque[Any] = deque()
        self._accepted = itertools.count(1)
        self._accepted_n = 0
        self._settled = 0
        self._settled_cond = threading.Condition()
        self._gap = GapInfo()
        self._gap_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._idle = False
        self._stopping = False
        self._closed = False
        self._deadline = float("inf")
        self._gap_in_flight = False

    # --- host side ----------------------------------------------------------------

    def enqueue(self, draft: Any, event_type: str, occurred_ns: int) -> bool:
        """Accept one draft without blocking; False (and a counted drop) when full or closed."""
        if self._closed or len(self._queue) >= self._max_queue:
            self._drop(event_type, occurred_ns, "shutdown" if self._closed else "queue_full")
            return False
        self._queue.append(draft)
        self._accepted_n = next(self._accepted)
        if self._thread is None:
            self._start()
        elif self._idle and len(self._queue) >= self._batch_size:
            self._poke()
        return True

    @property
    def accepted(self) -> int:
        """Drafts accepted since start (or since the fork)."""
        return self._accepted_n

    @property
    def queue_depth(self) -> int:
        """Drafts waiting to be processed."""
        return len(self._queue)

    def flush(self, timeout: float) -> DeliveryReport:
        """Wait until everything accepted so far is settled, or the timeout passes."""
        started = time.monotonic()
        target = self._accepted_n
        self._poke()
        with self._settled_cond:
            self._settled_cond.wait_for(self._flushed(target), timeout=max(timeout, 0.0))
        return self._report(started)

    def shutdown(self, timeout: float) -> DeliveryReport:
        """Stop accepting, deliver until the deadline, then close the sink."""
        started = time.monotonic()
        self._closed = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._deadline = time.monotonic() + max(timeout, 0.0)
            self._stopping = True
            self._poke()
            thread.join(timeout + 5.0)  # the sink's close is bounded too
        report = self._report(started)
        if report.pending:
            logger.warning(
                "promptgov: shut down with %d event(s) undelivered (%d delivered, %d dropped); "
                "last error: %s", report.pending, report.delivered, report.dropped,
                self.stats.last_error)
        return report

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's queue and thread (the parent delivers them)."""
        self.stats = PublisherStats()
        self._init_state()

    def _report(self, started: float) -> DeliveryReport:
        return DeliveryReport(
            delivered=self.stats.delivered,
            pending=max(self._accepted_n - self._settled, 0),
            dropped=self.stats.dropped,
            dead_lettered=self.stats.dead_lettered,
            seconds=time.monotonic() - started,
        )

    def _flushed(self, target: int) -> Callable[[], bool]:
        def done() -> bool:
            gaps_done = not self._gap.count and not self._gap_in_flight
            return (self._settled >= target and gaps_done) or self._dead()

        return done

    def _dead(self) -> bool:
        return self._thread is None or not self._thread.is_alive()

    def _drop(self, event_type: str, occurred_ns: int, reason: str) -> None:
        with self._gap_lock:
            gap = self._gap
            if gap.count == 0:
                gap.first_ns = occurred_ns
                gap.reason = reason
            gap.count += 1
            gap.last_ns = occurred_ns
            gap.event_types[event_type] += 1
            self.stats.dropped += 1

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # loop already closed
                pass

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                return
            ready = threading.Event()
            self._thread = threading.Thread(target=self._thread_main, args=(ready,),
                                            name=self._name, daemon=True)
            self._thread.start()
        ready.wait(5.0)

    # --- publisher thread -----------------------------------------------------------

    def _thread_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._wake = asyncio.Event()
        ready.set()
        try:
            loop.run_until_complete(self._run())
        except BaseException:
            logger.exception("promptgov: publisher thread failed")
        finally:
            self._loop = None
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
            with self._settled_cond:
                self._settled_cond.notify_all()

    async def _run(self) -> None:
        sink = self._sink_factory()
        assert self._wake is not None
        try:
            while True:
                if self._stopping and (not self._queue or time.monotonic() >= self._deadline):
                    break
                if not self._queue and not self._gap.count:
                    await self._idle_wait()
                    continue
                try:
                    await self._deliver(sink, self._next_batch())
                    if self._gap_in_flight:
                        self._gap_in_flight = False
                        self._settle(0)
                except Exception:  # a bug must not kill the publisher
                    logger.exception("promptgov: publisher error; continuing")
                    await asyncio.sleep(0.1)
        finally:
            self.stats.abandoned_at_shutdown = len(self._queue)
            await sink.close(max(self._deadline - time.monotonic(), 1.0))

    async def _idle_wait(self) -> None:
        assert self._wake is not None
        self._idle = True
        try:
            await asyncio.wait_for(self._wake.wait(), self._interval)
        except (asyncio.TimeoutError, TimeoutError):
            pass
        finally:
            self._idle = False
            self._wake.clear()

    def _next_batch(self) -> list[Record]:
        records: list[Record] = []
        gap = self._take_gap()
        if gap is not None:
            self._gap_in_flight = True
            records.extend(self._safe_process(self._make_gap(gap), counts=False))
        queue = self._queue
        for _ in range(min(self._batch_size, len(queue))):
            records.extend(self._safe_process(queue.popleft()))
        return records

    def _take_gap(self) -> GapInfo | None:
        with self._gap_lock:
            if not self._gap.count:
                return None
            gap, self._gap = self._gap, GapInfo()
            return gap

    def _safe_process(self, draft: Any, counts: bool = True) -> list[Record]:
        try:
            records = self._process(draft)
        except Exception:
            logger.exception("promptgov: could not process an event; it is dead-lettered")
            records = []
            self._dead_letter.write_draft(draft, "processing failed")
            self.stats.dead_lettered += 1
        if counts:
            if records:
                records[-1].settles = True
            else:
                self._settle(1)
        return records

    async def _deliver(self, sink: Sink, records: list[Record]) -> None:
        remaining = records
        retrying = AsyncRetrying(
            wait=wait_exponential_jitter(multiplier=0.05, max=5.0, jitter=0.25),
            retry=retry_if_exception_type(_Retry),
            stop=self._give_up,
            sleep=self._sleep,
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    outcome = await sink.send(remaining)
                    self._account(outcome)
                    remaining = outcome.retry
                    if remaining:
                        raise _Retry(outcome.error)
        except _Retry:
            logger.warning("promptgov: %d record(s) undelivered at shutdown: %s",
                           len(remaining), self.stats.last_error)

    def _give_up(self, state: RetryCallState) -> bool:
        return self._stopping and time.monotonic() >= self._deadline

    async def _sleep(self, seconds: float) -> None:
        if self._stopping:
            seconds = min(seconds, max(self._deadline - time.monotonic(), 0.0))
        await asyncio.sleep(seconds)

    def _count_retry(self, state: RetryCallState) -> None:
        self.stats.retries += 1

    def _account(self, outcome: SendOutcome) -> None:
        now = time.time_ns()
        settled = 0
        for record in outcome.delivered:
            self.stats.latencies_ms.append((now - record.enqueued_ns) / 1e6)
            settled += record.settles
        self.stats.delivered += settled
        for record, reason in outcome.fatal:
            self._dead_letter.write(record, reason)
            self.stats.dead_lettered += 1
            settled += record.settles
        if outcome.error:
            self.stats.failed_sends += 1
            self.stats.last_error = outcome.error
        if settled:
            self._settle(settled)

    def _settle(self, count: int) -> None:
        with self._settled_cond:
            self._settled += count
            self._settled_cond.notify_all()
