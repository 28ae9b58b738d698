"""The dead-letter file: records that can never be delivered, with the reason."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from promptgov.transport.record import Record

logger = logging.getLogger("promptgov")


class DeadLetterFile:
    """Appends JSON lines (topic, key, headers, value, reason) to a private file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, record: Record, reason: str) -> None:
        """Keep one undeliverable record; never raises."""
        self._append({
            "dead_lettered_at": time.time(),
            "reason": reason,
            "event_id": record.event_id,
            "topic": record.topic,
            "key": record.key.decode("utf-8", "replace"),
            "headers": {k: v.decode("utf-8", "replace") for k, v in record.headers},
            "value": record.value.decode("utf-8", "replace"),
        })
        logger.error("promptgov: event %s dead-lettered to %s: %s", record.event_id,
                     self.path, reason)

    def write_unprocessable(self, event_id: str | None, event_type: str | None,
                            spool_seq: int | None) -> None:
        """Note an event that could not be processed at all: its ids, never its content
        (which was not redacted)."""
        self._append({"dead_lettered_at": time.time(), "reason": "processing failed",
                      "event_id": event_id, "event_type": event_type, "spool_seq": spool_seq})
        logger.error("promptgov: event %s could not be processed; noted in %s", event_id,
                     self.path)

    def _append(self, entry: dict[str, Any]) -> None:
        line = orjson.dumps(entry, default=repr) + b"\n"
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
        except OSError:
            logger.exception("promptgov: could not write the dead-letter file %s", self.path)
