"""The shape recognisers (``promptgov.events.llm_shapes``) on plain dicts of every shape.

The same shapes as SDK objects are covered end to end by the other
``test_instrument_*`` modules; here the dict forms (what a ``.model_dump()``
or a raw HTTP client gives) and the edge cases.
"""

from __future__ import annotations

from typing import Any

from promptgov.events import llm_shapes
from promptgov.events.llm_shapes import aggregate_chunks, carries_output, extract_response


class NotGiven:  # the name SDKs give their "argument not given" placeholder
    pass


def chat_chunk(delta: dict[str, Any] | None, finish: str | None = None, index: int = 0,
               usage: Any = None) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": index, "delta": delta,
                                         "finish_reason": finish}]
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": choices,
            "usage": usage}


def test_request_parameters_skip_sdk_placeholders() -> None:
    found = llm_shapes.extract_request({
        "model": "gpt", "messages": ({"role": "user", "content": "hi"},), "temperature": 0,
        "max_tokens": NotGiven(), "top_p": None, "max_output_tokens": 5,
        "stop_sequences": ["x"], "stream": True})
    assert found == {"model": "gpt", "messages": [{"role": "user", "content": "hi"}],
                     "parameters": {"temperature": 0, "max_output_tokens": 5,
                                    "stop_sequences": ["x"]}}


def test_chat_completion_dict_with_tool_calls_refusal_and_legacy_function_call() -> None:
    fields = extract_response({
        "id": "c1", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "refusal": "no",
            "function_call": {"name": "old", "arguments": "{}"},
            "tool_calls": [{"id": "t1", "type": "function",
                            "function": {"name": "f", "arguments": "{\"a\": 1}"}},
                           {"id": "t2", "type": "custom",
                            "custom": {"name": "g", "input": "raw"}}]}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2}})
    assert fields == {
        "output": {"role": "assistant", "content": "", "refusal": "no", "tool_calls": [
            {"id": "t1", "type": "function", "name": "f", "arguments": "{\"a\": 1}"},
            {"id": "t2", "type": "custom", "name": "g", "arguments": "raw"},
            {"id": None, "type": "function_call", "name": "old", "arguments": "{}"}]},
        "finish_reasons": ["tool_calls"],
        "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
        "response_model": "m", "response_id": "c1"}


def test_legacy_text_completion_dict() -> None:
    fields = extract_response({"id": "x", "choices": [{"text": "hi", "finish_reason": "stop"}]})
    assert fields is not None and fields["output"] == "hi"


def test_responses_dict_with_refusal_and_built_in_tool_calls() -> None:
    fields = extract_response({
        "id": "r1", "object": "response", "model": "m", "status": "completed",
        "output": [
            {"type": "reasoning", "id": "rs1", "summary": []},
            {"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "A"}, {"type": "refusal", "refusal": "B"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "web_search_call", "id": "ws1", "action": {"query": "q"}}],
        "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}})
    assert fields is not None
    assert fields["output"] == {"role": "assistant", "content": "A", "refusal": "B",
                                "tool_calls": [
        {"id": "c1", "type": "function_call", "name": "f", "arguments": "{}"},
        {"id": "ws1", "type": "web_search_call", "name": None, "arguments": {"query": "q"}}]}
    assert fields["finish_reasons"] == ["completed"]
    assert fields["usage"] == {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}


def test_incomplete_response_gives_its_reason() -> None:
    fields = extract_response({"id": "r1", "object": "response", "status": "incomplete",
                               "incomplete_details": {"reason": "content_filter"},
                               "output": []})
    assert fields is not None and fields["finish_reasons"] == ["content_filter"]


def test_embeddings_dict_gives_a_summary_not_the_vectors() -> None:
    fields = extract_response({"object": "list", "model": "e",
                               "data": [{"embedding": [0.1] * 3}, {"embedding": [0.2] * 3}],
                               "usage": {"prompt_tokens": 5, "total_tokens": 5}})
    assert fields is not None
    assert fields["output"] == {"embeddings": 2, "dimensions": 3}
    assert fields["usage"] == {"input_tokens": 5, "output_tokens": None, "total_tokens": 5}


def test_anthropic_message_dict_keeps_tool_use_and_server_tool_use() -> None:
    fields = extract_response({
        "id": "m1", "type": "message", "role": "assistant", "model": "c",
        "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1},
        "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "A"},
                    {"type": "server_tool_use", "id": "s1", "name": "web_search",
                     "input": {"query": "q"}},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]})
    assert fields is not None
    assert fields["output"] == {"role": "assistant", "content": "A", "tool_calls": [
        {"id": "s1", "type": "server_tool_use", "name": "web_search",
         "arguments": {"query": "q"}},
        {"id": "t1", "type": "tool_use", "name": "f", "arguments": {"a": 1}}]}


def test_chat_stream_dicts_with_tool_calls_and_several_choices() -> None:
    chunks = [
        chat_chunk({"role": "assistant", "content": ""}, index=0),
        chat_chunk({"role": "assistant", "content": ""}, index=1),
        chat_chunk({"content": "A"}, index=0),
        chat_chunk({"content": "B"}, index=1),
        chat_chunk({"tool_calls": [{"index": 0, "id": "t1", "type": "function",
                                    "function": {"name": "f", "arguments": ""}}]}, index=1),
        chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\""}}]}, index=1),
        chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}, index=1),
        chat_chunk({}, "stop", index=0),
        chat_chunk({}, "tool_calls", index=1),
        chat_chunk(None, usage={"prompt_tokens": 2, "completion_tokens": 3}),
    ]
    fields = aggregate_chunks(chunks)
    assert fields["output"] == [
        {"role": "assistant", "content": "A"},
        {"role": "assistant", "content": "B", "tool_calls": [
            {"id": "t1", "type": "function", "name": "f", "arguments": "{\"a\": 1}"}]}]
    assert fields["finish_reasons"] == ["stop", "tool_calls"]
    assert fields["usage"] == {"input_tokens": 2, "output_tokens": 3, "total_tokens": 5}


def test_chat_helper_chunk_events_are_unwrapped() -> None:
    events = [{"type": "chunk", "chunk": chat_chunk({"content": "A"}), "snapshot": {}},
              {"type": "content.delta", "delta": "A", "snapshot": "A"},
              {"type": "chunk", "chunk": chat_chunk({}, "stop"), "snapshot": {}}]
    fields = aggregate_chunks(events)
    assert fields["output"] == {"role": "assistant", "content": "A"}
    assert fields["finish_reasons"] == ["stop"]


def test_legacy_completion_stream_dicts_join_to_text() -> None:
    fields = aggregate_chunks([{"id": "x", "choices": [{"text": "A", "finish_reason": None}]},
                               {"id": "x", "choices": [{"text": "B", "finish_reason": "stop"}]}])
    assert fields["output"] == "AB" and fields["finish_reasons"] == ["stop"]


def test_anthropic_stream_dicts_and_the_helpers_derived_events() -> None:
    events = [
        {"type": "message_start", "message": {"id": "m1", "model": "c", "content": [],
                                              "usage": {"input_tokens": 7, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text",
                                                                      "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta",
                                                              "text": "Hi"}},
        {"type": "text", "text": "Hi", "snapshot": "Hi"},  # the helper's: not counted twice
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "t1", "name": "f", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta",
                                                              "partial_json": "{\"a\": "}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta",
                                                              "partial_json": "1}"}},
        {"type": "input_json", "partial_json": "1}", "snapshot": {"a": 1}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
         "usage": {"output_tokens": 12}},
        {"type": "message_stop"},
    ]
    fields = aggregate_chunks(events)
    assert fields == {
        "output": {"role": "assistant", "content": "Hi", "tool_calls": [
            {"id": "t1", "type": "tool_use", "name": "f", "arguments": {"a": 1}}]},
        "finish_reasons": ["tool_use"],
        "usage": {"input_tokens": 7, "output_tokens": 12, "total_tokens": 19},
        "response_model": "c", "response_id": "m1"}


def test_anthropic_stream_cut_inside_a_tool_input_keeps_the_partial_json() -> None:
    fields = aggregate_chunks([
        {"type": "message_start", "message": {"id": "m1", "model": "c"}},
        {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "t1", "name": "f", "input": {}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta",
                                                              "partial_json": "{\"a\": "}}])
    assert fields["output"]["tool_calls"][0]["arguments"] == "{\"a\": "
    assert fields["finish_reasons"] is None


def test_responses_stream_dicts_completed_and_cut_short() -> None:
    created = {"type": "response.created", "response": {"id": "r1", "model": "m",
                                                        "status": "in_progress"}}
    deltas = [
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"type": "message", "id": "msg", "content": []}},
        {"type": "response.output_text.delta", "output_index": 0, "delta": "Hel"},
        {"type": "response.output_text.delta", "output_index": 0, "delta": "lo"},
        {"type": "response.output_item.added", "output_index": 1,
         "item": {"type": "function_call", "id": "fc", "call_id": "c1", "name": "f",
                  "arguments": ""}},
        {"type": "response.function_call_arguments.delta", "output_index": 1, "delta": "{}"},
    ]
    cut = aggregate_chunks([created, *deltas])
    assert cut == {"output": {"role": "assistant", "content": "Hello", "tool_calls": [
        {"id": "c1", "type": "function_call", "name": "f", "arguments": "{}"}]},
        "finish_reasons": None, "usage": None, "response_model": "m", "response_id": "r1"}
    completed = {"type": "response.completed", "response": {
        "id": "r1", "object": "response", "model": "m", "status": "completed",
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "Hello"}]}],
        "usage": {"input_tokens": 1, "output_tokens": 2}}}
    whole = aggregate_chunks([created, *deltas, completed])
    assert whole["output"] == {"role": "assistant", "content": "Hello"}
    assert whole["finish_reasons"] == ["completed"]
    assert whole["usage"] == {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}


def test_unrecognised_chunks_are_kept_as_a_list() -> None:
    assert aggregate_chunks([{"x": 1}, 2]) == {"output": [{"x": 1}, 2]}
    assert aggregate_chunks(["a", "b"]) == {"output": "ab"}


def test_what_counts_as_a_first_token() -> None:
    assert not carries_output("")
    assert carries_output("a")
    assert not carries_output(chat_chunk({"role": "assistant", "content": ""}))
    assert carries_output(chat_chunk({"content": "a"}))
    assert carries_output(chat_chunk({"tool_calls": [{"index": 0}]}))
    assert not carries_output(chat_chunk(None, usage={"prompt_tokens": 1}))
    assert carries_output({"choices": [{"text": "a"}]})
    assert not carries_output({"type": "message_start", "message": {}})
    assert not carries_output({"type": "content_block_start",
                               "content_block": {"type": "text", "text": ""}})
    assert carries_output({"type": "content_block_start",
                           "content_block": {"type": "tool_use", "name": "f"}})
    assert carries_output({"type": "content_block_delta", "delta": {"text": "a"}})
    assert not carries_output({"type": "ping"})
    assert not carries_output({"type": "response.created", "response": {}})
    assert carries_output({"type": "response.output_text.delta", "delta": "a"})
    assert carries_output({"type": "chunk", "chunk": chat_chunk({"content": "a"})})
    assert carries_output({"anything": "else"})  # an unknown shape counts
