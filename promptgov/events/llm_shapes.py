"""Recognise common LLM request and response shapes without importing their SDKs.

OpenAI chat completions (objects or dicts), their streamed chunks, legacy text
completions, and Anthropic-style messages. Everything here is duck-typed and
tolerant: an unrecognised value simply yields no fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

REQUEST_PARAMETERS = (
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "top_p",
    "top_k",
    "frequency_penalty",
    "presence_penalty",
    "stop",
    "seed",
    "n",
    "response_format",
    "tool_choice",
)


def field(obj: Any, name: str) -> Any:
    """``obj[name]`` for mappings, ``obj.name`` otherwise, ``None`` when absent."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def extract_request(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """From call arguments: ``messages``, ``model`` and request parameters, when present."""
    found: dict[str, Any] = {}
    messages = arguments.get("messages")
    if isinstance(messages, list):
        found["messages"] = messages
    model = arguments.get("model")
    if isinstance(model, str):
        found["model"] = model
    params = {n: arguments[n] for n in REQUEST_PARAMETERS if arguments.get(n) is not None}
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
    if not any(isinstance(v, int) for v in values.values()):
        return None
    return {k: v if isinstance(v, int) else None for k, v in values.items()}


def extract_response(obj: Any) -> dict[str, Any] | None:
    """Fields of a chat completion / text completion / Anthropic message, or ``None``."""
    if obj is None or isinstance(obj, (str, bytes, int, float, bool, list, tuple)):
        return None
    choices = field(obj, "choices")
    if isinstance(choices, list) and choices:
        outputs: list[Any] = []
        reasons: list[str] = []
        for choice in choices:
            message = field(choice, "message")
            if message is not None:
                outputs.append(message)
            else:
                outputs.append(field(choice, "text"))
            reason = field(choice, "finish_reason")
            if isinstance(reason, str):
                reasons.append(reason)
        return _response_fields(obj, outputs[0] if len(outputs) == 1 else outputs, reasons)
    content = field(obj, "content")
    stop_reason = field(obj, "stop_reason")
    if isinstance(content, list) and (stop_reason is not None or field(obj, "role") is not None):
        text = "".join(
            str(field(block, "text")) for block in content if field(block, "type") == "text"
        )
        reasons = [stop_reason] if isinstance(stop_reason, str) else []
        return _response_fields(obj, {"role": "assistant", "content": text}, reasons)
    return None


def _response_fields(obj: Any, output: Any, reasons: list[str]) -> dict[str, Any]:
    model = field(obj, "model")
    response_id = field(obj, "id")
    return {
        "output": output,
        "finish_reasons": reasons or None,
        "usage": normalize_usage(field(obj, "usage")),
        "response_model": model if isinstance(model, str) else None,
        "response_id": response_id if isinstance(response_id, str) else None,
    }


def aggregate_chunks(chunks: Iterable[Any]) -> dict[str, Any]:
    """Join streamed chunks: text pieces, OpenAI ``chat.completion.chunk``s, or a plain list."""
    items = list(chunks)
    if all(isinstance(c, str) for c in items):
        return {"output": "".join(items)}
    if all(isinstance(c, bytes) for c in items):
        return {"output": b"".join(items)}
    text: list[str] = []
    reasons: list[str] = []
    usage: Any = None
    model: Any = None
    response_id: Any = None
    recognised = False
    for chunk in items:
        choices = field(chunk, "choices")
        if not isinstance(choices, list):
            continue
        recognised = True
        for choice in choices:
            delta = field(choice, "delta")
            piece = field(delta, "content") if delta is not None else field(choice, "text")
            if isinstance(piece, str):
                text.append(piece)
            reason = field(choice, "finish_reason")
            if isinstance(reason, str):
                reasons.append(reason)
        usage = field(chunk, "usage") or usage
        model = field(chunk, "model") or model
        response_id = field(chunk, "id") or response_id
    if not recognised:
        return {"output": items}
    return {
        "output": {"role": "assistant", "content": "".join(text)},
        "finish_reasons": reasons or None,
        "usage": normalize_usage(usage),
        "response_model": model if isinstance(model, str) else None,
        "response_id": response_id if isinstance(response_id, str) else None,
    }


def is_stream_object(obj: Any) -> bool:
    """An SDK stream object (OpenAI ``Stream``/``AsyncStream`` and look-alikes)."""
    cls = type(obj)
    return cls.__name__ in {"Stream", "AsyncStream"} and (
        hasattr(obj, "__iter__") or hasattr(obj, "__aiter__")
    )
