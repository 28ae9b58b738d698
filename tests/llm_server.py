"""A local fake of the OpenAI and Anthropic HTTP APIs, for tests with the real client libraries.

``FakeLLMServer().start()`` listens on ``127.0.0.1`` (a free port) in a background
thread and speaks the wire formats the ``openai`` and ``anthropic`` packages expect:

- ``POST /v1/chat/completions``: a ``chat.completion`` JSON body, or SSE
  ``chat.completion.chunk`` events ending with ``data: [DONE]`` when ``stream`` is true
  (a usage chunk when ``stream_options.include_usage``);
- ``POST /v1/completions``: legacy text completions, JSON or SSE;
- ``POST /v1/responses``: a ``response`` object, or the Responses SSE events
  (``response.created`` ... ``response.completed``);
- ``POST /v1/embeddings``: floats, or base64 float32 (the client's default);
- ``POST /v1/messages``: an Anthropic ``message``, or its SSE events
  (``message_start`` ... ``message_stop``, with ``ping``).

What the server answers is chosen by the request's ``model`` name, so concurrent
requests need no shared state:

- contains ``tools``: the assistant calls the ``get_weather`` tool (OpenAI chat:
  two tool calls; Responses: a ``function_call`` item; Anthropic: a text block
  then a ``tool_use`` block);
- ``status-429`` / ``status-500``: that HTTP status with the provider's error body;
- ``stall``: waits ``stall_seconds`` before answering (client timeouts);
- ``stall-mid``: streams the first events, then waits (timeouts while reading);
- ``length``: the answer is cut at the token limit (``length`` / ``max_tokens`` /
  an ``incomplete`` response);
- ``n2`` (chat): two choices.

Every request is kept in ``requests`` as ``(path, body)``. ``settled_events``
reads what a governor wrote to its local sink once everything it emitted is
delivered.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEXT = ["Hel", "lo", " there"]
TOOL_ARGS = ['{"city"', ': "Pa', 'ris"}']
USAGE_IN, USAGE_OUT = 9, 3


class FakeLLMServer:
    """The fake API server; ``url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, stall_seconds: float = 5.0) -> None:
        self.stall_seconds = stall_seconds
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="fake-llm-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def stall(self) -> None:
        """Wait ``stall_seconds`` (cut short when the server stops)."""
        self._stop.wait(self.stall_seconds)

    # --- answers ------------------------------------------------------------------

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, Any, bool]:
        """``(status, JSON body or SSE event iterator, is_stream)`` for one request."""
        model = str(body.get("model") or "")
        route = path.split("?")[0]
        if "status-429" in model or "status-500" in model:
            status = 429 if "429" in model else 500
            if route == "/v1/messages":
                kind = "rate_limit_error" if status == 429 else "api_error"
                return status, {"type": "error", "error": {"type": kind, "message": "busy"}}, False
            return status, {"error": {"message": "busy", "type": "server_error",
                                      "code": str(status)}}, False
        if "stall" in model and "stall-mid" not in model:
            self.stall()
        stream = body.get("stream") is True
        if route == "/v1/chat/completions":
            return 200, (self._chat_stream(body) if stream else _chat(body)), stream
        if route == "/v1/completions":
            return 200, (self._completion_stream(body) if stream else _completion(body)), stream
        if route == "/v1/responses":
            return 200, (self._responses_stream(body) if stream else _response(body)), stream
        if route == "/v1/embeddings":
            return 200, _embeddings(body), False
        if route == "/v1/messages":
            return 200, (self._messages_stream(body) if stream else _message(body)), stream
        return 404, {"error": {"message": f"no route {route}", "type": "not_found"}}, False

    def _mid_stall(self, model: str, i: int) -> None:
        if "stall-mid" in model and i == 1:
            self.stall()

    def _chat_stream(self, body: dict[str, Any]) -> Iterator[str]:
        model = str(body["model"])
        tools = "tools" in model
        choices = 2 if "n2" in model else 1

        def chunk(delta: dict[str, Any] | None, finish: str | None = None, index: int = 0,
                  usage: Any = None) -> str:
            choice = [] if delta is None else [
                {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]
            return _data({"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1,
                          "model": f"{model}-2025", "choices": choice, "usage": usage})

        for index in range(choices):
            yield chunk({"role": "assistant", "content": ""}, index=index)
        for i, piece in enumerate(TEXT):
            self._mid_stall(model, i)
            for index in range(choices):
                yield chunk({"content": piece}, index=index)
        if tools:
            for n, name in enumerate(("get_weather", "get_time")):
                yield chunk({"tool_calls": [{"index": n, "id": f"call_{n + 1}", "type": "function",
                                             "function": {"name": name, "arguments": ""}}]})
                for part in TOOL_ARGS:
                    yield chunk({"tool_calls": [{"index": n, "function": {"arguments": part}}]})
        finish = "tool_calls" if tools else "length" if "length" in model else "stop"
        for index in range(choices):
            yield chunk({}, finish, index=index)
        if (body.get("stream_options") or {}).get("include_usage"):
            yield chunk(None, usage={"prompt_tokens": USAGE_IN, "completion_tokens": USAGE_OUT,
                                     "total_tokens": USAGE_IN + USAGE_OUT})
        yield "data: [DONE]\n\n"

    def _completion_stream(self, body: dict[str, Any]) -> Iterator[str]:
        model = str(body["model"])
        for i, piece in enumerate(TEXT):
            self._mid_stall(model, i)
            yield _data({"id": "cmpl-s1", "object": "text_completion", "created": 1,
                         "model": f"{model}-2025",
                         "choices": [{"index": 0, "text": piece, "finish_reason": None,
                                      "logprobs": None}]})
        yield _data({"id": "cmpl-s1", "object": "text_completion", "created": 1,
                     "model": f"{model}-2025",
                     "choices": [{"index": 0, "text": "", "finish_reason": "stop",
                                  "logprobs": None}]})
        yield "data: [DONE]\n\n"

    def _responses_stream(self, body: dict[str, Any]) -> Iterator[str]:
        model = str(body["model"])
        final = _response(body)
        seq = iter(range(1000))

        def event(kind: str, **fields: Any) -> str:
            return _event(kind, {"type": kind, "sequence_number": next(seq), **fields})

        started = {**final, "status": "in_progress", "output": [], "usage": None,
                   "incomplete_details": None}
        yield event("response.created", response=started)
        yield event("response.in_progress", response=started)
        for index, item in enumerate(final["output"]):
            if item["type"] == "message":
                yield event("response.output_item.added", output_index=index,
                            item={**item, "status": "in_progress", "content": []})
                yield event("response.content_part.added", output_index=index, item_id=item["id"],
                            content_index=0, part={"type": "output_text", "text": "",
                                                   "annotations": []})
                for i, piece in enumerate(TEXT):
                    self._mid_stall(model, i)
                    yield event("response.output_text.delta", output_index=index,
                                item_id=item["id"], content_index=0, delta=piece, logprobs=[])
                yield event("response.output_text.done", output_index=index, item_id=item["id"],
                            content_index=0, text="".join(TEXT), logprobs=[])
            else:
                yield event("response.output_item.added", output_index=index,
                            item={**item, "arguments": "", "status": "in_progress"})
                for part in TOOL_ARGS:
                    yield event("response.function_call_arguments.delta", output_index=index,
                                item_id=item["id"], delta=part)
                yield event("response.function_call_arguments.done", output_index=index,
                            item_id=item["id"], arguments=item["arguments"], name=item["name"])
            yield event("response.output_item.done", output_index=index, item=item)
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        yield event(kind, response=final)

    def _messages_stream(self, body: dict[str, Any]) -> Iterator[str]:
        model = str(body["model"])
        final = _message(body)
        start = {**final, "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {"input_tokens": USAGE_IN, "output_tokens": 1}}
        yield _event("message_start", {"type": "message_start", "message": start})
        yield _event("ping", {"type": "ping"})
        for index, block in enumerate(final["content"]):
            if block["type"] == "text":
                yield _event("content_block_start", {"type": "content_block_start", "index": index,
                                                     "content_block": {"type": "text", "text": ""}})
                for i, piece in enumerate(TEXT):
                    self._mid_stall(model, i)
                    yield _event("content_block_delta", {
                        "type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": piece}})
            else:
                yield _event("content_block_start", {
                    "type": "content_block_start", "index": index,
                    "content_block": {**block, "input": {}}})
                for part in TOOL_ARGS:
                    yield _event("content_block_delta", {
                        "type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": part}})
            yield _event("content_block_stop", {"type": "content_block_stop", "index": index})
        yield _event("message_delta", {"type": "message_delta",
                                       "delta": {"stop_reason": final["stop_reason"],
                                                 "stop_sequence": None},
                                       "usage": {"output_tokens": USAGE_OUT}})
        yield _event("message_stop", {"type": "message_stop"})


def _data(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def _event(kind: str, obj: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(obj)}\n\n"


def _chat(body: dict[str, Any]) -> dict[str, Any]:
    model = str(body["model"])
    tools = "tools" in model
    message: dict[str, Any] = {"role": "assistant", "content": "".join(TEXT), "refusal": None}
    if tools:
        message["tool_calls"] = [
            {"id": f"call_{n + 1}", "type": "function",
             "function": {"name": name, "arguments": "".join(TOOL_ARGS)}}
            for n, name in enumerate(("get_weather", "get_time"))]
    finish = "tool_calls" if tools else "length" if "length" in model else "stop"
    choices = [{"index": i, "message": message, "finish_reason": finish, "logprobs": None}
               for i in range(2 if "n2" in model else 1)]
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
            "model": f"{model}-2025", "choices": choices,
            "usage": {"prompt_tokens": USAGE_IN, "completion_tokens": USAGE_OUT,
                      "total_tokens": USAGE_IN + USAGE_OUT}}


def _completion(body: dict[str, Any]) -> dict[str, Any]:
    model = str(body["model"])
    return {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": f"{model}-2025",
            "choices": [{"index": 0, "text": "".join(TEXT), "finish_reason": "stop",
                         "logprobs": None}],
            "usage": {"prompt_tokens": USAGE_IN, "completion_tokens": USAGE_OUT,
                      "total_tokens": USAGE_IN + USAGE_OUT}}


def _response(body: dict[str, Any]) -> dict[str, Any]:
    model = str(body["model"])
    output: list[dict[str, Any]] = [
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "".join(TEXT), "annotations": []}]}]
    if "tools" in model:
        output.append({"type": "function_call", "id": "fc_1", "call_id": "call_1",
                       "name": "get_weather", "arguments": "".join(TOOL_ARGS),
                       "status": "completed"})
    incomplete = "length" in model
    return {"id": "resp_1", "object": "response", "created_at": 1,
            "status": "incomplete" if incomplete else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "error": None, "model": f"{model}-2025", "output": output,
            "instructions": body.get("instructions"), "metadata": {},
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "temperature": body.get("temperature"), "top_p": None,
            "usage": {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT,
                      "total_tokens": USAGE_IN + USAGE_OUT,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}}}


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("input")
    texts = inputs if isinstance(inputs, list) else [inputs]
    dims = int(body.get("dimensions") or 4)
    data = []
    for i, _ in enumerate(texts):
        vector = [0.25 * (i + 1)] * dims
        embedding: Any = vector
        if body.get("encoding_format") == "base64":
            embedding = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    return {"object": "list", "data": data, "model": f"{body.get('model')}-2025",
            "usage": {"prompt_tokens": USAGE_IN, "total_tokens": USAGE_IN}}


def _message(body: dict[str, Any]) -> dict[str, Any]:
    model = str(body["model"])
    content: list[dict[str, Any]] = [{"type": "text", "text": "".join(TEXT)}]
    stop = "end_turn"
    if "tools" in model:
        content.append({"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                        "input": json.loads("".join(TOOL_ARGS))})
        stop = "tool_use"
    elif "length" in model:
        stop = "max_tokens"
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": f"{model}-2025",
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT}}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (early close, timeout) is expected here


def _handler_for(server: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            server.requests.append((self.path, body))
            status, answer, stream = server.answer(self.path, body)
            try:
                if stream:
                    self._stream(answer)
                else:
                    self._json(status, answer)
            except (BrokenPipeError, ConnectionResetError):  # the client went away
                self.close_connection = True

        def _json(self, status: int, answer: Any) -> None:
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("request-id", "req_test_1")
            self.send_header("x-request-id", "req_test_1")
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, events: Iterator[str]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("request-id", "req_test_1")
            self.end_headers()
            for text in events:
                data = text.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def settled_events(gov: Any, local_dir: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every event the governor wrote to ``local_dir``, once all it emitted is delivered.

    Polls the governor's counters rather than calling ``flush``, which waits its
    whole timeout when everything was already delivered before it was called.
    """
    from local_events import read_local_events

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = gov.stats()
        if stats["delivered"] + stats["dropped"] + stats["dead_lettered"] >= stats["emitted"]:
            break
        time.sleep(0.005)
    return read_local_events(local_dir)
