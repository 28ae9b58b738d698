"""The benchmark command runs end to end on a tiny size (figures are not checked here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_command_runs_on_a_tiny_size(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--skip-peers", "--out", str(tmp_path),
         "--docs", str(tmp_path / "benchmarks.md")],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    (result,) = tmp_path.glob("*.json")
    figures = json.loads(result.read_text())
    assert {"hot_path", "publisher_cpu", "throughput", "stages", "outage", "memory"} <= set(figures)
    assert figures["stages"]["stage"] > 0
    assert figures["outage"]["all_delivered"] is True
    assert figures["hot_path"]["promptgov-spill"]["sync"]["added_p50_us"] > 0
    report = (tmp_path / "benchmarks.md").read_text()
    assert "## 1. Hot path" in report and "| target |" in report
