"""What a stage is: a name, a version, its inputs and a transform; and the derived events.

A transform takes one source event (the envelope as a dict, with where it was
read in :class:`Source`) and returns zero or more :class:`Output` objects. The
runner turns each output into a full envelope that points back to its source
(``lineage``) and carries the source's identity, model, prompt template and
policy forward, with an event id derived from the source event id, the stage
name and version and the output's index: processing the same source twice
yields the same ids.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Optional, Union

from promptgov import _version
from promptgov.events.ids import format_time, now_ns
from promptgov.events.models import SCHEMA_VERSION

MAX_OUTPUTS = 1000
"""Outputs one source event may have (``seq`` = source offset * 1000 + output index)."""

# The fields a derived event takes from its source unless the output sets them.
CARRIED = ("tenant_id", "user_id", "session_id", "conversation_id", "interaction_id",
           "trace_id", "span_id", "model", "prompt_template", "policy")


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a source event was read: its record's coordinates and metadata."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None


@dataclasses.dataclass
class Output:
    """One derived event: its kind and payload; anything else defaults from the source.

    ``topic`` defaults to the stage's route for the kind; ``fields`` may set any
    envelope field (``policy``, ``classification``, ``attributes``, ...).
    """

    event_type: str
    payload: dict[str, Any]
    topic: str | None = None
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)


TransformResult = Optional[Iterable["Output"]]  # noqa: UP045  (a runtime alias on 3.10)
Transform = Callable[[dict[str, Any], "Source"],
                     Union[TransformResult, Awaitable[TransformResult]]]  # noqa: UP007


@dataclasses.dataclass(frozen=True)
class Stage:
    """A consumer-side processing step.

    ``inputs`` are topic classes (``"events"`` -> ``<prefix>.events``) or full
    topic names (containing a dot); ``kinds`` keeps only those event types
    (others are skipped and their offsets committed). ``routes`` maps an output
    kind to a topic class or name; unrouted kinds go to ``<prefix>.stage.<name>``.
    """

    name: str
    version: str
    transform: Transform
    inputs: tuple[str, ...] = ("events",)
    kinds: frozenset[str] | None = None
    routes: dict[str, str] = dataclasses.field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name or ""):
            raise ValueError(f"stage name {self.name!r}: use ASCII letters, digits, '-' and "
                             "'_', at most 100 characters")
        if not self.version:
            raise ValueError("a stage needs a version")

    @property
    def is_async(self) -> bool:
        """Whether the transform is a coroutine function."""
        return inspect.iscoroutinefunction(self.transform)

    def input_topics(self, prefix: str) -> list[str]:
        """The topics this stage consumes."""
        return [_topic(prefix, name) for name in self.inputs]

    def output_topic(self, prefix: str, output: Output) -> str:
        """Where one output goes."""
        if output.topic:
            return _topic(prefix, output.topic)
        route = self.routes.get(output.event_type)
        return _topic(prefix, route) if route else f"{prefix}.stage.{self.name}"

    def group_id(self, prefix: str) -> str:
        """The consumer group: one per stage name (all versions share its offsets)."""
        return f"{prefix}.stage.{self.name}"

    def dlq_topic(self, prefix: str) -> str:
        """Where records the stage cannot process go."""
        return f"{prefix}.dlq.{self.name}"


_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
# Envelope fields an output may not set: they make the derived event what it is.
PROTECTED = ("event_id", "event_type", "schema_version", "sdk", "producer_id", "seq",
             "lineage")


def _topic(prefix: str, name: str) -> str:
    return name if "." in name else f"{prefix}.{name}"


def stage(name: str, version: str, **options: Any) -> Callable[[Transform], Stage]:
    """Decorator: ``@stage("pii-audit", "1", inputs=("events",))`` on a transform."""

    def make(transform: Transform) -> Stage:
        kinds = options.pop("kinds", None)
        return Stage(name, version, transform, kinds=frozenset(kinds) if kinds else None,
                     **options)

    return make


def derived_event_id(source_event_id: str, stage_name: str, stage_version: str,
                     index: int) -> str:
    """A UUIDv7-shaped id: the source's millisecond time, then hash bits.

    Deterministic: the same source, stage, version and index always give the same
    id, so a record derived twice (a retry, a replay) is recognisably the same.
    """
    digest = hashlib.sha256(
        f"{source_event_id}\x1f{stage_name}\x1f{stage_version}\x1f{index}".encode()).digest()
    hex_source = source_event_id.replace("-", "")
    millis = hex_source[:12] if len(hex_source) == 32 and _is_hex(hex_source) else \
        digest[:6].hex()
    rand = int.from_bytes(digest[6:16], "big")
    value = (int(millis, 16) << 80) | (0x7 << 76) | (((rand >> 64) & 0xFFF) << 64) | (
        0x8000000000000000 | (rand & ((1 << 62) - 1)))
    h = value.to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def derive(stage: Stage, source_event: dict[str, Any], source: Source, output: Output,
           index: int) -> dict[str, Any]:
    """The full envelope of one output of ``stage`` for ``source_event``."""
    source_id = str(source_event.get("event_id") or
                    f"{source.topic}/{source.partition}/{source.offset}")
    envelope: dict[str, Any] = {
        "event_id": derived_event_id(source_id, stage.name, stage.version, index),
        "event_type": output.event_type,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": format_time(now_ns()),
        "app": source_event.get("app") or "unknown-app",
        "environment": source_event.get("environment") or "unknown",
        "sdk": {"name": "promptgov", "version": _version.__version__},
        "producer_id": f"stage:{stage.name}@{stage.version}:{source.topic}/{source.partition}",
        "seq": source.offset * MAX_OUTPUTS + index,
        "parent_event_id": source_id,
        "classification": "metadata",
        "redaction": None,
        "integrity": None,
        "attributes": {},
        "lineage": {
            "source_topic": source.topic,
            "source_partition": source.partition,
            "source_offset": source.offset,
            "source_event_id": source_event.get("event_id"),
            "source_event_type": source_event.get("event_type"),
            "source_occurred_at": source_event.get("occurred_at"),
            "stage": stage.name,
            "stage_version": stage.version,
            "output_index": index,
        },
        "payload": output.payload,
    }
    for name in CARRIED:
        envelope[name] = source_event.get(name)
    envelope.update({k: v for k, v in output.fields.items() if k not in PROTECTED})
    return envelope
