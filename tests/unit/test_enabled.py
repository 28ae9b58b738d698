"""Capture switched off cleanly, and an unknown policy decision explained once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import promptgov
from promptgov import Governor


@pytest.mark.parametrize("durability", ["memory", "spill", "wal"])
def test_enabled_false_records_nothing_writes_nothing_and_calls_pass_through(
        tmp_path: Path, durability: str) -> None:
    local = tmp_path / "pg"
    gov = Governor(app="off", local_dir=local, enabled=False, durability=durability,
                   register_atexit=False)

    @gov.tool(name="t")
    def tool(x: int) -> int:
        return x + 1

    @gov.llm_call(model="m")
    def stream(n: int):  # type: ignore[no-untyped-def]
        yield from range(n)

    assert tool(1) == 2 and list(stream(3)) == [0, 1, 2]
    with promptgov.interaction(user_id="u"), gov.llm_call(model="m") as call:
        call.record_request(messages=[{"role": "user", "content": "hi"}])
    assert gov.policy_decision("allow") == "" and gov.feedback("x", score=1.0) == ""
    assert gov.flush(1).complete
    stats = gov.stats()
    assert stats["emitted"] == stats["dropped"] == stats["internal_errors"] == 0
    assert gov._publisher._thread is None  # no publisher thread
    assert not (local / "events").exists() and not (local / "spool").exists()
    gov.shutdown(1)


def test_enabled_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTGOV_ENABLED", "false")
    gov = Governor(app="off", local_dir=tmp_path, register_atexit=False)
    assert gov.settings.enabled is False
    gov.shutdown(1)
    monkeypatch.setenv("PROMPTGOV_ENABLED", "maybe")
    with pytest.raises(promptgov.ConfigurationError):
        Governor(app="off", local_dir=tmp_path, register_atexit=False)


def test_an_unknown_decision_is_not_recorded_and_the_log_says_which_are_allowed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gov = Governor(app="u", local_dir=tmp_path, register_atexit=False)
    with caplog.at_level(logging.WARNING, logger="promptgov"):
        assert gov.policy_decision("deny") == ""
        assert gov.policy_decision("nope") == ""
    lines = [r.getMessage() for r in caplog.records if "unknown_decision" in r.getMessage()]
    assert len(lines) == 1 and "allow, block, redact, escalate" in lines[0]
    assert gov.stats()["warnings"]["unknown_decision"] == 2
    gov.shutdown(1)


def test_enabled_false_needs_no_writable_local_dir(tmp_path: Path) -> None:
    unwritable = tmp_path / "file"
    unwritable.write_text("not a directory")
    gov = Governor(app="off", local_dir=unwritable / "pg", enabled=False, register_atexit=False)
    assert not (unwritable / "pg").exists()
    gov.shutdown(1)
    with pytest.raises(promptgov.ConfigurationError):
        Governor(app="off", local_dir=tmp_path, enabled="no", register_atexit=False)
