"""Settings: explicit arguments > ``PROMPTGOV_*`` environment variables > defaults.

Every problem is reported here, at configuration time, as a
:class:`~promptgov.errors.ConfigurationError` naming the setting and the fix.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, cast

from promptgov.errors import ConfigurationError

logger = logging.getLogger("promptgov")

CaptureContent = Literal["redacted", "metadata", "raw"]
Durability = Literal["memory", "spill", "wal"]
FsyncPolicy = Literal["interval", "always", "never"]
WhenFull = Literal["block", "drop_newest", "drop_oldest"]
ForkDurability = Literal["wal", "inherit"]
TopicRouter = Callable[[str, str], str]
"""``router(event_type, classification) -> topic``."""

ENV_PREFIX = "PROMPTGOV_"
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_HOST_PORT_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")

# Exact names never captured. Names *like* these are matched too, by words:
# ``openai_api_key``, ``db_password``, ``X-API-Key``, ``session_token``, ``Cookie``...
# (promptgov.governance.secrets.is_secret_name); ``secret_argument_names`` adds exact names.
DEFAULT_SECRET_NAMES = frozenset(
    {
        "api_key",
        "apikey",
        "authorization",
        "auth",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refresh_token",
        "credentials",
        "private_key",
        "passphrase",
        "pwd",
        "bearer",
        "cookie",
        "session_token",
        "x-api-key",
        "proxy-authorization",
    }
)

# Producer options promptgov sets itself; anything else accepted by
# aiokafka.AIOKafkaProducer may be passed through ``producer``.
DEFAULT_PRODUCER: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "compression_type": "lz4",
    "linger_ms": 5,
    "max_batch_size": 262_144,
    "request_timeout_ms": 15_000,
}
_PRODUCER_RESERVED = {"loop", "bootstrap_servers", "key_serializer", "value_serializer"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Resolved, validated configuration of one :class:`~promptgov.Governor`."""

    app: str = "unknown-app"
    environment: str = "development"
    bootstrap_servers: str | None = None
    topic_prefix: str = "promptgov"
    local_dir: Path = Path(".promptgov")
    producer: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    capture_content: CaptureContent = "redacted"
    redactor: Any = None  # a promptgov.governance.redaction.Redactor; None = default
    policy: Mapping[str, Any] | None = None
    prompt_template: Mapping[str, Any] | None = None
    model: Mapping[str, Any] | None = None
    attributes: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    topic_router: TopicRouter | None = None
    create_topics: bool = True
    topic_partitions: int = 6
    topic_replication_factor: int = 1
    durability: Durability = "spill"
    spool_dir: Path | None = None  # default: <local_dir>/spool
    spool_max_bytes: int = 1024 * 1024 * 1024
    spool_segment_bytes: int = 16 * 1024 * 1024
    fsync: FsyncPolicy = "interval"
    fsync_interval_ms: int = 200
    when_full: WhenFull = "drop_newest"
    block_timeout_ms: int = 100
    max_queue_size: int = 20_000
    batch_size: int = 500
    flush_interval_ms: int = 50
    max_string_length: int = 65_536
    max_event_bytes: int = 900_000
    secret_argument_names: frozenset[str] = DEFAULT_SECRET_NAMES
    tracing: bool = True
    shutdown_timeout: float = 10.0
    register_atexit: bool = True
    fork_durability: ForkDurability = "wal"
    enabled: bool = True
    host_code_timeout_ms: int = 500

    @property
    def spool_path(self) -> Path:
        """Base directory of the spools (one subdirectory per governor)."""
        return self.spool_dir if self.spool_dir is not None else self.local_dir / "spool"

    @property
    def producer_options(self) -> dict[str, Any]:
        """aiokafka producer keyword arguments: defaults overlaid with ``producer``."""
        return {**DEFAULT_PRODUCER, **self.producer}


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_ENV_PARSERS: dict[str, Callable[[str], Any]] = {
    "app": str,
    "environment": str,
    "bootstrap_servers": str,
    "topic_prefix": str,
    "local_dir": str,
    "capture_content": str,
    "durability": str,
    "spool_dir": str,
    "spool_max_bytes": int,
    "spool_segment_bytes": int,
    "fsync": str,
    "fsync_interval_ms": int,
    "when_full": str,
    "block_timeout_ms": int,
    "create_topics": lambda v: _parse_bool("create_topics", v),
    "topic_partitions": int,
    "topic_replication_factor": int,
    "max_queue_size": int,
    "batch_size": int,
    "flush_interval_ms": int,
    "max_string_length": int,
    "max_event_bytes": int,
    "tracing": lambda v: _parse_bool("tracing", v),
    "shutdown_timeout": float,
    "fork_durability": str,
    "enabled": lambda v: _parse_bool("enabled", v),
    "host_code_timeout_ms": int,
}


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(name, f"{value!r} is not a boolean", "use true or false")


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key.startswith(ENV_PREFIX + "TEST_"):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        parser = _ENV_PARSERS.get(name)
        if parser is None:
            logger.warning("promptgov: ignoring unknown environment variable %s", key)
            continue
        try:
            values[name] = parser(raw)
        except ValueError as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(
                name, f"environment variable {key}={raw!r} is malformed", f"set a valid {name}"
            ) from exc
    return values


def resolve_settings(
    explicit: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> Settings:
    """Merge explicit arguments over the environment over defaults, then validate."""
    unknown = sorted(set(explicit) - set(_FIELDS))
    if unknown:
        raise ConfigurationError(
            unknown[0],
            "unknown setting",
            f"use one of: {', '.join(sorted(_FIELDS))}",
        )
    merged = _from_environment(os.environ if environ is None else environ)
    merged.update({k: v for k, v in explicit.items() if v is not None})
    return _validate(merged)


def _validate(values: dict[str, Any]) -> Settings:
    for name in ("app", "environment"):
        if name in values and (not isinstance(values[name], str) or not values[name].strip()):
            raise ConfigurationError(name, "must be a non-empty string", f"pass {name}='...'")
    if "bootstrap_servers" in values:
        values["bootstrap_servers"] = _bootstrap(values["bootstrap_servers"])
    if "topic_prefix" in values:
        _topic_prefix(values["topic_prefix"])
    if not isinstance(values.get("enabled", True), bool):
        raise ConfigurationError("enabled", f"{values['enabled']!r} is not a boolean",
                                 "pass enabled=True or enabled=False")
    if values.get("enabled", True) is False:  # capture off: nothing is written anywhere
        values["local_dir"] = Path(values.get("local_dir", Settings.local_dir)).expanduser()
    else:
        values["local_dir"] = _local_dir(values.get("local_dir", Settings.local_dir))
    if "producer" in values:
        values["producer"] = _producer(values["producer"])
    if "capture_content" in values:
        values["capture_content"] = _capture_content(values["capture_content"])
    redactor = values.get("redactor")
    if redactor is not None and not callable(getattr(redactor, "redact", None)):
        raise ConfigurationError(
            "redactor", "has no redact(value, path) method", "pass a promptgov.Redactor"
        )
    for name in ("policy", "prompt_template"):
        if name in values:
            values[name] = _reference(name, values[name])
    if "model" in values:
        values["model"] = _model(values["model"])
    if "topic_router" in values:
        values["topic_router"] = _router(values["topic_router"])
    if "secret_argument_names" in values:
        names = values["secret_argument_names"]
        if isinstance(names, str):  # "a,b" (not the characters of one name)
            names = names.split(",")
        extra = {str(n).strip().lower() for n in names} - {""}
        values["secret_argument_names"] = DEFAULT_SECRET_NAMES | extra
    for name, allowed in (
        ("durability", ("memory", "spill", "wal")),
        ("fsync", ("interval", "always", "never")),
        ("when_full", ("block", "drop_newest", "drop_oldest")),
        ("fork_durability", ("wal", "inherit")),
    ):
        if name in values and values[name] not in allowed:
            raise ConfigurationError(name, f"{values[name]!r} is not one of {allowed}",
                                     f"use one of: {', '.join(allowed)}")
    if values.get("spool_dir") is not None:
        values["spool_dir"] = Path(values["spool_dir"]).expanduser()
    for name, minimum in (
        ("spool_max_bytes", 1024 * 1024),
        ("spool_segment_bytes", 64 * 1024),
        ("fsync_interval_ms", 1),
        ("block_timeout_ms", 0),
        ("topic_partitions", 1),
        ("topic_replication_factor", -1),
        ("max_queue_size", 1),
        ("batch_size", 1),
        ("flush_interval_ms", 1),
        ("max_string_length", 64),
        ("max_event_bytes", 4096),
        ("host_code_timeout_ms", 10),
    ):
        if name in values and (not isinstance(values[name], int) or values[name] < minimum):
            raise ConfigurationError(name, f"{values[name]!r} is not an integer >= {minimum}",
                                     f"pass an integer >= {minimum}")
    segment = values.get("spool_segment_bytes", Settings.spool_segment_bytes)
    if values.get("spool_max_bytes", Settings.spool_max_bytes) < 2 * segment:
        raise ConfigurationError("spool_max_bytes", "is less than two segments",
                                 "raise spool_max_bytes or lower spool_segment_bytes")
    if "shutdown_timeout" in values and float(values["shutdown_timeout"]) < 0:
        raise ConfigurationError("shutdown_timeout", "is negative", "pass seconds >= 0")
    return Settings(**values)


def _bootstrap(value: Any) -> str:
    items = value.split(",") if isinstance(value, str) else list(value)
    cleaned = [str(item).strip() for item in items if str(item).strip()]
    fix = "use 'host:port' or 'host1:port1,host2:port2' (e.g. 'localhost:9092')"
    if not cleaned:
        raise ConfigurationError("bootstrap_servers", "is empty", fix)
    for item in cleaned:
        item = item.split("://", 1)[-1]  # tolerate PLAINTEXT://host:port
        match = _HOST_PORT_RE.match(item)
        if match is None:
            raise ConfigurationError("bootstrap_servers", f"{item!r} is not host:port", fix)
        if not 0 < int(match.group(2)) < 65536:
            raise ConfigurationError("bootstrap_servers",
                                     f"{item!r}: the port is not in 1-65535", fix)
    return ",".join(item.split("://", 1)[-1] for item in cleaned)


def _topic_prefix(value: Any) -> None:
    fix = "use letters, digits, '.', '_' and '-' only, at most 200 characters"
    if not isinstance(value, str) or not value or len(value) > 200 or not _TOPIC_RE.match(value):
        raise ConfigurationError("topic_prefix", f"{value!r} is not a valid topic prefix", fix)
    if value in {".", ".."}:
        raise ConfigurationError("topic_prefix", f"{value!r} is reserved", fix)


def _local_dir(value: Any) -> Path:
    path = Path(value).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigurationError(
            "local_dir",
            f"{str(path)!r} is not a writable directory ({exc.strerror or exc})",
            "point local_dir (or PROMPTGOV_LOCAL_DIR) at a directory this process can write",
        ) from exc
    return path


def _producer(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigurationError("producer", "must be a mapping", "pass producer={'linger_ms': 5}")
    from aiokafka import AIOKafkaProducer

    allowed = set(inspect.signature(AIOKafkaProducer.__init__).parameters) - {"self", "kwargs"}
    allowed -= _PRODUCER_RESERVED
    for key in value:
        if key not in allowed:
            raise ConfigurationError(
                f"producer.{key}",
                "is not an aiokafka producer option promptgov can pass",
                f"use one of: {', '.join(sorted(allowed))}",
            )
    if value.get("compression_type") not in (None, "gzip", "snappy", "lz4", "zstd"):
        raise ConfigurationError(
            "producer.compression_type", f"{value['compression_type']!r} is unknown",
            "use gzip, snappy, lz4, zstd or None",
        )
    return dict(value)


def _capture_content(value: Any) -> CaptureContent:
    if isinstance(value, str) and value.strip().lower() in {"true", "false", "1", "0", "yes",
                                                             "no", "on", "off"}:
        value = _parse_bool("capture_content", value)  # from the environment
    if value is True:
        return "redacted"
    if value is False:
        return "metadata"
    if value in ("redacted", "metadata", "raw"):
        return cast(CaptureContent, value)
    raise ConfigurationError(
        "capture_content", f"{value!r} is not a capture mode",
        "use 'redacted' (default), 'metadata' (no content) or 'raw' (opt-in raw topic)",
    )


def _reference(name: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = {"id": value}
    if isinstance(value, (tuple, list)) and len(value) == 2:
        value = {"id": value[0], "version": value[1]}
    if not isinstance(value, Mapping) or not value.get("id") or set(value) - {"id", "version"}:
        raise ConfigurationError(
            name, f"{value!r} is not a reference",
            f"pass {name}='id' or {{'id': ..., 'version': ...}}",
        )
    return {"id": str(value["id"]), "version": None if value.get("version") is None
            else str(value["version"])}


def _model(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = {"name": value}
    allowed = {"provider", "name", "version", "parameters"}
    if not isinstance(value, Mapping) or set(value) - allowed:
        raise ConfigurationError(
            "model", f"{value!r} is not a model description",
            "pass model='gpt-4o-mini' or {'provider': ..., 'name': ..., 'version': ...}",
        )
    return dict(value)


def _router(value: Any) -> TopicRouter | None:
    if value is None or callable(value):
        return cast("TopicRouter | None", value)
    if isinstance(value, Mapping):
        mapping = {str(k): str(v) for k, v in value.items()}
        for topic in mapping.values():
            if not _TOPIC_RE.match(topic):
                raise ConfigurationError("topic_router", f"{topic!r} is not a valid topic name",
                                         "use letters, digits, '.', '_' and '-'")
        return _MappingRouter(mapping)
    raise ConfigurationError(
        "topic_router", "must be a callable or a mapping",
        "pass {'prompt': 'my.topic', ...} or a function (event_type, classification) -> topic",
    )


@dataclasses.dataclass(frozen=True)
class _MappingRouter:
    """Topic overrides by event type or by class ('raw'); unnamed ones use the default."""

    mapping: Mapping[str, str]

    def __call__(self, event_type: str, classification: str) -> str:
        if classification == "raw" and "raw" in self.mapping:
            return self.mapping["raw"]
        return self.mapping.get(event_type, "")
