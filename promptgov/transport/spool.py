"""The durable spool: an append-only, segmented write-ahead log of events.

Layout of one spool (one per governor, ``<spool_dir>/<owner>/``)::

    lock                       flock'ed by the owning process for its lifetime
    ledger                     {"acked": N}: every record with seq <= N is delivered
    inflight                   the governed records of the batch being sent (see hold())
    00000000000000000001.seg   segments, named by their first sequence number
    quarantine/                bytes cut from corrupted segment tails

Each record is framed as ``length (u32) | crc32 (u32) | seq (u64) | data``;
the CRC covers seq and data. Appends are thread-safe and cost one ``write``
(the host's only cost in ``wal`` mode). Rolling, fsync, reading, acknowledging
and deleting fully acknowledged segments are for the publisher thread.
Files are created 0600 and directories 0700: records hold prompt content
before redaction.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import orjson

logger = logging.getLogger("promptgov")

_HEADER = struct.Struct(">IIQ")
_MAX_RECORD = 64 * 1024 * 1024
_SUFFIX = ".seg"


class SpoolUnavailable(OSError):
    """The spool directory cannot be used (unwritable, missing, locked)."""


@dataclass
class _Segment:
    first_seq: int
    path: Path
    size: int
    last_seq: int  # 0 while empty


@dataclass(frozen=True)
class RecoveryReport:
    """What opening an existing spool found."""

    records: int
    quarantined_bytes: int
    corrupt_segments: int


class Spool:
    """One owner's spool directory. ``open()`` recovers an existing one."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 16 * 1024 * 1024,
        max_bytes: int = 1024 * 1024 * 1024,
        fsync: str = "interval",
        fsync_interval: float = 0.2,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.fsync_policy = fsync
        self.fsync_interval = fsync_interval
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._next_seq = 1
        self._acked = 0
        self._read_seq = 1  # next seq the reader hands out
        self._read_pos: tuple[int, int] = (0, 0)  # (segment index in list, byte offset)
        self._bytes = 0
        self._dirty = False
        self._last_fsync = time.monotonic()
        self._held_until = 0  # last seq covered by the inflight file (0: none)
        self.recovery = RecoveryReport(0, 0, 0)

    # --- opening ----------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, **options: object) -> Spool:
        """Lock and open (or create) a spool directory; recover what it holds."""
        spool = cls(directory, **options)  # type: ignore[arg-type]
        spool._open()
        return spool

    def _open(self) -> None:
        try:
            if not self.directory.exists():
                self._create_locked()
            else:
                self._lock_existing()
        except SpoolUnavailable:
            raise
        except OSError as exc:
            raise SpoolUnavailable(exc.errno, f"spool {self.directory}: {exc.strerror}") from exc
        self._acked = self._read_ledger()
        self._recover()
        if (self.directory / "inflight").exists():
            self._held_until = -1  # left by the previous owner: covers the first unacked
        self._read_seq = self._acked + 1
        self._read_pos = (0, 0)
        self._open_writer(self._next_seq)

    def _create_locked(self) -> None:
        """Create the directory already locked: made under a hidden name, then renamed,
        so another process looking for orphans never sees it unlocked."""
        self.directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = self.directory.with_name(f".{self.directory.name}.new")
        staging.mkdir(mode=0o700)
        fd = os.open(staging / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(staging, self.directory)
        self._lock_fd = fd

    def _lock_existing(self) -> None:
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise SpoolUnavailable(exc.errno, f"spool {self.directory} is in use") from exc
        self._lock_fd = fd

    def _read_ledger(self) -> int:
        try:
            return int(orjson.loads((self.directory / "ledger").read_bytes())["acked"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def _recover(self) -> None:
        records = quarantined = corrupt = 0
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            try:
                first = int(path.stem)
            except ValueError:
                continue
            segment = _Segment(first, path, 0, 0)
            valid_end, count, last = _scan(path, first)
            size = path.stat().st_size
            if valid_end < size:
                corrupt += 1
                quarantined += size - valid_end
                self._quarantine(path, valid_end)
            if count == 0:
                path.unlink()
                continue
            segment.size, segment.last_seq = valid_end, last
            records += count
            self._segments.append(segment)
            self._bytes += valid_end
            self._next_seq = max(self._next_seq, last + 1)
        # Drop segments that are wholly acknowledged already.
        while self._segments and self._segments[0].last_seq <= self._acked:
            self._delete(self._segments.pop(0))
        if self._acked >= self._next_seq:
            self._next_seq = self._acked + 1
        self.recovery = RecoveryReport(records, quarantined, corrupt)
        if corrupt:
            logger.warning("promptgov: spool %s had %d corrupted segment tail(s); %d bytes "
                           "quarantined", self.directory, corrupt, quarantined)

    def _quarantine(self, path: Path, valid_end: int) -> None:
        folder = self.directory / "quarantine"
        folder.mkdir(exist_ok=True, mode=0o700)
        with path.open("rb+") as handle:
            handle.seek(valid_end)
            rest = handle.read()
            target = folder / f"{path.name}.{int(time.time() * 1000)}"
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(rest)
            handle.truncate(valid_end)
            os.fsync(handle.fileno())

    def _open_writer(self, first_seq: int) -> None:
        path = self.directory / f"{first_seq:020d}{_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._fd = fd
        self._segments.append(_Segment(first_seq, path, os.fstat(fd).st_size, 0))

    # --- writing (any thread) ---------------------------------------------------------

    def append(self, data: bytes) -> int | None:
        """Append one record; its sequence number, or None when the spool is full."""
        frame_size = _HEADER.size + len(data)
        with self._lock:
            if self._bytes + frame_size > self.max_bytes or self._fd is None:
                return None
            seq = self._next_seq
            body = struct.pack(">Q", seq) + data
            os.write(self._fd, _HEADER.pack(len(data), zlib.crc32(body), seq) + data)
            self._next_seq = seq + 1
            segment = self._segments[-1]
            segment.size += frame_size
            segment.last_seq = seq
            self._bytes += frame_size
            self._dirty = True
        return seq

    # --- publisher side -----------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records appended but not yet acknowledged."""
        return self._next_seq - 1 - self._acked

    @property
    def unread(self) -> int:
        """Records appended but not yet handed out by :meth:`read`."""
        return self._next_seq - self._read_seq

    @property
    def size_bytes(self) -> int:
        """Bytes held in segments."""
        return self._bytes

    def read(self, max_records: int) -> list[tuple[int, bytes]]:
        """The next unread records, in order (publisher thread only)."""
        out: list[tuple[int, bytes]] = []
        with self._lock:
            segments = list(self._segments)
            limits = [(s.size, s.last_seq) for s in segments]
        index, offset = self._read_pos
        while len(out) < max_records and index < len(segments):
            segment = segments[index]
            end, _ = limits[index]
            if offset >= end:
                if index == len(segments) - 1:
                    break
                index, offset = index + 1, 0
                continue
            with segment.path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read(end - offset)
            pos = 0
            while pos + _HEADER.size <= len(chunk) and len(out) < max_records:
                length, _crc, seq = _HEADER.unpack_from(chunk, pos)
                start = pos + _HEADER.size
                data = chunk[start : start + length]
                pos = start + length
                if seq >= self._read_seq:
                    out.append((seq, data))
                    self._read_seq = seq + 1
            offset += pos
        self._read_pos = (index, offset)
        return out

    def first_pending(self) -> bytes | None:
        """The oldest unacknowledged record's data (for the age metric), or None."""
        with self._lock:
            segments = [(s.path, s.size, s.last_seq) for s in self._segments]
        acked = self._acked
        for path, size, last_seq in segments:
            if not last_seq or last_seq <= acked:
                continue
            try:
                with path.open("rb") as handle:
                    pos = 0
                    while pos + _HEADER.size <= size:
                        length, _crc, seq = _HEADER.unpack(handle.read(_HEADER.size))
                        if seq > acked:
                            return handle.read(length)
                        handle.seek(length, os.SEEK_CUR)
                        pos += _HEADER.size + length
            except (OSError, struct.error):
                return None
        return None

    def hold(self, last_seq: int, data: bytes) -> None:
        """Keep the governed form of the records up to ``last_seq`` about to be sent.

        A send may reach the broker and still look failed (a timeout), and the
        process may die before the acknowledgement: whoever sends these records
        again (this process after a restart, or one that adopts the spool) reads
        them back with :meth:`held` and re-sends the same bytes.
        """
        _write_atomic(self.directory / "inflight", data)
        self._held_until = last_seq

    def held(self) -> bytes | None:
        """What :meth:`hold` kept and is not acknowledged yet, or None."""
        if not self._held_until:
            return None
        try:
            return (self.directory / "inflight").read_bytes()
        except OSError:
            return None

    def ack(self, seq: int) -> None:
        """Every record up to ``seq`` is delivered: persist, delete finished segments."""
        if seq <= self._acked:
            return
        self._acked = seq
        _write_atomic(self.directory / "ledger", orjson.dumps({"acked": seq}))
        if self._held_until and seq >= self._held_until:
            self._held_until = 0
            with contextlib.suppress(OSError):
                (self.directory / "inflight").unlink()
        with self._lock:
            done = [s for s in self._segments[:-1] if s.last_seq and s.last_seq <= seq]
            for segment in done:
                self._segments.remove(segment)
                self._bytes -= segment.size
            index, offset = self._read_pos
            self._read_pos = (max(index - len(done), 0), offset if index >= len(done) else 0)
        for segment in done:
            self._delete(segment)

    def rewind(self) -> None:
        """Hand out unacknowledged records again (after a failed delivery)."""
        self._read_seq = self._acked + 1
        self._read_pos = (0, 0)

    def maintain(self, force_fsync: bool = False) -> None:
        """Roll a full segment and fsync as the policy says (publisher thread only)."""
        current = self._segments[-1] if self._segments else None
        if current is not None and current.size >= self.segment_bytes:
            self._roll()
        due = (self.fsync_policy == "always"
               or (self.fsync_policy == "interval"
                   and time.monotonic() - self._last_fsync >= self.fsync_interval))
        if self._dirty and (due or force_fsync):
            self.sync()

    def sync(self) -> None:
        """fsync the segment being written."""
        fd = self._fd
        if fd is not None:
            self._dirty = False
            os.fsync(fd)
            self._last_fsync = time.monotonic()

    def _roll(self) -> None:
        new_first = self._next_seq
        path = self.directory / f"{new_first:020d}{_SUFFIX}"
        new_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with self._lock:
            old_fd, self._fd = self._fd, new_fd
            self._segments.append(_Segment(self._next_seq, path, 0, 0))
        if old_fd is not None:
            os.fsync(old_fd)  # fsync on roll, whatever the policy
            os.close(old_fd)

    def discard_oldest_segment(self) -> int:
        """Give up the oldest closed segment (``drop_oldest``); how many events were lost."""
        with self._lock:
            if len(self._segments) < 2:
                return 0  # only the segment being written: nothing can be discarded
            segment = self._segments.pop(0)
            self._bytes -= segment.size
            index, offset = self._read_pos
            self._read_pos = (index - 1, offset) if index > 0 else (0, 0)
        lost = max(segment.last_seq - max(self._acked, segment.first_seq - 1), 0)
        self._read_seq = max(self._read_seq, segment.last_seq + 1)
        self._acked = max(self._acked, segment.last_seq)
        _write_atomic(self.directory / "ledger", orjson.dumps({"acked": self._acked}))
        self._delete(segment)
        return lost

    def forget_after_fork(self) -> None:
        """In a forked child: close the inherited descriptors, leave files and lock alone."""
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._lock_fd = None

    def _delete(self, segment: _Segment) -> None:
        with contextlib.suppress(OSError):
            segment.path.unlink()

    def close(self, remove_if_empty: bool = True) -> None:
        """fsync and close; remove the directory when nothing is left to deliver."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(fd)
            os.close(fd)
        if remove_if_empty and self.pending == 0:
            for path in self.directory.glob(f"*{_SUFFIX}"):
                path.unlink(missing_ok=True)
            if not any((self.directory / "quarantine").glob("*")):
                for name in ("inflight", "ledger", "lock"):
                    (self.directory / name).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    (self.directory / "quarantine").rmdir()
                with contextlib.suppress(OSError):
                    self.directory.rmdir()
        self.release()

    def release(self) -> None:
        """Drop the directory lock (also the child's inherited copy after fork)."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)


def _scan(path: Path, first_seq: int) -> tuple[int, int, int]:
    """(end of the last valid record, valid records, last seq) of one segment file."""
    data = path.read_bytes()
    pos = count = last = 0
    expected = first_seq
    while pos + _HEADER.size <= len(data):
        length, crc, seq = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        if length > _MAX_RECORD or start + length > len(data) or seq < expected:
            break
        body = data[start - 8 : start + length]  # seq (the header's last 8 bytes) + data
        if zlib.crc32(body) != crc:
            break
        pos, count, last, expected = start + length, count + 1, seq, seq + 1
    return pos, count, last


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def orphaned_spools(base: Path, exclude: Path | None = None) -> list[Path]:
    """Spool directories under ``base`` whose owner is gone (their lock is free)."""
    found = []
    try:
        candidates = sorted(p for p in base.iterdir()
                            if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    for directory in candidates:
        if exclude is not None and directory == exclude:
            continue
        lock = directory / "lock"
        if not lock.exists():
            if any(directory.glob(f"*{_SUFFIX}")):
                found.append(directory)
            continue
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live process holds it
        finally:
            os.close(fd)  # closing releases the probe's own lock
        found.append(directory)
    return found
