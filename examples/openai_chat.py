"""Wrapping an OpenAI client call (the openai package is not a dependency of promptgov).

promptgov recognises chat completions, their usage and finish reasons, and
streamed chunks (``stream=True``), from the objects the client returns.
"""

from __future__ import annotations

from typing import Any

import promptgov

promptgov.configure(app="openai-example")


def make_answer(client: Any) -> Any:
    @promptgov.llm_call(provider="openai", prompt_template="qa", template_version="3")
    def answer(messages: list[dict[str, str]], model: str = "gpt-4o-mini",
               stream: bool = False) -> Any:
        return client.chat.completions.create(model=model, messages=messages, stream=stream)

    return answer


if __name__ == "__main__":
    try:
        from openai import OpenAI
    except ImportError:
        raise SystemExit("pip install openai to run this example") from None
    answer = make_answer(OpenAI())
    with promptgov.interaction(conversation_id="example"):
        print(answer([{"role": "user", "content": "Say hi"}]).choices[0].message.content)
    promptgov.flush()
