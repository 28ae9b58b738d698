"""The publisher against hostile host objects, ambiguous sends, sinks that never answer and
forks: nothing lost, nothing published twice with two values, the host never held up."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from local_events import read_local_events

import promptgov
from promptgov import Governor
from promptgov.transport.record import Record
from promptgov.transport.sinks import SendOutcome

pytestmark = pytest.mark.timeout(120)


def make_gov(tmp_path: Path, **settings: Any) -> Governor:
    options: dict[str, Any] = {"app": "unit", "local_dir": tmp_path, "register_atexit": False,
                               "flush_interval_ms": 5}
    options.update(settings)
    return Governor(**options)


class RecordingSink:
    """Records every value it is given; ``ambiguous`` sends reach it but report a retry
    (a timeout after the broker wrote the batch); ``hang`` sends never answer."""

    description = "recording://"
    sent: ClassVar[dict[str, list[bytes]]] = defaultdict(list)
    ambiguous = 0
    hang = False

    async def send(self, records: list[Record],
                   abort: asyncio.Event | None = None) -> SendOutcome:
        cls = type(self)
        if cls.hang:
            assert abort is not None
            await abort.wait()
            return SendOutcome(retry=list(records), error="aborted")
        for record in records:
            cls.sent[record.event_id].append(record.value)
        if cls.ambiguous:
            cls.ambiguous -= 1
            return SendOutcome(retry=list(records), error="TimeoutError")
        return SendOutcome(delivered=list(records))

    async def close(self, timeout: float) -> None:
        pass


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[RecordingSink]]:
    RecordingSink.sent = defaultdict(list)
    RecordingSink.ambiguous = 0
    RecordingSink.hang = False
    monkeypatch.setattr(Governor, "_make_sink", lambda self: RecordingSink())
    yield RecordingSink


def emit_tools(gov: Governor, count: int, start: int = 0) -> list[str]:
    @gov.tool(name="step")
    def step(index: int) -> int:
        return index

    ids = []
    with gov.use():
        for i in range(start, start + count):
            step(i)
            ids.append(promptgov.last_event_id())
    return [i for i in ids if i]


@pytest.mark.parametrize("durability", ["spill", "wal"])
def test_a_send_that_may_have_landed_is_resent_byte_for_byte_even_after_a_restart(
        tmp_path: Path, sink: type[RecordingSink], durability: str) -> None:
    first = make_gov(tmp_path, durability=durability)
    emit_tools(first, 10)  # delivered: the chain has a state the next process lacks
    assert first.flush(10).complete
    sent_before = dict(sink.sent)
    sink.ambiguous = 10**6  # from now on every send reaches the sink and reports a timeout
    ids = emit_tools(first, 50, start=10)
    deadline = time.monotonic() + 30
    while len(sink.sent) < 11 and time.monotonic() < deadline:  # an ambiguous send happened
        time.sleep(0.01)
    report = first.shutdown(0.5)
    assert report.spooled == 50  # left for the next process
    ambiguous = set(sink.sent) - set(sent_before)
    sink.ambiguous = 0
    second = make_gov(tmp_path, durability=durability)
    emit_tools(second, 5)  # the new process's own chain state differs
    assert second.flush(30).complete
    second.shutdown(5)
    assert set(ids) <= set(sink.sent)
    forked = {i: v for i, v in sink.sent.items() if len(set(v)) > 1}
    assert not forked, f"{len(forked)} event ids sent with two values"
    assert ambiguous and all(len(sink.sent[i]) >= 2 for i in ambiguous)  # really re-sent


class Hostile:
    def __init__(self, how: str) -> None:
        self.how = how

    def __repr__(self) -> str:
        if self.how == "exit":
            raise SystemExit(3)
        if self.how == "interrupt":
            raise KeyboardInterrupt
        while True:  # loops
            pass


@pytest.mark.parametrize("durability", ["memory", "spill", "wal"])
def test_host_objects_that_exit_interrupt_or_loop_cost_their_content_not_the_publisher(
        tmp_path: Path, durability: str) -> None:
    gov = make_gov(tmp_path, durability=durability, host_code_timeout_ms=100)

    @gov.tool(name="odd")
    def odd(value: Any) -> str:
        return "done"

    with gov.use():
        for how in ("exit", "interrupt", "loop"):
            assert odd(Hostile(how)) == "done"  # the host's call is unaffected
        emit_tools(gov, 20)
    assert gov.flush(30).complete
    events = read_local_events(tmp_path)
    assert len(events) == 23  # every event published, the publisher alive
    assert all(e["payload"]["status"] == "ok" for e in events)
    withheld = [e["attributes"].get("promptgov.content_withheld") for e in events[:3]]
    assert withheld[2] == "host_code_timeout"
    stats = gov.stats()
    assert stats["content_withheld"].get("host_code_timeout") == 1
    gov.shutdown(5)


def test_the_host_never_waits_on_a_looping_repr_held_by_the_publisher(tmp_path: Path) -> None:
    """Spill mode, queue full: the host moves the oldest event to disk itself, but never
    waits longer than block_timeout_ms for the publisher busy with a looping __repr__."""
    gov = make_gov(tmp_path, durability="spill", max_queue_size=20, batch_size=1,
                   block_timeout_ms=50, host_code_timeout_ms=400)

    class Busy:
        def __repr__(self) -> str:
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                pass
            return "busy"

    @gov.tool(name="call")
    def call(value: Any) -> int:
        return 1

    worst = 0.0
    with gov.use():
        for _ in range(60):
            started = time.monotonic()
            call(Busy())
            worst = max(worst, time.monotonic() - started)
    assert worst < 0.05 + 0.15, worst  # block_timeout plus the watchdog's granularity
    gov.shutdown(30)


def test_shutdown_against_a_sink_that_never_answers_keeps_its_deadline(
        tmp_path: Path, sink: type[RecordingSink]) -> None:
    sink.hang = True
    gov = make_gov(tmp_path, durability="spill")
    ids = emit_tools(gov, 500)
    assert not gov.flush(0.5).complete
    started = time.monotonic()
    report = gov.shutdown(1.0)
    took = time.monotonic() - started
    assert took < 1.0 + 2.0, took
    assert report.spooled == 500 and report.pending == 500
    sink.hang = False
    again = make_gov(tmp_path, durability="spill")
    assert again.flush(30).complete
    again.shutdown(5)
    assert set(ids) <= set(sink.sent)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
@pytest.mark.parametrize("durability", ["memory", "spill"])
def test_forked_children_that_leave_through_os_exit_lose_nothing(
        tmp_path: Path, durability: str) -> None:
    """A child forked while another thread emits never hangs (locks re-made at fork), and
    what it emitted before os._exit reaches the sink through the parent (fork_durability)."""
    gov = make_gov(tmp_path, durability=durability)
    stop = threading.Event()

    @gov.tool(name="busy")
    def busy(index: int) -> int:
        return index

    def background() -> None:
        with gov.use():
            i = 0
            while not stop.is_set():
                busy(i)
                i += 1

    thread = threading.Thread(target=background)
    thread.start()
    children = []
    read, write = os.pipe()
    for n in range(30):
        pid = os.fork()
        if pid == 0:  # the child: emit, report the ids, leave without any shutdown
            try:
                ids = emit_tools(promptgov.get_governor() or gov, 20, start=1000 * n)
                os.write(write, orjson.dumps(ids) + b"\n")
            finally:
                os._exit(0)
        children.append(pid)
    stop.set()
    thread.join()
    os.close(write)
    hung = []
    deadline = time.monotonic() + 60
    for pid in children:
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                hung.append(pid)
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                break
            time.sleep(0.01)
    with os.fdopen(read, "rb") as pipe:
        child_ids = [i for line in pipe.read().splitlines() for i in orjson.loads(line)]
    assert not hung, f"{len(hung)} of {len(children)} children hung"
    assert len(child_ids) == 30 * 20
    assert gov.flush(60).complete
    published = {e["event_id"] for e in read_local_events(tmp_path)}
    missing = set(child_ids) - published
    assert not missing, f"{len(missing)} of {len(child_ids)} child events lost"
    gov.shutdown(5)


if sys.platform == "win32":  # pragma: no cover
    pytest.skip("POSIX only", allow_module_level=True)


@pytest.mark.parametrize("durability", ["memory", "spill", "wal"])
def test_lone_surrogates_anywhere_still_publish_the_event(tmp_path: Path,
                                                          durability: str) -> None:
    gov = make_gov(tmp_path, durability=durability)

    @gov.tool(name="lookup")
    def lookup(**kwargs: Any) -> dict[str, Any]:
        return {"k\udcff": "v\udcff"}

    bad = "x\udcffy"
    with gov.use(), promptgov.interaction(user_id=bad, tenant_id=bad, conversation_id=bad,
                                          session_id=bad, attributes={bad: bad}):
        lookup(**{bad: {bad: bad}})
        gov.policy_decision("allow", reasons=[bad], attributes={bad: 1})
    assert gov.flush(10).complete
    events = read_local_events(tmp_path)
    assert [e["event_type"] for e in events] == ["tool_call", "policy_decision"]
    assert events[0]["user_id"] == events[0]["tenant_id"] == "x?y"  # replaced
    stats = gov.stats()
    assert stats["dead_lettered"] == stats["internal_errors"] == stats["dropped"] == 0
    assert stats["warnings"].get("invalid_utf8", 0) >= 1
    gov.shutdown(5)


@pytest.mark.parametrize("durability", ["memory", "wal"])
def test_an_event_that_cannot_be_processed_leaves_no_content_in_the_dead_letter_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str) -> None:
    from promptgov.governance.processor import EventProcessor

    def broken(self: EventProcessor, event: dict[str, Any]) -> list[Record]:
        raise RuntimeError("a bug while governing")

    monkeypatch.setattr(EventProcessor, "govern", broken)
    gov = make_gov(tmp_path, durability=durability)

    @gov.tool(name="mail")
    def mail(to: str, body: str) -> str:
        return "sent to bob@example.com"

    with gov.use():
        mail("bob@example.com", "card 4111 1111 1111 1111")
    assert gov.flush(10).complete
    dead = (tmp_path / "dead-letter.jsonl").read_bytes()
    assert dead.count(b"\n") == 1 and b"processing failed" in dead
    assert b"bob@example.com" not in dead and b"4111" not in dead
    assert gov.stats()["dead_lettered"] == 1
    gov.shutdown(5)


def _swallowing_mapper(*args: Any, **kwargs: Any) -> Any:
    while True:  # swallows every Exception: the watchdog's interruption is not one
        try:
            sum(range(1000))
        except Exception:
            pass


def _interrupting_mapper(*args: Any, **kwargs: Any) -> Any:
    raise KeyboardInterrupt


@pytest.mark.parametrize("durability", ["memory", "wal"])
@pytest.mark.parametrize("mapper", [_swallowing_mapper, _interrupting_mapper])
def test_mappers_that_swallow_interruptions_or_raise_keyboard_interrupt_cost_only_content(
        tmp_path: Path, durability: str, mapper: Any) -> None:
    gov = make_gov(tmp_path, durability=durability, host_code_timeout_ms=100)

    @gov.tool(name="mapped", input_mapper=mapper)
    def mapped(x: int) -> int:
        return x * 2

    with gov.use():
        assert mapped(21) == 42  # never an exception, never a hang, in wal either
        emit_tools(gov, 3)
    assert gov.flush(30).complete
    events = read_local_events(tmp_path)
    assert len(events) == 4
    stats = gov.stats()
    if mapper is _swallowing_mapper:  # interrupted: the event keeps only its metadata
        assert stats["content_withheld"] == {"host_code_timeout": 1}, stats
    else:  # the mapper failed: the bound arguments are recorded instead
        assert stats["warnings"].get("input_mapper_failed") == 1, stats
    gov.shutdown(5)


def test_a_nested_bound_keeps_the_outer_one(tmp_path: Path) -> None:
    """A decorated call inside a mapper (wal: on the host's thread) must not lift the
    mapper's own bound."""
    gov = make_gov(tmp_path, durability="wal", host_code_timeout_ms=200)

    @gov.tool(name="inner")
    def inner(x: int) -> int:
        return x

    def mapper(*args: Any, **kwargs: Any) -> Any:
        inner(1)
        end = time.monotonic() + 5
        while time.monotonic() < end:
            pass
        return {"x": 1}

    @gov.tool(name="outer", input_mapper=mapper)
    def outer(x: int) -> int:
        return x

    with gov.use():
        started = time.monotonic()
        assert outer(7) == 7
        took = time.monotonic() - started
    assert took < 2.0, took  # bounded by the outer 200 ms (twice: prompt-less tool = once)
    assert gov.stats()["content_withheld"].get("host_code_timeout") == 1
    gov.shutdown(5)
