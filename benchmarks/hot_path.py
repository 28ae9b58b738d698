"""Hot path: added latency of one decorated LLM call, as the host sees it.

Each SDK runs in a subprocess of its own (their global state — tracer
providers, background threads — must not meet), and each subprocess measures
the bare function too, so every figure is a ratio within one process.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from benchmarks.workload import MESSAGES, bare_functions

CLOSED_PORT = "http://127.0.0.1:9"  # nothing listens: exporters fail locally, nothing leaves

_drain: list[Callable[[], Any]] = []  # between shapes, let the publisher catch up
VARIANTS = ("promptgov-memory", "promptgov-spill", "promptgov-wal", "promptgov-no-redaction",
            "otel-span", "langfuse", "langsmith")


def _decorate(variant: str, tmp: str, n: int) -> Callable[[Any], Any]:
    if variant.startswith("promptgov"):
        import promptgov

        durability = variant.split("-", 1)[1] if variant.count("-") == 1 else "memory"
        options: dict[str, Any] = {"durability": durability} if durability in (
            "memory", "spill", "wal") else {"durability": "memory"}
        if variant == "promptgov-no-redaction":
            options["redactor"] = promptgov.NullRedactor()
        # A queue that holds the whole run: this measures the cost of a call, not a
        # publisher saturated by back-to-back calls (see the throughput and outage parts).
        gov = promptgov.Governor(app="bench", local_dir=tmp, register_atexit=False,
                                 max_queue_size=8 * n + 10_000, **options)
        _drain.append(lambda: gov.flush(600))
        return gov.llm_call(provider="openai", model="gpt-4o-mini")  # type: ignore[no-any-return]
    if variant == "otel-span":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class NoOpExporter(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(NoOpExporter()))
        tracer = provider.get_tracer("bench")

        def otel(fn: Callable[..., Any]) -> Callable[..., Any]:
            import functools
            import inspect

            if inspect.iscoroutinefunction(fn):
                @functools.wraps(fn)
                async def awrapper(*a: Any, **k: Any) -> Any:
                    with tracer.start_as_current_span("chat gpt-4o-mini") as span:
                        span.set_attribute("gen_ai.operation.name", "chat")
                        return await fn(*a, **k)
                return awrapper

            @functools.wraps(fn)
            def wrapper(*a: Any, **k: Any) -> Any:
                with tracer.start_as_current_span("chat gpt-4o-mini") as span:
                    span.set_attribute("gen_ai.operation.name", "chat")
                    return fn(*a, **k)
            return wrapper

        del trace
        return otel
    if variant == "langfuse":
        os.environ.update(LANGFUSE_PUBLIC_KEY="pk-lf-bench", LANGFUSE_SECRET_KEY="sk-lf-bench",
                          LANGFUSE_HOST=CLOSED_PORT, LANGFUSE_BASE_URL=CLOSED_PORT)
        from langfuse import observe

        return observe(as_type="generation")  # type: ignore[no-any-return]
    if variant == "langsmith":
        os.environ.update(LANGSMITH_API_KEY="lsv2-bench", LANGSMITH_ENDPOINT=CLOSED_PORT,
                          LANGSMITH_TRACING="true")
        from langsmith import traceable

        return traceable(run_type="llm")  # type: ignore[no-any-return]
    raise ValueError(variant)


def _time_sync(fn: Callable[..., Any], n: int, stream: bool) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        start = clock()
        result = fn(MESSAGES, temperature=0.2)
        if stream:
            for _chunk in result:
                pass
        out.append(clock() - start)
    return out


def _time_async(fn: Callable[..., Any], n: int, stream: bool) -> list[int]:
    async def run() -> list[int]:
        out = []
        clock = time.perf_counter_ns
        for _ in range(n):
            start = clock()
            if stream:
                async for _chunk in fn(MESSAGES, temperature=0.2):
                    pass
            else:
                await fn(MESSAGES, temperature=0.2)
            out.append(clock() - start)
        return out

    return asyncio.run(run())


def _percentiles(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_us": ordered[len(ordered) // 2] / 1000,
            "p99_us": ordered[int(len(ordered) * 0.99)] / 1000}


def measure_variant(variant: str, n: int) -> dict[str, Any]:
    """Run in a subprocess: bare vs decorated, for the four shapes."""
    tmp = tempfile.mkdtemp(prefix="pg-bench-")
    decorate = _decorate(variant, tmp, n)
    results: dict[str, Any] = {}
    for shape, bare in bare_functions().items():
        wrapped = decorate(bare)
        stream = shape.endswith("gen")
        timer = _time_async if shape.startswith("async") else _time_sync
        count = max(n // 4, 50) if stream else n
        timer(bare, count // 10 + 10, stream)  # warm up
        timer(wrapped, count // 10 + 10, stream)
        for drain in _drain:
            drain()
        gc.collect()
        bare_samples = timer(bare, count, stream)
        wrapped_samples = timer(wrapped, count, stream)
        b, w = _percentiles(bare_samples), _percentiles(wrapped_samples)
        results[shape] = {"bare": b, "wrapped": w,
                          "added_p50_us": round(w["p50_us"] - b["p50_us"], 2),
                          "added_p99_us": round(w["p99_us"] - b["p99_us"], 2)}
    return results


def run(n: int, variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    """Every variant in its own subprocess; skipped when its package is not installed."""
    results: dict[str, Any] = {}
    for variant in variants:
        proc = subprocess.run(
            [sys.executable, "-c",
             "import json, sys; from benchmarks.hot_path import measure_variant; "
             f"print('RESULT', json.dumps(measure_variant({variant!r}, {n})))"],
            capture_output=True, text=True, timeout=900, env={**os.environ})
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            results[variant] = {"skipped": reason[:200]}
            continue
        results[variant] = json.loads(line[len("RESULT "):])
    return results
