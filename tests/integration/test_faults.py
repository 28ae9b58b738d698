"""Nothing lost: each fault against a real broker, counting emitted vs delivered event ids.

Every test reads back with an independent client (confluent-kafka) and reports
emitted / delivered (distinct) / duplicates in the run's summary (``fault ...``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_broker import KafkaBroker
from kafka_reader import ReadBack

import promptgov
from promptgov import Governor

pytestmark = pytest.mark.broker

APP = Path(__file__).with_name("fault_app.py")
Report = Callable[..., None]


@pytest.fixture
def broker(disposable_broker: KafkaBroker) -> Iterator[KafkaBroker]:
    """The module's own broker, running at the start and at the end of each test."""
    disposable_broker.ensure_running()
    yield disposable_broker
    if disposable_broker.is_paused:
        disposable_broker.resume()
    disposable_broker.ensure_running()


def governor(broker: KafkaBroker, prefix: str, local_dir: Path, **settings: Any) -> Governor:
    options: dict[str, Any] = {
        "app": "faults", "bootstrap_servers": broker.bootstrap, "topic_prefix": prefix,
        "local_dir": local_dir, "register_atexit": False, "flush_interval_ms": 10,
        "producer": {"request_timeout_ms": 3000},
    }
    options.update(settings)
    return Governor(**options)


def emitter(gov: Governor) -> Callable[[int], str]:
    @gov.tool(name="step")
    def step(index: int) -> int:
        return index

    def emit(index: int) -> str:
        step(index)
        event_id = promptgov.last_event_id()
        assert event_id
        return event_id

    return emit


def count_back(read_back: ReadBack, broker: KafkaBroker, prefix: str, emitted: set[str],
               report: Report, topics: tuple[str, ...] = ("events",),
               **extra: object) -> Counter[str]:
    """Read everything back; assert nothing emitted is missing; report the figures."""
    records = read_back(broker.bootstrap, [f"{prefix}.{t}" for t in topics], len(emitted),
                        timeout=90, linger=2.0)
    ids = Counter(orjson.loads(r.value)["event_id"] for r in records)
    values: dict[str, set[bytes]] = {}
    for record in records:
        values.setdefault(orjson.loads(record.value)["event_id"], set()).add(record.value)
    forked = [i for i, v in values.items() if len(v) > 1]
    assert not forked, f"{len(forked)} event ids published with two different values"
    missing = emitted - set(ids)
    duplicates = sum(n - 1 for n in ids.values())
    report(emitted=len(emitted), delivered=len(emitted & set(ids)), missing=len(missing),
           duplicates=duplicates, **extra)
    assert not missing, f"{len(missing)} of {len(emitted)} events lost"
    return ids


@pytest.mark.parametrize("durability", ["memory", "spill", "wal"])
def test_broker_down_at_start_then_up(broker: KafkaBroker, unique_topic_prefix: str,
                                      tmp_path: Path, read_back: ReadBack,
                                      fault_report: Report, durability: str) -> None:
    broker.stop()
    gov = governor(broker, unique_topic_prefix, tmp_path, durability=durability)
    emit = emitter(gov)
    emitted = {emit(i) for i in range(300)}
    assert not gov.flush(2).complete  # nothing can be delivered yet
    broker.start()
    report = gov.flush(90)
    assert report.complete, report
    count_back(read_back, broker, unique_topic_prefix, emitted, fault_report,
               durability=durability, retries=gov.stats()["retries"])
    gov.shutdown(10)


@pytest.mark.parametrize("durability", ["spill", "wal"])
def test_broker_killed_mid_stream_and_restarted(broker: KafkaBroker, unique_topic_prefix: str,
                                                tmp_path: Path, read_back: ReadBack,
                                                fault_report: Report, durability: str) -> None:
    gov = governor(broker, unique_topic_prefix, tmp_path, durability=durability)
    emit = emitter(gov)
    emitted: set[str] = set()
    killed = threading.Event()

    def killer() -> None:
        while len(emitted) < 500:
            time.sleep(0.005)
        broker.kill()
        killed.set()

    thread = threading.Thread(target=killer)
    thread.start()
    for i in range(1500):
        emitted.add(emit(i))
        if i % 50 == 0:
            time.sleep(0.01)  # a stream, not one burst
        if i == 1000:
            assert killed.wait(30)
            broker.start()
    thread.join()
    report = gov.flush(120)
    assert report.complete, report
    count_back(read_back, broker, unique_topic_prefix, emitted, fault_report,
               durability=durability)
    gov.shutdown(10)


def test_app_killed_mid_stream_its_spool_is_shipped_at_restart(
    broker: KafkaBroker, unique_topic_prefix: str, tmp_path: Path, read_back: ReadBack,
    fault_report: Report
) -> None:
    broker.stop()  # nothing can leave the app: everything it emitted is only in its spool
    app = subprocess.Popen(
        [sys.executable, str(APP), "emit", broker.bootstrap, unique_topic_prefix,
         str(tmp_path), "100000"],
        stdout=subprocess.PIPE, text=True)
    assert app.stdout is not None
    emitted: set[str] = set()
    for line in app.stdout:
        emitted.add(line.split()[1])
        if len(emitted) == 2000:
            break
    app.send_signal(signal.SIGKILL)  # mid-stream, no shutdown
    app.wait(30)
    emitted |= {line.split()[1] for line in app.stdout if line.startswith("id ")}
    spools = [p for p in (tmp_path / "spool").iterdir() if any(p.glob("*.seg"))]
    assert len(spools) == 1
    broker.start()
    restarted = governor(broker, unique_topic_prefix, tmp_path, durability="wal")
    report = restarted.flush(90)
    assert report.complete, report
    stats = restarted.stats()
    count_back(read_back, broker, unique_topic_prefix, emitted, fault_report,
               adopted=stats["adopted"])
    assert stats["delivered"] == stats["adopted"] >= len(emitted)  # adopted ones count too
    assert not spools[0].exists()  # shipped, then removed
    restarted.shutdown(10)


@pytest.mark.parametrize("durability", ["spill", "wal"])
def test_broker_frozen_host_latency_unchanged(broker: KafkaBroker, unique_topic_prefix: str,
                                              tmp_path: Path, read_back: ReadBack,
                                              fault_report: Report, durability: str) -> None:
    gov = governor(broker, unique_topic_prefix, tmp_path, durability=durability)
    emit = emitter(gov)
    emitted: set[str] = set()

    def timed(n: int) -> list[float]:
        samples = []
        for i in range(n):
            start = time.perf_counter()
            emitted.add(emit(i))
            samples.append(time.perf_counter() - start)
            if i % 100 == 0:
                time.sleep(0.002)
        return sorted(samples)

    baseline = timed(3000)
    assert gov.flush(30).complete
    broker.pause()  # SIGSTOP: connections hang instead of failing
    frozen_started = time.monotonic()
    frozen = timed(3000)
    while time.monotonic() - frozen_started < 5.0:  # longer than request_timeout_ms=3000
        emitted.add(emit(0))
        time.sleep(0.01)
    assert not gov.flush(0).complete  # the freeze really held delivery up
    broker.resume()
    report = gov.flush(120)
    assert report.complete, report

    def p99(samples: list[float]) -> float:
        return samples[int(len(samples) * 0.99)]

    ratio = p99(frozen) / p99(baseline)
    count_back(read_back, broker, unique_topic_prefix, emitted, fault_report,
               durability=durability, p99_us_connected=round(p99(baseline) * 1e6),
               p99_us_frozen=round(p99(frozen) * 1e6))
    assert p99(frozen) < max(3 * p99(baseline), p99(baseline) + 0.0005), ratio
    gov.shutdown(10)


def test_spool_unwritable_falls_back_to_memory(broker: KafkaBroker, unique_topic_prefix: str,
                                               tmp_path: Path, read_back: ReadBack,
                                               fault_report: Report) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the spool directory should be")
    gov = governor(broker, unique_topic_prefix, tmp_path, durability="wal",
                   spool_dir=blocker / "spool")
    assert gov._publisher.spool is None  # unusable: memory it is, the host never notices
    emit = emitter(gov)
    emitted = {emit(i) for i in range(500)}
    assert gov.flush(60).complete
    count_back(read_back, broker, unique_topic_prefix, emitted, fault_report)
    gov.shutdown(10)


@pytest.mark.parametrize("durability", ["spill", "wal"])
def test_spool_full_drops_are_accounted_for_by_gaps(
    broker: KafkaBroker, unique_topic_prefix: str, tmp_path: Path, read_back: ReadBack,
    fault_report: Report, durability: str
) -> None:
    broker.stop()
    gov = governor(broker, unique_topic_prefix, tmp_path, durability=durability,
                   spool_max_bytes=1024 * 1024, spool_segment_bytes=128 * 1024,
                   max_queue_size=200, when_full="drop_newest")

    @gov.tool(name="bulky")
    def bulky(text: str) -> int:
        return len(text)

    accepted = set()  # last_event_id() names only events that were accepted
    for i in range(2000):
        bulky(f"{i} " + "lorem ipsum " * 100)
        event_id = promptgov.last_event_id()
        if event_id:
            accepted.add(event_id)
    stats = gov.stats()
    dropped = stats["dropped"]
    assert dropped > 0
    broker.start()
    assert gov.flush(90).complete
    records = read_back(broker.bootstrap, f"{unique_topic_prefix}.events", 2000 - dropped + 1,
                        timeout=90, linger=2.0)
    events = [orjson.loads(r.value) for r in records]
    gaps = [e for e in events if e["event_type"] == "gap"]
    delivered = {e["event_id"] for e in events if e["event_type"] == "tool_call"}
    gap_total = sum(g["payload"]["count"] for g in gaps)
    fault_report(emitted=2000, delivered=len(delivered), dropped=dropped,
                 gap_events=len(gaps), gap_count=gap_total, durability=durability)
    assert delivered == accepted
    assert gap_total == dropped == 2000 - len(delivered)  # gaps account exactly
    assert all(g["payload"]["reason"] in {"queue_full", "spool_full"} for g in gaps)
    gov.shutdown(10)


def test_corrupted_spool_tail_is_quarantined(broker: KafkaBroker, unique_topic_prefix: str,
                                             tmp_path: Path, read_back: ReadBack,
                                             fault_report: Report) -> None:
    broker.stop()
    gov = governor(broker, unique_topic_prefix, tmp_path, durability="wal")
    emit = emitter(gov)
    emitted = [emit(i) for i in range(200)]
    report = gov.shutdown(0.5)
    assert report.pending == 200 and report.spooled == 200
    (segment,) = [p for p in (tmp_path / "spool").glob("*/*.seg") if p.stat().st_size]
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF  # corrupt the last record
    data += b"\x00\x00\x01\x00torn"  # and leave a torn frame behind it
    segment.write_bytes(bytes(data))
    broker.start()
    restarted = governor(broker, unique_topic_prefix, tmp_path, durability="wal")
    assert restarted.flush(90).complete
    quarantine = list((tmp_path / "spool").glob("*/quarantine/*"))
    ids = count_back(read_back, broker, unique_topic_prefix, set(emitted[:-1]), fault_report,
                     quarantined_records=1)
    assert emitted[-1] not in ids  # the corrupted record is not published...
    assert len(quarantine) == 1 and quarantine[0].stat().st_size > 8  # ...but kept aside
    restarted.shutdown(10)


def test_fatal_records_are_dead_lettered_and_the_rest_flows(
    broker: KafkaBroker, unique_topic_prefix: str, tmp_path: Path, read_back: ReadBack,
    fault_report: Report
) -> None:
    gov = governor(broker, unique_topic_prefix, tmp_path, max_event_bytes=4_000_000,
                   max_string_length=1_000_000,
                   producer={"request_timeout_ms": 3000, "max_request_size": 200_000},
                   topic_router=lambda kind, _: "not a valid topic!" if kind == "feedback" else "")
    emit = emitter(gov)

    @gov.tool(name="huge")
    def huge(text: str) -> int:
        return len(text)

    emitted = {emit(i) for i in range(50)}
    huge("z" * 500_000)  # larger than the producer's max request size
    too_large = promptgov.last_event_id()
    gov.feedback(target_event_id=too_large, score=0.0)  # routed to an invalid topic
    emitted |= {emit(i) for i in range(50, 100)}
    report = gov.flush(60)
    assert report.complete and report.dead_lettered == 2, report
    dead = [orjson.loads(line) for line in (tmp_path / "dead-letter.jsonl").read_bytes()
            .splitlines()]
    reasons = sorted(d["reason"].split(":")[0] for d in dead)
    assert reasons == ["InvalidTopicError", "MessageSizeTooLargeError"]
    assert too_large in {d["event_id"] for d in dead}
    count_back(read_back, broker, unique_topic_prefix, emitted, fault_report,
               dead_lettered=len(dead))
    gov.shutdown(10)


def test_fork_parent_and_children_all_delivered(broker: KafkaBroker, unique_topic_prefix: str,
                                                tmp_path: Path, read_back: ReadBack,
                                                fault_report: Report) -> None:
    out = subprocess.run(
        [sys.executable, str(APP), "fork", broker.bootstrap, unique_topic_prefix,
         str(tmp_path), "300", "2"],
        capture_output=True, text=True, timeout=240, check=True)
    lines = out.stdout.splitlines()
    emitted = {line.split()[1] for line in lines if line.startswith("id ")}
    spools = [line.split()[1] for line in lines if line.startswith("spool ")]
    assert len(emitted) == 900
    assert len(spools) == 3 and len(set(spools)) == 3 and "None" not in spools
    assert lines.count("flushed True") == 3 and "children [0, 0]" in lines
    count_back(read_back, broker, unique_topic_prefix, emitted, fault_report, processes=3)
    assert not os.path.exists(spools[0])  # delivered spools are removed


@pytest.mark.parametrize("durability", ["memory", "spill", "wal"])
def test_outage_longer_than_every_timeout_no_duplicates(
    broker: KafkaBroker, unique_topic_prefix: str, tmp_path: Path, read_back: ReadBack,
    fault_report: Report, durability: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Sends time out while the broker is down; the timed-out producer must not deliver
    behind the publisher's back once the broker returns (no duplicates, one value per id).
    The outage is logged by promptgov twice (start, recovery), not by aiokafka."""
    caplog.set_level(logging.INFO)
    gov = governor(broker, unique_topic_prefix, tmp_path, durability=durability)
    emit = emitter(gov)
    emitted = [emit(i) for i in range(10)]
    assert gov.flush(30).complete
    broker.stop()
    emitted += [emit(i) for i in range(10, 20)]
    outage = time.monotonic()
    while time.monotonic() - outage < 12.0:  # > request_timeout_ms (3 s) + the send bound
        assert not gov.flush(1.0).complete
    broker.start()
    report = gov.flush(90)
    assert report.complete, report
    records = read_back(broker.bootstrap, f"{unique_topic_prefix}.events", 20, timeout=90,
                        linger=3.0)
    values: dict[str, set[bytes]] = {}
    for record in records:
        values.setdefault(orjson.loads(record.value)["event_id"], set()).add(record.value)
    duplicates = len(records) - len(values)
    fault_report(emitted=len(emitted), delivered=len(set(emitted) & set(values)),
                 records=len(records), duplicates=duplicates, durability=durability)
    assert set(emitted) <= set(values)
    assert all(len(v) == 1 for v in values.values()), "an event id published with two values"
    assert duplicates == 0
    gov.shutdown(10)
    ours = [r for r in caplog.records if r.threadName.startswith("promptgov-")]
    assert not [r for r in ours if r.name.startswith("aiokafka")]
    messages = [r.getMessage() for r in ours if r.name == "promptgov"]
    assert sum("cannot deliver" in m for m in messages) == 1, messages
    assert sum("resumed after" in m for m in messages) == 1, messages


@pytest.mark.parametrize("durability", ["memory", "spill"])
def test_multiprocessing_children_leaving_through_os_exit_lose_nothing(
    broker: KafkaBroker, unique_topic_prefix: str, tmp_path: Path, read_back: ReadBack,
    fault_report: Report, durability: str
) -> None:
    out = subprocess.run(
        [sys.executable, str(APP), "pool", broker.bootstrap, unique_topic_prefix,
         str(tmp_path), "1000", "4", durability],
        capture_output=True, text=True, timeout=240, check=True)
    lines = out.stdout.splitlines()
    emitted = {line.split()[1] for line in lines if line.startswith("id ")}
    assert len(emitted) == 4000 and "exitcodes [0, 0, 0, 0]" in lines
    count_back(read_back, broker, unique_topic_prefix, emitted, fault_report,
               durability=durability, processes=4)


class _Blackhole:
    """A TCP server that accepts connections and never answers (a hung broker)."""

    def __init__(self) -> None:
        import socket

        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.bootstrap = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._held: list[Any] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._held.append(conn)

    def close(self) -> None:
        self._server.close()
        for conn in self._held:
            conn.close()


@pytest.mark.parametrize("timeout", [0.0, 2.0])
def test_broker_that_never_answers_shutdown_keeps_its_deadline(
    broker: KafkaBroker, unique_topic_prefix: str, tmp_path: Path, read_back: ReadBack,
    fault_report: Report, timeout: float
) -> None:
    hole = _Blackhole()
    try:
        gov = Governor(app="faults", bootstrap_servers=hole.bootstrap,
                       topic_prefix=unique_topic_prefix, local_dir=tmp_path,
                       register_atexit=False, durability="spill")  # default producer timeouts
        emit = emitter(gov)
        emitted = {emit(i) for i in range(500)}
        assert not gov.flush(1.0).complete
        started = time.monotonic()
        report = gov.shutdown(timeout)
        took = time.monotonic() - started
    finally:
        hole.close()
    assert took < timeout + 3.0, took  # the deadline plus the bounded spill and close
    assert report.spooled == 500, report  # nothing lost: all of it waits in the spool
    restarted = governor(broker, unique_topic_prefix, tmp_path, durability="spill")
    assert restarted.flush(90).complete
    count_back(read_back, broker, unique_topic_prefix, emitted, fault_report,
               shutdown_timeout=timeout, shutdown_seconds=round(took, 2))
    restarted.shutdown(10)
