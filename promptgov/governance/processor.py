"""Turns drafts into publishable records, on the publisher's side.

Per draft: capture inputs and outputs as JSON, recognise LLM shapes, redact,
classify, hash into the per-producer integrity chain, serialise canonically,
route, key and add headers. Anything that fails here degrades the event (its
content is withheld and a warning recorded) rather than losing it.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from pydantic import ValidationError

from promptgov import _version
from promptgov.config import Settings
from promptgov.events import llm_shapes
from promptgov.events.codec import Limits, to_jsonable
from promptgov.events.draft import CallSite, Draft, resolve
from promptgov.events.ids import format_time
from promptgov.events.models import PAYLOAD_MODELS, SCHEMA_VERSION
from promptgov.governance.redaction import DefaultRedactor, Redactor
from promptgov.governance.routing import Router, record_headers, record_key
from promptgov.transport.record import Record

logger = logging.getLogger("promptgov")

# payload fields that hold user content, per event type
CONTENT_FIELDS: dict[str, tuple[str, ...]] = {
    "prompt": ("input", "messages"),
    "response": ("output", "error"),
    "retrieval": ("query", "documents", "output", "error"),
    "tool_call": ("arguments", "result", "error"),
    "feedback": ("comment",),
    "policy_decision": ("reasons",),
}
_SORTED = orjson.OPT_SORT_KEYS
_NS_PER_MS = 1_000_000.0
WITHHELD = "[withheld]"
SECRET_PLACEHOLDER = "[REDACTED:secret]"


class Warnings:
    """Thread-safe counts of data fix-ups and SDK faults, by code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._logged: set[str] = set()

    def add(self, codes: list[str] | tuple[str, ...], detail: str = "") -> None:
        if not codes:
            return
        with self._lock:
            self._counts.update(codes)
            new = [c for c in codes if c not in self._logged]
            self._logged.update(new)
        for code in new:  # log each kind of problem once
            logger.warning("promptgov: %s%s (counted; logged once)", code,
                           f": {detail}" if detail else "")

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class EventProcessor:
    """Completes drafts into envelopes and records for one governor."""

    def __init__(self, settings: Settings, producer_id: str, warnings: Warnings) -> None:
        self.settings = settings
        self.producer_id = producer_id
        self.warnings = warnings
        self.redactor: Redactor = settings.redactor or DefaultRedactor()
        self.router = Router(settings.topic_prefix, settings.topic_router)
        self.limits = Limits(max_string=settings.max_string_length)
        self.source = f"/promptgov/{settings.app}/{settings.environment}"
        self._prev_hash: dict[str, str | None] = {}
        self._static = {
            "schema_version": SCHEMA_VERSION,
            "app": settings.app,
            "environment": settings.environment,
            "sdk": {"name": "promptgov", "version": _version.__version__},
            "producer_id": producer_id,
            "lineage": None,
        }
        self._finishers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "prompt": self._prompt,
            "response": self._response,
            "retrieval": self._retrieval,
            "tool_call": self._tool_call,
        }

    # --- public -------------------------------------------------------------

    def process(self, draft: Draft) -> list[Record]:
        """The records for one draft (two when raw content is captured)."""
        return self.govern(self.complete(draft))

    def complete(self, draft: Draft) -> dict[str, Any]:
        """The whole envelope as JSON values, content not yet redacted.

        This is what the spool holds; :meth:`govern` finishes it.
        """
        try:
            payload, model = self._payload(draft)
        except Exception as exc:  # a bug or a hostile object: keep the event, drop content
            self.warnings.add(["processing_failed"], f"{type(exc).__name__}: {exc}")
            payload, model = self._fallback_payload(draft), None
        event = self._envelope(draft, payload, model)
        secrets = self._scrub_secrets(draft.event_type, payload)  # never kept, not even spooled
        if secrets:
            event["_secrets"] = secrets
        return event

    def govern(self, event: dict[str, Any]) -> list[Record]:
        """Classify, redact, chain and serialise a completed event into records."""
        occurred_ns = event.pop("_ns", 0)
        secrets = event.pop("_secrets", ())
        kind, payload = event["event_type"], event["payload"]
        mode = self.settings.capture_content
        records = []
        if mode == "metadata":
            shown, redaction, classification = self._without_content(kind, payload), None, \
                "metadata"
        else:
            shown, redaction = self._redact(kind, payload)
            classification = "redacted" if redaction is not None else "metadata"
            if redaction is not None:
                redaction["findings"][:0] = [{"kind": "secret", "field": path, "count": 1}
                                             for path in secrets]
        records.append(self._record(event, shown, classification, redaction, occurred_ns))
        if mode == "raw":
            records.append(self._record(event, payload, "raw", None, occurred_ns))
        return records

    # --- envelope -----------------------------------------------------------

    def _record(
        self,
        event: dict[str, Any],
        payload: dict[str, Any],
        classification: str,
        redaction: dict[str, Any] | None,
        occurred_ns: int,
    ) -> Record:
        envelope = {**event, "payload": payload, "classification": classification,
                    "redaction": redaction}
        chained = classification != "raw"
        chain = envelope["producer_id"]
        prev_hash = self._prev_hash.get(chain)
        if chained:
            envelope["integrity"] = self._integrity(chain, payload)
        value = orjson.dumps(envelope, option=_SORTED)
        if len(value) > self.settings.max_event_bytes:
            self.warnings.add(["event_too_large"], f"{len(value)} bytes, {event['event_type']}")
            envelope["payload"] = self._without_content(event["event_type"], payload)
            envelope["attributes"] = {**envelope["attributes"],
                                      "promptgov.content_withheld": "event_too_large"}
            if chained:
                self._prev_hash[chain] = prev_hash
                envelope["integrity"] = self._integrity(chain, envelope["payload"])
            value = orjson.dumps(envelope, option=_SORTED)
        return Record(
            topic=self.router.topic(event["event_type"], classification),
            key=record_key(envelope),
            value=value,
            headers=record_headers(envelope, self.source),
            event_id=event["event_id"],
            enqueued_ns=occurred_ns,
        )

    def _envelope(
        self, draft: Draft, payload: dict[str, Any], model: dict[str, Any] | None
    ) -> dict[str, Any]:
        ctx = draft.context
        attributes: dict[str, Any] = dict(self.settings.attributes)
        if ctx is not None and ctx.attributes:
            attributes.update(ctx.attributes)
        if draft.attributes:
            attributes.update(draft.attributes)
        if attributes:
            attributes, codes = to_jsonable(attributes, self.limits)
            self.warnings.add(codes)
        return {
            **self._static,
            "event_id": draft.event_id,
            "event_type": draft.event_type,
            "occurred_at": format_time(draft.occurred_ns),
            "seq": draft.seq,
            "tenant_id": getattr(ctx, "tenant_id", None),
            "user_id": getattr(ctx, "user_id", None),
            "session_id": getattr(ctx, "session_id", None),
            "conversation_id": getattr(ctx, "conversation_id", None),
            "interaction_id": getattr(ctx, "interaction_id", None),
            "parent_event_id": resolve(draft.parent_event_id),
            "trace_id": draft.trace_id,
            "span_id": draft.span_id,
            "model": model,
            "prompt_template": draft.prompt_template or self.settings.prompt_template,
            "policy": draft.policy or self.settings.policy,
            "classification": None,
            "redaction": None,
            "integrity": None,
            "attributes": attributes,
            "payload": payload,
            "_ns": draft.occurred_ns,
        }

    def _integrity(self, chain: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Hash the payload into the producer's chain (one chain per producer id)."""
        digest = "sha256:" + hashlib.sha256(orjson.dumps(payload, option=_SORTED)).hexdigest()
        integrity = {"content_hash": digest, "prev_hash": self._prev_hash.get(chain),
                     "chain_id": chain}
        self._prev_hash[chain] = digest
        return integrity

    # --- payloads -------------------------------------------------------------

    def _payload(self, draft: Draft) -> tuple[dict[str, Any], dict[str, Any] | None]:
        raw = draft.payload
        finisher = self._finishers.get(draft.event_type) if "site" in raw else None
        payload = finisher(raw) if finisher is not None else {
            k: resolve(v) for k, v in raw.items()}
        model = self._model(draft, raw)
        payload, codes = to_jsonable(payload, self.limits)
        self.warnings.add(codes, f"in a {draft.event_type} event")
        if finisher is None:  # given by the host: complete and check it against the schema
            try:
                checked = PAYLOAD_MODELS[draft.event_type].model_validate(payload)
                payload = checked.model_dump(mode="json")
            except ValidationError as exc:
                self.warnings.add(["invalid_payload"], f"{draft.event_type}: {exc}")
        return payload, model

    def _model(self, draft: Draft, raw: dict[str, Any]) -> dict[str, Any] | None:
        site: CallSite | None = raw.get("site")
        request = raw.get("_request_model") or (raw.get("prompt_payload") or {}).get(
            "_request_model")  # a response carries the model its prompt asked for
        parts = [self.settings.model, site.model if site else None, draft.model, request]
        merged: dict[str, Any] = {}
        parameters: dict[str, Any] = {}
        for part in parts:
            if part:
                parameters.update(part.get("parameters") or {})
                merged.update({k: v for k, v in part.items() if v is not None})
        if not merged:
            return None
        merged["parameters"], codes = to_jsonable(parameters, self.limits)
        self.warnings.add(codes)
        return {"provider": merged.get("provider"), "name": merged.get("name"),
                "version": merged.get("version"), "parameters": merged["parameters"]}

    def _arguments(self, raw: dict[str, Any]) -> Any:
        """The call's input: explicit, else the mapper's, else the bound arguments."""
        if raw.get("input") is not None:
            return raw["input"]
        site: CallSite = raw["site"]
        args, kwargs = raw.get("args") or (), raw.get("kwargs") or {}
        if site.input_mapper is not None:
            try:
                return site.input_mapper(*args, **kwargs)
            except Exception as exc:
                self.warnings.add(["input_mapper_failed"], f"{type(exc).__name__}: {exc}")
        return self._bind(site, args, kwargs)

    def _bind(self, site: CallSite, args: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        secrets = self.settings.secret_argument_names
        signature: inspect.Signature | None = site.signature
        if signature is None:
            bound: dict[str, Any] = {f"arg{i}": v for i, v in enumerate(args)}
            bound.update(kwargs)
        else:
            try:
                ba = signature.bind_partial(*args, **kwargs)
            except TypeError:
                bound = {f"arg{i}": v for i, v in enumerate(args)} | dict(kwargs)
            else:
                bound = {}
                for name, value in ba.arguments.items():
                    kind = signature.parameters[name].kind
                    if kind is inspect.Parameter.VAR_KEYWORD:
                        bound.update(value)
                    else:
                        bound[name] = value
                if site.skip_first and signature.parameters:
                    bound.pop(next(iter(signature.parameters)), None)
        return {k: v for k, v in bound.items() if k.lower() not in secrets}

    def _output(self, raw: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The call's output and any recognised response fields."""
        site: CallSite = raw["site"]
        explicit = dict(raw.get("explicit") or {})
        if raw.get("chunks") is not None:
            fields = llm_shapes.aggregate_chunks(raw["chunks"])
        else:
            fields = llm_shapes.extract_response(raw.get("output")) or {"output": raw.get("output")}
        if site.output_mapper is not None and raw.get("status") == "ok":
            try:
                fields["output"] = site.output_mapper(fields["output"] if raw.get("chunks")
                                                      is not None else raw.get("output"))
            except Exception as exc:
                self.warnings.add(["output_mapper_failed"], f"{type(exc).__name__}: {exc}")
        fields.update({k: v for k, v in explicit.items() if v is not None})
        if "usage" in explicit:
            fields["usage"] = llm_shapes.normalize_usage(explicit["usage"])
        return fields.pop("output", None), fields

    def _prompt(self, raw: dict[str, Any]) -> dict[str, Any]:
        site: CallSite = raw["site"]
        arguments = self._arguments(raw)
        messages = raw.get("messages")
        if isinstance(arguments, dict):
            request = llm_shapes.extract_request(arguments)
            if messages is None and "messages" in request:
                messages = request["messages"]
                arguments = {k: v for k, v in arguments.items() if k != "messages"}
            model = {"name": request.get("model"), "parameters": request.get("parameters")}
            raw["_request_model"] = {k: v for k, v in model.items() if v}
        return {
            "operation": site.operation,
            "function": site.function,
            "input": arguments,
            "messages": messages,
            "streaming": bool(raw.get("streaming")),
        }

    def _response(self, raw: dict[str, Any]) -> dict[str, Any]:
        site: CallSite = raw["site"]
        output, fields = self._output(raw)
        chunks = raw.get("chunks")
        return {
            "operation": site.operation,
            "function": site.function,
            "prompt_event_id": resolve(raw["prompt_event_id"]),
            "status": raw["status"],
            "output": output,
            "response_model": fields.get("response_model"),
            "response_id": fields.get("response_id"),
            "finish_reasons": fields.get("finish_reasons"),
            "usage": fields.get("usage"),
            "latency_ms": raw["duration_ns"] / _NS_PER_MS,
            "time_to_first_token_ms": None if raw.get("ttft_ns") is None
            else raw["ttft_ns"] / _NS_PER_MS,
            "chunks": None if chunks is None else len(chunks),
            "error": _error(raw.get("error")),
        }

    def _retrieval(self, raw: dict[str, Any]) -> dict[str, Any]:
        site: CallSite = raw["site"]
        output, _ = self._output(raw)
        documents = raw.get("documents")
        if documents is None:
            documents = output
        return {
            "function": site.function,
            "query": self._arguments(raw),
            "documents": self._documents(documents),
            "output": None,
            "status": raw["status"],
            "duration_ms": raw["duration_ns"] / _NS_PER_MS,
            "error": _error(raw.get("error")),
        }

    def _documents(self, value: Any) -> list[dict[str, Any]]:
        if value is None or isinstance(value, (str, bytes, Mapping)):
            value = [] if value is None else [value]
        try:
            items = list(value)
        except TypeError:
            items = [value]
        return [_document(item) for item in items]

    def _tool_call(self, raw: dict[str, Any]) -> dict[str, Any]:
        site: CallSite = raw["site"]
        output, _ = self._output(raw)
        return {
            "name": raw.get("name") or site.tool_name or site.function,
            "call_id": raw.get("call_id"),
            "function": site.function,
            "arguments": self._arguments(raw),
            "result": output,
            "status": raw["status"],
            "duration_ms": raw["duration_ns"] / _NS_PER_MS,
            "error": _error(raw.get("error")),
        }

    def _fallback_payload(self, draft: Draft) -> dict[str, Any]:
        """Metadata-only payload for a draft whose content could not be processed."""
        raw = draft.payload
        site: CallSite | None = raw.get("site")
        base: dict[str, Any] = {}
        try:
            finisher = self._finishers.get(draft.event_type)
            stripped = {k: v for k, v in raw.items() if k not in {
                "args", "kwargs", "input", "output", "chunks", "documents", "explicit", "messages"}}
            base = finisher(stripped) if finisher is not None else stripped
        except Exception:
            base = {"function": site.function if site else None}
        base, _ = to_jsonable(base, self.limits)
        result: dict[str, Any] = base
        return result

    # --- content ------------------------------------------------------------

    def _redact(
        self, event_type: str, payload: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        fields = CONTENT_FIELDS.get(event_type, ())
        findings: list[dict[str, Any]] = []
        out = dict(payload)
        for name in fields:
            if out.get(name) is None:
                continue
            try:
                out[name], found = self.redactor.redact(out[name], f"payload.{name}")
            except Exception as exc:
                self.warnings.add(["redactor_failed"], f"{type(exc).__name__}: {exc}")
                out[name] = None  # never publish content the redactor could not vet
                findings.append({"kind": "redactor_failed", "field": f"payload.{name}",
                                 "count": 1})
                continue
            findings.extend({"kind": f.kind, "field": f.field, "count": f.count} for f in found)
        if not any(payload.get(name) is not None for name in fields):
            return out, None
        info = {"redactor": self.redactor.name, "version": self.redactor.version,
                "findings": findings}
        return out, info

    @staticmethod
    def _without_content(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        out = dict(payload)
        for name in CONTENT_FIELDS.get(event_type, ()):
            if name == "documents" and isinstance(out.get(name), list):
                out[name] = [{**doc, "content": None} for doc in out[name]]
            elif name == "reasons":
                continue
            elif name == "error" and isinstance(out.get(name), dict):
                out[name] = {**out[name], "message": WITHHELD}  # keep the exception type
            elif out.get(name) is not None:
                out[name] = None
        return out

    def _scrub_secrets(self, event_type: str, payload: dict[str, Any]) -> list[str]:
        """Replace values under secret-named keys, at any depth; the paths replaced."""
        found: list[str] = []
        for name in CONTENT_FIELDS.get(event_type, ()):
            if payload.get(name) is not None:
                payload[name] = self._scrub(payload[name], f"payload.{name}", found)
        return found

    def _scrub(self, value: Any, path: str, found: list[str]) -> Any:
        if type(value) is dict:
            secrets = self.settings.secret_argument_names
            out: dict[str, Any] = {}
            for key, item in value.items():
                child = f"{path}.{key}"
                if key.lower() in secrets and item is not None:
                    out[key] = SECRET_PLACEHOLDER
                    found.append(child)
                else:
                    out[key] = self._scrub(item, child, found)
            return out
        if type(value) is list:
            return [self._scrub(item, f"{path}[{i}]", found) for i, item in enumerate(value)]
        return value


def _error(exc: Any) -> dict[str, str] | None:
    if exc is None:
        return None
    if isinstance(exc, BaseException):
        cls = type(exc)
        name = cls.__qualname__
        if cls.__module__ != "builtins":
            name = f"{cls.__module__}.{name}"
        try:
            message = str(exc)
        except Exception:
            message = "<unprintable>"
        return {"type": name, "message": message[:2000]}
    return {"type": "error", "message": str(exc)[:2000]}


def _document(item: Any) -> dict[str, Any]:
    """A retrieved document as id/score/source/content/metadata plus a content hash."""
    if isinstance(item, str):
        content: Any = item
        doc: dict[str, Any] = {"id": None, "score": None, "source": None, "metadata": None}
    else:
        content = llm_shapes.field(item, "content")
        if content is None:
            content = llm_shapes.field(item, "page_content")  # LangChain Document
        if content is None:
            content = llm_shapes.field(item, "text")
        metadata = llm_shapes.field(item, "metadata")
        ident = llm_shapes.field(item, "id")
        if ident is None and isinstance(metadata, Mapping):
            ident = metadata.get("id")
        score = llm_shapes.field(item, "score")
        source = llm_shapes.field(item, "source")
        if source is None and isinstance(metadata, Mapping):
            source = metadata.get("source")
        doc = {
            "id": None if ident is None else str(ident),
            "score": float(score) if isinstance(score, (int, float)) else None,
            "source": None if source is None else str(source),
            "metadata": metadata if isinstance(metadata, Mapping) else None,
        }
    digest = None
    if content is not None:
        data = content.encode("utf-8", "replace") if isinstance(content, str) else orjson.dumps(
            content, option=_SORTED | orjson.OPT_PASSTHROUGH_DATACLASS, default=repr)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
    doc["content"] = content
    doc["content_hash"] = digest
    return doc
