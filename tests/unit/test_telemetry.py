"""The SDK's own metrics, read through a real OpenTelemetry SDK meter provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from promptgov import Governor


def read(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    values: dict[str, Any] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points = list(metric.data.data_points)
                values[metric.name] = points[0].value if points else None
    return values


def test_metrics_report_emitted_published_and_spool_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monkeypatch.setattr("promptgov.telemetry.metrics.get_meter", provider.get_meter)
    gov = Governor(local_dir=tmp_path, register_atexit=False, durability="wal",
                   bootstrap_servers="127.0.0.1:9", producer={"request_timeout_ms": 200})
    for i in range(7):
        gov.emit_event("feedback", {"target_event_id": f"t{i}"})
    values = read(reader)
    assert values["promptgov.events.emitted"] == 7
    assert values["promptgov.events.published"] == 0  # nothing can reach the broker
    assert values["promptgov.spool.records"] == 7
    assert values["promptgov.spool.bytes"] > 0
    assert 0 <= values["promptgov.spool.oldest_age"] < 60
    gov.shutdown(0.2)


def test_published_counter_and_latency_after_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monkeypatch.setattr("promptgov.telemetry.metrics.get_meter", provider.get_meter)
    gov = Governor(local_dir=tmp_path, register_atexit=False)
    for i in range(5):
        gov.emit_event("feedback", {"target_event_id": f"t{i}"})
    assert gov.flush(10).complete
    values = read(reader)
    assert values["promptgov.events.published"] == 5
    assert values["promptgov.queue.depth"] == 0
    assert values["promptgov.publish.latency"] >= 0
    gov.shutdown(5)
