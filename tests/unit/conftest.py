"""Fixtures for unit tests: a governor writing to a temporary local directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from local_events import read_local_events

from promptgov import Governor


@pytest.fixture
def local_gov(tmp_path: Path) -> Iterator[Governor]:
    """A governor with the embedded sink in ``tmp_path``, made current for decorators."""
    gov = Governor(app="unit", environment="test", local_dir=tmp_path, register_atexit=False,
                   flush_interval_ms=5)
    with gov.use():
        yield gov
    gov.shutdown(5.0)


@pytest.fixture
def events(local_gov: Governor, tmp_path: Path) -> Callable[[], list[dict[str, Any]]]:
    """Flush the governor and return every event it wrote, in emission order."""

    def read() -> list[dict[str, Any]]:
        report = local_gov.flush(10.0)
        assert report.complete, report
        return read_local_events(tmp_path)

    return read
