"""The realistic event: a 2 KB prompt with a few PII items, a 1 KB answer, 3 documents."""

from __future__ import annotations

import random
from typing import Any

WORDS = (
    "the", "customer", "asked", "about", "their", "order", "status", "and", "the", "refund",
    "policy", "for", "damaged", "items", "shipped", "last", "week", "please", "summarise",
    "the", "context", "documents", "and", "answer", "politely", "citing", "the", "relevant",
    "policy", "section",
)


def text(size: int, seed: int) -> str:
    rng = random.Random(seed)
    out: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(WORDS)
        out.append(word)
        length += len(word) + 1
    return " ".join(out)[:size]


PII = (" Contact jane.doe@example.com or +44 20 7946 0958; card 4111 1111 1111 1111; "
       "IBAN GB82 WEST 1234 5698 7654 32. ")
PROMPT = text(2048 - len(PII), 1)[:1000] + PII + text(2048, 2)[: 2048 - 1000 - len(PII)]
ANSWER = text(1024, 3)
DOCUMENTS = [{"id": f"doc-{i}", "score": 0.9 - i / 10, "source": f"kb://policy/{i}",
              "content": text(400, 10 + i)} for i in range(3)]
MESSAGES = [{"role": "system", "content": "You are a helpful support assistant."},
            {"role": "user", "content": PROMPT}]
COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-bench", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 512, "completion_tokens": 256, "total_tokens": 768},
}
CHUNKS = [ANSWER[i:i + 100] for i in range(0, len(ANSWER), 100)]


def bare_functions() -> dict[str, Any]:
    """The four shapes of an LLM call, doing no work of their own."""

    def sync_call(messages: list[dict[str, str]], temperature: float = 0.2) -> dict[str, Any]:
        return COMPLETION

    async def async_call(messages: list[dict[str, str]],
                         temperature: float = 0.2) -> dict[str, Any]:
        return COMPLETION

    def sync_stream(messages: list[dict[str, str]], temperature: float = 0.2) -> Any:
        yield from CHUNKS

    async def async_stream(messages: list[dict[str, str]], temperature: float = 0.2) -> Any:
        for chunk in CHUNKS:
            yield chunk

    return {"sync": sync_call, "async": async_call, "sync_gen": sync_stream,
            "async_gen": async_stream}
