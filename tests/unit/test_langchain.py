"""LangChain: chat model, LLM, retriever and tool runs recorded by one shared handler.

Real ``langchain-core`` runnables with its fake models: no network.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace

pytest.importorskip("langchain_core")

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.documents import Document
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
    ParrotFakeChatModel,
)
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.tools import ToolException
from langchain_core.tools import tool as lc_tool

import promptgov
from promptgov import Governor, interaction
from promptgov.integrations.langchain import PromptgovCallbackHandler

Events = Callable[[], list[dict[str, Any]]]


class Boom(Exception):
    pass


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event_type"] == kind]


def by_id(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["event_id"]: e for e in events}


def cfg(handler: PromptgovCallbackHandler, **more: Any) -> Any:
    return {"callbacks": [handler], **more}


class Shelf(BaseRetriever):
    """A retriever over a fixed list: documents whose text contains a query word."""

    docs: list[Document]
    fail: bool = False

    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        if self.fail:
            raise Boom("index offline")
        words = query.lower().split()
        return [d for d in self.docs if any(w in d.page_content.lower() for w in words)]


class Broken(BaseChatModel):
    """A chat model whose provider call fails."""

    error: BaseException

    @property
    def _llm_type(self) -> str:
        return "broken"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        raise self.error


# --- chat models and LLMs -----------------------------------------------------------------


def test_chat_model_invoke_records_prompt_and_response(local_gov: Governor,
                                                       events: Events) -> None:
    handler = PromptgovCallbackHandler()
    model = GenericFakeChatModel(messages=iter([AIMessage(
        content="Paris.", id="resp-17",
        usage_metadata={"input_tokens": 12, "output_tokens": 2, "total_tokens": 14},
        response_metadata={"finish_reason": "stop", "model_name": "fake-large-2"})]))
    with interaction(conversation_id="c1", user_id="u1", tenant_id="t1", session_id="s1"):
        reply = model.invoke([SystemMessage("Be brief."), HumanMessage("Capital of France?")],
                             config=cfg(handler), temperature=0.2, max_tokens=5)
        last = promptgov.last_event_id()
    assert reply.content == "Paris."
    prompt, response = events()
    assert prompt["event_type"] == "prompt" and response["event_type"] == "response"
    assert prompt["payload"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"}]
    assert prompt["payload"]["operation"] == "chat"
    assert prompt["payload"]["function"] == "GenericFakeChatModel"
    assert prompt["model"]["provider"] == "genericfakechatmodel"
    assert prompt["model"]["parameters"] == {"temperature": 0.2, "max_tokens": 5}
    p = response["payload"]
    assert p["status"] == "ok"
    assert p["output"] == {"role": "assistant", "content": "Paris."}
    assert p["usage"] == {"input_tokens": 12, "output_tokens": 2, "total_tokens": 14}
    assert p["finish_reasons"] == ["stop"]
    assert (p["response_model"], p["response_id"]) == ("fake-large-2", "resp-17")
    assert p["prompt_event_id"] == prompt["event_id"] == response["parent_event_id"]
    assert prompt["parent_event_id"] is None
    for event in (prompt, response):
        assert (event["conversation_id"], event["user_id"], event["tenant_id"],
                event["session_id"]) == ("c1", "u1", "t1", "s1")
    assert last == response["event_id"]  # feedback defaults to the response, as with decorators


async def test_async_invoke(local_gov: Governor, events: Events) -> None:
    handler = PromptgovCallbackHandler()
    with interaction(conversation_id="async-conv"):
        reply = await ParrotFakeChatModel().ainvoke("echo me", config=cfg(handler, metadata={
            "promptgov_prompt_template": "echo", "promptgov_template_version": 3}))
    assert reply.content == "echo me"
    prompt, response = events()
    assert prompt["prompt_template"] == {"id": "echo", "version": "3"}
    assert prompt["payload"]["messages"] == [{"role": "user", "content": "echo me"}]
    assert response["payload"]["output"]["content"] == "echo me"
    assert response["parent_event_id"] == prompt["event_id"]
    assert {e["conversation_id"] for e in (prompt, response)} == {"async-conv"}


async def test_streaming_records_tokens(local_gov: Governor, events: Events) -> None:
    handler = PromptgovCallbackHandler()
    model = FakeListChatModel(responses=["hello world"])
    pieces = [c.content for c in model.stream("hi", config=cfg(handler))]
    apieces = [c.content async for c in model.astream("hi", config=cfg(handler))]
    assert "".join(map(str, pieces)) == "".join(map(str, apieces)) == "hello world"
    responses = of_type(events(), "response")
    assert len(responses) == 2
    for response in responses:
        p = response["payload"]
        assert (p["status"], p["output"], p["chunks"]) == ("ok", "hello world", len(pieces))
        assert p["time_to_first_token_ms"] is not None
        assert p["time_to_first_token_ms"] <= p["latency_ms"]


def test_text_completion_llm(local_gov: Governor, events: Events) -> None:
    handler = PromptgovCallbackHandler()
    assert FakeListLLM(responses=["forty-two"]).invoke("The answer?",
                                                       config=cfg(handler)) == "forty-two"
    prompt, response = events()
    assert prompt["payload"]["operation"] == "text_completion"
    assert prompt["payload"]["input"] == "The answer?"
    assert prompt["payload"]["messages"] is None
    assert response["payload"]["output"] == "forty-two"


# --- a chain: retriever -> prompt -> model -> tool --------------------------------------------


def test_chain_retriever_prompt_model_tool(local_gov: Governor, events: Events) -> None:
    handler = PromptgovCallbackHandler()
    retriever = Shelf(docs=[Document("Order 42 shipped on Monday.", id="d1",
                                     metadata={"source": "orders.db"}),
                            Document("Returns take 30 days.", id="d2")])
    prompt_template = ChatPromptTemplate.from_messages(
        [("system", "Context: {context}"), ("human", "{question}")])
    model = GenericFakeChatModel(messages=iter([AIMessage(
        content="", tool_calls=[{"name": "order_status", "args": {"order_id": "42"},
                                 "id": "call_1", "type": "tool_call"}])]))

    @lc_tool
    def order_status(order_id: str) -> str:
        """Look an order up."""
        return f"order {order_id}: delivered"

    chain = (
        {"context": retriever | RunnableLambda(lambda docs: " ".join(
            d.page_content for d in docs)), "question": RunnablePassthrough()}
        | prompt_template
        | model
        | RunnableLambda(lambda message: order_status.invoke(message.tool_calls[0]))
    )
    with interaction(conversation_id="chain-conv", user_id="u9"), \
            promptgov.tool("agent") as agent:
        result = chain.invoke("where is order 42?", config=cfg(handler))
    assert result.content == "order 42: delivered"
    recorded = events()
    assert [e["event_type"] for e in recorded] == [
        "retrieval", "prompt", "response", "tool_call", "tool_call"]
    retrieval, prompt, response, tool_call, agent_event = recorded
    assert agent_event["event_id"] == agent.event_id
    assert retrieval["payload"]["query"] == "where is order 42?"
    docs = retrieval["payload"]["documents"]
    assert [(d["id"], d["content"], d["source"]) for d in docs] == [
        ("d1", "Order 42 shipped on Monday.", "orders.db")]
    assert prompt["payload"]["messages"] == [
        {"role": "system", "content": "Context: Order 42 shipped on Monday."},
        {"role": "user", "content": "where is order 42?"}]
    assert response["payload"]["output"]["tool_calls"] == [
        {"id": "call_1", "name": "order_status", "arguments": {"order_id": "42"}}]
    assert tool_call["payload"]["name"] == "order_status"
    assert tool_call["payload"]["arguments"] == {"order_id": "42"}
    assert tool_call["payload"]["call_id"] == "call_1"
    assert tool_call["payload"]["result"] == "order 42: delivered"
    # Every run nested in the chain belongs to the enclosing captured call.
    for event in (retrieval, prompt, tool_call):
        assert event["parent_event_id"] == agent.event_id
    assert response["parent_event_id"] == prompt["event_id"]
    assert {(e["conversation_id"], e["user_id"]) for e in recorded} == {("chain-conv", "u9")}
    assert len({e["interaction_id"] for e in recorded}) == 1


# --- concurrency: one handler, many runs ------------------------------------------------------


def test_batch_nested_runs_get_their_own_parent(local_gov: Governor, events: Events) -> None:
    handler = PromptgovCallbackHandler()
    parrot = ParrotFakeChatModel()

    @lc_tool
    def research(topic: str) -> str:
        """Ask the model about a topic."""
        return str(parrot.invoke(f"about {topic}").content)  # nested: the tool's child run

    topics = [f"t{i}" for i in range(24)]
    with interaction(conversation_id="batch"):
        results = research.batch([{"topic": t} for t in topics],
                                 config=cfg(handler, max_concurrency=8))
    assert results == [f"about {t}" for t in topics]
    recorded = events()
    events_by_id = by_id(recorded)
    tools = {e["payload"]["arguments"]["topic"]: e for e in of_type(recorded, "tool_call")}
    prompts = of_type(recorded, "prompt")
    assert sorted(tools) == sorted(topics) and len(prompts) == len(topics)
    for prompt in prompts:
        topic = prompt["payload"]["messages"][0]["content"].removeprefix("about ")
        assert prompt["parent_event_id"] == tools[topic]["event_id"], topic
    for response in of_type(recorded, "response"):
        prompt = events_by_id[response["parent_event_id"]]
        assert response["payload"]["output"]["content"] == prompt["payload"]["messages"][0][
            "content"]
    assert {e["conversation_id"] for e in recorded} == {"batch"}
    assert len(recorded) == 3 * len(topics)


def test_runs_carry_the_trace_of_their_top_level_run(local_gov: Governor,
                                                     events: Events) -> None:
    handler = PromptgovCallbackHandler()
    parrot = ParrotFakeChatModel()

    @lc_tool
    def research(topic: str) -> str:
        """Ask the model about a topic."""
        return str(parrot.invoke(f"about {topic}").content)

    span = trace.SpanContext(int("12" * 16, 16), int("34" * 8, 16), is_remote=True,
                             trace_flags=trace.TraceFlags(1))
    token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(span)))
    try:
        research.batch([{"topic": f"t{i}"} for i in range(6)],
                       config=cfg(handler, max_concurrency=3))
    finally:
        otel_context.detach(token)
    recorded = events()
    assert len(recorded) == 18
    assert {e["trace_id"] for e in recorded} == {"12" * 16}


def test_concurrent_interactions_share_one_handler_threads(local_gov: Governor,
                                                          events: Events) -> None:
    handler = PromptgovCallbackHandler()
    model = ParrotFakeChatModel()
    users, turns = 8, 10
    start = threading.Barrier(users)

    def user(u: int) -> None:
        start.wait()
        for n in range(turns):
            with interaction(user_id=f"user-{u}"), promptgov.tool("turn") as turn:
                turn.record_request({"who": f"user-{u}", "n": n})
                model.invoke(f"user-{u}:{n}", config=cfg(handler))

    with promptgov.ContextThreadPoolExecutor(users) as pool:  # carries gov.use()
        for future in [pool.submit(user, u) for u in range(users)]:
            future.result()
    check_turns(events(), users * turns)


async def test_concurrent_interactions_share_one_handler_tasks(local_gov: Governor,
                                                              events: Events) -> None:
    handler = PromptgovCallbackHandler()
    model = FakeListChatModel(responses=["ok"])

    async def user(u: int, n: int) -> None:
        with interaction(user_id=f"user-{u}"):
            async with promptgov.tool("turn") as turn:
                turn.record_request({"who": f"user-{u}", "n": n})
                async for _ in model.astream(f"user-{u}:{n}", config=cfg(handler)):
                    await asyncio.sleep(0)  # interleave the streams

    await asyncio.gather(*(user(u, n) for u in range(8) for n in range(10)))
    check_turns(events(), 80)


def check_turns(recorded: list[dict[str, Any]], expected: int) -> None:
    """Each model run's events: in its own turn's interaction, under that turn's event."""
    turns = {(e["payload"]["arguments"]["who"], e["payload"]["arguments"]["n"]): e
             for e in of_type(recorded, "tool_call")}
    prompts = of_type(recorded, "prompt")
    assert len(turns) == len(prompts) == len(of_type(recorded, "response")) == expected
    events_by_id = by_id(recorded)
    for prompt in prompts:
        who, n = prompt["payload"]["messages"][0]["content"].split(":")
        turn = turns[(who, int(n))]
        assert prompt["parent_event_id"] == turn["event_id"]
        assert prompt["user_id"] == turn["user_id"] == who
        assert prompt["interaction_id"] == turn["interaction_id"]
    for response in of_type(recorded, "response"):
        prompt = events_by_id[response["parent_event_id"]]
        assert (response["interaction_id"], response["user_id"]) == (
            prompt["interaction_id"], prompt["user_id"])
        assert response["payload"]["status"] == "ok"


def test_run_started_in_one_thread_and_ended_in_another(local_gov: Governor,
                                                        events: Events) -> None:
    handler = PromptgovCallbackHandler()
    model = FakeListChatModel(responses=["abcdef"])
    holder: list[Iterator[Any]] = []

    def starter() -> None:
        with interaction(user_id="starter"):
            stream = model.stream("go", config=cfg(handler))
            next(stream)  # the run starts here, in this thread
            holder.append(stream)

    thread = threading.Thread(target=promptgov.bind_context(starter))  # with gov.use()
    thread.start()
    thread.join()
    with interaction(user_id="finisher") as mine:
        rest = list(holder.pop())  # ...and ends here
        assert promptgov.current_interaction() is mine
        assert promptgov.current_call().anchor_id is None
    assert "".join(str(c.content) for c in rest) == "bcdef"
    prompt, response = events()
    assert prompt["user_id"] == response["user_id"] == "starter"
    assert response["payload"]["output"] == "abcdef"


async def test_run_started_in_one_task_and_ended_in_another(local_gov: Governor,
                                                            events: Events) -> None:
    handler = PromptgovCallbackHandler()
    model = FakeListChatModel(responses=["xyz"])

    async def starter() -> Any:
        with interaction(user_id="starter"):
            stream = model.astream("go", config=cfg(handler))
            await stream.__anext__()
            return stream

    stream = await asyncio.create_task(starter())

    async def finisher() -> None:
        with interaction(user_id="finisher"):
            async for _ in stream:
                pass

    await asyncio.create_task(finisher())
    prompt, response = events()
    assert prompt["user_id"] == response["user_id"] == "starter"
    assert response["payload"]["status"] == "ok"


# --- errors -----------------------------------------------------------------------------------


def test_model_error_passes_through_and_is_recorded(local_gov: Governor,
                                                    events: Events) -> None:
    handler = PromptgovCallbackHandler()
    error = Boom("provider down")
    with pytest.raises(Boom) as caught:
        Broken(error=error).invoke("hi", config=cfg(handler))
    assert caught.value is error
    prompt, response = events()
    assert response["payload"]["status"] == "error"
    assert response["payload"]["error"] == {"type": "test_langchain.Boom",
                                            "message": "provider down"}
    assert response["parent_event_id"] == prompt["event_id"]


def test_stream_error_mid_way(local_gov: Governor, events: Events) -> None:
    handler = PromptgovCallbackHandler()
    model = FakeListChatModel(responses=["abcdef"], error_on_chunk_number=3)
    got = []
    with pytest.raises(Exception) as caught:
        for chunk in model.stream("hi", config=cfg(handler)):
            got.append(chunk.content)
    assert type(caught.value).__name__ == "FakeListChatModelError"
    response = of_type(events(), "response")[0]["payload"]
    assert (response["status"], response["chunks"]) == ("error", len(got))


def test_tool_and_retriever_errors(local_gov: Governor, events: Events) -> None:
    handler = PromptgovCallbackHandler()

    @lc_tool
    def explode(x: int) -> int:
        """Always fails."""
        raise Boom(f"bad {x}")

    @lc_tool
    def refuse(x: int) -> int:
        """Fails in a way the tool handles."""
        raise ToolException("not allowed")

    refuse.handle_tool_error = True

    with pytest.raises(Boom):
        explode.invoke({"x": 1}, config=cfg(handler))
    refusal = refuse.invoke({"name": "refuse", "args": {"x": 2}, "id": "call_9",
                             "type": "tool_call"}, config=cfg(handler))
    assert (refusal.content, refusal.status) == ("not allowed", "error")
    with pytest.raises(Boom):
        Shelf(docs=[], fail=True).invoke("q", config=cfg(handler))
    exploded, refused, retrieval = events()
    assert exploded["payload"]["status"] == "error"
    assert exploded["payload"]["error"]["message"] == "bad 1"
    assert exploded["payload"]["arguments"] == {"x": 1}
    assert (refused["payload"]["status"], refused["payload"]["result"],
            refused["payload"]["call_id"]) == ("error", "not allowed", "call_9")
    assert retrieval["event_type"] == "retrieval"
    assert retrieval["payload"]["status"] == "error"
    assert retrieval["payload"]["documents"] == []


def test_handler_faults_never_reach_the_run(local_gov: Governor, events: Events,
                                            monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    handler = PromptgovCallbackHandler()

    def broken(message: Any) -> Any:
        raise RuntimeError("converter bug")

    monkeypatch.setattr("promptgov.integrations.langchain._message", broken)
    with caplog.at_level(logging.WARNING):
        reply = ParrotFakeChatModel().invoke("still works", config=cfg(handler))
        ParrotFakeChatModel().invoke("again", config=cfg(handler))
    assert reply.content == "still works"
    assert local_gov.stats()["internal_errors"] >= 2
    assert "Error in PromptgovCallbackHandler" not in caplog.text  # nothing reached LangChain
    assert caplog.text.count("the LangChain handler failed") == 1  # logged once


def test_shut_down_governor_records_nothing_and_breaks_nothing(tmp_path: Any) -> None:
    gov = Governor(local_dir=tmp_path, register_atexit=False)
    gov.shutdown(5)
    handler = PromptgovCallbackHandler(governor=gov)
    assert ParrotFakeChatModel().invoke("hi", config=cfg(handler)).content == "hi"
    assert handler._runs == {}


# --- lineage inside a run, open runs ------------------------------------------------------------


def test_decorated_calls_inside_a_tool_adopt_its_run(local_gov: Governor,
                                                     events: Events) -> None:
    handler = PromptgovCallbackHandler()

    @promptgov.retrieval
    def fetch_order(order_id: str) -> list[str]:
        return [f"order {order_id}"]

    @lc_tool
    def lookup(order_id: str) -> str:
        """Look an order up."""
        with handler.lineage():
            return fetch_order(order_id)[0]

    with interaction(conversation_id="inside"):
        assert lookup.invoke({"order_id": "7"}, config=cfg(handler)) == "order 7"
        assert promptgov.current_call().anchor_id is None
    retrieval, tool_call = events()
    assert retrieval["parent_event_id"] == tool_call["event_id"]
    assert retrieval["interaction_id"] == tool_call["interaction_id"]
    with handler.lineage() as ctx:  # outside any run: nothing changes
        assert ctx is None


def test_runs_that_never_end_are_abandoned_past_the_limit(local_gov: Governor,
                                                         events: Events) -> None:
    handler = PromptgovCallbackHandler(max_open_runs=2)
    model = FakeListChatModel(responses=["abc"])
    streams = []
    for _ in range(3):
        stream = model.stream("hi", config=cfg(handler))
        next(stream)
        streams.append(stream)
    for stream in streams[1:]:
        list(stream)
    statuses = [e["payload"]["status"] for e in of_type(events(), "response")]
    assert sorted(statuses) == ["abandoned", "ok", "ok"]
    assert handler._runs == {}


def test_import_promptgov_does_not_import_frameworks() -> None:
    code = ("import sys, promptgov, promptgov.integrations, promptgov.integrations.asgi; "
            "bad = [m for m in ('langchain_core', 'fastapi', 'starlette') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
