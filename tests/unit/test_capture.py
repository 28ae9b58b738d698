"""Capture: the four function shapes, methods, with blocks, lineage and failure isolation."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from local_events import read_local_events

import promptgov
from promptgov import Governor, interaction, llm_call, retrieval, tool
from promptgov.events import canonical_json, parse_event

Events = Callable[[], list[dict[str, Any]]]


class Boom(Exception):
    pass


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event_type"] == kind]


# --- the four shapes ---------------------------------------------------------------------


def test_sync_function_emits_prompt_then_response(local_gov: Governor, events: Events) -> None:
    @llm_call(provider="openai", model="gpt-4o-mini", prompt_template="answer",
              template_version="7")
    def answer(question: str, *, temperature: float = 0.1) -> str:
        return f"echo: {question}"

    sentinel = answer("hello", temperature=0.3)
    assert sentinel == "echo: hello"
    prompt, response = events()
    assert prompt["event_type"] == "prompt" and response["event_type"] == "response"
    assert prompt["payload"]["input"] == {"question": "hello", "temperature": 0.3}
    assert prompt["payload"]["function"].endswith("answer")
    assert prompt["model"] == {"provider": "openai", "name": "gpt-4o-mini", "version": None,
                               "parameters": {"temperature": 0.3}}
    assert prompt["prompt_template"] == {"id": "answer", "version": "7"}
    assert response["payload"]["prompt_event_id"] == prompt["event_id"]
    assert response["parent_event_id"] == prompt["event_id"]
    assert response["payload"]["output"] == "echo: hello"
    assert response["payload"]["status"] == "ok"
    assert response["payload"]["latency_ms"] >= 0
    assert prompt["seq"] < response["seq"]


async def test_async_function(local_gov: Governor, events: Events) -> None:
    @llm_call
    async def answer(q: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"text": q.upper()}

    assert await answer("hi") == {"text": "HI"}
    prompt, response = events()
    assert prompt["payload"]["streaming"] is False
    assert response["payload"]["output"] == {"text": "HI"}


def test_sync_generator_streams_chunks(local_gov: Governor, events: Events) -> None:
    @llm_call(model="m")
    def stream(q: str) -> Iterator[str]:
        yield from ("a", "b", "c")

    assert list(stream("x")) == ["a", "b", "c"]
    prompt, response = events()
    assert prompt["payload"]["streaming"] is True
    p = response["payload"]
    assert (p["output"], p["chunks"], p["status"]) == ("abc", 3, "ok")
    assert p["time_to_first_token_ms"] is not None
    assert p["time_to_first_token_ms"] <= p["latency_ms"]


async def test_async_generator_streams_chunks(local_gov: Governor, events: Events) -> None:
    @llm_call
    async def stream(q: str) -> AsyncIterator[str]:
        for piece in ("x", "y"):
            await asyncio.sleep(0)
            yield piece

    assert [c async for c in stream("q")] == ["x", "y"]
    _, response = events()
    assert (response["payload"]["output"], response["payload"]["status"]) == ("xy", "ok")


@pytest.mark.parametrize("shape", ["sync", "async", "gen", "agen"])
async def test_exceptions_pass_through_unchanged(local_gov: Governor, events: Events,
                                                 shape: str) -> None:
    error = Boom("the original")

    @llm_call
    def sync_fn() -> None:
        raise error

    @llm_call
    async def async_fn() -> None:
        raise error

    @llm_call
    def gen_fn() -> Iterator[str]:
        yield "first"
        raise error

    @llm_call
    async def agen_fn() -> AsyncIterator[str]:
        yield "first"
        raise error

    with pytest.raises(Boom) as caught:
        if shape == "sync":
            sync_fn()
        elif shape == "async":
            await async_fn()
        elif shape == "gen":
            list(gen_fn())
        else:
            [c async for c in agen_fn()]
    assert caught.value is error
    response = of_type(events(), "response")[0]["payload"]
    assert response["status"] == "error"
    assert response["error"] == {"type": "test_capture.Boom", "message": "the original"}


async def test_cancellation_is_recorded_and_propagates(local_gov: Governor,
                                                       events: Events) -> None:
    started = asyncio.Event()

    @llm_call
    async def slow() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert of_type(events(), "response")[0]["payload"]["status"] == "cancelled"


def test_generator_closed_early(local_gov: Governor, events: Events) -> None:
    @llm_call
    def stream() -> Iterator[int]:
        yield from range(10)

    gen = stream()
    assert next(gen) == 0
    gen.close()
    response = of_type(events(), "response")[0]["payload"]
    assert (response["status"], response["chunks"]) == ("closed_early", 1)


async def test_async_generator_closed_early(local_gov: Governor, events: Events) -> None:
    @llm_call
    async def stream() -> AsyncIterator[int]:
        for i in range(10):
            yield i

    agen = stream()
    assert await agen.__anext__() == 0
    await agen.aclose()
    assert of_type(events(), "response")[0]["payload"]["status"] == "closed_early"


async def test_abandoned_generator_recorded_without_touching_other_context(
    local_gov: Governor, events: Events
) -> None:
    @llm_call
    async def stream() -> AsyncIterator[int]:
        for i in range(10):
            yield i

    holder: list[Any] = []

    async def owner() -> None:
        with interaction(conversation_id="owner-conv"):
            agen = stream()
            await agen.__anext__()
            holder.append(agen)  # never closed

    async def other() -> tuple[Any, Any]:
        with interaction(conversation_id="other-conv") as ctx:
            holder.clear()  # the last reference dies here, in this task's context
            gc.collect()
            return ctx, promptgov.current_interaction()

    await asyncio.create_task(owner())
    before, after = await asyncio.create_task(other())
    assert before is after  # the collector did not disturb this task's context
    assert promptgov.current_call().anchor_id is None
    recorded = events()
    response = of_type(recorded, "response")[0]
    assert response["payload"]["status"] == "abandoned"
    assert response["conversation_id"] == "owner-conv"
    assert {e["conversation_id"] for e in recorded} == {"owner-conv"}


def test_methods_and_classmethods_skip_self(local_gov: Governor, events: Events) -> None:
    class Bot:
        @tool
        def search(self, query: str) -> list[str]:
            return [query]

        @tool(name="ping")
        @classmethod
        def ping(cls, host: str) -> str:
            return "pong"

    assert Bot().search("q") == ["q"]
    assert Bot.ping("h") == "pong"
    first, second = events()
    assert first["payload"]["arguments"] == {"query": "q"}
    assert first["payload"]["name"] == "search"
    assert second["payload"]["arguments"] == {"host": "h"}
    assert second["payload"]["name"] == "ping"


def test_secret_arguments_are_never_captured(local_gov: Governor, events: Events) -> None:
    @tool
    def call_api(url: str, api_key: str, Authorization: str = "", **extra: Any) -> int:
        return 200

    call_api("https://x", "sk-secret", Authorization="Bearer abc", password="pw", page=2)
    event = events()[0]
    assert event["payload"]["arguments"] == {"url": "https://x", "page": 2}
    assert b"sk-secret" not in canonical_json(event)


# --- lineage --------------------------------------------------------------------------------


def test_nested_calls_link_to_their_parent(local_gov: Governor, events: Events) -> None:
    @tool
    def lookup(x: int) -> int:
        return x

    @retrieval
    def fetch(q: str) -> list[str]:
        return ["doc"]

    @llm_call
    def agent(q: str) -> int:
        fetch(q)
        return lookup(1)

    with interaction(conversation_id="c1", user_id="u1", session_id="s1", tenant_id="t1"):
        agent("q")
    recorded = events()
    prompt = of_type(recorded, "prompt")[0]
    assert of_type(recorded, "tool_call")[0]["parent_event_id"] == prompt["event_id"]
    assert of_type(recorded, "retrieval")[0]["parent_event_id"] == prompt["event_id"]
    assert prompt["parent_event_id"] is None
    for event in recorded:
        assert (event["conversation_id"], event["user_id"], event["session_id"],
                event["tenant_id"]) == ("c1", "u1", "s1", "t1")
    assert len({e["interaction_id"] for e in recorded}) == 1


async def test_interaction_flows_through_tasks_threads_and_executors(
    local_gov: Governor, events: Events
) -> None:
    @local_gov.tool  # bound to the governor: threads without the context still find it
    def step(where: str) -> str:
        return where

    async def in_task() -> None:
        step("task")

    with interaction(conversation_id="flow"):
        await asyncio.create_task(in_task())
        await asyncio.to_thread(step, "to_thread")
        with promptgov.ContextThreadPoolExecutor(2) as pool:
            pool.submit(step, "pool").result()
            await asyncio.get_running_loop().run_in_executor(pool, step, "run_in_executor")
        thread = threading.Thread(target=promptgov.bind_context(step), args=("thread",))
        thread.start()
        thread.join()
    with ThreadPoolExecutor(1) as plain:  # outside any interaction: no lineage expected
        plain.submit(step, "plain").result()
    by_where = {e["payload"]["result"]: e["conversation_id"] for e in events()}
    assert by_where == {"task": "flow", "to_thread": "flow", "pool": "flow",
                        "run_in_executor": "flow", "thread": "flow", "plain": None}


def test_interaction_inherits_outer_fields() -> None:
    with interaction(conversation_id="c", user_id="u") as outer:
        with interaction(session_id="s") as inner:
            assert inner.conversation_id == "c" and inner.user_id == "u"
            assert inner.session_id == "s"
            assert inner.interaction_id != outer.interaction_id
        assert promptgov.current_interaction() is outer
    assert promptgov.current_interaction() is None


# --- with blocks -------------------------------------------------------------------------------


def test_with_block_records_request_chunks_and_response(local_gov: Governor,
                                                        events: Events) -> None:
    with llm_call(provider="anthropic", model="claude") as call:
        call.record_request(messages=[{"role": "user", "content": "hi"}],
                            parameters={"max_tokens": 5})
        for piece in ("he", "llo"):
            call.record_chunk(piece)
        call.record_response(usage={"input_tokens": 3, "output_tokens": 2},
                             finish_reasons=["end_turn"])
    prompt, response = events()
    assert prompt["payload"]["messages"] == [{"role": "user", "content": "hi"}]
    assert prompt["model"]["parameters"] == {"max_tokens": 5}
    assert response["payload"]["output"] == "hello"
    assert response["payload"]["usage"] == {"input_tokens": 3, "output_tokens": 2,
                                            "total_tokens": 5}
    assert response["payload"]["finish_reasons"] == ["end_turn"]


async def test_async_with_block_records_error(local_gov: Governor, events: Events) -> None:
    with pytest.raises(Boom):
        async with tool("shell") as call:
            call.record_request({"cmd": "ls"})
            raise Boom("no")
    event = events()[0]
    assert event["payload"]["name"] == "shell"
    assert event["payload"]["arguments"] == {"cmd": "ls"}
    assert event["payload"]["status"] == "error"


def test_retrieval_documents_are_normalised(local_gov: Governor, events: Events) -> None:
    class Doc:
        def __init__(self, text: str) -> None:
            self.page_content = text
            self.metadata = {"id": "d2", "source": "wiki"}

    @retrieval
    def search(query: str) -> list[Any]:
        return [{"id": 1, "content": "alpha", "score": 0.5}, Doc("beta"), "gamma"]

    search("q")
    docs = events()[0]["payload"]["documents"]
    assert [d["id"] for d in docs] == ["1", "d2", None]
    assert [d["content"] for d in docs] == ["alpha", "beta", "gamma"]
    assert docs[1]["source"] == "wiki" and docs[0]["score"] == 0.5
    assert all(d["content_hash"].startswith("sha256:") for d in docs)


# --- OpenAI-shaped values ----------------------------------------------------------------------


class _Obj:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


def test_openai_chat_completion_object_is_recognised(local_gov: Governor,
                                                     events: Events) -> None:
    completion = _Obj(
        id="chatcmpl-1", object="chat.completion", model="gpt-4o-mini-2024",
        choices=[_Obj(index=0, finish_reason="stop",
                      message={"role": "assistant", "content": "Paris"})],
        usage=_Obj(prompt_tokens=12, completion_tokens=1, total_tokens=13),
    )

    @llm_call(provider="openai")
    def create(model: str, messages: list[dict[str, str]], temperature: float) -> Any:
        return completion

    assert create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Capital?"}],
                  temperature=0) is completion
    prompt, response = events()
    assert prompt["payload"]["messages"] == [{"role": "user", "content": "Capital?"}]
    assert prompt["model"]["name"] == "gpt-4o-mini"
    assert prompt["model"]["parameters"] == {"temperature": 0}
    p = response["payload"]
    assert p["output"] == {"role": "assistant", "content": "Paris"}
    assert p["finish_reasons"] == ["stop"]
    assert p["usage"] == {"input_tokens": 12, "output_tokens": 1, "total_tokens": 13}
    assert (p["response_model"], p["response_id"]) == ("gpt-4o-mini-2024", "chatcmpl-1")


def test_openai_stream_chunks_are_aggregated(local_gov: Governor, events: Events) -> None:
    def chunk(text: str | None, finish: str | None = None, usage: Any = None) -> dict[str, Any]:
        return {"id": "c1", "model": "gpt", "object": "chat.completion.chunk", "usage": usage,
                "choices": [{"delta": {"content": text}, "finish_reason": finish}]}

    @llm_call
    def create(**kwargs: Any) -> Iterator[dict[str, Any]]:
        yield chunk("Hel")
        yield chunk("lo")
        yield chunk(None, "stop", {"prompt_tokens": 4, "completion_tokens": 2})

    assert len(list(create(model="gpt", messages=[], stream=True))) == 3
    p = events()[1]["payload"]
    assert p["output"] == {"role": "assistant", "content": "Hello"}
    assert p["finish_reasons"] == ["stop"] and p["usage"]["total_tokens"] == 6


# --- never break the host ------------------------------------------------------------------


class _RaisingRedactor:
    name = "raising"
    version = "0"

    def redact(self, value: Any, path: str = "") -> Any:
        raise RuntimeError("redactor bug")


def test_redactor_failure_never_reaches_the_caller(tmp_path: Path) -> None:
    gov = Governor(local_dir=tmp_path, redactor=_RaisingRedactor(), register_atexit=False)

    @gov.llm_call
    def answer(q: str) -> str:
        return "secret answer"

    assert answer("my secret question") == "secret answer"
    assert gov.flush(10).complete
    recorded = read_local_events(tmp_path)
    assert len(recorded) == 2
    for event in recorded:  # content withheld, the failure recorded
        assert b"secret" not in canonical_json({k: v for k, v in event.items() if k != "_topic"})
        assert event["redaction"]["findings"][0]["kind"] == "redactor_failed"
    assert gov.stats()["warnings"]["redactor_failed"] == 2
    gov.shutdown(5)


def test_hostile_arguments_get_a_safe_representation(local_gov: Governor,
                                                     events: Events) -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("no attributes")

    cyclic: list[Any] = []
    cyclic.append(cyclic)

    @tool
    def weird(a: Any, b: Any, c: Any, d: Any) -> str:
        return "ok"

    assert weird(Hostile(), cyclic, "\udcff bad utf-8", "x" * 2_000_000) == "ok"
    args = events()[0]["payload"]["arguments"]
    assert "Hostile" in args["a"]
    assert args["b"] == ["<cycle: builtins.list>"]
    assert args["c"] == "? bad utf-8"
    assert len(args["d"]) < 70_000
    warnings = local_gov.stats()["warnings"]
    assert {"unserialisable", "cycle", "invalid_utf8", "string_truncated"} <= set(warnings)


def test_sdk_fault_in_capture_never_reaches_the_caller(local_gov: Governor,
                                                       events: Events,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("snapshot bug")

    monkeypatch.setattr("promptgov.capture.calls.snapshot", broken)

    @llm_call
    def answer(q: str) -> str:
        return q * 2

    assert answer("ab") == "abab"
    assert local_gov.stats()["internal_errors"] >= 1


def test_return_value_identity_is_preserved(local_gov: Governor) -> None:
    marker = object()

    @tool
    def give() -> object:
        return marker

    assert give() is marker


# --- one-shot events, governors --------------------------------------------------------------


def test_policy_decision_and_feedback_target_the_right_events(local_gov: Governor,
                                                              events: Events) -> None:
    @llm_call
    def answer(q: str) -> str:
        local_gov.policy_decision("allow", policy=("pii", "3"), reasons=["no_pii"])
        return "ok"

    with interaction(conversation_id="fb"):
        answer("q")
        response_id = promptgov.last_event_id()
        local_gov.feedback(score=0.5, label="meh", comment="fine")
    recorded = events()
    prompt = of_type(recorded, "prompt")[0]
    decision = of_type(recorded, "policy_decision")[0]
    response = of_type(recorded, "response")[0]
    feedback = of_type(recorded, "feedback")[0]
    assert decision["payload"]["target_event_id"] == prompt["event_id"]
    assert decision["policy"] == {"id": "pii", "version": "3"}
    assert decision["_topic"].endswith(".decisions")
    assert response["event_id"] == response_id
    assert feedback["payload"]["target_event_id"] == response_id
    assert feedback["_topic"].endswith(".feedback")


def test_two_governors_do_not_interfere(tmp_path: Path) -> None:
    a = Governor(app="a", local_dir=tmp_path / "a", register_atexit=False)
    b = Governor(app="b", local_dir=tmp_path / "b", register_atexit=False)

    @a.tool
    def on_a() -> int:
        return 1

    @b.tool
    def on_b() -> int:
        return 2

    for _ in range(3):
        on_a()
        on_b()
    assert a.flush(10).complete and b.flush(10).complete
    events_a, events_b = read_local_events(tmp_path / "a"), read_local_events(tmp_path / "b")
    assert [e["seq"] for e in events_a] == [1, 2, 3] == [e["seq"] for e in events_b]
    assert {e["app"] for e in events_a} == {"a"} and {e["app"] for e in events_b} == {"b"}
    assert {e["producer_id"] for e in events_a}.isdisjoint({e["producer_id"] for e in events_b})
    a.shutdown(5)
    b.shutdown(5)


def test_every_event_validates_and_round_trips(local_gov: Governor, events: Events) -> None:
    @llm_call(model="m")
    def answer(q: str) -> str:
        return "a"

    @tool
    def t(x: int) -> int:
        return x

    with interaction(conversation_id="rt"):
        answer("q")
        t(1)
        local_gov.policy_decision("block", policy="p")
        local_gov.feedback(score=1)
    for event in events():
        event.pop("_topic")
        raw = canonical_json(event)
        model = parse_event(raw)
        assert canonical_json(model) == raw


def test_unknown_decorator_option_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="unknown option"):
        llm_call(modle="typo")


# --- content that hides in unexpected places ---------------------------------------------


def test_exception_messages_are_redacted_or_withheld(tmp_path: Path) -> None:
    for mode, expected in (("redacted", "[REDACTED:email]"), ("metadata", "[withheld]")):
        gov = Governor(local_dir=tmp_path / mode, capture_content=mode, register_atexit=False)

        @gov.llm_call
        def answer(q: str) -> str:
            raise RuntimeError("user bob@example.com said no")

        with pytest.raises(RuntimeError):
            answer("q")
        assert gov.flush(10).complete
        response = of_type(read_local_events(tmp_path / mode), "response")[0]
        error = response["payload"]["error"]
        assert error["type"] == "RuntimeError"
        assert "bob@example.com" not in error["message"] and expected in error["message"]
        gov.shutdown(5)


def test_secret_named_keys_are_scrubbed_at_any_depth(tmp_path: Path) -> None:
    gov = Governor(local_dir=tmp_path, durability="wal", register_atexit=False)

    @gov.tool
    def lookup(user_id: str, options: dict[str, Any]) -> dict[str, Any]:
        return {"rows": 1, "credentials": {"token": "tok-123456"}}

    lookup("u1", {"password": "hunter2", "nested": [{"api_key": "abc-secret"}], "page": 2})
    with gov.tool("sql") as call:
        call.record_request({"query": "select 1", "Password": "hunter3"})
    assert gov.flush(10).complete
    events = read_local_events(tmp_path)
    first, second = events
    assert first["payload"]["arguments"]["options"] == {
        "password": "[REDACTED:secret]", "nested": [{"api_key": "[REDACTED:secret]"}],
        "page": 2}
    assert first["payload"]["result"] == {"rows": 1, "credentials": "[REDACTED:secret]"}
    assert second["payload"]["arguments"]["Password"] == "[REDACTED:secret]"
    fields = {f["field"] for f in first["redaction"]["findings"] if f["kind"] == "secret"}
    assert fields == {"payload.arguments.options.password",
                      "payload.arguments.options.nested[0].api_key",
                      "payload.result.credentials"}
    for raw in (tmp_path / "spool").rglob("*"):
        if raw.is_file():
            assert b"hunter" not in raw.read_bytes() and b"abc-secret" not in raw.read_bytes()
    gov.shutdown(5)


def test_response_carries_the_model_its_prompt_asked_for(local_gov: Governor,
                                                         events: Events) -> None:
    @llm_call(provider="openai", model="gpt-4o-mini")
    def answer(messages: list[Any], model: str = "gpt-4o-mini", **params: Any) -> str:
        return "ok"

    answer([], model="gpt-4o", temperature=0.7)
    prompt, response = events()
    for event in (prompt, response):
        assert event["model"]["name"] == "gpt-4o"
        assert event["model"]["parameters"] == {"temperature": 0.7}


def test_invalid_environment_turns_capture_off_without_breaking_the_host(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from promptgov import governor as gov_module

    monkeypatch.setattr(gov_module, "_default", None)
    monkeypatch.setattr(gov_module, "_default_failed", False)
    monkeypatch.setenv("PROMPTGOV_MAX_QUEUE_SIZE", "lots")

    @tool
    def act(x: int) -> int:
        return x * 2

    assert act(21) == 42
    assert promptgov.feedback(score=1.0) == ""
    assert promptgov.policy_decision("allow") == ""
    assert "capture is off" in caplog.text and "max_queue_size" in caplog.text
    assert caplog.text.count("capture is off") == 1  # logged once
