"""The Governor: one configured pipeline from capture to a sink.

A process usually has one, made by :func:`promptgov.configure`; several can
coexist (each with its own settings, producer id, sequence and publisher).
"""

from __future__ import annotations

import atexit
import contextvars
import itertools
import logging
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from promptgov import telemetry
from promptgov.capture.context import (
    current_interaction,
    enclosing_call,
    last_event_ref,
    note_last_event,
)
from promptgov.config import Settings, resolve_settings
from promptgov.events.draft import Draft, EventRef
from promptgov.events.ids import format_time, now_ns, uuid7
from promptgov.governance.processor import EventProcessor, Warnings
from promptgov.transport.dead_letter import DeadLetterFile
from promptgov.transport.publisher import DeliveryReport, GapInfo, Publisher, PublisherConfig
from promptgov.transport.sinks import DirectorySink, KafkaSink, Sink

logger = logging.getLogger("promptgov")

_active: contextvars.ContextVar[Governor | None] = contextvars.ContextVar(
    "promptgov_governor", default=None
)
_default: Governor | None = None
_default_lock = threading.Lock()
_live: weakref.WeakSet[Governor] = weakref.WeakSet()


class Governor:
    """Captures, governs and publishes prompt events for one configuration.

    Keyword arguments are settings (see ``docs/configuration.md``); explicit
    values win over ``PROMPTGOV_*`` environment variables, which win over
    defaults. Invalid settings raise :class:`~promptgov.ConfigurationError`.
    """

    def __init__(self, **settings: Any) -> None:
        self.settings: Settings = resolve_settings(settings)
        self.warnings = Warnings()
        self._internal_errors = 0
        self._forked = False
        quiet_dependency_logs()
        self._setup()
        _live.add(self)
        if self.settings.register_atexit:
            atexit.register(_shutdown_at_exit, weakref.ref(self))

    def _setup(self) -> None:
        s = self.settings
        self.producer_id = uuid7()
        self._seq = itertools.count(1)
        self._processor = EventProcessor(s, self.producer_id, self.warnings)
        # A forked child may leave through os._exit (multiprocessing does), running no
        # shutdown: its events reach its spool before each call returns, and whoever
        # finds the spool orphaned (the parent, a later start) delivers them.
        durability = "wal" if self._forked and s.fork_durability == "wal" else s.durability
        if not s.enabled:
            durability = "memory"  # capture is off: no spool, no thread, nothing written
        self._publisher = Publisher(
            self._processor,
            self._make_sink,
            make_gap=self._gap_draft,
            dead_letter=DeadLetterFile(s.local_dir / "dead-letter.jsonl"),
            config=PublisherConfig(
                durability=durability,
                max_queue_size=s.max_queue_size,
                batch_size=s.batch_size,
                flush_interval=s.flush_interval_ms / 1000,
                when_full=s.when_full,
                block_timeout=s.block_timeout_ms / 1000,
                spool_base=s.spool_path,
                spool_options={
                    "segment_bytes": s.spool_segment_bytes,
                    "max_bytes": s.spool_max_bytes,
                    "fsync": s.fsync,
                    "fsync_interval": s.fsync_interval_ms / 1000,
                },
                host_code_timeout=s.host_code_timeout_ms / 1000,
            ),
            owner=self.producer_id,
        )
        self._closed = False
        self._metrics = telemetry.register_metrics(self)
        if durability != "memory" and s.enabled:
            self._publisher.start()  # adopt spools left by dead processes right away

    def _make_sink(self) -> Sink:
        s = self.settings
        if s.bootstrap_servers is None:
            return DirectorySink(s.local_dir / "events")
        return KafkaSink(
            s.bootstrap_servers,
            s.producer_options,
            client_id=f"promptgov-{s.app}",
            create_topics=s.create_topics,
            topic_partitions=s.topic_partitions,
            topic_replication_factor=s.topic_replication_factor,
        )

    # --- hot path -------------------------------------------------------------

    def next_seq(self) -> int:
        """The next per-producer sequence number."""
        return next(self._seq)

    def emit(self, draft: Draft) -> bool:
        """Hand one draft to the publisher; never blocks, never raises.

        False when it was not accepted (after shutdown, queue full: a counted drop;
        capture switched off with ``enabled=False``: nothing is counted).
        """
        if not self.settings.enabled:
            return False
        try:
            return self._publisher.enqueue(draft, draft.event_type, draft.occurred_ns)
        except Exception:
            self.count_internal_error("enqueue failed")
            return False

    def count_internal_error(self, what: str) -> None:
        """Record an SDK fault that was kept away from the host."""
        self._internal_errors += 1
        self.warnings.add(["internal_error"], what)

    # --- one-shot events ------------------------------------------------------

    def emit_event(
        self,
        event_type: str,
        payload: dict[str, Any],
        *,
        parent_event_id: Any = None,
        policy: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> str:
        """Emit an event of any kind from a payload dict; returns its event id.

        The parent defaults to the enclosing call, if it belongs to the current interaction.
        Returns "" when the event was not accepted (after shutdown, queue full: the
        drop is counted in :meth:`stats`).
        """
        ctx = current_interaction()
        call = enclosing_call()
        trace_id, span_id = telemetry.current_trace_ids()
        draft = Draft(
            event_type,
            EventRef(),
            self.next_seq(),
            now_ns(),
            payload,
            context=ctx,
            parent_event_id=parent_event_id or (call.anchor if call is not None else None),
            trace_id=trace_id,
            span_id=span_id,
            policy=dict(policy) if policy else None,
            attributes=dict(attributes) if attributes else None,
        )
        if not self.emit(draft):
            return ""
        note_last_event(ctx, draft.ref)
        return draft.event_id

    def policy_decision(
        self,
        decision: str,
        *,
        policy: str | Mapping[str, Any] | tuple[str, str] | None = None,
        target_event_id: str | None = None,
        reasons: Iterable[str] = (),
        rules: Iterable[str] = (),
        score: float | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> str:
        """Record a guardrail decision (allow/block/redact/escalate); returns its event id
        ("" if none was recorded).

        ``target_event_id`` defaults to the enclosing call's prompt, else the
        last event of this context, both only from the current interaction.
        Reasons must not contain user content.
        """
        try:
            if decision not in _DECISIONS:
                self._internal_errors += 1
                self.warnings.add(["unknown_decision"], "policy_decision takes one of "
                                  + ", ".join(_DECISIONS) + "; the decision was not recorded")
                return ""
            call = enclosing_call()
            target = target_event_id or (call.anchor if call is not None else None)
            target = target or last_event_ref()
            payload = {"decision": decision, "target_event_id": target,
                       "reasons": [str(r) for r in reasons], "rules": [str(r) for r in rules],
                       "score": None if score is None else float(score)}
            return self.emit_event("policy_decision", payload, policy=_policy_ref(policy),
                                   attributes=attributes)
        except Exception as exc:
            self.count_internal_error(f"policy_decision: {exc}")
            return ""

    def feedback(
        self,
        target_event_id: str | None = None,
        *,
        score: float | None = None,
        label: str | None = None,
        comment: str | None = None,
        reviewer: str | None = None,
        reviewer_kind: str = "human",
        name: str = "user_feedback",
        attributes: Mapping[str, Any] | None = None,
    ) -> str:
        """Record feedback on an event (default: the last event of this context in the
        current interaction); returns its event id ("" if none was recorded)."""
        try:
            target = target_event_id or last_event_ref()
            if not target:
                raise ValueError("feedback needs a target_event_id")
            payload = {"target_event_id": target, "name": name,
                       "score": None if score is None else float(score),
                       "label": label, "comment": comment, "reviewer": reviewer,
                       "reviewer_kind": reviewer_kind}
            return self.emit_event("feedback", payload, parent_event_id=target,
                                   attributes=attributes)
        except Exception as exc:
            self.count_internal_error(f"feedback: {exc}")
            return ""

    def _gap_draft(self, gap: GapInfo) -> Draft:
        payload = {
            "count": gap.count,
            "reason": gap.reason,
            "first_occurred_at": format_time(gap.first_ns),
            "last_occurred_at": format_time(gap.last_ns),
            "event_types": dict(gap.event_types),
        }
        return Draft("gap", EventRef(), self.next_seq(), now_ns(), payload)

    # --- lifecycle ------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> DeliveryReport:
        """Wait until every event emitted so far is delivered (or the timeout passes)."""
        return self._publisher.flush(timeout)

    def shutdown(self, timeout: float | None = None) -> DeliveryReport:
        """Stop accepting events, deliver what is queued until the deadline, close."""
        self._closed = True
        limit = self.settings.shutdown_timeout if timeout is None else timeout
        return self._publisher.shutdown(limit)

    @property
    def queue_depth(self) -> int:
        """Events waiting in memory."""
        return self._publisher.queue_depth

    def stats(self) -> dict[str, Any]:
        """Counters: emitted, delivered, dropped, dead-lettered, retries, warnings."""
        p = self._publisher.stats
        return {
            "emitted": self._publisher.accepted + p.dropped,
            "delivered": p.delivered,
            "dropped": p.dropped,
            "dropped_by_reason": dict(p.dropped_by_reason),
            "dead_lettered": p.dead_lettered,
            "retries": p.retries,
            "failed_sends": p.failed_sends,
            "queue_depth": self.queue_depth,
            "spilled": p.spilled,
            "adopted": p.adopted,
            "content_withheld": dict(p.degraded),
            "spool_records": sum(sp.pending for sp in self._publisher._spools()),
            "spool_bytes": sum(sp.size_bytes for sp in self._publisher._spools()),
            "oldest_pending_age_s": self._publisher.oldest_pending_age(),
            "internal_errors": self._internal_errors,
            "warnings": self.warnings.snapshot(),
            "last_error": p.last_error,
        }

    @contextmanager
    def use(self) -> Iterator[Governor]:
        """Make this governor the one decorators use inside the block (this context only)."""
        token = _active.set(self)
        try:
            yield self
        finally:
            _active.reset(token)

    def _after_fork_in_child(self) -> None:
        self._forked = True
        self.warnings.after_fork()
        self._publisher.after_fork_in_child()
        self._setup()

    # --- capture helpers bound to this governor ---------------------------------

    def llm_call(self, fn: Any = None, /, **options: Any) -> Any:
        """:func:`promptgov.llm_call` using this governor."""
        from promptgov.capture.calls import llm_call

        return llm_call(fn, governor=self, **options)

    def retrieval(self, fn: Any = None, /, **options: Any) -> Any:
        """:func:`promptgov.retrieval` using this governor."""
        from promptgov.capture.calls import retrieval

        return retrieval(fn, governor=self, **options)

    def tool(self, fn: Any = None, /, **options: Any) -> Any:
        """:func:`promptgov.tool` using this governor."""
        from promptgov.capture.calls import tool

        return tool(fn, governor=self, **options)


_DECISIONS = ("allow", "block", "redact", "escalate")


def _policy_ref(policy: Any) -> dict[str, Any] | None:
    if policy is None:
        return None
    if isinstance(policy, str):
        return {"id": policy, "version": None}
    if isinstance(policy, tuple):
        return {"id": str(policy[0]), "version": str(policy[1])}
    return {"id": str(policy["id"]), "version": policy.get("version")}


# --- the process-wide default ---------------------------------------------------


def configure(**settings: Any) -> Governor:
    """Create the default governor (replacing and shutting down any previous one)."""
    global _default, _default_failed
    governor = Governor(**settings)
    with _default_lock:
        previous, _default = _default, governor
        _default_failed = False
    if previous is not None:
        previous.shutdown()
    return governor


def get_governor() -> Governor | None:
    """The governor decorators use here: ``Governor.use()`` block, else the default."""
    return _active.get() or _default


_default_failed = False


def resolve_governor() -> Governor | None:
    """The governor to use, creating the default from the environment if needed.

    None (and an error logged once) when the environment's settings are invalid:
    capture is then off, and the host keeps running.
    """
    global _default, _default_failed
    governor = _active.get() or _default
    if governor is not None or _default_failed:
        return governor
    with _default_lock:
        if _default is None and not _default_failed:
            try:
                _default = Governor()
            except Exception as exc:
                _default_failed = True
                logger.error("promptgov: capture is off: no configure() call and the "
                             "environment's settings are invalid: %s", exc)
                return None
            logger.info("promptgov: no configure() call; using settings from the environment "
                        "(sink: %s)", _default.settings.bootstrap_servers or
                        _default.settings.local_dir)
        return _default


def _shutdown_at_exit(ref: weakref.ref[Governor]) -> None:
    governor = ref()
    if governor is not None and not governor._closed:
        try:
            governor.shutdown()
        except Exception:
            logger.exception("promptgov: shutdown at exit failed")


def _after_fork() -> None:
    global _default_lock
    _default_lock = threading.Lock()  # another thread may have held it at the fork
    for governor in list(_live):
        governor._after_fork_in_child()


class _QuietInPublisher(logging.Filter):
    """Drops aiokafka's records logged on promptgov's own threads (an outage writes
    thousands of lines there); promptgov logs the outage itself, once at start and once
    at recovery. Kept when the ``promptgov`` logger is at DEBUG, and on host threads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.threadName or "").startswith("promptgov-") or logger.isEnabledFor(
            logging.DEBUG)


_quiet = _QuietInPublisher()


def quiet_dependency_logs() -> None:
    """Install the filter on every aiokafka logger (filters are not inherited)."""
    import aiokafka.admin  # noqa: F401  (modules create their loggers on import)

    for name in list(logging.root.manager.loggerDict):
        if name == "aiokafka" or name.startswith("aiokafka."):
            target = logging.getLogger(name)
            if _quiet not in target.filters:
                target.addFilter(_quiet)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
