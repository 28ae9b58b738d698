"""Lineage stays inside its interaction: threads, tasks, generators, closing elsewhere.

Also: one-shot events after shutdown, ids that leave the host's RNG alone and survive
``fork()``, and decorated generator functions that still look like generator functions.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from local_events import read_local_events

import promptgov
from promptgov import Governor, interaction
from promptgov.events import ids as ids_module
from promptgov.events.draft import Draft, EventRef
from promptgov.events.ids import now_ns, uuid7

Events = Callable[[], list[dict[str, Any]]]


def of_type(recorded: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in recorded if e["event_type"] == kind]


def assert_no_cross_links(recorded: list[dict[str, Any]]) -> None:
    """No event names (as parent, target or prompt) an event of another interaction."""
    where = {e["event_id"]: e["interaction_id"] for e in recorded}
    for event in recorded:
        payload = event["payload"]
        for ref in (event.get("parent_event_id"), payload.get("target_event_id"),
                    payload.get("prompt_event_id")):
            if ref is not None and ref in where:
                assert where[ref] == event["interaction_id"], event


def run_in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a new thread (a fresh context) and return its result."""
    out: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    if errors:
        raise errors[0]
    return out[0]


# --- targets do not outlive their interaction --------------------------------------------


def test_sequential_interactions_in_one_thread(local_gov: Governor, events: Events) -> None:
    @local_gov.llm_call
    def answer(q: str) -> str:
        return "a"

    with interaction(tenant_id="A", user_id="uA"):
        answer("q")
        assert promptgov.last_event_id() is not None
    with interaction(tenant_id="B", user_id="uB") as b:
        assert promptgov.last_event_id() is None
        assert local_gov.feedback(score=1.0) == ""  # nothing of B's to rate
        assert promptgov.feedback(score=1.0) == ""
        assert local_gov.policy_decision("block") != ""
    recorded = events()
    assert not of_type(recorded, "feedback")
    decision = of_type(recorded, "policy_decision")[0]
    assert decision["payload"]["target_event_id"] is None
    assert decision["parent_event_id"] is None
    assert (decision["interaction_id"], decision["tenant_id"]) == (b.interaction_id, "B")
    assert_no_cross_links(recorded)


async def test_sequential_interactions_in_one_task(local_gov: Governor, events: Events) -> None:
    @local_gov.llm_call
    async def answer(q: str) -> str:
        await asyncio.sleep(0)
        return "a"

    async with interaction(tenant_id="A"):
        await answer("q")
    async with interaction(tenant_id="B"):
        assert promptgov.last_event_id() is None
        assert promptgov.feedback(score=0.0) == ""
        promptgov.policy_decision("allow")
    recorded = events()
    assert not of_type(recorded, "feedback")
    assert of_type(recorded, "policy_decision")[0]["payload"]["target_event_id"] is None
    assert_no_cross_links(recorded)


def test_a_reused_worker_thread_does_not_hand_one_request_the_last(
    local_gov: Governor, events: Events
) -> None:
    @local_gov.llm_call
    def answer(q: str) -> str:
        return q

    def handle(tenant: str, ask: bool) -> str:
        with interaction(tenant_id=tenant, user_id=f"user-{tenant}"):
            if ask:
                answer(tenant)
            return local_gov.feedback(score=1.0)

    with ThreadPoolExecutor(1) as pool:  # one thread, one context for every task
        assert pool.submit(handle, "A", True).result() != ""
        assert pool.submit(handle, "B", False).result() == ""
    recorded = events()
    feedback = of_type(recorded, "feedback")
    assert [f["tenant_id"] for f in feedback] == ["A"]
    assert_no_cross_links(recorded)


def test_nested_interaction_sees_only_its_own_events_then_restores(
    local_gov: Governor, events: Events
) -> None:
    @local_gov.llm_call
    def answer(q: str) -> str:
        return q

    with interaction(tenant_id="A"):
        answer("outer")
        outer_response = promptgov.last_event_id()
        with interaction(session_id="inner"):
            assert promptgov.last_event_id() is None
            answer("inner")
            assert promptgov.last_event_id() not in (None, outer_response)
        assert promptgov.last_event_id() == outer_response
        local_gov.feedback(score=1.0)
    recorded = events()
    assert of_type(recorded, "feedback")[0]["payload"]["target_event_id"] == outer_response
    assert_no_cross_links(recorded)


def test_calls_in_a_nested_interaction_take_no_parent_from_the_outer_one(
    local_gov: Governor, events: Events
) -> None:
    @local_gov.tool
    def lookup(x: int) -> int:
        return x

    @local_gov.llm_call
    def agent() -> str:
        with interaction(session_id="sub"):
            lookup(1)
            local_gov.policy_decision("allow")
        lookup(2)
        local_gov.policy_decision("allow")
        return "done"

    with interaction(tenant_id="A"):
        agent()
    recorded = events()
    prompt = of_type(recorded, "prompt")[0]
    first, second = of_type(recorded, "tool_call")
    assert first["parent_event_id"] is None and first["session_id"] == "sub"
    assert second["parent_event_id"] == prompt["event_id"]
    inner_decision, outer_decision = of_type(recorded, "policy_decision")
    assert inner_decision["payload"]["target_event_id"] == first["event_id"]
    assert inner_decision["parent_event_id"] is None
    assert outer_decision["payload"]["target_event_id"] == prompt["event_id"]
    assert_no_cross_links(recorded)


# --- interactions opened inside generators, closed elsewhere ------------------------------


def test_generator_interaction_closed_from_another_thread(local_gov: Governor,
                                                           events: Events) -> None:
    @local_gov.tool
    def step(where: str) -> str:
        return where

    def body() -> Iterator[int]:
        with interaction(session_id="gen"):
            yield 1
            yield 2

    def request_a() -> Iterator[int]:
        with interaction(tenant_id="A", user_id="uA"):
            gen = body()
            next(gen)
            return gen

    gen = run_in_thread(request_a)

    def request_b() -> bool:
        with interaction(tenant_id="B", user_id="uB") as b:
            gen.close()
            same = promptgov.current_interaction() is b
            step("b")
        return same and promptgov.current_interaction() is None

    assert run_in_thread(request_b)
    gen2 = run_in_thread(request_a)

    def no_interaction() -> Any:
        gen2.close()
        step("none")
        return promptgov.current_interaction()

    assert run_in_thread(no_interaction) is None
    by_where = {e["payload"]["result"]: (e["tenant_id"], e["user_id"]) for e in events()}
    assert by_where == {"b": ("B", "uB"), "none": (None, None)}


async def test_async_generator_interaction_closed_from_another_task(
    local_gov: Governor, events: Events
) -> None:
    @local_gov.tool
    def step(where: str) -> str:
        return where

    async def body() -> AsyncIterator[int]:
        async with interaction(session_id="gen"):
            yield 1
            yield 2

    async def request_a() -> AsyncIterator[int]:
        async with interaction(tenant_id="A", user_id="uA"):
            agen = body()
            await agen.__anext__()
            return agen

    agen = await asyncio.create_task(request_a())

    async def request_b() -> bool:
        async with interaction(tenant_id="B", user_id="uB") as b:
            await agen.aclose()
            same = promptgov.current_interaction() is b
            step("b")
        return same

    assert await asyncio.create_task(request_b())
    recorded = events()
    assert [(e["tenant_id"], e["user_id"]) for e in recorded] == [("B", "uB")]


async def test_generator_collected_in_another_task_leaves_its_context_alone(
    local_gov: Governor, events: Events
) -> None:
    def body() -> Iterator[int]:
        with interaction(session_id="gen"):
            yield 1
            yield 2

    holder: list[Any] = []

    async def request_a() -> None:
        async with interaction(tenant_id="A"):
            gen = body()
            next(gen)
            holder.append(gen)

    async def request_b() -> bool:
        async with interaction(tenant_id="B") as b:
            holder.clear()  # the generator is finalised (closed) here
            gc.collect()
            return promptgov.current_interaction() is b

    await asyncio.create_task(request_a())
    assert await asyncio.create_task(request_b())


def test_traced_generator_interaction_closed_from_another_thread(
    local_gov: Governor, events: Events
) -> None:
    @local_gov.tool
    def step(where: str) -> str:
        return where

    @local_gov.llm_call
    def stream() -> Iterator[str]:
        with interaction(session_id="gen"):
            yield "a"
            yield "b"

    def request_a() -> Iterator[str]:
        with interaction(tenant_id="A", user_id="uA"):
            s = stream()
            next(s)
            return s

    s = run_in_thread(request_a)

    def request_b() -> bool:
        with interaction(tenant_id="B", user_id="uB") as b:
            s.close()
            same = promptgov.current_interaction() is b
            step("b")
        return same

    assert run_in_thread(request_b)
    recorded = events()
    assert of_type(recorded, "tool_call")[0]["tenant_id"] == "B"
    response = of_type(recorded, "response")[0]
    assert (response["tenant_id"], response["payload"]["status"]) == ("A", "closed_early")
    assert_no_cross_links(recorded)


# --- a stream belongs to the call that created it ------------------------------------------


def test_stream_consumed_in_another_thread_keeps_its_creators_lineage(
    local_gov: Governor, events: Events
) -> None:
    @local_gov.tool
    def lookup(x: int) -> int:
        return x

    @local_gov.llm_call
    def stream() -> Iterator[str]:
        yield "a"
        lookup(1)
        local_gov.policy_decision("allow")
        yield "b"

    def request_a() -> Iterator[str]:
        with interaction(tenant_id="A", user_id="uA"):
            return stream()

    s = run_in_thread(request_a)

    def request_b() -> tuple[list[str], str]:
        with interaction(tenant_id="B", user_id="uB"):
            chunks = list(s)
            rated = local_gov.feedback(score=1.0)  # A's response is not B's to rate
            lookup(2)
        return chunks, rated

    assert run_in_thread(request_b) == (["a", "b"], "")
    recorded = events()
    prompt, response = of_type(recorded, "prompt")[0], of_type(recorded, "response")[0]
    in_stream, own = of_type(recorded, "tool_call")
    decision = of_type(recorded, "policy_decision")[0]
    for event in (prompt, response, in_stream, decision):
        assert (event["tenant_id"], event["user_id"]) == ("A", "uA")
        assert event["interaction_id"] == prompt["interaction_id"]
    assert in_stream["parent_event_id"] == prompt["event_id"]
    assert decision["payload"]["target_event_id"] == prompt["event_id"]
    assert (own["tenant_id"], own["parent_event_id"]) == ("B", None)
    assert not of_type(recorded, "feedback")
    assert_no_cross_links(recorded)


async def test_async_stream_consumed_in_another_task_keeps_its_creators_lineage(
    local_gov: Governor, events: Events
) -> None:
    @local_gov.tool
    def lookup(x: int) -> int:
        return x

    @local_gov.llm_call
    async def stream() -> AsyncIterator[str]:
        yield "a"
        await asyncio.sleep(0)
        lookup(1)
        yield "b"

    async def request_a() -> AsyncIterator[str]:
        async with interaction(tenant_id="A"):
            return stream()

    s = await asyncio.create_task(request_a())

    async def request_b() -> list[str]:
        async with interaction(tenant_id="B") as b:
            chunks = [c async for c in s]
            assert promptgov.current_interaction() is b
            lookup(2)
        return chunks

    assert await asyncio.create_task(request_b()) == ["a", "b"]
    recorded = events()
    prompt = of_type(recorded, "prompt")[0]
    in_stream, own = of_type(recorded, "tool_call")
    assert (in_stream["tenant_id"], in_stream["parent_event_id"]) == ("A", prompt["event_id"])
    assert (own["tenant_id"], own["parent_event_id"]) == ("B", None)
    assert of_type(recorded, "response")[0]["tenant_id"] == "A"
    assert_no_cross_links(recorded)


def test_interaction_opened_in_a_stream_body_stays_in_the_body(
    local_gov: Governor, events: Events
) -> None:
    @local_gov.tool
    def lookup(x: int) -> int:
        return x

    @local_gov.llm_call
    def stream() -> Iterator[str]:
        with interaction(session_id="body"):
            yield "a"
            lookup(1)
            yield "b"

    with interaction(tenant_id="A") as a:
        s = stream()
        next(s)
        assert promptgov.current_interaction() is a  # the body's interaction does not leak
        lookup(2)
        assert list(s) == ["b"]
        assert promptgov.current_interaction() is a
    recorded = events()
    between, in_body = of_type(recorded, "tool_call")  # lookup(2) ran first
    assert (in_body["session_id"], in_body["parent_event_id"]) == ("body", None)
    assert between["session_id"] is None
    assert between["interaction_id"] == a.interaction_id
    assert_no_cross_links(recorded)


# --- after shutdown -------------------------------------------------------------------------


def test_one_shot_events_after_shutdown_return_no_id_and_are_counted(tmp_path: Path) -> None:
    gov = Governor(local_dir=tmp_path, register_atexit=False)

    @gov.llm_call
    def answer(q: str) -> str:
        return q

    with gov.use(), interaction(tenant_id="A"):
        answer("q")
        response_id = promptgov.last_event_id()
        assert response_id
        gov.shutdown(5)
        assert gov.policy_decision("allow", target_event_id=response_id) == ""
        assert gov.feedback(response_id, score=1.0) == ""
        assert gov.policy_decision("block") == ""
        assert gov.feedback(score=1.0) == ""
        assert promptgov.policy_decision("allow") == ""
        assert promptgov.feedback(score=1.0) == ""
        assert gov.emit_event("feedback", {"target_event_id": response_id}) == ""
        assert promptgov.last_event_id() == response_id
    stats = gov.stats()
    assert stats["dropped_by_reason"].get("shutdown") == 7
    assert stats["internal_errors"] == 0


def test_emit_says_whether_the_event_was_accepted(tmp_path: Path) -> None:
    gov = Governor(local_dir=tmp_path, register_atexit=False)

    def draft() -> Draft:
        return Draft("feedback", EventRef(), gov.next_seq(), now_ns(),
                     {"target_event_id": "x", "name": "n"})

    assert gov.emit(draft()) is True
    gov.shutdown(5)
    assert gov.emit(draft()) is False


def test_a_call_that_ends_after_shutdown_is_not_the_last_event(tmp_path: Path) -> None:
    gov = Governor(local_dir=tmp_path, register_atexit=False)

    @gov.llm_call
    def answer(q: str) -> str:
        return q

    @gov.llm_call
    def stream() -> Iterator[str]:
        yield "a"

    with interaction():
        answer("q")
        response_id = promptgov.last_event_id()
        s = stream()
        with gov.tool("late"):
            gov.shutdown(5)
        assert list(s) == ["a"]
        assert promptgov.last_event_id() == response_id
    assert len(read_local_events(tmp_path)) == 3  # prompt, response, the stream's prompt


# --- ids: the host's RNG, fork ---------------------------------------------------------------


def test_ids_leave_the_hosts_global_random_alone(local_gov: Governor) -> None:
    @local_gov.tool
    def act(x: int) -> int:
        return x

    random.seed(42)
    expected = [random.random() for _ in range(5)]
    random.seed(42)
    got = []
    for i in range(5):
        uuid7()
        _ = EventRef().id
        act(i)
        local_gov.policy_decision("allow")
        got.append(random.random())
    assert local_gov.flush(10).complete
    assert got == expected


fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")


def _wait(pid: int, timeout: float) -> int | None:
    """The child's exit status, or None if it has not exited by the deadline (killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.001)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


@fork_only
def test_forked_child_draws_other_ids_than_its_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    from promptgov import governor as gov_module

    monkeypatch.setattr(gov_module, "_live", weakref.WeakSet())  # no governor to re-make
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read_end)
            draws = f"{ids_module._rng.getrandbits(128)} {uuid7()}"
            os.write(write_end, draws.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    parent_draw, parent_id = ids_module._rng.getrandbits(128), uuid7()
    with os.fdopen(read_end, "rb") as pipe:
        child_draw, child_id = pipe.read().decode().split()
    assert _wait(pid, 10) == 0
    assert int(child_draw) != parent_draw
    assert child_id != parent_id


@fork_only
def test_fork_while_another_thread_takes_ids_never_hangs_the_child(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from promptgov import governor as gov_module

    monkeypatch.setattr(gov_module, "_live", weakref.WeakSet())  # no governor to re-make
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            _ = EventRef().id
            uuid7()

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    hung = failed = 0
    try:
        for _ in range(300):
            pid = os.fork()
            if pid == 0:  # child: take an id (both locks), leave at once
                code = 1
                try:
                    _ = EventRef().id
                    uuid7()
                    code = 0
                finally:
                    os._exit(code)
            status = _wait(pid, 5)
            if status is None:
                hung += 1
                if hung >= 3:
                    break
            elif status != 0:
                failed += 1
    finally:
        stop.set()
        thread.join(10)
    assert (hung, failed) == (0, 0)


# --- decorated generator functions are still generator functions ------------------------------


def test_decorated_generator_functions_stay_generator_functions(
    local_gov: Governor, events: Events
) -> None:
    @promptgov.llm_call(model="m")
    def gen(q: str, n: int = 2, *, sep: str = "") -> Iterator[str]:
        yield from [q] * n

    @promptgov.llm_call
    async def agen(q: str) -> AsyncIterator[str]:
        yield q

    class Bot:
        @promptgov.llm_call
        def method(self, q: str) -> Iterator[str]:
            yield q

        @promptgov.llm_call
        async def amethod(self, q: str) -> AsyncIterator[str]:
            yield q

        @promptgov.llm_call
        @staticmethod
        def static(q: str) -> Iterator[str]:
            yield q

        @staticmethod
        @promptgov.llm_call
        async def astatic(q: str) -> AsyncIterator[str]:
            yield q

        @promptgov.llm_call
        @classmethod
        def cls_method(cls, q: str) -> Iterator[str]:
            yield cls.__name__

        @promptgov.llm_call
        @classmethod
        async def acls_method(cls, q: str) -> AsyncIterator[str]:
            yield cls.__name__

    bot = Bot()
    for fn in (gen, bot.method, Bot.method, bot.static, Bot.static, bot.cls_method,
               Bot.cls_method):
        assert inspect.isgeneratorfunction(fn), fn
        assert not inspect.isasyncgenfunction(fn), fn
    for fn in (agen, bot.amethod, Bot.amethod, bot.astatic, Bot.astatic, bot.acls_method,
               Bot.acls_method):
        assert inspect.isasyncgenfunction(fn), fn
        assert not inspect.isgeneratorfunction(fn), fn
    assert not inspect.iscoroutinefunction(agen)
    assert str(inspect.signature(gen)) == str(inspect.signature(gen.__wrapped__))  # type: ignore[attr-defined]
    assert list(inspect.signature(bot.method).parameters) == ["q"]
    assert list(inspect.signature(Bot.cls_method).parameters) == ["q"]
    assert gen.__name__ == "gen" and gen.__qualname__.endswith("gen")
    assert gen.__defaults__ == (2,) and gen.__kwdefaults__ == {"sep": ""}  # type: ignore[attr-defined]

    assert list(gen("x")) == ["x", "x"]
    assert list(bot.method("m")) == ["m"]
    assert list(Bot.static("s")) == ["s"]
    assert list(bot.cls_method("c")) == ["Bot"]
    recorded = events()
    prompts = of_type(recorded, "prompt")
    assert [p["payload"]["input"] for p in prompts] == [
        {"q": "x"}, {"q": "m"}, {"q": "s"}, {"q": "c"}]
    assert [r["payload"]["status"] for r in of_type(recorded, "response")] == ["ok"] * 4


async def test_decorated_generator_functions_record_as_before(
    local_gov: Governor, events: Events
) -> None:
    @promptgov.llm_call
    def gen() -> Iterator[int]:
        yield from range(5)

    @promptgov.llm_call
    async def agen() -> AsyncIterator[int]:
        for i in range(5):
            yield i

    kept = gen()  # the prompt is sent when the function is called
    assert [e["event_type"] for e in events()] == ["prompt"]
    next(kept)
    kept.close()
    abandoned = gen()
    next(abandoned)
    del abandoned
    gc.collect()
    akept = agen()
    await akept.__anext__()
    await akept.aclose()
    assert type(kept).__name__ == "TracedIterator"
    assert type(akept).__name__ == "TracedAsyncIterator"
    statuses = [r["payload"]["status"] for r in of_type(events(), "response")]
    assert statuses == ["closed_early", "abandoned", "closed_early"]


def test_decorated_generator_function_pickles_by_name() -> None:
    import pickle

    restored = pickle.loads(pickle.dumps(_module_level_stream))
    assert restored is _module_level_stream


@promptgov.llm_call
def _module_level_stream() -> Iterator[str]:
    yield "x"
