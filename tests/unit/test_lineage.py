"""Lineage stays inside its interaction: threads, tasks, generators, closing elsewhere.

Also: one-shot events after shutdown, ids that leave the host's RNG alone and survive
``fork()``, and decorated generator functions that still look like generator functions.
"""

from __future__ import annotations

import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from promptgov import Governor
from promptgov.events import ids as ids_module
from promptgov.events.draft import EventRef
from promptgov.events.ids import uuid7

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
