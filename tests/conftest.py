"""Shared fixtures: real Kafka brokers (started lazily, only when a test asks) and helpers.

Set ``PROMPTGOV_TEST_BOOTSTRAP=host:port`` to run the ``kafka_bootstrap`` tests against an
existing broker instead of starting one. ``disposable_broker`` always starts its own.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

TESTS_DIR = Path(__file__).resolve().parent
TOOLS_DIR = TESTS_DIR.parent / "tools"
for _path in (TESTS_DIR, TOOLS_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from kafka_broker import KafkaBroker  # noqa: E402  (stdlib only: cheap to import)

if TYPE_CHECKING:
    from kafka_reader import ReadBack

BOOTSTRAP_ENV = "PROMPTGOV_TEST_BOOTSTRAP"
_startup_report: list[str] = []


def _start_broker(workdir: Path, label: str) -> KafkaBroker:
    """Start a broker in ``workdir`` and note its startup time for the summary."""
    broker = KafkaBroker(workdir).start()
    fmt = f", storage format {broker.format_seconds:.1f}s" if broker.format_seconds else ""
    _startup_report.append(
        f"{label} kafka broker {broker.bootstrap} ready in {broker.startup_seconds:.2f}s{fmt}"
    )
    return broker


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of the session's broker (``$PROMPTGOV_TEST_BOOTSTRAP`` if set)."""
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        yield external
        return
    broker = _start_broker(tmp_path_factory.mktemp("kafka-session"), "session")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def disposable_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A broker of the module's own that tests may stop, kill, pause or restart.

    Tests that leave it down should bring it back (``ensure_running()``) for the next.
    """
    broker = _start_broker(tmp_path_factory.mktemp("kafka-disposable"), "disposable")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def unique_topic_prefix() -> str:
    """A fresh topic-name prefix such as ``t1a2b3c4d`` so tests never share topics."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def read_back() -> ReadBack:
    """``read_back(bootstrap, topics, expected_count, timeout=30.0) -> list[Record]``.

    Uses confluent_kafka (independent of the SDK's aiokafka) with a fresh group id.
    """
    from kafka_reader import read_back as reader

    return reader


_fault_report: list[str] = []


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``fault_report(emitted=..., delivered=..., duplicates=..., **more)``: one summary row."""

    def add(**figures: object) -> None:
        cells = " ".join(f"{k}={v}" for k, v in figures.items())
        _fault_report.append(f"{request.node.name}: {cells}")

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Report broker startup times and the fault tests' emitted/delivered counts."""
    for line in _startup_report:
        terminalreporter.write_line(line)
    for line in _fault_report:
        terminalreporter.write_line(f"fault {line}")
