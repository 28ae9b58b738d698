"""The publisher: hands events from any thread to a sink, in order, without losing them.

Durability modes (``durability`` setting):

``memory``  the host appends drafts to a bounded deque; the publisher thread
            completes, governs and sends them.
``spill``   as ``memory``, but when a send fails, or the deque passes its
            high-water mark, the publisher moves events to the durable spool
            and delivers from there; at shutdown what is left goes to the spool.
``wal``     the host completes each event and appends it to the spool before
            the wrapped call returns; the publisher delivers from the spool.

The publisher runs its own asyncio loop on a daemon thread. Retriable send
failures are retried with capped, jittered backoff (tenacity) until delivered
or the shutdown deadline; fatal ones go to the dead-letter file. Events lost
to a full queue or spool are accounted for by a ``gap`` event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from promptgov import hostcode
from promptgov.transport.dead_letter import DeadLetterFile
from promptgov.transport.record import (
    RECORDS_MARK,
    Record,
    decode_records,
    encode_records,
    from_rows,
    to_rows,
)
from promptgov.transport.sinks import SendOutcome, Sink
from promptgov.transport.spool import Spool, SpoolUnavailable, orphaned_spools

logger = logging.getLogger("promptgov")

_SHUTDOWN_MARGIN = 3.0  # seconds past the deadline for cutting a send short, spilling, closing


class Processor(Protocol):
    """Turns drafts into events (``complete``) and events into records (``govern``).

    ``complete_degraded`` and ``degrade`` give the same event without its content,
    running no host code: for when the host's objects time out or raise.
    """

    def complete(self, draft: Any) -> dict[str, Any]: ...

    def complete_degraded(self, draft: Any, reason: str) -> dict[str, Any]: ...

    def degrade(self, event: dict[str, Any], reason: str) -> dict[str, Any]: ...

    def govern(self, event: dict[str, Any]) -> list[Record]: ...


MakeGap = Callable[["GapInfo"], Any]


@dataclasses.dataclass(frozen=True)
class PublisherConfig:
    """The publisher's share of the settings."""

    durability: str = "memory"
    max_queue_size: int = 100_000
    batch_size: int = 500
    flush_interval: float = 0.05
    when_full: str = "drop_newest"
    block_timeout: float = 0.1
    spill_high_water: float = 0.5
    spool_base: Path | None = None
    spool_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    host_code_timeout: float = 0.5
    adopt_interval: float = 5.0


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
    spooled: int
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
        self.dropped_by_reason: Counter[str] = Counter()
        self.spilled = 0
        self.adopted = 0
        self.degraded: Counter[str] = Counter()
        self.last_error: str | None = None
        self.latencies_ms: deque[float] = deque(maxlen=4096)


class _Retry(Exception):
    """Some records of the batch must be sent again."""


@dataclasses.dataclass
class _Batch:
    records: list[Record]
    spool: Spool | None = None
    last_seq: int = 0
    by_seq: dict[int, list[Record]] = dataclasses.field(default_factory=dict)
    settled: int = 0  # events delivered from a spool batch, settled once it is acknowledged


class Publisher:
    """Moves events from any thread to a sink, in order, with retries and a spool."""

    def __init__(
        self,
        processor: Processor,
        sink_factory: Callable[[], Sink],
        *,
        make_gap: MakeGap,
        dead_letter: DeadLetterFile,
        config: PublisherConfig,
        owner: str,
        name: str = "promptgov-publisher",
    ) -> None:
        self._processor = processor
        self._sink_factory = sink_factory
        self._make_gap = make_gap
        self._dead_letter = dead_letter
        self.config = config
        self._owner = owner
        self._name = name
        self._wal = config.durability == "wal"
        self._spill = config.durability == "spill"
        self._high_water = max(1, int(config.max_queue_size * config.spill_high_water))
        self.stats = PublisherStats()
        self._init_state()

    def _init_state(self) -> None:
        self._queue: deque[Any] = deque()
        self._count_lock = threading.Lock()
        self._move_lock = threading.Lock()
        self._accepted_n = 0
        self._settled = 0
        self._settled_cond = threading.Condition()
        self._space = threading.Condition()
        self._gap = GapInfo()
        self._gap_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._abort: asyncio.Event | None = None
        self._outage_since: float | None = None
        self._outage_failures = 0
        self._next_adoption = 0.0
        self._adopt_requested = False
        self._idle = False
        self._stopping = False
        self._closed = False
        self._deadline = float("inf")
        self._drop_oldest_segment = False
        self._adopted: list[Spool] = []
        self._adoption_done = threading.Event()
        self.spool: Spool | None = None
        if self.config.durability != "memory":
            self.spool = self._open_own_spool()
        # Spools whose events this process accepted (they settle flush()); not adopted ones.
        self._counted_spools = {id(self.spool)} if self.spool is not None else set()

    def _open_own_spool(self) -> Spool | None:
        base = self.config.spool_base
        if base is None:
            return None
        try:
            return Spool.open(base / self._owner, **self.config.spool_options)
        except (SpoolUnavailable, OSError) as exc:
            logger.error("promptgov: spool unavailable (%s); %s mode falls back to memory "
                         "until restart", exc, self.config.durability)
            return None

    # --- host side ----------------------------------------------------------------

    def enqueue(self, draft: Any, event_type: str, occurred_ns: int) -> bool:
        """Accept one draft without blocking the host (unless ``when_full="block"``).

        False (and a counted drop, reported by a gap event) when it could not be kept.
        """
        if self._closed:
            self._drop(event_type, occurred_ns, "shutdown")
            return False
        if self._wal and self.spool is not None:
            return self._append_wal(draft, event_type, occurred_ns)
        queue = self._queue
        if len(queue) >= self.config.max_queue_size and not self._make_room(
                event_type, occurred_ns):
            return False
        queue.append(draft)
        self._count_accepted()
        if self._thread is None:
            self._start()
        elif self._idle and len(queue) >= self.config.batch_size:
            self._poke()
        return True

    def _make_room(self, event_type: str, occurred_ns: int) -> bool:
        if self._spill and self._move_to_spool(1, wait=self.config.block_timeout):
            return True  # spill mode: the host moves the oldest event to disk, loses nothing
        policy = self.config.when_full
        if policy == "drop_oldest":
            try:
                oldest = self._queue.popleft()
            except IndexError:
                return True
            self._drop(oldest.event_type, oldest.occurred_ns, "queue_full_drop_oldest")
            self._settle(1)  # the dropped one will never be delivered: do not wait for it
            return True
        if policy == "block":
            self._poke()
            with self._space:
                if self._space.wait_for(lambda: len(self._queue) < self.config.max_queue_size,
                                        timeout=self.config.block_timeout):
                    return True
        self._drop(event_type, occurred_ns, "queue_full")
        return False

    def _append_wal(self, draft: Any, event_type: str, occurred_ns: int) -> bool:
        spool = self.spool
        assert spool is not None
        data = orjson.dumps(self._complete(draft, self.config.host_code_timeout))
        try:
            seq = spool.append(data)
            if seq is None and self.config.when_full == "block":
                self._poke()
                deadline = time.monotonic() + self.config.block_timeout
                with self._space:
                    while seq is None and time.monotonic() < deadline:
                        self._space.wait(max(deadline - time.monotonic(), 0.0))
                        seq = spool.append(data)
        except OSError as exc:  # the disk failed under us: degrade to memory
            logger.error("promptgov: spool write failed (%s); falling back to memory", exc)
            self.spool = None
            self._adopted.insert(0, spool)  # still deliver what it holds
            return self.enqueue(draft, event_type, occurred_ns)
        if seq is None:
            if self.config.when_full == "drop_oldest":
                self._drop_oldest_segment = True
            self._drop(event_type, occurred_ns, "spool_full")
            return False
        self._count_accepted()
        if self._thread is None:
            self._start()
        elif self._idle and spool.unread >= self.config.batch_size:
            self._poke()
        return True

    def _complete(self, draft: Any, seconds: float) -> dict[str, Any]:
        """``processor.complete`` with a time bound on the host code it runs.

        Host objects that loop past the bound, or raise (``SystemExit`` too), cost
        the event its content, never the event and never the publisher.
        """
        try:
            return hostcode.bounded(seconds, self._processor.complete, draft)
        except hostcode.HostCodeTimeout:
            reason = "host_code_timeout"
        except BaseException:  # SystemExit, KeyboardInterrupt from a mapper: host code's
            reason = "processing_failed"
        self.stats.degraded[reason] += 1
        return self._processor.complete_degraded(draft, reason)

    def _govern(self, event: dict[str, Any]) -> list[Record] | None:
        """``processor.govern`` bounded the same way; degraded, else None (dead letter)."""
        reason = "processing_failed"
        try:
            return hostcode.bounded(self.config.host_code_timeout, self._processor.govern,
                                    dict(event))
        except hostcode.HostCodeTimeout:
            reason = "host_code_timeout"
        except BaseException:
            pass
        self.stats.degraded[reason] += 1
        try:
            degraded = self._processor.degrade(dict(event), reason)
            return hostcode.bounded(self.config.host_code_timeout, self._processor.govern,
                                    degraded)
        except BaseException:
            return None

    def _count_accepted(self) -> None:
        with self._count_lock:
            self._accepted_n += 1

    @property
    def accepted(self) -> int:
        """Events accepted since start (or since the fork)."""
        return self._accepted_n

    def oldest_pending_age(self) -> float | None:
        """Seconds since the oldest undelivered event occurred (memory and spool)."""
        times: list[int] = []
        try:
            times.append(self._queue[0].occurred_ns)
        except (IndexError, AttributeError):
            pass
        for spool in self._spools():
            data = spool.first_pending()
            if data is not None:
                try:
                    times.append(int(orjson.loads(data).get("_ns") or 0))
                except (ValueError, AttributeError):
                    pass
        times = [t for t in times if t]
        return (time.time_ns() - min(times)) / 1e9 if times else None

    @property
    def queue_depth(self) -> int:
        """Drafts waiting in memory."""
        return len(self._queue)

    def flush(self, timeout: float) -> DeliveryReport:
        """Wait until everything accepted so far is settled, or the timeout passes."""
        started = time.monotonic()
        target = self._accepted_n + (1 if self._gap.count else 0)  # a gap event to come
        if self._thread is None and (self._adopted or target or self._may_adopt()):
            self._start()
        self._request_adoption()  # what dead processes (forked children) left is flushed too
        self._poke()
        with self._settled_cond:
            self._settled_cond.wait_for(self._flushed(target), timeout=max(timeout, 0.0))
        return self._report(started)

    def shutdown(self, timeout: float) -> DeliveryReport:
        """Stop accepting, deliver until the deadline, spool (or report) the rest, close."""
        started = time.monotonic()
        self._closed = True
        thread = self._thread
        if thread is None and self._may_adopt():
            self._start()  # deliver (or at least adopt) what dead processes left
            thread = self._thread
        if thread is not None and thread.is_alive():
            self._deadline = time.monotonic() + max(timeout, 0.0)
            self._stopping = True
            self._request_adoption()
            loop = self._loop
            if loop is not None:
                try:
                    loop.call_soon_threadsafe(self._arm_abort)
                except RuntimeError:
                    pass
            self._poke()
            # After the deadline a send in progress is cut short, what is left is
            # spilled and the sink closed: all bounded, well within this margin.
            thread.join(max(timeout, 0.0) + _SHUTDOWN_MARGIN)
            if thread.is_alive():
                logger.error("promptgov: the publisher did not stop in time")
        else:
            self._close_spools()
        report = self._report(started)
        if report.pending:
            where = "left in the spool for the next start" if report.spooled else "lost"
            logger.warning(
                "promptgov: shut down with %d event(s) undelivered (%s); %d delivered, "
                "%d dropped; last error: %s", report.pending, where, report.delivered,
                report.dropped, self.stats.last_error)
        return report

    def after_fork_in_child(self) -> None:
        """In a forked child: drop the parent's queue, thread and spool (the parent has them)."""
        for spool in [self.spool, *self._adopted]:
            if spool is not None:
                spool.forget_after_fork()
        self.stats = PublisherStats()

    def _report(self, started: float) -> DeliveryReport:
        spooled = sum(s.pending for s in self._spools())
        return DeliveryReport(
            delivered=self.stats.delivered,
            pending=max(self._accepted_n - self._settled, 0),
            dropped=self.stats.dropped,
            dead_lettered=self.stats.dead_lettered,
            spooled=spooled,
            seconds=time.monotonic() - started,
        )

    def _spools(self) -> list[Spool]:
        return [s for s in (*self._adopted, self.spool) if s is not None]

    def _flushed(self, target: int) -> Callable[[], bool]:
        def done() -> bool:
            adopted = self._adoption_done.is_set() and not self._adopted
            return (self._settled >= target and adopted) or self._dead()

        return done

    def _may_adopt(self) -> bool:
        base = self.config.spool_base
        return base is not None and bool(orphaned_spools(base, exclude=self._own_directory()))

    def _own_directory(self) -> Path | None:
        return self.spool.directory if self.spool is not None else None

    def _request_adoption(self) -> None:
        if self._thread is not None:
            self._adoption_done.clear()
            self._adopt_requested = True

    def _arm_abort(self) -> None:
        """On the loop: cut any send short at the shutdown deadline."""
        loop, abort = self._loop, self._abort
        if loop is not None and abort is not None:
            delay = max(self._deadline - time.monotonic(), 0.0)
            loop.call_later(delay, abort.set)

    def _dead(self) -> bool:
        return self._thread is None or not self._thread.is_alive()

    def _drop(self, event_type: str, occurred_ns: int, reason: str) -> None:
        with self._gap_lock:
            gap = self._gap
            if gap.count == 0:
                gap.first_ns = occurred_ns
                gap.reason = reason
            gap.count += 1
            gap.first_ns = min(gap.first_ns, occurred_ns)
            gap.last_ns = max(gap.last_ns, occurred_ns)
            gap.event_types[event_type] += 1
            self.stats.dropped += 1
            self.stats.dropped_by_reason[reason] += 1

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

    def start(self) -> None:
        """Start the publisher thread now (it also starts on the first event)."""
        if self._thread is None:
            self._start()

    # --- publisher thread -----------------------------------------------------------

    def _thread_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._wake = asyncio.Event()
        self._abort = asyncio.Event()
        ready.set()
        try:
            loop.run_until_complete(self._run())
        except BaseException as exc:
            logger.error("promptgov: publisher thread failed: %s", type(exc).__name__)
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
        self._adopt_orphans()
        watchdog = asyncio.ensure_future(self._watch_high_water()) if self._spill else None
        try:
            while True:
                if self._adopt_requested or time.monotonic() >= self._next_adoption:
                    self._adopt_orphans()
                if self._stopping and (time.monotonic() >= self._deadline or not self._work()):
                    break
                if self._drop_oldest_segment:
                    self._discard_oldest_segment()
                for spool in self._spools():
                    spool.maintain()
                if not self._work():
                    await self._idle_wait()
                    continue
                try:
                    await self._step(sink)
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # a bug, or host code, must not kill the publisher
                    logger.error("promptgov: publisher error (%s); continuing", _where(exc))
                    await asyncio.sleep(0.1)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            self._spill_leftovers()
            await sink.close(max(self._deadline - time.monotonic(), 0.2))
            self._close_spools()

    async def _watch_high_water(self) -> None:
        """Spill mode: keep memory under the high-water mark even while a send hangs."""
        while True:
            await asyncio.sleep(min(self.config.flush_interval, 0.01))
            while self.spool is not None and len(self._queue) > self._high_water:
                before = len(self._queue)
                self._move_to_spool(min(5000, before))
                if len(self._queue) == before:  # the spool is full: nothing more to do
                    break
                await asyncio.sleep(0)  # let a hanging send make progress in between

    def _work(self) -> bool:
        return bool(self._queue or self._gap.count or self._adopted
                    or (self.spool is not None and self.spool.unread))

    async def _idle_wait(self) -> None:
        assert self._wake is not None
        self._idle = True
        try:
            await asyncio.wait_for(self._wake.wait(), self.config.flush_interval)
        except (asyncio.TimeoutError, TimeoutError):
            pass
        finally:
            self._idle = False
            self._wake.clear()

    async def _step(self, sink: Sink) -> None:
        """Deliver one batch: adopted spools first, then the own spool, then memory."""
        self._enqueue_gap()
        if self._spill and self.spool is not None and (
                self.spool.unread or len(self._queue) > self._high_water):
            self._move_to_spool(self.config.batch_size * 4)
        source = next((s for s in self._adopted if s.unread), None)
        if source is None and self.spool is not None and self.spool.unread:
            source = self.spool
        if source is not None:
            batch = self._batch_from_spool(source)
        elif self._queue:
            batch = self._batch_from_memory()
        else:
            batch = _Batch([])
        if batch.records:
            spill_on_failure = self._spill and source is None and self.spool is not None
            delivered = await self._deliver(sink, batch, spill_on_failure)
            if delivered and batch.spool is not None:
                batch.spool.ack(batch.last_seq)
                self._notify_space()
                if id(batch.spool) not in self._counted_spools:  # adopted: count them here
                    self.stats.delivered += len(batch.by_seq)
            if batch.settled:  # after the ack: a flush that returned leaves nothing to resend
                self._settle(batch.settled)
        self._finish_adopted()

    def _enqueue_gap(self) -> None:
        """Turn the drops so far into a gap event, delivered like any other event."""
        with self._gap_lock:
            if not self._gap.count:
                return
            gap, self._gap = self._gap, GapInfo()
        try:
            draft = self._make_gap(gap)
            spool = self.spool if self._wal else None
            if spool is not None and spool.append(
                    orjson.dumps(self._processor.complete(draft))) is not None:
                self._count_accepted()
                return
            self._queue.appendleft(draft)  # may exceed the bound by this one event
            self._count_accepted()
        except Exception as exc:
            logger.error("promptgov: could not record a gap of %d event(s): %s", gap.count,
                         type(exc).__name__)

    def _batch_from_memory(self) -> _Batch:
        batch = _Batch([])
        queue = self._queue
        with self._move_lock:  # taken as a group: whatever is spilled later is newer
            drafts = [queue.popleft() for _ in range(min(self.config.batch_size, len(queue)))]
        for draft in drafts:
            records = self._govern(self._complete(draft, self.config.host_code_timeout))
            if not records:
                self._dead_letter_unprocessable(draft.event_id, draft.event_type, None)
                self._settle(1)
                continue
            records[-1].settles = True
            batch.records.extend(records)
        self._notify_space()
        return batch

    def _batch_from_spool(self, spool: Spool) -> _Batch:
        """The next records of a spool; those sent before (maybe delivered) byte for byte."""
        batch = _Batch([], spool)
        counts = id(spool) in self._counted_spools  # adopted events were accepted elsewhere
        held = _held_records(spool)
        for seq, data in spool.read(self.config.batch_size):
            batch.last_seq = seq
            records = held.pop(seq, None)  # sent before: flags as they were then
            if records is None and data[:1] == RECORDS_MARK:
                records = _decode(data)  # spilled after governing: flags kept
            elif records is None:
                records = self._govern_spooled(data, seq)
                if records:
                    records[-1].settles = True  # its delivery settles the event
            if not records:
                if counts:
                    self._settle(1)
                continue
            for record in records:  # adopted events were accepted (and count) elsewhere
                record.settles = record.settles and counts
            batch.by_seq[seq] = records
            batch.records.extend(records)
        if batch.records:
            rows = [[seq, to_rows(records)] for seq, records in
                    (*batch.by_seq.items(), *held.items())]
            try:
                spool.hold(max([batch.last_seq, *held]), orjson.dumps(rows))
            except OSError as exc:
                logger.error("promptgov: could not keep the batch being sent: %s", exc)
        return batch

    def _govern_spooled(self, data: bytes, seq: int) -> list[Record] | None:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._dead_letter_unprocessable(None, None, seq)
            return None
        records = self._govern(event)
        if not records:
            self._dead_letter_unprocessable(event.get("event_id"), event.get("event_type"), seq)
        return records

    def _dead_letter_unprocessable(self, event_id: str | None, event_type: str | None,
                                   spool_seq: int | None) -> None:
        """Keep what is known of an event that could not be processed: no content."""
        self._dead_letter.write_unprocessable(event_id, event_type, spool_seq)
        self.stats.dead_lettered += 1

    def _move_to_spool(self, limit: int, wait: float | None = None) -> int:
        """Spill: complete the oldest drafts and append them to the spool, in order.

        Called by the publisher, and by the host when the queue is full (``wait``:
        the most the host may wait, for the lock and the host code together). The
        lock is held per event, so the two (and batch taking) never interleave
        within one move and order holds.
        """
        spool = self.spool
        if spool is None:
            return 0
        queue = self._queue
        moved = 0
        deadline = None if wait is None else time.monotonic() + wait
        while moved < limit:
            if deadline is None:
                self._move_lock.acquire()
            elif not self._move_lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
                break
            try:
                try:
                    draft = queue.popleft()
                except IndexError:
                    break
                budget = self.config.host_code_timeout if deadline is None else max(
                    min(deadline - time.monotonic(), self.config.host_code_timeout), 0.001)
                try:
                    seq = spool.append(orjson.dumps(self._complete(draft, budget)))
                except OSError as exc:
                    queue.appendleft(draft)
                    logger.error("promptgov: spilling failed (%s); keeping events in memory",
                                 exc)
                    break
                except BaseException:  # never lose the popped event without a trace
                    self._dead_letter_unprocessable(draft.event_id, draft.event_type, None)
                    self._settle(1)
                    continue
                if seq is None:  # spool full: the memory queue keeps the rest
                    queue.appendleft(draft)
                    break
                moved += 1
            finally:
                self._move_lock.release()
        if moved:
            self.stats.spilled += moved
            self._notify_space()
        return moved

    async def _deliver(self, sink: Sink, batch: _Batch, spill_on_failure: bool) -> bool:
        """Send until every record is settled (True) or the shutdown deadline (False).

        Records are governed once: a retry, a spill and a re-send after a restart
        all publish the same bytes.
        """
        remaining = batch.records
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
                    outcome = await sink.send(remaining, self._abort)
                    self._account(outcome, sink, batch)
                    remaining = outcome.retry
                    # Spill the failed batch, unless later events were spilled already:
                    # then it must go first, so it is retried from memory.
                    if remaining and spill_on_failure and not (
                            self.spool is not None and self.spool.unread):
                        self._spill_records(remaining)
                        return True
                    if remaining:
                        raise _Retry(outcome.error)
        except _Retry:
            logger.warning("promptgov: %d record(s) undelivered at the deadline: %s",
                           len(remaining), self.stats.last_error)
            if batch.spool is None:
                self._spill_records(remaining)
            return False
        return True

    def _spill_records(self, records: list[Record]) -> None:
        """Put the undelivered, already governed part of a memory batch into the spool."""
        if not self._spill or self.spool is None:
            return
        by_event: dict[str, list[Record]] = {}
        for record in records:
            by_event.setdefault(record.event_id, []).append(record)
        for group in by_event.values():
            try:
                seq = self.spool.append(encode_records(group))
            except OSError:
                seq = None
            if seq is None:
                return  # stays undelivered and is reported
            self.stats.spilled += 1  # settles when delivered from the spool
        self._move_to_spool(len(self._queue))

    def _spill_leftovers(self) -> None:
        """At shutdown (spill mode): whatever is still in memory goes to the spool."""
        if self._spill and self.spool is not None and self._queue:
            self._move_to_spool(len(self._queue))

    def _give_up(self, state: RetryCallState) -> bool:
        return self._stopping and time.monotonic() >= self._deadline

    async def _sleep(self, seconds: float) -> None:
        if self._spill and self.spool is not None and self._queue:
            self._move_to_spool(len(self._queue))  # an outage: keep memory small
        for spool in self._spools():
            spool.maintain()
        if self._stopping:
            seconds = min(seconds, max(self._deadline - time.monotonic(), 0.0))
        await asyncio.sleep(seconds)

    def _count_retry(self, state: RetryCallState) -> None:
        self.stats.retries += 1

    def _account(self, outcome: SendOutcome, sink: Sink, batch: _Batch) -> None:
        self._note_outage(outcome, sink)
        now = time.time_ns()
        settled = 0
        for record in outcome.delivered:
            if record.enqueued_ns:
                self.stats.latencies_ms.append((now - record.enqueued_ns) / 1e6)
            settled += record.settles
        self.stats.delivered += sum(r.settles for r in outcome.delivered)
        for record, reason in outcome.fatal:
            self._dead_letter.write(record, reason)
            self.stats.dead_lettered += 1
            settled += record.settles
        if outcome.error:
            self.stats.failed_sends += 1
            self.stats.last_error = outcome.error
        if batch.spool is not None:
            batch.settled += settled
        elif settled:
            self._settle(settled)

    def _note_outage(self, outcome: SendOutcome, sink: Sink) -> None:
        """Log an outage once when it starts and once when delivery resumes."""
        if outcome.retry and not outcome.delivered:
            self._outage_failures += 1
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                where = "in the spool" if self.spool is not None else "in memory"
                logger.warning("promptgov: cannot deliver to %s (%s); events are kept %s and "
                               "retried", sink.description, outcome.error, where)
        elif outcome.delivered and self._outage_since is not None:
            logger.warning("promptgov: delivery to %s resumed after %.1f s and %d failed "
                           "attempt(s); %d event(s) waiting", sink.description,
                           time.monotonic() - self._outage_since, self._outage_failures,
                           self.queue_depth + sum(s.pending for s in self._spools()))
            self._outage_since = None
            self._outage_failures = 0

    def _settle(self, count: int) -> None:
        with self._settled_cond:
            self._settled += count
            self._settled_cond.notify_all()

    def _notify_space(self) -> None:
        if self.config.when_full == "block":
            with self._space:
                self._space.notify_all()

    # --- spool housekeeping --------------------------------------------------------

    def _adopt_orphans(self) -> None:
        """Take over the spools of processes that died (crashes, forked children that left
        through ``os._exit``): at start, every ``adopt_interval``, and when asked."""
        self._adopt_requested = False
        self._next_adoption = time.monotonic() + self.config.adopt_interval
        try:
            self._adopt_from(self.config.spool_base)
        except Exception as exc:
            logger.error("promptgov: looking for spools to adopt failed: %s", exc)
        finally:
            self._adoption_done.set()
            self._settle(0)  # wake flush(), which waits for adoption too

    def _adopt_from(self, base: Path | None) -> None:
        if base is None:
            return
        for directory in orphaned_spools(base, exclude=self._own_directory()):
            try:
                spool = Spool.open(directory, **self.config.spool_options)
            except (SpoolUnavailable, OSError):
                continue
            if spool.pending:
                logger.warning("promptgov: adopting %d event(s) left in %s", spool.pending,
                               directory)
                self.stats.adopted += spool.pending
                self._adopted.append(spool)
            else:
                spool.close()

    def _finish_adopted(self) -> None:
        for spool in list(self._adopted):
            if spool.pending == 0:
                spool.close()
                self._adopted.remove(spool)
                self._settle(0)  # wake flush(), which waits for adopted spools too

    def _discard_oldest_segment(self) -> None:
        self._drop_oldest_segment = False
        if self.spool is not None:
            lost = self.spool.discard_oldest_segment()
            if lost:
                self.stats.dropped += lost
                self.stats.dropped_by_reason["spool_full_drop_oldest"] += lost
                self._settle(lost)
                with self._gap_lock:
                    now = time.time_ns()
                    gap = self._gap
                    if gap.count == 0:
                        gap.first_ns, gap.reason = now, "spool_full_drop_oldest"
                    gap.count += lost
                    gap.last_ns = now
                    gap.event_types["unknown"] += lost
                self._notify_space()

    def _close_spools(self) -> None:
        for spool in self._spools():
            try:
                spool.close()
            except OSError as exc:
                logger.error("promptgov: could not close the spool %s: %s", spool.directory, exc)


def _where(exc: BaseException) -> str:
    """An exception's type and innermost frame: no message (it may hold host data)."""
    frames = traceback.extract_tb(exc.__traceback__)
    place = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{place}"


def _decode(data: bytes) -> list[Record] | None:
    try:
        return decode_records(data)
    except (ValueError, TypeError, UnicodeError):
        return None


def _held_records(spool: Spool) -> dict[int, list[Record]]:
    """The records a previous attempt sent from this spool, by spool seq (see Spool.hold)."""
    data = spool.held()
    if not data:
        return {}
    try:
        return {int(seq): from_rows(rows) for seq, rows in orjson.loads(data)}
    except (ValueError, TypeError, UnicodeError):
        logger.error("promptgov: unreadable in-flight file in %s; ignored", spool.directory)
        return {}
