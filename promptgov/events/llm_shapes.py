"""Recognise LLM request and response shapes without importing their SDKs.

Every recogniser is here, duck-typed over SDK objects and plain dicts alike,
and tolerant: an unrecognised value simply yields no fields. The table of what
is read from which shape is in ``docs/schema.md`` ("LLM shapes").

Responses (:func:`extract_response`):

- OpenAI chat completions (``choices[].message``) and legacy text completions
  (``choices[].text``);
- OpenAI Responses API objects (``object == "response"``, ``output[]`` items);
- OpenAI embeddings (``object == "list"`` of ``embedding`` items): a summary,
  never the vectors;
- Anthropic messages (``content[]`` blocks with ``stop_reason`` / ``role``).

Streams (:func:`aggregate_chunks`): text or bytes pieces, OpenAI
``chat.completion.chunk``s (and the chat helper's ``chunk`` events), OpenAI
Responses stream events, Anthropic raw stream events (the helper's derived
``text`` / ``input_json`` events are skipped: the raw events carry the same).

Every recognised shape gives the same normalised assistant message::

    {"role": "assistant", "content": "<text>",
     "tool_calls": [{"id", "type", "name", "arguments"}],   # only when there are any
     "refusal": "<text>"}                                    # only when there is one

with, besides it, ``finish_reasons``, ``usage``, ``response_model`` and
``response_id``. A stream gives what its non-streamed counterpart gives.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

REQUEST_PARAMETERS = (
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "top_p",
    "top_k",
    "frequency_penalty",
    "presence_penalty",
    "stop",
    "stop_sequences",
    "seed",
    "n",
    "response_format",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
    "reasoning",
    "thinking",
    "logprobs",
    "top_logprobs",
    "dimensions",
    "encoding_format",
)

# Placeholders SDKs use for "argument not given" (openai / anthropic ``NotGiven``, ``Omit``).
_UNSET_TYPES = frozenset({"NotGiven", "Omit"})

_ANTHROPIC_EVENTS = frozenset({
    "message_start", "content_block_start", "content_block_delta", "content_block_stop",
    "message_delta", "message_stop",
})
_RESPONSES_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def field(obj: Any, name: str) -> Any:
    """``obj[name]`` for mappings, ``obj.name`` otherwise, ``None`` when absent."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def is_unset(value: Any) -> bool:
    """``None`` or an SDK's "not given" placeholder."""
    return value is None or type(value).__name__ in _UNSET_TYPES


def extract_request(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """From call arguments: ``messages``, ``model`` and request parameters, when present."""
    found: dict[str, Any] = {}
    messages = arguments.get("messages")
    if isinstance(messages, (list, tuple)):
        found["messages"] = list(messages)
    model = arguments.get("model")
    if isinstance(model, str):
        found["model"] = model
    params = {n: arguments[n] for n in REQUEST_PARAMETERS if not is_unset(arguments.get(n))}
    if params:
        found["parameters"] = params
    return found


def normalize_usage(raw: Any) -> dict[str, int | None] | None:
    """Token usage as ``input_tokens``/``output_tokens``/``total_tokens`` (OpenAI names too)."""
    if raw is None:
        return None
    input_tokens = field(raw, "input_tokens")
    if input_tokens is None:
        input_tokens = field(raw, "prompt_tokens")
    output_tokens = field(raw, "output_tokens")
    if output_tokens is None:
        output_tokens = field(raw, "completion_tokens")
    total = field(raw, "total_tokens")
    if total is None and isinstance(input_tokens, int) and isinstance(output_tokens, int):
        total = input_tokens + output_tokens
    values = {"input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": total}
    if not any(_is_int(v) for v in values.values()):
        return None
    return {k: v if _is_int(v) else None for k, v in values.items()}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- whole responses ---------------------------------------------------------------------


def extract_response(obj: Any) -> dict[str, Any] | None:
    """The fields of a recognised response object or dict, or ``None``."""
    if obj is None or isinstance(obj, (str, bytes, int, float, bool, list, tuple)):
        return None
    choices = field(obj, "choices")
    if isinstance(choices, list) and choices:
        return _chat_completion(obj, choices)
    kind = field(obj, "object")
    output = field(obj, "output")
    if kind == "response" or (isinstance(output, list) and isinstance(field(obj, "status"), str)
                              and field(obj, "id") is not None):
        return _responses_object(obj)
    data = field(obj, "data")
    if kind == "list" and isinstance(data, list) and data and \
            field(data[0], "embedding") is not None:
        return _embeddings(obj, data)
    content = field(obj, "content")
    stop_reason = field(obj, "stop_reason")
    if isinstance(content, list) and (stop_reason is not None or field(obj, "role") is not None):
        return _anthropic_message(obj, content, stop_reason)
    return None


def _chat_completion(obj: Any, choices: list[Any]) -> dict[str, Any]:
    outputs: list[Any] = []
    reasons: list[str] = []
    for choice in choices:
        message = field(choice, "message")
        outputs.append(chat_message(message) if message is not None else field(choice, "text"))
        reason = field(choice, "finish_reason")
        if isinstance(reason, str):
            reasons.append(reason)
    return _response_fields(obj, outputs[0] if len(outputs) == 1 else outputs, reasons,
                            field(obj, "usage"))


def chat_message(message: Any) -> dict[str, Any]:
    """An OpenAI chat message (object or dict) as the normalised assistant message."""
    content = field(message, "content")
    calls = [_openai_tool_call(call) for call in _as_list(field(message, "tool_calls"))]
    legacy = field(message, "function_call")
    if legacy is not None:
        calls.append({"id": None, "type": "function_call", "name": field(legacy, "name"),
                      "arguments": field(legacy, "arguments")})
    role = field(message, "role")
    return _message(role if isinstance(role, str) else "assistant",
                    content if content is not None else "", calls, field(message, "refusal"))


def _openai_tool_call(call: Any) -> dict[str, Any]:
    kind = field(call, "type") or "function"
    inner = field(call, "function") or field(call, "custom")
    arguments = field(inner, "arguments")
    if arguments is None:
        arguments = field(inner, "input")
    return {"id": field(call, "id"), "type": kind, "name": field(inner, "name"),
            "arguments": arguments}


def _message(role: str, content: Any, tool_calls: list[dict[str, Any]],
             refusal: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"role": role, "content": content}
    if tool_calls:
        out["tool_calls"] = tool_calls
    if isinstance(refusal, str) and refusal:
        out["refusal"] = refusal
    return out


def _responses_object(obj: Any) -> dict[str, Any]:
    text: list[str] = []
    refusal: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in _as_list(field(obj, "output")):
        _responses_item(item, text, refusal, calls)
    message = _message("assistant", "".join(text), calls, "".join(refusal))
    return _response_fields(obj, message, _responses_reasons(obj), field(obj, "usage"))


def _responses_item(item: Any, text: list[str], refusal: list[str],
                    calls: list[dict[str, Any]]) -> None:
    kind = field(item, "type")
    if kind == "message":
        for part in _as_list(field(item, "content")):
            part_type = field(part, "type")
            if part_type == "output_text":
                piece = field(part, "text")
                if isinstance(piece, str):
                    text.append(piece)
            elif part_type == "refusal":
                piece = field(part, "refusal")
                if isinstance(piece, str):
                    refusal.append(piece)
    elif isinstance(kind, str) and kind.endswith("_call"):
        calls.append(_responses_call(item, kind))


def _responses_call(item: Any, kind: str) -> dict[str, Any]:
    """A ``function_call``, ``custom_tool_call`` or built-in tool call output item."""
    arguments = field(item, "arguments")
    if arguments is None:
        arguments = field(item, "input")
    if arguments is None:
        arguments = field(item, "action")
    call_id = field(item, "call_id")
    return {"id": call_id if call_id is not None else field(item, "id"), "type": kind,
            "name": field(item, "name"), "arguments": arguments}


def _responses_reasons(obj: Any) -> list[str]:
    """``incomplete_details.reason`` for an incomplete response, else its ``status``."""
    status = field(obj, "status")
    reason = field(field(obj, "incomplete_details"), "reason")
    if status == "incomplete" and isinstance(reason, str):
        return [reason]
    return [status] if isinstance(status, str) else []


def _embeddings(obj: Any, data: list[Any]) -> dict[str, Any]:
    first = field(data[0], "embedding")
    dimensions = len(first) if isinstance(first, (list, tuple)) else None
    return _response_fields(obj, {"embeddings": len(data), "dimensions": dimensions}, [],
                            field(obj, "usage"))


def _anthropic_message(obj: Any, content: list[Any], stop_reason: Any) -> dict[str, Any]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = field(block, "type")
        if kind == "text":
            piece = field(block, "text")
            if isinstance(piece, str):
                text.append(piece)
        elif isinstance(kind, str) and kind.endswith("tool_use"):
            calls.append({"id": field(block, "id"), "type": kind, "name": field(block, "name"),
                          "arguments": field(block, "input")})
    reasons = [stop_reason] if isinstance(stop_reason, str) else []
    return _response_fields(obj, _message("assistant", "".join(text), calls), reasons,
                            field(obj, "usage"))


def _response_fields(obj: Any, output: Any, reasons: list[str], usage: Any) -> dict[str, Any]:
    model = field(obj, "model")
    response_id = field(obj, "id")
    return {
        "output": output,
        "finish_reasons": reasons or None,
        "usage": normalize_usage(usage),
        "response_model": model if isinstance(model, str) else None,
        "response_id": response_id if isinstance(response_id, str) else None,
    }


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    return []


# --- streams -----------------------------------------------------------------------------


def stream_family(chunk: Any) -> str | None:
    """Which stream a chunk belongs to: ``chat``, ``anthropic``, ``responses`` or ``None``."""
    kind = field(chunk, "type")
    if isinstance(kind, str):
        if kind in _ANTHROPIC_EVENTS:
            return "anthropic"
        if kind.startswith("response."):
            return "responses"
        if kind == "chunk" and field(chunk, "chunk") is not None:
            return "chat"
    if isinstance(field(chunk, "choices"), list):
        return "chat"
    return None


def aggregate_chunks(chunks: Iterable[Any]) -> dict[str, Any]:
    """Join streamed chunks: text pieces, or the SDK stream events of one recognised family."""
    items = list(chunks)
    if all(isinstance(c, str) for c in items):
        return {"output": "".join(items)}
    if all(isinstance(c, bytes) for c in items):
        return {"output": b"".join(items)}
    family = None
    for chunk in items:
        family = stream_family(chunk)
        if family is not None:
            break
    if family == "chat":
        return _aggregate_chat(items)
    if family == "anthropic":
        return _aggregate_anthropic(items)
    if family == "responses":
        return _aggregate_responses(items)
    return {"output": items}


class _ChoiceState:
    __slots__ = ("calls", "legacy", "reason", "refusal", "role", "text")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.refusal: list[str] = []
        self.calls: dict[Any, dict[str, Any]] = {}
        self.reason: str | None = None
        self.role: str | None = None
        self.legacy = True


def _aggregate_chat(items: list[Any]) -> dict[str, Any]:
    choices: dict[Any, _ChoiceState] = {}
    usage: Any = None
    model: Any = None
    response_id: Any = None
    for chunk in items:
        if field(chunk, "type") == "chunk":  # the chat helper's event around a raw chunk
            chunk = field(chunk, "chunk")
        raw_choices = field(chunk, "choices")
        if not isinstance(raw_choices, list):
            continue
        for position, choice in enumerate(raw_choices):
            index = field(choice, "index")
            state = choices.setdefault(position if index is None else index, _ChoiceState())
            delta = field(choice, "delta")
            if delta is None:
                piece = field(choice, "text")
                if isinstance(piece, str):
                    state.text.append(piece)
            else:
                state.legacy = False
                _chat_delta(state, delta)
            reason = field(choice, "finish_reason")
            if isinstance(reason, str):
                state.reason = reason
        usage = field(chunk, "usage") or usage
        model = model or field(chunk, "model")
        response_id = response_id or field(chunk, "id")
    outputs: list[Any] = []
    reasons: list[str] = []
    for _, state in sorted(choices.items(), key=lambda kv: _sort_key(kv[0])):
        if state.legacy:
            outputs.append("".join(state.text))
        else:
            calls = [_joined_call(call) for _, call in
                     sorted(state.calls.items(), key=lambda kv: _sort_key(kv[0]))]
            outputs.append(_message(state.role or "assistant", "".join(state.text), calls,
                                    "".join(state.refusal)))
        if state.reason is not None:
            reasons.append(state.reason)
    if not outputs:
        output: Any = _message("assistant", "", [])
    else:
        output = outputs[0] if len(outputs) == 1 else outputs
    return {
        "output": output,
        "finish_reasons": reasons or None,
        "usage": normalize_usage(usage),
        "response_model": model if isinstance(model, str) else None,
        "response_id": response_id if isinstance(response_id, str) else None,
    }


def _chat_delta(state: _ChoiceState, delta: Any) -> None:
    role = field(delta, "role")
    if isinstance(role, str):
        state.role = role
    piece = field(delta, "content")
    if isinstance(piece, str):
        state.text.append(piece)
    refusal = field(delta, "refusal")
    if isinstance(refusal, str):
        state.refusal.append(refusal)
    for position, call in enumerate(_as_list(field(delta, "tool_calls"))):
        index = field(call, "index")
        entry = state.calls.setdefault(position if index is None else index,
                                       {"id": None, "type": None, "name": None, "arguments": []})
        for key in ("id", "type"):
            value = field(call, key)
            if value is not None:
                entry[key] = value
        function = field(call, "function")
        name = field(function, "name")
        if isinstance(name, str) and name:
            entry["name"] = name
        arguments = field(function, "arguments")
        if isinstance(arguments, str):
            entry["arguments"].append(arguments)
    legacy = field(delta, "function_call")
    if legacy is not None:
        entry = state.calls.setdefault("function_call", {"id": None, "type": "function_call",
                                                         "name": None, "arguments": []})
        name = field(legacy, "name")
        if isinstance(name, str) and name:
            entry["name"] = name
        arguments = field(legacy, "arguments")
        if isinstance(arguments, str):
            entry["arguments"].append(arguments)


def _joined_call(call: dict[str, Any]) -> dict[str, Any]:
    return {"id": call["id"], "type": call["type"] or "function", "name": call["name"],
            "arguments": "".join(call["arguments"])}


def _sort_key(index: Any) -> tuple[int, Any]:
    return (0, index) if isinstance(index, int) else (1, str(index))


def _aggregate_anthropic(items: list[Any]) -> dict[str, Any]:
    blocks: dict[Any, dict[str, Any]] = {}
    usage: dict[str, Any] = {}
    model: Any = None
    response_id: Any = None
    stop_reason: Any = None
    for event in items:
        kind = field(event, "type")
        if kind == "message_start":
            message = field(event, "message")
            model = field(message, "model")
            response_id = field(message, "id")
            _merge_usage(usage, field(message, "usage"))
        elif kind == "content_block_start":
            block = field(event, "content_block")
            blocks[field(event, "index")] = {
                "type": field(block, "type"), "id": field(block, "id"),
                "name": field(block, "name"), "input": field(block, "input"),
                "text": [field(block, "text")] if isinstance(field(block, "text"), str) else [],
                "json": []}
        elif kind == "content_block_delta":
            entry = blocks.setdefault(field(event, "index"), {
                "type": "text", "id": None, "name": None, "input": None, "text": [], "json": []})
            delta = field(event, "delta")
            delta_type = field(delta, "type")
            if delta_type == "text_delta":
                piece = field(delta, "text")
                if isinstance(piece, str):
                    entry["text"].append(piece)
            elif delta_type == "input_json_delta":
                piece = field(delta, "partial_json")
                if isinstance(piece, str):
                    entry["json"].append(piece)
        elif kind == "message_delta":
            reason = field(field(event, "delta"), "stop_reason")
            if isinstance(reason, str):
                stop_reason = reason
            _merge_usage(usage, field(event, "usage"))
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for _, block in sorted(blocks.items(), key=lambda kv: _sort_key(kv[0])):
        kind = block["type"]
        if kind == "text":
            text.extend(block["text"])
        elif isinstance(kind, str) and kind.endswith("tool_use"):
            arguments = block["input"]
            if block["json"]:
                joined = "".join(block["json"])
                try:
                    arguments = json.loads(joined)
                except ValueError:
                    arguments = joined
            calls.append({"id": block["id"], "type": kind, "name": block["name"],
                          "arguments": arguments})
    return {
        "output": _message("assistant", "".join(text), calls),
        "finish_reasons": [stop_reason] if stop_reason is not None else None,
        "usage": normalize_usage(usage or None),
        "response_model": model if isinstance(model, str) else None,
        "response_id": response_id if isinstance(response_id, str) else None,
    }


def _merge_usage(into: dict[str, Any], usage: Any) -> None:
    for key in ("input_tokens", "output_tokens"):
        value = field(usage, key)
        if _is_int(value):
            into[key] = value


def _aggregate_responses(items: list[Any]) -> dict[str, Any]:
    started: Any = None
    text: list[str] = []
    refusal: list[str] = []
    done: dict[Any, Any] = {}
    added: dict[Any, Any] = {}
    arguments: dict[Any, list[str]] = {}
    for event in items:
        kind = field(event, "type")
        if kind in _RESPONSES_TERMINAL and field(event, "response") is not None:
            return _responses_object(field(event, "response"))
        if kind in ("response.created", "response.in_progress"):
            started = field(event, "response") or started
        elif kind == "response.output_text.delta":
            piece = field(event, "delta")
            if isinstance(piece, str):
                text.append(piece)
        elif kind == "response.refusal.delta":
            piece = field(event, "delta")
            if isinstance(piece, str):
                refusal.append(piece)
        elif kind == "response.output_item.added":
            added[field(event, "output_index")] = field(event, "item")
        elif kind == "response.output_item.done":
            done[field(event, "output_index")] = field(event, "item")
        elif kind == "response.function_call_arguments.delta":
            piece = field(event, "delta")
            if isinstance(piece, str):
                arguments.setdefault(field(event, "output_index"), []).append(piece)
    # The stream ended before its last event (closed early, failed): what came so far.
    calls: list[dict[str, Any]] = []
    for index in sorted({*added, *done}, key=_sort_key):
        item = done.get(index) or added.get(index)
        kind = field(item, "type")
        if isinstance(kind, str) and kind.endswith("_call"):
            call = _responses_call(item, kind)
            if index not in done and index in arguments:
                call["arguments"] = "".join(arguments[index])
            calls.append(call)
    model = field(started, "model")
    response_id = field(started, "id")
    return {
        "output": _message("assistant", "".join(text), calls, "".join(refusal)),
        "finish_reasons": None,
        "usage": normalize_usage(field(started, "usage")),
        "response_model": model if isinstance(model, str) else None,
        "response_id": response_id if isinstance(response_id, str) else None,
    }


def carries_output(chunk: Any) -> bool:
    """Whether a streamed chunk carries generated output (for time to first token).

    Text, a content or tool-call delta, a refusal: yes; role-only chunks, start,
    stop, usage and ping events: no. A chunk of an unknown shape counts as output.
    """
    if isinstance(chunk, (str, bytes)):
        return bool(chunk)
    kind = field(chunk, "type")
    if isinstance(kind, str):
        if kind == "content_block_delta":
            return True
        if kind == "content_block_start":
            return bool(field(field(chunk, "content_block"), "type") != "text")
        if kind in _ANTHROPIC_EVENTS or kind == "ping":
            return False
        if kind.startswith("response."):
            return kind.endswith(".delta")
        if kind == "chunk":
            chunk = field(chunk, "chunk")
    choices = field(chunk, "choices")
    if not isinstance(choices, list):
        return bool(kind != "error")
    for choice in choices:
        delta = field(choice, "delta")
        if delta is None:
            if field(choice, "text"):
                return True
            continue
        if field(delta, "content") or field(delta, "tool_calls") or field(delta, "refusal") \
                or field(delta, "function_call") or field(delta, "audio"):
            return True
    return False


def is_stream_object(obj: Any) -> bool:
    """An SDK stream object (OpenAI / Anthropic ``Stream``/``AsyncStream`` and look-alikes)."""
    cls = type(obj)
    return cls.__name__ in {"Stream", "AsyncStream"} and (
        hasattr(obj, "__iter__") or hasattr(obj, "__aiter__")
    )
