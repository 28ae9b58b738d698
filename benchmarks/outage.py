"""Outage: the broker stops while the app keeps calling; then it comes back.

Measures the host's p99 while connected and during the outage, memory (RSS)
growth, what the spool holds, and the time to drain once the broker returns.
Also the memory one event costs while held in the in-memory queue.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from typing import Any

import promptgov
from benchmarks.workload import COMPLETION, MESSAGES, PROMPT
from promptgov.config import Settings


def rss_mb() -> float:
    """Resident set size of this process, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _answer(gov: promptgov.Governor) -> Any:
    @gov.llm_call(provider="openai", model="gpt-4o-mini")
    def answer(messages: list[dict[str, str]], temperature: float = 0.2) -> Any:
        return COMPLETION

    return answer


def _p99_us(fn: Any, calls: int) -> float:
    samples = []
    for i in range(calls):
        start = time.perf_counter_ns()
        with promptgov.interaction(conversation_id=f"c{i % 50}"):
            fn(MESSAGES)
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return samples[int(len(samples) * 0.99)] / 1000


def run(broker: Any, events: int) -> dict[str, Any]:
    """``broker``: a tools/kafka_broker.KafkaBroker this benchmark may stop and start."""
    gov = promptgov.Governor(app="bench", bootstrap_servers=broker.bootstrap,
                             topic_prefix=f"outage{int(time.time())}",
                             local_dir=tempfile.mkdtemp(), register_atexit=False,
                             durability="spill", producer={"request_timeout_ms": 3000})
    answer = _answer(gov)
    connected = _p99_us(answer, 2000)
    assert gov.flush(60).complete
    gc.collect()
    rss_before = rss_mb()
    broker.stop()
    outage = _p99_us(answer, events // 2)  # two events per call
    rss_during = rss_mb()
    stats = gov.stats()
    emitted_before_restart = stats["emitted"]
    broker.start()
    started = time.perf_counter()
    report = gov.flush(600)
    drain = time.perf_counter() - started
    after = gov.stats()
    gov.shutdown(10)
    return {
        "events_during_outage": events,
        "host_p99_us_connected": round(connected, 1),
        "host_p99_us_outage": round(outage, 1),
        "host_p99_ratio": round(outage / connected, 2),
        "rss_growth_mb": round(rss_during - rss_before, 1),
        "spool_mb": round(stats["spool_bytes"] / 1e6, 1),
        "memory_queue_depth": stats["queue_depth"],
        "drain_seconds": round(drain, 2),
        "emitted_total": emitted_before_restart,
        "delivered_total": after["delivered"],
        "dropped_memory_full": after["dropped"],
        "delivered_plus_dropped_equals_emitted":
            after["delivered"] + after["dropped"] == emitted_before_restart,
        "all_delivered": report.complete and after["dropped"] == 0,
    }


def memory_per_event(events: int) -> dict[str, Any]:
    """RSS per 100,000 events held in the memory queue (publisher cannot deliver)."""
    gov = promptgov.Governor(app="bench", bootstrap_servers="127.0.0.1:9",
                             local_dir=tempfile.mkdtemp(), register_atexit=False,
                             durability="memory", max_queue_size=events + 10,
                             producer={"request_timeout_ms": 500})
    answer = _answer(gov)
    gc.collect()
    before = rss_mb()
    for i in range(events // 2):  # a prompt of its own each time, as in real traffic
        messages = [MESSAGES[0], {"role": "user", "content": f"{i} {PROMPT}"}]
        with promptgov.interaction(conversation_id=f"c{i % 50}"):
            answer(messages)
    gc.collect()
    after = rss_mb()
    depth = gov.queue_depth
    gov.shutdown(0.1)
    per_100k = (after - before) / max(depth, 1) * 100_000
    default_queue = Settings.max_queue_size
    return {"events_held": depth, "rss_mb_per_100k_events": round(per_100k, 1),
            "default_max_queue_size": default_queue,
            "bound_mb_default_queue": round(per_100k * default_queue / 100_000, 1)}
