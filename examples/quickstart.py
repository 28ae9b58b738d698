"""A minimal app: configure, capture an LLM call, a tool and a retrieval, flush.

Run: python examples/quickstart.py            (local sink in ./.promptgov)
     PROMPTGOV_BOOTSTRAP_SERVERS=localhost:9092 python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import promptgov

promptgov.configure(app="quickstart", environment="dev")


@promptgov.retrieval
def search(query: str) -> list[dict[str, object]]:
    return [{"id": "doc-1", "content": "Refunds take 5 days.", "score": 0.9}]


@promptgov.tool
def open_ticket(subject: str, api_key: str) -> str:  # api_key is never captured
    return "TICKET-42"


@promptgov.llm_call(provider="example", model="tiny-llm", prompt_template="support",
                    template_version="1")
async def answer(messages: list[dict[str, str]]) -> AsyncIterator[str]:
    for word in ["Refunds", "take", "five", "business", "days."]:
        yield word + " "


async def main() -> None:
    async with promptgov.interaction(conversation_id="conv-1", user_id="user-1"):
        docs = search("refund time for card 4111 1111 1111 1111?")
        reply = "".join([chunk async for chunk in answer(
            [{"role": "user", "content": f"Using {docs}, when is my refund?"}])])
        promptgov.feedback(score=1.0, comment="quick answer")
        open_ticket("refund follow-up", api_key="sk-not-recorded")
    print(reply)
    report = promptgov.flush(10)
    print(f"{report.delivered} events delivered, {report.pending} pending")


if __name__ == "__main__":
    asyncio.run(main())
