"""Publisher-side CPU per event: completion, redaction, canonical JSON, hashing.

Also the redactor's throughput on text with and without PII, and on long
single words (where naive patterns backtrack).
"""

from __future__ import annotations

import hashlib
import inspect
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson

import promptgov
from benchmarks.workload import COMPLETION, DOCUMENTS, MESSAGES, PROMPT, text
from promptgov.events.draft import CallSite, Draft, EventRef
from promptgov.governance.redaction import DefaultRedactor


def _per_call_us(fn: Callable[[], Any], n: int) -> float:
    fn()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def run(n: int) -> dict[str, Any]:
    gov = promptgov.Governor(app="bench", local_dir=tempfile.mkdtemp(), register_atexit=False,
                             durability="memory")
    processor = gov._processor
    def answer(messages: list[dict[str, str]], temperature: float = 0.2) -> Any:
        return COMPLETION

    site = CallSite("llm", "bench.answer", operation="chat",
                    signature=inspect.signature(answer))

    def draft(kind: str, payload: dict[str, Any]) -> Draft:
        return Draft(kind, EventRef(), 1, time.time_ns(), payload)

    prompt = {"site": site, "args": [MESSAGES], "kwargs": {"temperature": 0.2},
              "input": None, "messages": None, "streaming": False}
    response = {"site": site, "status": "ok", "output": COMPLETION, "chunks": None,
                "error": None, "duration_ns": 1000, "explicit": {}, "prompt_event_id": "p",
                "ttft_ns": None}
    completed = processor.complete(draft("prompt", prompt))
    payload = completed["payload"]
    redactor = DefaultRedactor()
    value = orjson.dumps(completed, option=orjson.OPT_SORT_KEYS)
    size_kb = len(value) / 1024
    steps = {
        "complete_prompt": lambda: processor.complete(draft("prompt", dict(prompt))),
        "complete_response": lambda: processor.complete(draft("response", dict(response))),
        "redact_prompt": lambda: redactor.redact(payload["messages"], "payload.messages"),
        "canonical_json": lambda: orjson.dumps(completed, option=orjson.OPT_SORT_KEYS),
        "sha256": lambda: hashlib.sha256(value).hexdigest(),
        "govern_prompt": lambda: processor.govern(dict(completed)),
        "whole_prompt_event": lambda: processor.process(draft("prompt", dict(prompt))),
        "whole_response_event": lambda: processor.process(draft("response", dict(response))),
    }
    per_event = {name: round(_per_call_us(fn, n), 2) for name, fn in steps.items()}
    whole = (per_event["whole_prompt_event"] + per_event["whole_response_event"]) / 2
    result: dict[str, Any] = {
        "event_kb": round(size_kb, 2),
        "per_event_us": per_event,
        "per_kb_us": round(whole / size_kb, 2),
        "events_per_s_per_core": round(1e6 / whole),
    }
    plain = text(64 * 1024, 5)
    with_pii = (PROMPT * 32)[: 64 * 1024]
    long_word = "a" * (64 * 1024)
    rates = {}
    for name, sample in (("plain_text", plain), ("text_with_pii", with_pii),
                         ("long_single_word", long_word)):
        seconds = _per_call_us(lambda s=sample: redactor.redact_text(s), max(n // 50, 5)) / 1e6
        rates[name] = round(len(sample) / seconds / 1e6, 1)
    result["redactor_mb_per_s"] = rates
    result["documents"] = len(DOCUMENTS)
    gov.shutdown(1)
    return result
