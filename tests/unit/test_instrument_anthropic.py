"""``promptgov.instrument("anthropic")``: the real ``anthropic`` client, a local fake API.

Messages, sync and async, plain, ``stream=True`` and the ``messages.stream``
helper (events, ``text_stream``, ``get_final_message``), with ``tool_use``
blocks, HTTP errors, timeouts and early close.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_server import TEXT, FakeLLMServer, settled_events

import promptgov
from promptgov import Governor

anthropic = pytest.importorskip("anthropic")

Events = Callable[[], list[dict[str, Any]]]
MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]
HELLO = "".join(TEXT)
USAGE = {"input_tokens": 9, "output_tokens": 3, "total_tokens": 12}
TOOL_USE = {"id": "toolu_1", "type": "tool_use", "name": "get_weather",
            "arguments": {"city": "Paris"}}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    srv = FakeLLMServer(stall_seconds=3.0).start()
    yield srv
    srv.stop()


@pytest.fixture
def events(local_gov: Governor, tmp_path: Path) -> Events:
    return lambda: settled_events(local_gov, tmp_path)


@pytest.fixture
def instrumented(local_gov: Governor) -> Iterator[None]:
    assert promptgov.instrument("anthropic") == ["anthropic"]
    yield
    promptgov.uninstrument()


@pytest.fixture
def client(server: FakeLLMServer) -> Any:
    return anthropic.Anthropic(api_key="sk-ant-test", base_url=server.url, max_retries=0)


@pytest.fixture
def aclient(server: FakeLLMServer) -> Any:
    return anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=server.url, max_retries=0)


def pair(events: Events) -> tuple[dict[str, Any], dict[str, Any]]:
    recorded = events()
    assert [e["event_type"] for e in recorded] == ["prompt", "response"], recorded
    prompt, response = recorded
    assert response["payload"]["prompt_event_id"] == prompt["event_id"]
    return prompt, response["payload"]


def test_message_records_request_and_response(instrumented: None, client: Any,
                                              events: Events) -> None:
    message = client.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES,
                                     system="Be brief.", stop_sequences=["END"])
    assert isinstance(message, anthropic.types.Message)
    prompt, p = pair(events)
    assert prompt["payload"]["messages"] == MESSAGES
    assert prompt["payload"]["input"] == {"model": "claude-test", "max_tokens": 64,
                                          "system": "Be brief.", "stop_sequences": ["END"]}
    assert prompt["payload"]["streaming"] is False
    assert prompt["model"] == {"provider": "anthropic", "name": "claude-test", "version": None,
                               "parameters": {"max_tokens": 64, "stop_sequences": ["END"]}}
    assert p["output"] == {"role": "assistant", "content": HELLO}
    assert p["finish_reasons"] == ["end_turn"]
    assert p["usage"] == USAGE
    assert (p["response_model"], p["response_id"]) == ("claude-test-2025", "msg_1")


def test_tool_use_blocks_are_kept(instrumented: None, client: Any, events: Events) -> None:
    client.messages.create(model="claude-tools", max_tokens=64, messages=MESSAGES)
    _, p = pair(events)
    assert p["output"] == {"role": "assistant", "content": HELLO, "tool_calls": [TOOL_USE]}
    assert p["finish_reasons"] == ["tool_use"]


def test_stream_gives_what_the_plain_call_gives(instrumented: None, client: Any,
                                                events: Events) -> None:
    stream = client.messages.create(model="claude-tools", max_tokens=64, messages=MESSAGES,
                                    stream=True)
    assert isinstance(stream, anthropic.Stream)
    chunks = list(stream)
    prompt, p = pair(events)
    assert prompt["payload"]["streaming"] is True
    assert p["status"] == "ok"
    assert p["output"] == {"role": "assistant", "content": HELLO, "tool_calls": [TOOL_USE]}
    assert p["finish_reasons"] == ["tool_use"]
    assert p["usage"] == USAGE
    assert (p["response_model"], p["response_id"]) == ("claude-tools-2025", "msg_1")
    assert p["chunks"] == len(chunks)
    assert 0 < p["time_to_first_token_ms"] <= p["latency_ms"]


def test_stream_helper(instrumented: None, client: Any, events: Events) -> None:
    with client.messages.stream(model="claude-tools", max_tokens=64,
                                messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == HELLO and final.content[1].input == {"city": "Paris"}
    prompt, p = pair(events)
    assert prompt["payload"]["function"].endswith("Messages.stream")
    assert prompt["payload"]["streaming"] is True
    assert prompt["model"]["name"] == "claude-tools"
    assert p["status"] == "ok"
    assert p["output"] == {"role": "assistant", "content": HELLO, "tool_calls": [TOOL_USE]}
    assert p["usage"] == USAGE and p["finish_reasons"] == ["tool_use"]


def test_stream_helper_closed_early(instrumented: None, client: Any, events: Events) -> None:
    with client.messages.stream(model="claude-test", max_tokens=64,
                                messages=MESSAGES) as stream:
        for _ in stream.text_stream:
            break
    _, p = pair(events)
    assert p["status"] == "closed_early"
    assert p["output"] == {"role": "assistant", "content": TEXT[0]}
    assert p["response_id"] == "msg_1"


def test_stream_helper_request_fails(instrumented: None, client: Any, events: Events) -> None:
    with pytest.raises(anthropic.RateLimitError), client.messages.stream(
            model="status-429", max_tokens=64, messages=MESSAGES):
        pass
    prompt, p = pair(events)
    assert prompt["payload"]["streaming"] is True
    assert (p["status"], p["error"]["type"]) == ("error", "anthropic.RateLimitError")


def test_stream_closed_early_and_abandoned(instrumented: None, client: Any,
                                           events: Events) -> None:
    stream = client.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES,
                                    stream=True)
    next(iter(stream))
    stream.close()
    stream = client.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES,
                                    stream=True)
    next(iter(stream))
    del stream
    gc.collect()
    statuses = [e["payload"]["status"] for e in events() if e["event_type"] == "response"]
    assert statuses == ["closed_early", "abandoned"]


@pytest.mark.parametrize(("model", "error"), [("status-429", "RateLimitError"),
                                              ("status-500", "InternalServerError")])
def test_http_errors(instrumented: None, client: Any, events: Events, model: str,
                     error: str) -> None:
    with pytest.raises(anthropic.APIStatusError) as raised:
        client.messages.create(model=model, max_tokens=64, messages=MESSAGES)
    assert type(raised.value).__name__ == error
    _, p = pair(events)
    assert (p["status"], p["error"]["type"]) == ("error", f"anthropic.{error}")


def test_timeout(instrumented: None, client: Any, events: Events) -> None:
    with pytest.raises(anthropic.APITimeoutError):
        client.messages.create(model="stall", max_tokens=64, messages=MESSAGES, timeout=0.3)
    _, p = pair(events)
    assert (p["status"], p["error"]["type"]) == ("error", "anthropic.APITimeoutError")


def test_timeout_while_streaming(instrumented: None, client: Any, events: Events) -> None:
    stream = client.messages.create(model="stall-mid", max_tokens=64, messages=MESSAGES,
                                    stream=True, timeout=0.5)
    with pytest.raises(Exception) as raised:
        for _ in stream:
            pass
    _, p = pair(events)
    assert p["status"] == "error"
    assert p["error"]["type"].endswith(type(raised.value).__qualname__)
    assert p["output"] == {"role": "assistant", "content": TEXT[0]}


async def test_async_create_stream_and_helper(instrumented: None, aclient: Any,
                                              events: Events) -> None:
    await aclient.messages.create(model="claude-tools", max_tokens=64, messages=MESSAGES)
    stream = await aclient.messages.create(model="claude-tools", max_tokens=64,
                                           messages=MESSAGES, stream=True)
    assert isinstance(stream, anthropic.AsyncStream)
    async for _ in stream:
        pass
    async with aclient.messages.stream(model="claude-tools", max_tokens=64,
                                       messages=MESSAGES) as helper:
        final = await helper.get_final_message()
    assert final.stop_reason == "tool_use"
    recorded = events()
    assert [e["payload"].get("streaming") for e in recorded[::2]] == [False, True, True]
    for response in recorded[1::2]:
        p = response["payload"]
        assert p["status"] == "ok"
        assert p["output"] == {"role": "assistant", "content": HELLO, "tool_calls": [TOOL_USE]}
        assert p["usage"] == USAGE and p["finish_reasons"] == ["tool_use"]
        assert (p["response_model"], p["response_id"]) == ("claude-tools-2025", "msg_1")


async def test_async_stream_closed_with_await_close(instrumented: None, aclient: Any,
                                                    events: Events) -> None:
    stream = await aclient.messages.create(model="claude-test", max_tokens=64,
                                           messages=MESSAGES, stream=True)
    async for _ in stream:
        break
    await stream.close()
    async with aclient.messages.stream(model="claude-test", max_tokens=64,
                                       messages=MESSAGES) as helper:
        async for _ in helper.text_stream:
            break
    statuses = [e["payload"]["status"] for e in events() if e["event_type"] == "response"]
    assert statuses == ["closed_early", "closed_early"]


async def test_async_errors(instrumented: None, aclient: Any, events: Events) -> None:
    with pytest.raises(anthropic.InternalServerError):
        await aclient.messages.create(model="status-500", max_tokens=64, messages=MESSAGES)
    with pytest.raises(anthropic.APITimeoutError):
        async with aclient.messages.stream(model="stall", max_tokens=64, messages=MESSAGES,
                                           timeout=0.3):
            pass
    errors = [e["payload"]["error"]["type"] for e in events() if e["event_type"] == "response"]
    assert errors == ["anthropic.InternalServerError", "anthropic.APITimeoutError"]


async def test_async_concurrent_streams(instrumented: None, aclient: Any,
                                        events: Events) -> None:
    async def one(i: int) -> str:
        async with aclient.messages.stream(
                model="claude-test", max_tokens=64,
                messages=[{"role": "user", "content": f"q{i}"}]) as stream:
            return str(await stream.get_final_text())

    assert await asyncio.gather(*(one(i) for i in range(4))) == [HELLO] * 4
    recorded = events()
    prompts = {e["event_id"] for e in recorded if e["event_type"] == "prompt"}
    responses = [e["payload"] for e in recorded if e["event_type"] == "response"]
    assert {r["prompt_event_id"] for r in responses} == prompts and len(prompts) == 4
    assert all(r["output"] == {"role": "assistant", "content": HELLO} for r in responses)


def test_beta_messages(instrumented: None, client: Any, events: Events) -> None:
    client.beta.messages.create(model="claude-tools", max_tokens=64, messages=MESSAGES)
    _, p = pair(events)
    assert p["output"] == {"role": "assistant", "content": HELLO, "tool_calls": [TOOL_USE]}


def test_uninstrument_restores(local_gov: Governor, client: Any) -> None:
    messages = anthropic.resources.messages.Messages
    original = {name: messages.__dict__[name] for name in ("create", "stream")}
    promptgov.instrument("anthropic")
    assert all(messages.__dict__[name] is not fn for name, fn in original.items())
    promptgov.uninstrument("anthropic")
    assert all(messages.__dict__[name] is fn for name, fn in original.items())
    assert anthropic.Stream.__dict__["close"].__qualname__ == "Stream.close"


_VARYING = {"event_id", "occurred_at", "seq", "integrity", "trace_id", "span_id",
            "parent_event_id", "producer_id"}
_VARYING_PAYLOAD = {"prompt_event_id", "latency_ms", "time_to_first_token_ms"}


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in event.items() if k not in _VARYING}
    out["payload"] = {k: v for k, v in event["payload"].items() if k not in _VARYING_PAYLOAD}
    return out


@pytest.mark.parametrize("stream", [False, True])
def test_decorator_and_instrumentation_record_the_same(
        local_gov: Governor, client: Any, events: Events, stream: bool) -> None:
    def run(create: Callable[..., Any]) -> None:
        result = create(model="claude-tools", max_tokens=64, messages=MESSAGES,
                        system="Be brief.", stream=stream)
        if stream:
            list(result)

    run(promptgov.llm_call(provider="anthropic")(client.messages.create))
    promptgov.instrument("anthropic")
    try:
        run(client.messages.create)
    finally:
        promptgov.uninstrument()
    recorded = events()
    assert len(recorded) == 4
    assert [comparable(e) for e in recorded[:2]] == [comparable(e) for e in recorded[2:]]
