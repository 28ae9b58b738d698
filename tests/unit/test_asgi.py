"""ASGI middleware: one interaction per request, under a real uvicorn server and directly.

The server test runs FastAPI behind uvicorn on 127.0.0.1 (a free port) and sends
concurrent requests from several users to async and sync endpoints, streaming
responses (async and sync bodies) and background tasks; every event must carry
the lineage of the request it was recorded in.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

import httpx
import uvicorn
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import StreamingResponse
from opentelemetry import context as otel_context
from opentelemetry import trace

import promptgov
from promptgov import Governor
from promptgov.integrations.asgi import PromptgovMiddleware

Events = Callable[[], list[dict[str, Any]]]

USERS, REQUESTS_PER_USER = 8, 25
KINDS = ("async", "sync", "stream", "stream-sync", "background")
# Events each kind of request records: an llm_call (prompt + response) and a tool;
# a tool; a tool per streamed chunk (3); two background tasks with a tool each.
EVENTS_PER_KIND = {"async": 3, "sync": 1, "stream": 3, "stream-sync": 3, "background": 2}


def traceparent() -> tuple[str, str]:
    trace_id = uuid.uuid4().hex
    return trace_id, f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"


class Server:
    """uvicorn serving ``app`` in a thread, on a socket already listening on a free port."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)  # connections queue until uvicorn accepts them: no start-up wait
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
        assert not self.thread.is_alive()


class Background:
    """Counts finished background tasks; the test waits on it, not on a clock."""

    def __init__(self) -> None:
        self.done = 0
        self.cond = threading.Condition()

    def finished(self) -> None:
        with self.cond:
            self.done += 1
            self.cond.notify_all()

    def wait_for(self, count: int, timeout: float = 60.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.done >= count, timeout)


def build_app(gov: Governor, background: Background) -> FastAPI:
    app = FastAPI()
    release = asyncio.Event()

    @promptgov.tool
    def note(where: str, n: int) -> str:
        return where

    @promptgov.llm_call(provider="test", model="echo")
    async def answer(question: str, n: int) -> str:
        await asyncio.sleep(0)
        return question.upper()

    def number(request: Request) -> int:
        return int(request.headers["x-request-n"])

    @app.get("/async")
    async def async_endpoint(request: Request) -> dict[str, Any]:
        n = number(request)
        await answer("hello", n)
        note("async", n)
        ctx = promptgov.current_interaction()
        return {"user": ctx.user_id if ctx else None}

    @app.get("/sync")
    def sync_endpoint(request: Request) -> dict[str, Any]:  # runs in the thread pool
        note("sync", number(request))
        ctx = promptgov.current_interaction()
        return {"user": ctx.user_id if ctx else None}

    @app.get("/stream")
    async def stream_endpoint(request: Request) -> StreamingResponse:
        n = number(request)

        async def body() -> Any:
            for i in range(3):
                note(f"stream-{i}", n)  # while the body streams, after the endpoint returned
                yield f"chunk {i}\n"
                await asyncio.sleep(0)

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/stream-sync")
    def stream_sync_endpoint(request: Request) -> StreamingResponse:
        n = number(request)

        def body() -> Iterator[str]:  # iterated in the thread pool
            for i in range(3):
                note(f"stream-sync-{i}", n)
                yield f"chunk {i}\n"

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/background")
    async def background_endpoint(request: Request, tasks: BackgroundTasks) -> dict[str, Any]:
        n = number(request)

        def sync_task() -> None:
            note("background-sync", n)
            background.finished()

        async def async_task() -> None:
            await asyncio.sleep(0)
            note("background-async", n)
            background.finished()

        tasks.add_task(sync_task)
        tasks.add_task(async_task)
        return {"queued": True}

    @app.get("/gated")
    async def gated(request: Request) -> StreamingResponse:
        n = number(request)

        async def body() -> Any:
            yield "first\n"
            await release.wait()  # only after the client has read the first chunk
            note("gated", n)
            yield "second\n"

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/release")
    async def release_gate() -> dict[str, bool]:
        release.set()
        return {"released": True}

    @app.get("/fail")
    async def fail() -> None:
        raise RuntimeError("endpoint bug")

    app.add_middleware(PromptgovMiddleware, governor=gov)
    return app


def test_concurrent_users_get_their_own_lineage(local_gov: Governor, events: Events) -> None:
    background = Background()
    app = build_app(local_gov, background)
    expected: dict[int, dict[str, Any]] = {}
    statuses: Counter[int] = Counter()

    async def user(u: int, client: httpx.AsyncClient) -> None:
        for r in range(REQUESTS_PER_USER):
            n = u * REQUESTS_PER_USER + r
            kind = KINDS[r % len(KINDS)]
            trace_id, header = traceparent()
            expected[n] = {"user": f"user-{u}", "trace": trace_id, "kind": kind,
                           "conversation": f"conv-{u}"}
            response = await client.get(f"/{kind}", headers={
                "x-user-id": f"user-{u}", "x-conversation-id": f"conv-{u}",
                "x-request-n": str(n), "traceparent": header})
            statuses[response.status_code] += 1
            if kind in ("async", "sync"):
                assert response.json() == {"user": f"user-{u}"}
            if kind.startswith("stream"):
                assert response.text == "chunk 0\nchunk 1\nchunk 2\n"

    async def main(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            await asyncio.gather(*(user(u, client) for u in range(USERS)))

    with Server(app) as server:
        asyncio.run(main(server.url))
        background_tasks = 2 * sum(1 for e in expected.values() if e["kind"] == "background")
        assert background.wait_for(background_tasks)
    requests = USERS * REQUESTS_PER_USER
    assert statuses == {200: requests}

    recorded = events()
    by_request: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in recorded:
        payload = event["payload"]
        n = (payload.get("arguments") or payload.get("input") or {}).get("n")
        if n is None:  # a response: the request of its prompt
            n = next(p["payload"]["input"]["n"] for p in recorded
                     if p["event_id"] == event["parent_event_id"])
        by_request[n].append(event)
    assert sorted(by_request) == sorted(expected)  # every request recorded, none lost
    total = sum(EVENTS_PER_KIND[e["kind"]] for e in expected.values())
    assert len(recorded) == total
    interactions = set()
    for n, request_events in by_request.items():
        want = expected[n]
        assert len(request_events) == EVENTS_PER_KIND[want["kind"]], (n, want)
        for event in request_events:  # nobody else's user, conversation or trace
            assert event["user_id"] == want["user"], (n, event)
            assert event["conversation_id"] == want["conversation"]
            assert event["trace_id"] == want["trace"]
        ids = {e["interaction_id"] for e in request_events}
        assert len(ids) == 1  # one interaction per request...
        interactions |= ids
    assert len(interactions) == requests  # ...and a new one for each
    print(f"\nasgi: {requests} requests from {USERS} users, {len(recorded)} events, "
          f"{background_tasks} background tasks, {len(interactions)} interactions")


def test_streaming_is_not_buffered_and_errors_pass(local_gov: Governor, events: Events) -> None:
    app = build_app(local_gov, Background())
    with Server(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        with client.stream("GET", "/gated", headers={"x-user-id": "streamer",
                                                     "x-request-n": "1"}) as response:
            chunks = response.iter_text()
            assert next(chunks) == "first\n"  # delivered while the body is still waiting
            assert client.get("/release").status_code == 200
            assert "".join(chunks) == "second\n"
        assert client.get("/fail", headers={"x-request-n": "2"}).status_code == 500
        assert client.get("/missing").status_code == 404
    gated = events()
    assert [(e["payload"]["result"], e["user_id"]) for e in gated] == [("gated", "streamer")]


# --- the middleware called directly ---------------------------------------------------------


def http_scope(headers: dict[str, str] | None = None, **more: Any) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/", "headers": [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()],
        **more}


async def call(app: Any, scope: dict[str, Any]) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    await app(scope, receive, send)


class Probe:
    """An ASGI app recording the interaction and trace ids it runs under."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.seen: list[Any] = []
        self.error = error

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        ctx = promptgov.current_interaction()
        span = trace.get_current_span().get_span_context()
        self.seen.append((ctx, f"{span.trace_id:032x}" if span.is_valid else None))
        if self.error is not None:
            raise self.error


async def test_headers_callback_and_failing_callback(local_gov: Governor) -> None:
    probe = Probe()

    async def from_auth(scope: Any) -> dict[str, Any]:
        return {"user_id": scope["state"]["user"], "attributes": {"plan": "pro"}}

    mw = PromptgovMiddleware(probe, lineage=from_auth,
                             headers={"tenant_id": "x-org", "session_id": None})
    await call(mw, http_scope({"X-User-Id": "spoofed", "X-Org": "acme", "X-Session-Id": "s",
                               "X-Conversation-Id": "c7"}, state={"user": "alice"}))
    ctx, trace_id = probe.seen.pop()
    assert (ctx.user_id, ctx.tenant_id, ctx.session_id, ctx.conversation_id) == (
        "alice", "acme", None, "c7")
    assert ctx.attributes == {"plan": "pro"} and trace_id is None

    def broken(scope: Any) -> dict[str, Any]:
        raise KeyError("no user")

    before = local_gov.stats()["internal_errors"]
    mw = PromptgovMiddleware(probe, lineage=broken, governor=local_gov)
    await call(mw, http_scope({"x-user-id": "bob"}))
    ctx, _ = probe.seen.pop()
    assert ctx.user_id == "bob"  # the request went on, with the header values
    assert local_gov.stats()["internal_errors"] == before + 1
    assert promptgov.current_interaction() is None

    with pytest.raises(TypeError, match="unknown interaction field"):
        PromptgovMiddleware(probe, headers={"user": "x-user"})


async def test_exceptions_pass_through_and_context_is_restored() -> None:
    error = RuntimeError("the app's own")
    mw = PromptgovMiddleware(Probe(error))
    _, header = traceparent()
    with pytest.raises(RuntimeError) as caught:
        await call(mw, http_scope({"traceparent": header, "x-user-id": "u"}))
    assert caught.value is error
    assert promptgov.current_interaction() is None
    assert not trace.get_current_span().get_span_context().is_valid


async def test_trace_context_and_other_scopes() -> None:
    probe = Probe()
    mw = PromptgovMiddleware(probe)
    trace_id, header = traceparent()
    await call(mw, http_scope({"traceparent": header}))
    assert probe.seen.pop()[1] == trace_id

    # A span already current (an OpenTelemetry instrumentation outside): left alone.
    outer = trace.SpanContext(int("ab" * 16, 16), int("cd" * 8, 16), is_remote=False,
                              trace_flags=trace.TraceFlags(1))
    token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(outer)))
    try:
        await call(mw, http_scope({"traceparent": header}))
    finally:
        otel_context.detach(token)
    assert probe.seen.pop()[1] == "ab" * 16

    await call(mw, {"type": "websocket", "path": "/ws", "headers": [(b"x-user-id", b"w")]})
    assert probe.seen.pop()[0].user_id == "w"
    await call(mw, {"type": "lifespan"})
    assert probe.seen.pop()[0] is None  # lifespan: passed through untouched
    await call(PromptgovMiddleware(probe, trace_context=False),
               http_scope({"traceparent": header}))
    assert probe.seen.pop()[1] is None
