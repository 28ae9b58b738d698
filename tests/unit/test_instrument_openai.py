"""``promptgov.instrument("openai")`` with the real ``openai`` client against a local fake API.

Chat completions, the Responses API, embeddings and legacy completions, sync
and async, plain and streamed (also through the SDK's ``stream`` helpers),
with tool calls, HTTP errors, timeouts and early close; assertions are on the
events the governor wrote.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_server import TEXT, TOOL_ARGS, FakeLLMServer, settled_events

import promptgov
from promptgov import Governor

openai = pytest.importorskip("openai")

Events = Callable[[], list[dict[str, Any]]]
MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]
HELLO = "".join(TEXT)
ARGS = "".join(TOOL_ARGS)
USAGE = {"input_tokens": 9, "output_tokens": 3, "total_tokens": 12}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]


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
    assert promptgov.instrument("openai") == ["openai"]
    yield
    promptgov.uninstrument()


@pytest.fixture
def client(server: FakeLLMServer) -> Any:
    return openai.OpenAI(api_key="sk-test", base_url=f"{server.url}/v1", max_retries=0)


@pytest.fixture
def aclient(server: FakeLLMServer) -> Any:
    return openai.AsyncOpenAI(api_key="sk-test", base_url=f"{server.url}/v1", max_retries=0)


def pair(events: Events) -> tuple[dict[str, Any], dict[str, Any]]:
    recorded = events()
    assert [e["event_type"] for e in recorded] == ["prompt", "response"], recorded
    prompt, response = recorded
    assert response["payload"]["prompt_event_id"] == prompt["event_id"]
    return prompt, response["payload"]


def tool_calls(*names: str, kind: str = "function") -> list[dict[str, Any]]:
    return [{"id": f"call_{n + 1}", "type": kind, "name": name, "arguments": ARGS}
            for n, name in enumerate(names)]


# --- chat completions ----------------------------------------------------------------


def test_chat_completion_records_request_and_response(instrumented: None, client: Any,
                                                      events: Events) -> None:
    completion = client.chat.completions.create(model="gpt-test", messages=MESSAGES,
                                                temperature=0.2, max_tokens=64, seed=7)
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert completion.choices[0].message.content == HELLO
    prompt, p = pair(events)
    assert prompt["payload"]["messages"] == MESSAGES
    assert prompt["payload"]["streaming"] is False
    assert prompt["payload"]["operation"] == "chat"
    assert prompt["payload"]["function"].endswith("Completions.create")
    assert prompt["payload"]["input"] == {"model": "gpt-test", "temperature": 0.2,
                                          "max_tokens": 64, "seed": 7}
    assert prompt["model"] == {"provider": "openai", "name": "gpt-test", "version": None,
                               "parameters": {"temperature": 0.2, "max_tokens": 64, "seed": 7}}
    assert p["status"] == "ok"
    assert p["output"] == {"role": "assistant", "content": HELLO}
    assert p["finish_reasons"] == ["stop"]
    assert p["usage"] == USAGE
    assert (p["response_model"], p["response_id"]) == ("gpt-test-2025", "chatcmpl-1")
    assert p["chunks"] is None and p["time_to_first_token_ms"] is None


def test_chat_completion_tool_calls(instrumented: None, client: Any, events: Events) -> None:
    client.chat.completions.create(model="gpt-tools", messages=MESSAGES, tools=TOOLS)
    prompt, p = pair(events)
    assert prompt["payload"]["input"]["tools"] == TOOLS
    assert p["output"] == {"role": "assistant", "content": HELLO,
                           "tool_calls": tool_calls("get_weather", "get_time")}
    assert p["finish_reasons"] == ["tool_calls"]


def test_chat_completion_several_choices(instrumented: None, client: Any,
                                         events: Events) -> None:
    client.chat.completions.create(model="gpt-n2", messages=MESSAGES, n=2)
    _, p = pair(events)
    assert p["output"] == [{"role": "assistant", "content": HELLO}] * 2
    assert p["finish_reasons"] == ["stop", "stop"]


def test_chat_stream_gives_what_the_plain_call_gives(instrumented: None, client: Any,
                                                     events: Events) -> None:
    stream = client.chat.completions.create(model="gpt-tools", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True})
    assert isinstance(stream, openai.Stream)  # the SDK's own stream object, not a proxy
    chunks = list(stream)
    prompt, p = pair(events)
    assert prompt["payload"]["streaming"] is True
    assert p["status"] == "ok"
    assert p["output"] == {"role": "assistant", "content": HELLO,
                           "tool_calls": tool_calls("get_weather", "get_time")}
    assert p["finish_reasons"] == ["tool_calls"]
    assert p["usage"] == USAGE
    assert (p["response_model"], p["response_id"]) == ("gpt-tools-2025", "chatcmpl-s1")
    assert p["chunks"] == len(chunks)
    assert 0 < p["time_to_first_token_ms"] <= p["latency_ms"]


def test_chat_stream_helper(instrumented: None, client: Any, events: Events) -> None:
    with client.chat.completions.stream(model="gpt-test", messages=MESSAGES,
                                        temperature=0) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_completion()
    assert "content.delta" in kinds and final.choices[0].message.content == HELLO
    prompt, p = pair(events)
    assert prompt["payload"]["streaming"] is True
    assert prompt["payload"]["input"] == {"model": "gpt-test", "stream": True, "temperature": 0}
    assert prompt["model"]["parameters"] == {"temperature": 0}
    assert (p["status"], p["output"]) == ("ok", {"role": "assistant", "content": HELLO})
    assert p["finish_reasons"] == ["stop"] and p["response_id"] == "chatcmpl-s1"


def test_chat_stream_closed_early_with_close(instrumented: None, client: Any,
                                             events: Events) -> None:
    stream = client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
    for _ in stream:
        break
    stream.close()
    _, p = pair(events)
    assert (p["status"], p["chunks"]) == ("closed_early", 1)


def test_chat_stream_closed_early_by_its_with_block(instrumented: None, client: Any,
                                                    events: Events) -> None:
    with client.chat.completions.create(model="gpt-test", messages=MESSAGES,
                                        stream=True) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
    _, p = pair(events)
    assert p["status"] == "closed_early"
    assert p["output"] == {"role": "assistant", "content": TEXT[0]}
    assert p["time_to_first_token_ms"] is not None


def test_chat_stream_helper_closed_early(instrumented: None, client: Any,
                                         events: Events) -> None:
    with client.chat.completions.stream(model="gpt-test", messages=MESSAGES) as stream:
        for _ in stream:
            break
    _, p = pair(events)
    assert p["status"] == "closed_early"


def test_abandoned_stream_is_recorded_at_collection(instrumented: None, client: Any,
                                                    events: Events) -> None:
    stream = client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
    next(stream)
    del stream
    gc.collect()
    _, p = pair(events)
    assert p["status"] == "abandoned"


def test_prompt_is_sent_before_the_stream_is_read(instrumented: None, client: Any,
                                                  events: Events) -> None:
    stream = client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
    assert [e["event_type"] for e in events()] == ["prompt"]
    list(stream)
    assert [e["event_type"] for e in events()] == ["prompt", "response"]


async def test_async_chat_and_stream(instrumented: None, aclient: Any, events: Events) -> None:
    completion = await aclient.chat.completions.create(model="gpt-tools", messages=MESSAGES)
    assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"
    stream = await aclient.chat.completions.create(model="gpt-tools", messages=MESSAGES,
                                                   stream=True)
    assert isinstance(stream, openai.AsyncStream)
    pieces = [c async for c in stream]
    recorded = events()
    assert [e["event_type"] for e in recorded] == ["prompt", "response"] * 2
    plain, streamed = recorded[1]["payload"], recorded[3]["payload"]
    assert recorded[0]["payload"]["streaming"] is False
    assert recorded[2]["payload"]["streaming"] is True
    assert plain["output"] == streamed["output"] == {
        "role": "assistant", "content": HELLO,
        "tool_calls": tool_calls("get_weather", "get_time")}
    assert plain["finish_reasons"] == streamed["finish_reasons"] == ["tool_calls"]
    assert streamed["chunks"] == len(pieces)


async def test_async_stream_closed_with_await_close(instrumented: None, aclient: Any,
                                                    events: Events) -> None:
    stream = await aclient.chat.completions.create(model="gpt-test", messages=MESSAGES,
                                                   stream=True)
    async for _ in stream:
        break
    await stream.close()
    _, p = pair(events)
    assert (p["status"], p["chunks"]) == ("closed_early", 1)


async def test_async_stream_helper(instrumented: None, aclient: Any, events: Events) -> None:
    async with aclient.chat.completions.stream(model="gpt-tools", messages=MESSAGES) as stream:
        final = await stream.get_final_completion()
    assert final.choices[0].message.tool_calls[1].function.name == "get_time"
    async with aclient.chat.completions.stream(model="gpt-test", messages=MESSAGES) as stream:
        async for _ in stream:
            break
    recorded = events()
    assert [e["payload"].get("status") for e in recorded] == [None, "ok", None, "closed_early"]
    assert recorded[1]["payload"]["output"]["tool_calls"] == tool_calls("get_weather",
                                                                        "get_time")


async def test_concurrent_async_calls_each_get_their_own_record(
        instrumented: None, aclient: Any, events: Events) -> None:
    async def one(i: int) -> Any:
        return await aclient.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": f"q{i}"}])

    await asyncio.gather(*(one(i) for i in range(5)))
    recorded = events()
    prompts = {e["event_id"]: e["payload"]["messages"][0]["content"] for e in recorded
               if e["event_type"] == "prompt"}
    responses = [e["payload"] for e in recorded if e["event_type"] == "response"]
    assert sorted(prompts.values()) == [f"q{i}" for i in range(5)]
    assert {r["prompt_event_id"] for r in responses} == set(prompts)
    assert all(r["status"] == "ok" for r in responses)


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "error"), [("status-429", "RateLimitError"),
                                              ("status-500", "InternalServerError")])
def test_http_errors_pass_through_and_are_recorded(instrumented: None, client: Any,
                                                   events: Events, model: str,
                                                   error: str) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model=model, messages=MESSAGES)
    assert type(raised.value).__name__ == error
    _, p = pair(events)
    assert p["status"] == "error"
    assert p["error"]["type"] == f"openai.{error}"
    assert p["output"] is None and p["usage"] is None


async def test_async_http_error(instrumented: None, aclient: Any, events: Events) -> None:
    with pytest.raises(openai.RateLimitError):
        await aclient.chat.completions.create(model="status-429", messages=MESSAGES,
                                              stream=True)
    prompt, p = pair(events)
    assert prompt["payload"]["streaming"] is True
    assert (p["status"], p["error"]["type"]) == ("error", "openai.RateLimitError")


def test_timeout_before_the_answer(instrumented: None, client: Any, events: Events) -> None:
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="stall", messages=MESSAGES, timeout=0.3)
    _, p = pair(events)
    assert (p["status"], p["error"]["type"]) == ("error", "openai.APITimeoutError")


def test_timeout_while_streaming(instrumented: None, client: Any, events: Events) -> None:
    stream = client.chat.completions.create(model="stall-mid", messages=MESSAGES, stream=True,
                                            timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        for _ in stream:
            pass
    _, p = pair(events)
    assert (p["status"], p["error"]["type"]) == ("error", "openai.APITimeoutError")
    assert p["output"] == {"role": "assistant", "content": TEXT[0]}


async def test_async_timeout(instrumented: None, aclient: Any, events: Events) -> None:
    with pytest.raises(openai.APITimeoutError):
        await aclient.chat.completions.create(model="stall", messages=MESSAGES, timeout=0.3)
    _, p = pair(events)
    assert (p["status"], p["error"]["type"]) == ("error", "openai.APITimeoutError")


async def test_cancelled_call(instrumented: None, aclient: Any, events: Events) -> None:
    task = asyncio.ensure_future(aclient.chat.completions.create(model="stall",
                                                                 messages=MESSAGES))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _, p = pair(events)
    assert p["status"] == "cancelled"


# --- Responses API -------------------------------------------------------------------------


def test_responses_api(instrumented: None, client: Any, events: Events) -> None:
    response = client.responses.create(model="gpt-tools", input="Weather in Paris?",
                                       instructions="Be brief.", max_output_tokens=50)
    assert response.output_text == HELLO
    prompt, p = pair(events)
    assert prompt["payload"]["input"] == {"model": "gpt-tools", "input": "Weather in Paris?",
                                          "instructions": "Be brief.", "max_output_tokens": 50}
    assert prompt["model"]["parameters"] == {"max_output_tokens": 50}
    assert p["output"] == {"role": "assistant", "content": HELLO, "tool_calls": [
        {"id": "call_1", "type": "function_call", "name": "get_weather", "arguments": ARGS}]}
    assert p["finish_reasons"] == ["completed"]
    assert p["usage"] == USAGE
    assert (p["response_model"], p["response_id"]) == ("gpt-tools-2025", "resp_1")


def test_responses_incomplete(instrumented: None, client: Any, events: Events) -> None:
    client.responses.create(model="gpt-length", input="hi")
    _, p = pair(events)
    assert p["finish_reasons"] == ["max_output_tokens"]


def test_responses_stream_and_helper(instrumented: None, client: Any, events: Events) -> None:
    stream = client.responses.create(model="gpt-tools", input="hi", stream=True)
    assert isinstance(stream, openai.Stream)
    list(stream)
    with client.responses.stream(model="gpt-tools", input="hi") as helper:
        assert helper.get_final_response().output_text == HELLO
    recorded = events()
    assert [e["payload"].get("streaming") for e in recorded[::2]] == [True, True]
    plain, helped = recorded[1]["payload"], recorded[3]["payload"]
    for p in (plain, helped):
        assert p["status"] == "ok"
        assert p["output"]["tool_calls"] == [{"id": "call_1", "type": "function_call",
                                              "name": "get_weather", "arguments": ARGS}]
        assert p["output"]["content"] == HELLO
        assert p["usage"] == USAGE and p["finish_reasons"] == ["completed"]
        assert (p["response_model"], p["response_id"]) == ("gpt-tools-2025", "resp_1")
        assert p["time_to_first_token_ms"] is not None


def test_responses_stream_closed_early_keeps_what_came(instrumented: None, client: Any,
                                                       events: Events) -> None:
    with client.responses.stream(model="gpt-test", input="hi") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                break
    _, p = pair(events)
    assert p["status"] == "closed_early"
    assert p["output"] == {"role": "assistant", "content": TEXT[0]}
    assert (p["response_model"], p["response_id"]) == ("gpt-test-2025", "resp_1")


async def test_async_responses(instrumented: None, aclient: Any, events: Events) -> None:
    await aclient.responses.create(model="gpt-test", input="hi")
    stream = await aclient.responses.create(model="gpt-test", input="hi", stream=True)
    async for _ in stream:
        pass
    async with aclient.responses.stream(model="gpt-test", input="hi") as helper:
        await helper.get_final_response()
    responses = [e["payload"] for e in events() if e["event_type"] == "response"]
    assert len(responses) == 3
    for p in responses:
        assert p["output"] == {"role": "assistant", "content": HELLO}
        assert p["usage"] == USAGE


# --- embeddings, legacy completions --------------------------------------------------------


def test_embeddings(instrumented: None, client: Any, aclient: Any, events: Events) -> None:
    result = client.embeddings.create(model="embed-test", input=["alpha", "beta"],
                                      dimensions=8)
    assert len(result.data[0].embedding) == 8  # decoded from base64 by the client
    asyncio.run(aclient.embeddings.create(model="embed-test", input="gamma"))
    recorded = events()
    prompt, p = recorded[0], recorded[1]["payload"]
    assert prompt["payload"]["operation"] == "embeddings"
    assert prompt["payload"]["input"] == {"model": "embed-test", "input": ["alpha", "beta"],
                                          "dimensions": 8}
    assert prompt["model"]["parameters"] == {"dimensions": 8}
    assert p["output"] == {"embeddings": 2, "dimensions": 8}  # never the vectors
    assert p["usage"] == {"input_tokens": 9, "output_tokens": None, "total_tokens": 9}
    assert p["response_model"] == "embed-test-2025"
    assert recorded[3]["payload"]["output"] == {"embeddings": 1, "dimensions": 4}


def test_legacy_completions(instrumented: None, client: Any, events: Events) -> None:
    client.completions.create(model="davinci-test", prompt="Say hello")
    list(client.completions.create(model="davinci-test", prompt="Say hello", stream=True))
    recorded = events()
    assert recorded[0]["payload"]["operation"] == "text_completion"
    plain, streamed = recorded[1]["payload"], recorded[3]["payload"]
    assert plain["output"] == streamed["output"] == HELLO
    assert plain["finish_reasons"] == streamed["finish_reasons"] == ["stop"]


# --- lifecycle -----------------------------------------------------------------------------


def test_instrument_is_idempotent_and_uninstrument_restores(local_gov: Governor, client: Any,
                                                            tmp_path: Path) -> None:
    completions = openai.resources.chat.completions.Completions
    original = completions.__dict__["create"]
    assert promptgov.instrument("openai") == ["openai"]
    patched = completions.__dict__["create"]
    assert patched is not original
    assert promptgov.instrument("openai") == ["openai"]
    assert completions.__dict__["create"] is patched  # not wrapped twice
    client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert promptgov.uninstrument() == ["openai"]
    assert completions.__dict__["create"] is original
    assert not hasattr(openai.Stream.__dict__["close"], "__promptgov_patch__")
    client.chat.completions.create(model="gpt-test", messages=MESSAGES)  # not recorded
    assert promptgov.uninstrument() == []
    assert len(settled_events(local_gov, tmp_path)) == 2


def test_a_client_made_before_instrument_is_instrumented(local_gov: Governor, client: Any,
                                                         events: Events) -> None:
    client.chat.completions.create(model="gpt-test", messages=MESSAGES)  # resources made
    promptgov.instrument("openai")
    try:
        client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    finally:
        promptgov.uninstrument("openai")
    assert [e["event_type"] for e in events()] == ["prompt", "response"]


def test_unknown_library_is_an_error_and_missing_ones_are_skipped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="cohere"):
        promptgov.instrument("cohere")
    import sys

    monkeypatch.setitem(sys.modules, "anthropic", None)  # as if not installed
    assert promptgov.instrument("anthropic") == []
    assert promptgov.uninstrument() == []


def test_explicit_governor(tmp_path: Path, client: Any) -> None:
    gov = Governor(local_dir=tmp_path, register_atexit=False, flush_interval_ms=5)
    promptgov.instrument("openai", governor=gov)
    try:
        client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    finally:
        promptgov.uninstrument()
    assert [e["event_type"] for e in settled_events(gov, tmp_path)] == ["prompt", "response"]
    gov.shutdown(5)


def test_capture_failure_never_reaches_the_client(instrumented: None, client: Any,
                                                  local_gov: Governor,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("promptgov bug")

    monkeypatch.setattr("promptgov.capture.calls.CallRecorder.begin", broken)
    completion = client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert completion.choices[0].message.content == HELLO
    monkeypatch.setattr("promptgov.capture.calls.CallRecorder.record_chunk", broken)
    assert len(list(client.chat.completions.create(model="gpt-test", messages=MESSAGES,
                                                   stream=True))) == 5
    assert local_gov.stats()["internal_errors"] >= 1


def test_capture_off_after_shutdown_passes_calls_through(client: Any, tmp_path: Path) -> None:
    gov = Governor(local_dir=tmp_path, register_atexit=False)
    gov.shutdown(1)
    promptgov.instrument("openai", governor=gov)
    try:
        stream = client.chat.completions.create(model="gpt-test", messages=MESSAGES,
                                                stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == HELLO
    finally:
        promptgov.uninstrument()


# --- the decorator and the instrumentation record the same --------------------------------

_VARYING = {"event_id", "occurred_at", "seq", "integrity", "trace_id", "span_id",
            "parent_event_id", "producer_id"}
_VARYING_PAYLOAD = {"prompt_event_id", "latency_ms", "time_to_first_token_ms"}


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in event.items() if k not in _VARYING}
    out["payload"] = {k: v for k, v in event["payload"].items() if k not in _VARYING_PAYLOAD}
    return out


@pytest.mark.parametrize(("call", "operation"), [
    ("chat", "chat"), ("chat_stream", "chat"), ("responses", "chat"),
    ("responses_stream", "chat"), ("embeddings", "embeddings")])
def test_decorator_and_instrumentation_record_the_same(
        local_gov: Governor, client: Any, events: Events, call: str, operation: str) -> None:
    def run(create: Callable[..., Any]) -> None:
        kwargs: dict[str, Any] = {
            "chat": {"model": "gpt-tools", "messages": MESSAGES, "temperature": 0.5},
            "chat_stream": {"model": "gpt-tools", "messages": MESSAGES, "stream": True,
                            "stream_options": {"include_usage": True}},
            "responses": {"model": "gpt-tools", "input": "hi", "max_output_tokens": 9},
            "responses_stream": {"model": "gpt-tools", "input": "hi", "stream": True},
            "embeddings": {"model": "embed-test", "input": ["a"]},
        }[call]
        result = create(**kwargs)
        if kwargs.get("stream"):
            list(result)

    method = {"chat": client.chat.completions.create,
              "chat_stream": client.chat.completions.create,
              "responses": client.responses.create,
              "responses_stream": client.responses.create,
              "embeddings": client.embeddings.create}[call]
    run(promptgov.llm_call(provider="openai", operation=operation)(method))
    promptgov.instrument("openai")
    try:
        instrumented_method = {"chat": client.chat.completions.create,
                               "chat_stream": client.chat.completions.create,
                               "responses": client.responses.create,
                               "responses_stream": client.responses.create,
                               "embeddings": client.embeddings.create}[call]
        run(instrumented_method)
    finally:
        promptgov.uninstrument()
    recorded = events()
    assert len(recorded) == 4
    decorated, instrumented = recorded[:2], recorded[2:]
    assert [comparable(e) for e in decorated] == [comparable(e) for e in instrumented]
