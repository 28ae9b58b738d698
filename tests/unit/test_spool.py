"""The spool's file format, recovery and housekeeping; durability modes on the local sink."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from local_events import read_local_events

import promptgov
from promptgov import Governor
from promptgov.transport.spool import Spool, SpoolUnavailable, orphaned_spools


def open_spool(path: Path, **options: object) -> Spool:
    defaults: dict[str, object] = {"segment_bytes": 64 * 1024, "max_bytes": 1024 * 1024}
    defaults.update(options)
    return Spool.open(path, **defaults)


def test_append_read_ack_in_order(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s")
    seqs = [spool.append(f"event {i}".encode()) for i in range(10)]
    assert seqs == list(range(1, 11))
    assert [d for _, d in spool.read(4)] == [f"event {i}".encode() for i in range(4)]
    assert [s for s, _ in spool.read(100)] == list(range(5, 11))
    assert spool.read(10) == []
    assert spool.pending == 10
    spool.ack(10)
    assert spool.pending == 0
    spool.close()
    assert not (tmp_path / "s").exists()  # nothing left: removed


def test_files_are_private(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s")
    spool.append(b"secret prompt")
    assert (tmp_path / "s").stat().st_mode & 0o777 == 0o700
    for path in (tmp_path / "s").iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
    spool.close()


def test_segments_roll_and_are_deleted_once_acknowledged(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s")
    payload = b"x" * 1000
    for _ in range(300):
        spool.append(payload)
        spool.maintain()
    segments = sorted((tmp_path / "s").glob("*.seg"))
    assert len(segments) >= 4
    records = spool.read(1000)
    assert len(records) == 300
    spool.ack(records[150][0])
    assert len(sorted((tmp_path / "s").glob("*.seg"))) < len(segments)
    spool.close()


def test_reopen_redelivers_everything_past_the_watermark(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s")
    for i in range(20):
        spool.append(str(i).encode())
    spool.read(20)
    spool.ack(7)
    spool.close()  # seven delivered, thirteen left for the next process
    again = open_spool(tmp_path / "s")
    assert [d for _, d in again.read(100)] == [str(i).encode() for i in range(7, 20)]
    assert again.append(b"new") == 21  # sequence numbers continue
    again.close(remove_if_empty=False)


def test_torn_and_corrupted_tails_are_truncated_and_quarantined(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s")
    for i in range(5):
        spool.append(f"record {i}".encode())
    spool.close(remove_if_empty=False)
    (segment,) = (tmp_path / "s").glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0x01  # flip a bit in the last record
    segment.write_bytes(bytes(data) + b"\x00\x00\x00\x09torn")
    again = open_spool(tmp_path / "s")
    assert [d for _, d in again.read(10)] == [f"record {i}".encode() for i in range(4)]
    assert again.recovery.corrupt_segments == 1
    quarantined = list((tmp_path / "s" / "quarantine").iterdir())
    assert len(quarantined) == 1 and quarantined[0].read_bytes().endswith(b"torn")
    again.close(remove_if_empty=False)


def test_full_spool_refuses_and_discarding_the_oldest_makes_room(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s", segment_bytes=64 * 1024, max_bytes=256 * 1024)
    written = 0
    while spool.append(b"y" * 4000) is not None:
        written += 1
        spool.maintain()
    assert 50 < written < 70
    lost = spool.discard_oldest_segment()
    assert lost > 0
    assert spool.append(b"y" * 4000) is not None
    assert spool.pending == written - lost + 1
    spool.close(remove_if_empty=False)


def test_one_owner_at_a_time_and_orphans_are_found(tmp_path: Path) -> None:
    live = open_spool(tmp_path / "live")
    live.append(b"a")
    with pytest.raises(SpoolUnavailable):
        open_spool(tmp_path / "live")  # a second writer is refused
    dead = open_spool(tmp_path / "dead")
    dead.append(b"b")
    dead.release()  # its process is gone: the lock is free, the data stays
    assert orphaned_spools(tmp_path) == [tmp_path / "dead"]
    live.close(remove_if_empty=False)


def test_concurrent_appends_keep_every_record(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s", max_bytes=64 * 1024 * 1024)

    def writer(n: int) -> None:
        for i in range(2000):
            assert spool.append(f"{n}-{i}".encode()) is not None

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = spool.read(10_000)
    assert [s for s, _ in records] == list(range(1, 8001))
    assert len({d for _, d in records}) == 8000
    spool.close(remove_if_empty=False)


# --- durability modes through a governor (local sink) ------------------------------------


def test_wal_event_is_on_disk_before_the_call_returns(tmp_path: Path) -> None:
    gov = Governor(local_dir=tmp_path, durability="wal", register_atexit=False,
                   bootstrap_servers="127.0.0.1:9", producer={"request_timeout_ms": 200})

    @gov.tool
    def act(x: int) -> int:
        return x

    assert act(41) == 41
    event_id = promptgov.last_event_id()
    assert event_id is not None  # no broker: the spool is the only place it can be
    segments = list((tmp_path / "spool").glob("*/*.seg"))
    assert any(event_id.encode() in p.read_bytes() for p in segments)
    assert gov.shutdown(0.2).spooled == 1


@pytest.mark.parametrize("durability", ["memory", "spill", "wal"])
def test_every_mode_delivers_in_order(tmp_path: Path, durability: str) -> None:
    gov = Governor(local_dir=tmp_path, durability=durability, register_atexit=False)

    @gov.tool
    def act(x: int) -> int:
        return x

    with promptgov.interaction(conversation_id="c"):
        for i in range(500):
            act(i)
    assert gov.flush(10).complete
    assert [e["payload"]["result"] for e in read_local_events(tmp_path)] == list(range(500))
    gov.shutdown(5)
    assert not any((tmp_path / "spool").glob("*/*.seg"))  # delivered: nothing left behind


def test_drop_oldest_keeps_the_newest_and_reports_the_gap(tmp_path: Path) -> None:
    gov = Governor(local_dir=tmp_path, durability="memory", register_atexit=False,
                   max_queue_size=10, when_full="drop_oldest")
    gov._publisher._thread = threading.Thread()  # hold the publisher: nothing drains
    for i in range(30):
        gov.emit_event("feedback", {"target_event_id": f"t{i}"})
    gov._publisher._thread = None
    assert gov.flush(10).complete
    events = read_local_events(tmp_path)
    kept = [e["payload"]["target_event_id"] for e in events if e["event_type"] == "feedback"]
    assert kept == [f"t{i}" for i in range(20, 30)]
    (gap,) = [e for e in events if e["event_type"] == "gap"]
    assert gap["payload"]["count"] == 20
    assert gap["payload"]["reason"] == "queue_full_drop_oldest"
    assert gov.stats()["dropped_by_reason"] == {"queue_full_drop_oldest": 20}
    gov.shutdown(5)


def test_block_waits_for_room_instead_of_dropping(tmp_path: Path) -> None:
    gov = Governor(local_dir=tmp_path, durability="memory", register_atexit=False,
                   max_queue_size=5, batch_size=5, when_full="block", block_timeout_ms=5000)
    for i in range(200):
        gov.emit_event("feedback", {"target_event_id": f"t{i}"})
    assert gov.flush(10).complete
    assert gov.stats()["dropped"] == 0
    assert len(read_local_events(tmp_path)) == 200
    gov.shutdown(5)


def test_spill_shutdown_leaves_the_rest_for_the_next_process(tmp_path: Path) -> None:
    gov = Governor(local_dir=tmp_path, durability="spill", register_atexit=False,
                   bootstrap_servers="127.0.0.1:9", producer={"request_timeout_ms": 200})
    for i in range(50):
        gov.emit_event("feedback", {"target_event_id": f"t{i}"})
    report = gov.shutdown(0.5)
    assert report.pending == 50 and report.spooled == 50
    assert os.listdir(tmp_path / "spool")
    nxt = Governor(local_dir=tmp_path, durability="spill", register_atexit=False)
    assert nxt.flush(10).complete
    assert nxt.stats()["adopted"] == 50
    assert len(read_local_events(tmp_path)) == 50
    nxt.shutdown(5)
