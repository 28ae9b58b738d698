"""OpenTelemetry: trace correlation, GenAI spans around calls, and the SDK's own metrics.

promptgov only uses the OpenTelemetry *API*; spans are real when the host has
configured a tracer provider, and the metrics go to whatever meter provider
the host configured (nothing is exported otherwise).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import metrics, trace

from promptgov._version import __version__

if TYPE_CHECKING:
    from promptgov.governor import Governor

_INVALID = trace.INVALID_SPAN_CONTEXT


def current_trace_ids() -> tuple[str | None, str | None]:
    """Hex trace and span ids of the active span, or ``(None, None)``."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def span_ids(span: trace.Span) -> tuple[str | None, str | None]:
    """Hex ids of a span, or ``(None, None)`` for a non-recording invalid one."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None, None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


_UNKNOWN = object()
_tracer_cache: tuple[Any, trace.Tracer | None] = (_UNKNOWN, None)


def tracer() -> trace.Tracer | None:
    """promptgov's tracer when the host configured a real tracer provider, else None."""
    global _tracer_cache
    # Fast path: the API keeps the configured provider in a module global; reading
    # it avoids get_tracer_provider()'s environment lookup on every call.
    provider = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is None and _tracer_cache[0] is None:
        return None  # no provider set, and none named by the environment (checked once)
    if provider is None or provider is _UNKNOWN:
        provider = trace.get_tracer_provider()
    cached_provider, cached = _tracer_cache
    if provider is cached_provider:
        return cached
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        # ``None`` as the cached provider lets the fast path skip the lookup next time.
        _tracer_cache = (None, None)
        return None
    result: trace.Tracer = cast(trace.TracerProvider, provider).get_tracer("promptgov",
                                                                           __version__)
    _tracer_cache = (provider, result)
    return result


_SPAN_KIND = {"llm": trace.SpanKind.CLIENT, "retrieval": trace.SpanKind.CLIENT,
              "tool": trace.SpanKind.INTERNAL}


def start_span(
    kind: str, operation: str, name: str, attributes: Callable[[], dict[str, Any]]
) -> trace.Span | None:
    """Start a GenAI-convention span (``{operation} {name}``), or None without a provider."""
    t = tracer()
    if t is None:
        return None
    return t.start_span(
        f"{operation} {name}".strip(),
        kind=_SPAN_KIND.get(kind, trace.SpanKind.INTERNAL),
        attributes={k: v for k, v in attributes().items() if v is not None},
    )


def register_metrics(governor: Governor) -> list[Any]:
    """Observable instruments reading the governor's counters (no hot-path cost)."""
    meter = metrics.get_meter("promptgov", __version__)
    ref = weakref.ref(governor)
    attrs = {"promptgov.app": governor.settings.app}

    def reading(key: str) -> Any:
        def callback(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            gov = ref()
            if gov is None:
                return []
            value = gov.stats()[key]
            return [] if value is None else [metrics.Observation(value, attrs)]

        return callback

    def drops(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        gov = ref()
        if gov is None:
            return []
        return [metrics.Observation(count, {**attrs, "reason": reason})
                for reason, count in gov.stats()["dropped_by_reason"].items()]

    def latency(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        gov = ref()
        if gov is None:
            return []
        samples = sorted(gov._publisher.stats.latencies_ms)
        if not samples:
            return []
        return [metrics.Observation(samples[len(samples) // 2], {**attrs, "quantile": "0.5"}),
                metrics.Observation(samples[int(len(samples) * 0.99)],
                                    {**attrs, "quantile": "0.99"})]

    return [
        meter.create_observable_counter("promptgov.events.emitted", [reading("emitted")],
                                        unit="{event}", description="Events emitted"),
        meter.create_observable_counter("promptgov.events.published", [reading("delivered")],
                                        unit="{event}", description="Events acknowledged"),
        meter.create_observable_counter("promptgov.events.failed", [reading("failed_sends")],
                                        unit="{send}", description="Failed send attempts"),
        meter.create_observable_counter("promptgov.events.dropped", [drops], unit="{event}",
                                        description="Events dropped, by reason (see gaps)"),
        meter.create_observable_counter("promptgov.events.dead_lettered",
                                        [reading("dead_lettered")], unit="{event}"),
        meter.create_observable_counter("promptgov.retries", [reading("retries")],
                                        unit="{retry}"),
        meter.create_observable_gauge("promptgov.queue.depth", [reading("queue_depth")],
                                      unit="{event}", description="Events waiting in memory"),
        meter.create_observable_gauge("promptgov.spool.bytes", [reading("spool_bytes")],
                                      unit="By", description="Bytes held in the spool"),
        meter.create_observable_gauge("promptgov.spool.records", [reading("spool_records")],
                                      unit="{event}", description="Unacknowledged spooled events"),
        meter.create_observable_gauge("promptgov.spool.oldest_age",
                                      [reading("oldest_pending_age_s")], unit="s",
                                      description="Age of the oldest undelivered event"),
        meter.create_observable_counter("promptgov.events.spilled", [reading("spilled")],
                                        unit="{event}", description="Events moved to the spool"),
        meter.create_observable_gauge("promptgov.publish.latency", [latency], unit="ms",
                                      description="Enqueue-to-acknowledgement latency"),
    ]
