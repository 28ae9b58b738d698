"""OpenTelemetry with instrumented clients: one GenAI span per model call, never two.

promptgov opens a ``chat <model>`` span for an instrumented call, unless the
call already has one: the current span is another instrumentation's (or a
decorated ``llm_call``'s) model-call span, or the client opens its own
(``anthropic`` with its tracing on). Then the events carry the ids of the span
that is current at the call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_server import FakeLLMServer, settled_events
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import promptgov
from promptgov import Governor

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

Events = Callable[[], list[dict[str, Any]]]
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    srv = FakeLLMServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def events(local_gov: Governor, tmp_path: Path) -> Events:
    return lambda: settled_events(local_gov, tmp_path)


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr("promptgov.telemetry.tracer",
                        lambda: tracer_provider.get_tracer("promptgov"))
    return tracer_provider, exporter


@pytest.fixture
def instrumented(local_gov: Governor) -> Iterator[None]:
    promptgov.instrument()
    yield
    promptgov.uninstrument()


def ids(span: Any) -> tuple[str, str]:
    ctx = span.get_span_context()
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def test_an_instrumented_call_opens_one_genai_span(
        instrumented: None, server: FakeLLMServer, events: Events,
        provider: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    tracer_provider, exporter = provider
    client = openai.OpenAI(api_key="k", base_url=f"{server.url}/v1", max_retries=0)
    with tracer_provider.get_tracer("app").start_as_current_span("request") as request:
        client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    spans = [s for s in exporter.get_finished_spans() if s.name != "request"]
    assert [s.name for s in spans] == ["chat gpt-test"]
    span = spans[0]
    assert span.parent is not None and span.parent.span_id == request.get_span_context().span_id
    assert span.attributes is not None
    assert span.attributes["gen_ai.provider.name"] == "openai"
    assert span.attributes["gen_ai.request.model"] == "gpt-test"
    assert span.attributes["gen_ai.response.model"] == "gpt-test-2025"
    assert span.attributes["gen_ai.usage.output_tokens"] == 3
    assert all((e["trace_id"], e["span_id"]) == ids(span) for e in events())


def test_a_current_genai_span_is_used_not_duplicated(
        instrumented: None, server: FakeLLMServer, events: Events,
        provider: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    tracer_provider, exporter = provider
    client = openai.OpenAI(api_key="k", base_url=f"{server.url}/v1", max_retries=0)
    other = tracer_provider.get_tracer("other-instrumentation")
    with other.start_as_current_span("chat gpt-test", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-test"}) as theirs:
        client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert [s.name for s in exporter.get_finished_spans()] == ["chat gpt-test"]
    assert all((e["trace_id"], e["span_id"]) == ids(theirs) for e in events())


def test_an_agent_span_is_a_parent_not_a_duplicate(
        instrumented: None, server: FakeLLMServer, events: Events,
        provider: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    tracer_provider, exporter = provider
    client = openai.OpenAI(api_key="k", base_url=f"{server.url}/v1", max_retries=0)
    agents = tracer_provider.get_tracer("agents")
    with agents.start_as_current_span("invoke_agent helper", attributes={
            "gen_ai.operation.name": "invoke_agent"}):
        client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == ["chat gpt-test", "invoke_agent helper"]


def test_a_decorated_llm_call_around_an_instrumented_client_is_one_span(
        instrumented: None, server: FakeLLMServer, events: Events,
        provider: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    _, exporter = provider
    client = openai.OpenAI(api_key="k", base_url=f"{server.url}/v1", max_retries=0)

    @promptgov.llm_call(provider="openai", model="gpt-test")
    def answer() -> Any:
        return client.chat.completions.create(model="gpt-test", messages=MESSAGES)

    answer()
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["chat gpt-test"]
    recorded = events()
    assert len(recorded) == 4
    assert {(e["trace_id"], e["span_id"]) for e in recorded} == {ids(spans[0])}


def test_an_anthropic_client_with_its_own_tracing_keeps_its_span(
        instrumented: None, server: FakeLLMServer, events: Events,
        provider: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    tracer_provider, exporter = provider
    client = anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0,
                                 open_telemetry={"tracer_provider": tracer_provider})
    with tracer_provider.get_tracer("app").start_as_current_span("request") as request:
        client.messages.create(model="claude-test", max_tokens=8, messages=MESSAGES)
    spans = [s for s in exporter.get_finished_spans() if s.name != "request"]
    assert len(spans) == 1 and spans[0].attributes is not None
    assert spans[0].attributes["gen_ai.operation.name"] == "chat"  # the client's span
    assert spans[0].instrumentation_scope is not None
    assert spans[0].instrumentation_scope.name != "promptgov"
    recorded = events()
    assert [e["event_type"] for e in recorded] == ["prompt", "response"]
    # the client's span starts inside the call: the events carry the enclosing span's ids
    assert all((e["trace_id"], e["span_id"]) == ids(request) for e in recorded)
    assert spans[0].context is not None
    assert f"{spans[0].context.trace_id:032x}" == recorded[0]["trace_id"]


def test_a_tool_span_carries_the_provider_call_id(
        local_gov: Governor, events: Events,
        provider: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    _, exporter = provider

    @promptgov.tool
    def get_weather(city: str, tool_call_id: str) -> str:
        promptgov.current_call().record_response(call_id=tool_call_id)
        return "sunny"

    get_weather("Paris", "call_1")
    (span,) = exporter.get_finished_spans()
    assert span.name == "execute_tool get_weather"
    assert span.attributes is not None and span.attributes["gen_ai.tool.call.id"] == "call_1"
    assert events()[0]["payload"]["call_id"] == "call_1"
