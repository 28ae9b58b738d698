"""Turns drafts into publishable records, on the publisher's side.

Per draft: capture inputs and outputs as JSON, recognise LLM shapes, redact,
classify, hash into the per-producer integrity chain, serialise canonically,
route, key and add headers. Anything that fails here degrades the event (its
content is withheld and a warning recorded) rather than losing it.

What leaves the process: every host-given string of the envelope that is not
an identifier goes through the redactor (content, dict keys, attributes, model
parameters, feedback and policy fields); values under secret-named keys are
replaced before the event is even spooled; strings are cut to
``max_string_length`` only after redaction, so no fragment of a redacted value
survives a cut; warning details and log lines are redacted too.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
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
from promptgov.governance.secrets import is_secret_name
from promptgov.hostcode import HostCodeTimeout
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
# host-given payload fields that are not content (shown in every capture mode) but are
# free text, so redacted in every mode
TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "feedback": ("name", "label", "reviewer"),
    "policy_decision": ("rules",),
    "erasure": ("reason", "requested_by"),
    "redaction": ("reason", "fields"),
}
# identifiers: published as given (checked for PII, never redacted here)
IDENTITY_FIELDS = ("tenant_id", "user_id", "session_id", "conversation_id", "interaction_id",
                   "parent_event_id")
_KNOWN_FIELDS: dict[str, frozenset[str]] = {
    kind: frozenset(model.model_fields) for kind, model in PAYLOAD_MODELS.items()}
_SORTED = orjson.OPT_SORT_KEYS
_NS_PER_MS = 1_000_000.0
WITHHELD = "[withheld]"
SECRET_PLACEHOLDER = "[REDACTED:secret]"
REDACTED_KEY = "[REDACTED]"  # a dict key the redactor turned into something not a string
STRING_MARGIN = 4096
"""Characters kept past ``max_string_length`` until redaction has run (then cut)."""
_TAIL_GUARD = 512  # characters dropped before a cut made ahead of redaction: no fragment left
_ERROR_MESSAGE_LIMIT = 2000
_DETAIL_LIMIT = 300
_CUT_MARK = re.compile(r"…<truncated (\d+) chars>\Z")  # the codec's mark on a cut string
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}\Z")
_PLAIN_DEPTH = 20
_PLAIN_ITEMS = 1_000
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1
_CACHE_SIZE = 4096
_DROP = object()
_LOG_REDACTOR = DefaultRedactor()


class Warnings:
    """Thread-safe counts of data fix-ups and SDK faults, by code.

    Each code is logged once, with a detail that passes through the default
    redactor first (details may quote host data, e.g. an exception message).
    """

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
        if not new:
            return
        text = safe_detail(detail)
        for code in dict.fromkeys(new):  # log each kind of problem once
            logger.warning("promptgov: %s%s (counted; logged once)", code,
                           f": {text}" if text else "")

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def after_fork(self) -> None:
        """In a forked child: a new lock (another thread may have held it at the fork)."""
        self._lock = threading.Lock()


def safe_detail(detail: Any, limit: int = _DETAIL_LIMIT) -> str:
    """``detail`` fit for a log line: valid UTF-8, redacted, then cut (never a fragment)."""
    if type(detail) is not str or not detail:
        return ""
    try:
        text, _ = _valid_text(detail[: limit + STRING_MARGIN])
        text, _ = _LOG_REDACTOR.redact_text(text)
        return clean_cut(text, limit)
    except Exception:
        return "<detail withheld>"


class EventProcessor:
    """Completes drafts into envelopes and records for one governor."""

    def __init__(self, settings: Settings, producer_id: str, warnings: Warnings) -> None:
        self.settings = settings
        self.producer_id = producer_id
        self.warnings = warnings
        self.redactor: Redactor = settings.redactor or DefaultRedactor()
        self.router = Router(settings.topic_prefix, settings.topic_router)
        self.max_string = settings.max_string_length
        # strings are cut ahead of redaction with a margin, then to max_string after it
        self.limits = Limits(max_string=settings.max_string_length + STRING_MARGIN)
        self._detector = (self.redactor if isinstance(self.redactor, DefaultRedactor)
                          else _LOG_REDACTOR)
        self._extra_secrets = settings.secret_argument_names
        self._pii_ids: dict[str, bool] = {}
        self._secret_names: dict[str, bool] = {}
        # dict keys as the configured redactor leaves them (a DefaultRedactor: deterministic)
        self._key_cache: dict[str, tuple[str | None, dict[str, int]]] | None = (
            {} if isinstance(self.redactor, DefaultRedactor) else None)
        app = self._text(settings.app, "app")
        environment = self._text(settings.environment, "environment")
        self.source = f"/promptgov/{app}/{environment}"
        self._prev_hash: dict[str, str | None] = {}
        self._static = {
            "schema_version": SCHEMA_VERSION,
            "app": app,
            "environment": environment,
            "sdk": {"name": "promptgov", "version": _version.__version__},
            "producer_id": self._text(producer_id, "producer_id"),
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

        This is what the spool holds; :meth:`govern` finishes it. Values under
        secret-named keys are already replaced; the result always serialises
        with ``orjson``. Host code failing here (``SystemExit`` included) only
        withholds the event's content; :class:`~promptgov.hostcode.HostCodeTimeout`
        propagates, for the caller to use :meth:`complete_degraded`.
        """
        try:
            payload, model = self._payload(draft)
        except BaseException as exc:  # host code or a bug: keep the event, drop content
            if _must_propagate(exc):
                raise
            self.warnings.add(["processing_failed"], f"{_type_name(exc)} in a "
                              f"{_plain_str(draft.event_type)} event")
            payload, model = self._fallback_payload(draft), self._plain_model(draft)
        event = self._envelope(draft, payload, model)
        self._scrub_event(event)  # secrets: never kept, not even spooled
        return event

    def complete_degraded(self, draft: Draft, reason: str) -> dict[str, Any]:
        """The envelope of a draft whose content could not be processed, running no host code.

        For when :meth:`complete` timed out or raised: the same envelope shape,
        a metadata-only payload (the error's type name, no message), attributes
        and model parameters reduced to plain values, and the attribute
        ``promptgov.content_withheld = reason``. Never raises for a draft.
        """
        payload = self._fallback_payload(draft)
        model = self._plain_model(draft)
        event = self._envelope(draft, payload, model, plain=True)
        event["attributes"]["promptgov.content_withheld"] = (
            self._text(reason, "reason") if type(reason) is str else "processing_failed")
        self._scrub_event(event)
        return event

    def degrade(self, event: dict[str, Any], reason: str) -> dict[str, Any]:
        """A completed event (from :meth:`complete`) without its content, for :meth:`govern`.

        For when governing the event timed out or raised: content fields are
        emptied (an error keeps its type), fields the schema does not know are
        dropped, ``promptgov.content_withheld = reason`` is added, and
        :meth:`govern` redacts what remains (attributes, model parameters,
        feedback and policy fields) with promptgov's default redactor rather
        than a configured one. Runs no host code; ``event`` is not modified.
        """
        out = dict(event)
        kind = out.get("event_type")
        payload = out.get("payload")
        payload = payload if type(payload) is dict else {}
        known = _KNOWN_FIELDS.get(kind, frozenset()) if type(kind) is str else frozenset()
        content = CONTENT_FIELDS.get(kind, ()) if type(kind) is str else ()
        kept: dict[str, Any] = {}
        for name, value in payload.items():
            if name not in known:
                continue
            if name == "error" and type(value) is dict:
                value = {"type": value.get("type"), "message": WITHHELD}
            elif name in content:
                value = _empty(name)
            kept[name] = value
        out["payload"] = kept
        attributes = out.get("attributes")
        out["attributes"] = {**(attributes if type(attributes) is dict else {}),
                             "promptgov.content_withheld": self._text(reason, "reason")
                             if type(reason) is str else "processing_failed"}
        out["_redactor"] = "default"
        return out

    def govern(self, event: dict[str, Any]) -> list[Record]:
        """Classify, redact, chain and serialise a completed event into records.

        Does not modify the containers of ``event`` (the publisher may keep it to spill).
        """
        occurred_ns = event.pop("_ns", 0)
        secrets = event.pop("_secrets", ())
        long_strings = event.pop("_long", False)
        redactor = _LOG_REDACTOR if event.pop("_redactor", None) == "default" else self.redactor
        kind, payload = event["event_type"], event["payload"]
        mode = self.settings.capture_content
        content_fields = CONTENT_FIELDS.get(kind, ())
        findings: list[dict[str, Any]] = []
        keys: dict[str, str] = {}  # dict keys as published (for the secret findings)
        shown_roots: set[str] = set()
        if mode == "metadata":
            shown = self._without_content(kind, payload)
            areas = tuple(n for n in content_fields if n in ("documents", "reasons"))
            content = False
        else:
            shown = dict(payload)
            areas = content_fields
            content = any(payload.get(name) is not None for name in content_fields)
        shown = self._redact_payload(redactor, kind, shown, areas, mode == "metadata", findings,
                                     keys, shown_roots)
        event = self._redact_envelope(redactor, event, findings, keys, shown_roots)
        if long_strings:
            shown, attributes, model = self._cut_all(
                shown, event["attributes"], event.get("model"))
            event["attributes"] = attributes
            event["model"] = model
        secret_findings = self._secret_findings(secrets, keys, shown_roots, mode)
        redaction = None
        if content or findings or secret_findings:
            redaction = {"redactor": redactor.name, "version": redactor.version,
                         "findings": secret_findings + findings}
        self._check_identifiers(event)
        records = [self._record(event, shown, "redacted" if content else "metadata",
                                redaction, occurred_ns)]
        if mode == "raw":
            raw = self._cut_all(payload, {}, None)[0] if long_strings else payload
            # what the redacted copy replaced: lets a redact stage detect changed findings
            records.append(self._record(event, raw, "raw", redaction, occurred_ns))
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
        self, draft: Draft, payload: dict[str, Any], model: dict[str, Any] | None,
        plain: bool = False,
    ) -> dict[str, Any]:
        ctx = draft.context
        ident = self._plain_ident if plain else self._ident
        return {
            **self._static,
            "event_id": draft.event_id,
            "event_type": self._text(draft.event_type, "event_type")
            if type(draft.event_type) is str else "unknown",
            "occurred_at": format_time(draft.occurred_ns),
            "seq": draft.seq,
            "tenant_id": ident(getattr(ctx, "tenant_id", None), "tenant_id"),
            "user_id": ident(getattr(ctx, "user_id", None), "user_id"),
            "session_id": ident(getattr(ctx, "session_id", None), "session_id"),
            "conversation_id": ident(getattr(ctx, "conversation_id", None), "conversation_id"),
            "interaction_id": ident(getattr(ctx, "interaction_id", None), "interaction_id"),
            "parent_event_id": ident(resolve(draft.parent_event_id), "parent_event_id"),
            "trace_id": ident(draft.trace_id, "trace_id"),
            "span_id": ident(draft.span_id, "span_id"),
            "model": model,
            "prompt_template": self._reference(draft.prompt_template, plain)
            or self._reference(self.settings.prompt_template, plain),
            "policy": self._reference(draft.policy, plain)
            or self._reference(self.settings.policy, plain),
            "classification": None,
            "redaction": None,
            "integrity": None,
            "attributes": self._attributes(draft, plain),
            "payload": payload,
            "_ns": draft.occurred_ns,
        }

    def _attributes(self, draft: Draft, plain: bool) -> dict[str, Any]:
        sources = (self.settings.attributes, getattr(draft.context, "attributes", None),
                   draft.attributes)
        if not plain:
            try:
                merged: dict[str, Any] = {}
                for source in sources:
                    if source:
                        merged.update(source)
                if not merged:
                    return {}
                converted, codes = to_jsonable(merged, self.limits)
                self.warnings.add(codes, "in attributes")
                if type(converted) is dict:
                    return converted
            except BaseException as exc:  # a hostile mapping or value: keep the plain ones
                if _must_propagate(exc):
                    raise
                self.warnings.add(["attributes_failed"], _type_name(exc))
        counts: Counter[str] = Counter()
        merged = {}
        for source in sources:
            if type(source) is dict:
                merged.update(_str_items(source))
            elif source is not None:  # not even its truth value: that is host code
                counts["value_dropped"] += 1
        result = _plain(merged, 0, counts)
        self._count(counts, "in attributes")
        return result if type(result) is dict else {}

    def _ident(self, value: Any, name: str) -> str | None:
        """An identifier as a valid string (given by the host; never redacted)."""
        if value is None or (type(value) is str and value.isascii()):
            return value
        if type(value) is str:
            return self._text(value, name)
        try:
            converted, _ = to_jsonable(value, self.limits)
            if type(converted) is not str:
                converted = orjson.dumps(converted, option=_SORTED).decode()
            return self._text(converted, name)
        except BaseException as exc:
            if _must_propagate(exc):
                raise
            self.warnings.add(["value_dropped"], f"{name}: {_type_name(exc)}")
            return None

    def _plain_ident(self, value: Any, name: str) -> str | None:
        if value is None:
            return None
        cls = type(value)
        if cls is str:
            return self._text(value, name)
        if cls is int and _INT64_MIN <= value <= _UINT64_MAX:
            return str(value)
        self.warnings.add(["value_dropped"], f"{name} is a {_type_name(value)}")
        return None

    def _reference(self, value: Any, plain: bool) -> dict[str, Any] | None:
        """A prompt template or policy reference: ``{"id", "version"}`` as strings."""
        if value is None:
            return None
        if type(value) is not dict:
            if plain or not isinstance(value, Mapping):
                return None
            try:
                value = dict(value)
            except BaseException as exc:
                if _must_propagate(exc):
                    raise
                return None
        ident = self._plain_ident if plain else self._ident
        ref_id = ident(value.get("id"), "reference id")
        if not ref_id:
            return None
        return {"id": ref_id, "version": ident(value.get("version"), "reference version")}

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
        self.warnings.add(codes, f"in a {_plain_str(draft.event_type)} event")
        if type(payload) is not dict:
            self.warnings.add(["invalid_payload"], f"{_plain_str(draft.event_type)}: not a dict")
            payload = {}
        if finisher is None:  # given by the host: complete and check it against the schema
            model_cls = PAYLOAD_MODELS.get(draft.event_type)
            if model_cls is None:
                self.warnings.add(["invalid_payload"], "unknown event type")
            else:
                try:
                    payload = model_cls.model_validate(payload).model_dump(mode="json")
                except ValidationError as exc:
                    self.warnings.add(["invalid_payload"],
                                      f"{draft.event_type}: {_validation_summary(exc)}")
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
        converted, codes = to_jsonable(parameters, self.limits)
        self.warnings.add(codes, "in model parameters")
        return {"provider": self._ident(merged.get("provider"), "model provider"),
                "name": self._ident(merged.get("name"), "model name"),
                "version": self._ident(merged.get("version"), "model version"),
                "parameters": converted if type(converted) is dict else {}}

    def _plain_model(self, draft: Draft) -> dict[str, Any] | None:
        """:meth:`_model` from plain values only (no host code)."""
        raw = draft.payload if type(draft.payload) is dict else {}
        site = raw.get("site")
        prompt = raw.get("prompt_payload")
        request = raw.get("_request_model") or (
            prompt.get("_request_model") if type(prompt) is dict else None)
        parts = [self.settings.model, site.model if type(site) is CallSite else None,
                 draft.model, request]
        merged: dict[str, Any] = {}
        parameters: dict[str, Any] = {}
        counts: Counter[str] = Counter()
        for part in parts:
            if type(part) is not dict:
                if part is not None:
                    counts["value_dropped"] += 1
                continue
            items = _str_items(part)
            if type(items.get("parameters")) is dict:
                parameters.update(_str_items(items["parameters"]))
            merged.update({k: v for k, v in items.items() if v is not None})
        if not merged:
            self._count(counts, "in the model")
            return None
        plain = _plain(parameters, 0, counts)
        self._count(counts, "in the model")
        return {"provider": self._plain_ident(merged.get("provider"), "model provider"),
                "name": self._plain_ident(merged.get("name"), "model name"),
                "version": self._plain_ident(merged.get("version"), "model version"),
                "parameters": plain if type(plain) is dict else {}}

    def _arguments(self, raw: dict[str, Any]) -> Any:
        """The call's input: explicit, else the mapper's, else the bound arguments."""
        if raw.get("input") is not None:
            return raw["input"]
        site: CallSite = raw["site"]
        args, kwargs = raw.get("args") or (), raw.get("kwargs") or {}
        if site.input_mapper is not None:
            try:
                return site.input_mapper(*args, **kwargs)
            except BaseException as exc:  # SystemExit, KeyboardInterrupt...: the host's
                if _must_propagate(exc):
                    raise
                self.warnings.add(["input_mapper_failed"], _type_name(exc))
        return self._bind(site, args, kwargs)

    def _bind(self, site: CallSite, args: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
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
        return {k: v for k, v in bound.items() if not self._secret_name(k)}

    def _secret_name(self, name: Any) -> bool:
        if type(name) is not str:
            return False
        known = self._secret_names.get(name)
        if known is None:
            known = is_secret_name(name, self._extra_secrets)
            if len(name) <= 128:
                if len(self._secret_names) >= _CACHE_SIZE:
                    self._secret_names.clear()
                self._secret_names[name] = known
        return known

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
            except BaseException as exc:  # SystemExit, KeyboardInterrupt...: the host's
                if _must_propagate(exc):
                    raise
                self.warnings.add(["output_mapper_failed"], _type_name(exc))
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
        """Metadata-only payload for a draft whose content could not be processed.

        Runs no host code: only promptgov-made values (the call site, status,
        durations), plain scalars and the error's type name.
        """
        try:
            return self._fallback(draft)
        except Exception as exc:  # a bug here must not lose the event
            self.warnings.add(["processing_failed"], f"fallback: {_type_name(exc)}")
            return {}

    def _fallback(self, draft: Draft) -> dict[str, Any]:
        raw = draft.payload if type(draft.payload) is dict else {}
        kind = draft.event_type
        site = raw.get("site")
        if type(site) is CallSite and kind in self._finishers:
            function = _plain_str(site.function)
            status = _plain_str(raw.get("status")) or "error"
            duration = raw.get("duration_ns")
            duration_ms = duration / _NS_PER_MS if type(duration) is int else 0.0
            error = _error_type(raw.get("error"))
            if kind == "prompt":
                return {"operation": _plain_str(site.operation), "function": function,
                        "input": None, "messages": None,
                        "streaming": raw.get("streaming") is True}
            if kind == "response":
                chunks, ttft = raw.get("chunks"), raw.get("ttft_ns")
                return {
                    "operation": _plain_str(site.operation), "function": function,
                    "prompt_event_id": self._plain_ident(resolve(raw.get("prompt_event_id")),
                                                         "prompt_event_id"),
                    "status": status, "output": None, "response_model": None,
                    "response_id": None, "finish_reasons": None, "usage": None,
                    "latency_ms": duration_ms,
                    "time_to_first_token_ms": ttft / _NS_PER_MS if type(ttft) is int else None,
                    "chunks": len(chunks) if type(chunks) is list else None,
                    "error": error,
                }
            if kind == "retrieval":
                return {"function": function, "query": None, "documents": [], "output": None,
                        "status": status, "duration_ms": duration_ms, "error": error}
            return {
                "name": _plain_str(raw.get("name")) or _plain_str(site.tool_name) or function,
                "call_id": _plain_str(raw.get("call_id")), "function": function,
                "arguments": None, "result": None, "status": status,
                "duration_ms": duration_ms, "error": error,
            }
        known = _KNOWN_FIELDS.get(kind) if type(kind) is str else None
        if known is None:
            return {}
        content = CONTENT_FIELDS.get(kind, ())
        counts: Counter[str] = Counter()
        payload: dict[str, Any] = {}
        for name, value in _str_items(raw).items():
            if name not in known:
                continue
            value = _empty(name) if name in content else _plain(resolve(value) if type(value) is not
                                                         dict else value, 0, counts)
            payload[name] = None if value is _DROP else value
        self._count(counts, f"in a degraded {kind} event")
        return payload

    # --- secrets, before the spool ---------------------------------------------

    def _scrub_event(self, event: dict[str, Any]) -> None:
        """Replace values under secret-named keys, at any depth; make every key valid.

        Records the paths replaced (``_secrets``, for the findings) and whether
        a string longer than ``max_string_length`` was seen (``_long``).
        """
        state = _ScrubState()
        payload = event["payload"]
        known = _KNOWN_FIELDS.get(event["event_type"], frozenset())
        out: dict[str, Any] = {}
        for name, value in payload.items():
            if name in known:
                out[name] = self._scrub(value, (f"payload.{name}",), state)
                continue
            name = state.key(name)  # a field the schema does not know: the host's key
            if value is not None and self._secret_name(name):
                out[name] = SECRET_PLACEHOLDER
                state.found.append(["payload", name])
            else:
                out[name] = self._scrub(value, ("payload", name), state)
        event["payload"] = out
        if event["attributes"]:
            event["attributes"] = self._scrub(event["attributes"], ("attributes",), state)
        model = event.get("model")
        if model and model.get("parameters"):
            model["parameters"] = self._scrub(model["parameters"], ("model.parameters",), state)
        if state.invalid:
            self.warnings.add(["invalid_utf8"] * state.invalid, "in a key")
        if state.found:
            event["_secrets"] = state.found
        if state.long:
            event["_long"] = True

    def _scrub(self, value: Any, path: tuple[Any, ...], state: _ScrubState) -> Any:
        cls = type(value)
        limit = self.max_string
        if cls is dict:
            out: dict[str, Any] = {}
            secret = self._secret_names
            for key, item in value.items():
                if type(key) is not str or not key.isascii():
                    key = state.key(key)
                is_secret = secret.get(key)
                if is_secret is None:
                    is_secret = self._secret_name(key)
                item_cls = type(item)
                if is_secret and item is not None:
                    out[key] = SECRET_PLACEHOLDER
                    state.found.append([*path, key])
                elif item_cls is str:
                    if len(item) > limit:
                        state.long = True
                    out[key] = item
                elif item_cls is dict or item_cls is list:
                    out[key] = self._scrub(item, (*path, key), state)
                else:
                    out[key] = item
            return out
        if cls is list:
            items: list[Any] = []
            for i, item in enumerate(value):
                item_cls = type(item)
                if item_cls is str:
                    if len(item) > limit:
                        state.long = True
                elif item_cls is dict or item_cls is list:
                    item = self._scrub(item, (*path, i), state)
                items.append(item)
            return items
        if cls is str and len(value) > limit:
            state.long = True
        return value

    def _secret_findings(self, secrets: Iterable[Any], keys: Mapping[str, str],
                         shown_roots: set[str], mode: str) -> list[dict[str, Any]]:
        found = []
        for entry in secrets:
            if type(entry) is str:  # spooled by an earlier version: a path string
                if mode != "metadata":
                    found.append({"kind": "secret", "field": safe_detail(entry, 2000),
                                  "count": 1})
                continue
            if type(entry) is not list or not entry or type(entry[0]) is not str:
                continue
            root, rest = entry[0], entry[1:]
            if root not in shown_roots:
                continue
            if root == "payload.documents" and mode == "metadata" and rest[1:2] == ["content"]:
                continue
            field = root + "".join(f"[{p}]" if type(p) is int else f".{keys.get(p, p)}"
                                   for p in rest)
            found.append({"kind": "secret", "field": field, "count": 1})
        return found

    # --- content ------------------------------------------------------------

    def _redact_payload(
        self, redactor: Redactor, kind: str, payload: dict[str, Any], areas: tuple[str, ...],
        metadata: bool, findings: list[dict[str, Any]], keys: dict[str, str], shown_roots: set[str],
    ) -> dict[str, Any]:
        """Redact the shown host-given parts of a payload (keys and values); a new dict."""
        known = _KNOWN_FIELDS.get(kind, frozenset())
        for name in (*areas, *TEXT_FIELDS.get(kind, ())):
            if payload.get(name) is None:
                continue
            root = f"payload.{name}"
            redacted = self._redact_area(redactor, payload[name], root, findings, keys)
            payload[name] = None if redacted is _DROP else redacted
            if redacted is not _DROP:
                shown_roots.add(root)
        unknown = [name for name in payload if name not in known]
        if unknown:  # fields the schema does not know (an invalid payload): the host's
            extra = {name: payload.pop(name) for name in unknown}
            if not metadata:
                redacted = self._redact_area(redactor, extra, "payload", findings, keys)
                if type(redacted) is dict:
                    payload.update(redacted)
                    shown_roots.add("payload")
        return payload

    def _redact_envelope(self, redactor: Redactor, event: dict[str, Any],
                         findings: list[dict[str, Any]], keys: dict[str, str],
                         shown_roots: set[str]) -> dict[str, Any]:
        """The event with its attributes and model parameters redacted (a new dict)."""
        event = dict(event)
        if event.get("attributes"):
            redacted = self._redact_area(redactor, event["attributes"], "attributes", findings,
                                         keys)
            event["attributes"] = redacted if type(redacted) is dict else {}
            shown_roots.add("attributes")
        model = event.get("model")
        if model and model.get("parameters"):
            redacted = self._redact_area(redactor, model["parameters"], "model.parameters",
                                         findings, keys)
            event["model"] = {**model,
                              "parameters": redacted if type(redacted) is dict else {}}
            shown_roots.add("model.parameters")
        return event

    def _redact_area(self, redactor: Redactor, value: Any, root: str,
                     findings: list[dict[str, Any]], keys: dict[str, str]) -> Any:
        """``value`` with its dict keys and its strings redacted; ``_DROP`` if the redactor
        failed (content it could not vet is never published)."""
        try:
            if self._key_cache is not None and redactor is self.redactor:
                return self._redact_default(value, root, findings, keys)
            names: dict[str, None] = {}
            _collect_keys(value, names)
            if names:
                renamed = self._redact_keys(redactor, list(names), root, findings)
                if renamed:
                    keys.update(renamed)
                    value = _rename_keys(value, renamed)
            value, found = redactor.redact(value, root)
        except Exception as exc:
            self.warnings.add(["redactor_failed"], _type_name(exc))
            findings.append({"kind": "redactor_failed", "field": root, "count": 1})
            return _DROP
        findings.extend({"kind": f.kind, "field": f.field, "count": f.count} for f in found)
        return value

    def _redact_keys(self, redactor: Redactor, names: list[str], root: str,
                     findings: list[dict[str, Any]]) -> dict[str, str]:
        """The keys the redactor changes, old -> new; findings reported as ``root.<key>``."""
        cache = self._key_cache
        if cache is not None and redactor is self.redactor:
            return self._redact_keys_cached(cache, names, root, findings)
        value: Any = names
        out, found = redactor.redact(value, root)
        renamed: dict[str, str] = {}
        if type(out) is list and len(out) == len(names):
            for name, new in zip(names, out, strict=True):
                if type(new) is not str:
                    renamed[name] = REDACTED_KEY
                elif new != name:
                    renamed[name] = new
        else:  # a redactor that changed the shape: publish no key it did not vet
            renamed = dict.fromkeys(names, REDACTED_KEY)
        counts: Counter[str] = Counter()
        for f in found:
            counts[f.kind] += f.count
        findings.extend({"kind": kind, "field": f"{root}.<key>", "count": n}
                        for kind, n in counts.items())
        return renamed

    def _redact_default(self, value: Any, root: str, findings: list[dict[str, Any]],
                        keys: dict[str, str]) -> Any:
        """:meth:`_redact_area` for a :class:`DefaultRedactor`: keys and values in one walk.

        Same output and finding paths as ``DefaultRedactor.redact`` (after the keys are
        renamed); keys are reported at ``<dict path>.<key>``.
        """
        assert isinstance(self.redactor, DefaultRedactor) and self._key_cache is not None
        found: dict[tuple[str, str], int] = {}
        out = _DefaultWalk(self.redactor.redact_text, self._key_cache, found, keys).walk(
            value, root)
        findings.extend({"kind": kind, "field": field, "count": n}
                        for (kind, field), n in found.items())
        return out

    def _redact_keys_cached(self, cache: dict[str, tuple[str | None, dict[str, int]]],
                            names: list[str], root: str,
                            findings: list[dict[str, Any]]) -> dict[str, str]:
        """:meth:`_redact_keys` for a :class:`DefaultRedactor`, remembering common keys."""
        assert isinstance(self.redactor, DefaultRedactor)
        redact_text = self.redactor.redact_text
        renamed: dict[str, str] = {}
        counts: Counter[str] = Counter()
        for name in names:
            hit = cache.get(name)
            if hit is None:
                new, found = redact_text(name)
                hit = (new if new != name else None, found)
                if len(name) <= 128:
                    if len(cache) >= _CACHE_SIZE:
                        cache.clear()
                    cache[name] = hit
            if hit[0] is not None:
                renamed[name] = hit[0]
                counts.update(hit[1])
        findings.extend({"kind": kind, "field": f"{root}.<key>", "count": n}
                        for kind, n in counts.items())
        return renamed

    def _cut_all(self, payload: dict[str, Any], attributes: dict[str, Any],
                 model: dict[str, Any] | None,
                 ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        """Cut strings still longer than ``max_string_length`` once redacted."""
        counts: Counter[str] = Counter()
        payload = _cut_strings(payload, self.max_string, counts)
        attributes = _cut_strings(attributes, self.max_string, counts)
        if model and model.get("parameters"):
            model = {**model, "parameters": _cut_strings(model["parameters"], self.max_string,
                                                         counts)}
        self._count(counts, "cut after redaction")
        return payload, attributes, model

    @staticmethod
    def _without_content(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        out = dict(payload)
        for name in CONTENT_FIELDS.get(event_type, ()):
            if name == "documents" and isinstance(out.get(name), list):
                out[name] = [{**doc, "content": None} if type(doc) is dict else None
                             for doc in out[name]]
            elif name == "reasons":
                continue
            elif name == "error" and isinstance(out.get(name), dict):
                out[name] = {**out[name], "message": WITHHELD}  # keep the exception type
            elif out.get(name) is not None:
                out[name] = None
        return out

    # --- identifiers and text -------------------------------------------------

    def _check_identifiers(self, event: Mapping[str, Any]) -> None:
        """Count identifiers that look like PII (an e-mail as user id...); never log them."""
        for name in IDENTITY_FIELDS:
            value = event.get(name)
            if type(value) is str and value and self._looks_pii(value):
                self.warnings.add(["pii_in_identifier"], name)

    def _looks_pii(self, value: str) -> bool:
        if _UUID.match(value):
            return False
        known = self._pii_ids.get(value)
        if known is None:
            try:
                _, counts = self._detector.redact_text(value)
            except Exception:
                counts = {}
            known = any(kind != "truncated" for kind in counts)
            if len(self._pii_ids) >= _CACHE_SIZE:
                self._pii_ids.clear()
            self._pii_ids[value] = known
        return known

    def _text(self, value: str, name: str) -> str:
        """``value`` as valid UTF-8 (lone surrogates replaced, counted)."""
        text, bad = _valid_text(value)
        if bad:
            self.warnings.add(["invalid_utf8"], name)
        return text

    def _count(self, counts: Counter[str], detail: str) -> None:
        if counts:
            self.warnings.add(list(counts.elements()), detail)


class _DefaultWalk:
    """One walk redacting the keys and strings of a value with ``redact_text``."""

    __slots__ = ("cache", "found", "keys", "redact_text")

    def __init__(self, redact_text: Callable[[str], tuple[str, dict[str, int]]],
                 cache: dict[str, tuple[str | None, dict[str, int]]],
                 found: dict[tuple[str, str], int], keys: dict[str, str]) -> None:
        self.redact_text = redact_text
        self.cache = cache
        self.found = found
        self.keys = keys

    def walk(self, value: Any, path: str) -> Any:
        cls = type(value)
        if cls is str:
            text, counts = self.redact_text(value)
            if counts:
                found = self.found
                for kind, n in counts.items():
                    found[(kind, path)] = found.get((kind, path), 0) + n
            return text
        if cls is dict:
            out: dict[str, Any] = {}
            for key, item in value.items():
                name = self.key(key, path) if type(key) is str else key
                if name in out:  # two keys redacted alike: keep both values
                    n = 2
                    while f"{name}#{n}" in out:
                        n += 1
                    name = f"{name}#{n}"
                out[name] = self.walk(item, _child_path(path, name))
            return out
        if cls is list:
            return [self.walk(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return value

    def key(self, key: str, path: str) -> str:
        hit = self.cache.get(key)
        if hit is None:
            new, counts = self.redact_text(key)
            hit = (new if new != key else None, counts)
            if len(key) <= 128:
                if len(self.cache) >= _CACHE_SIZE:
                    self.cache.clear()
                self.cache[key] = hit
        if hit[0] is None:
            return key
        self.keys[key] = hit[0]
        field = f"{path}.<key>"
        for kind, n in hit[1].items():
            self.found[(kind, field)] = self.found.get((kind, field), 0) + n
        return hit[0]


def _child_path(path: str, name: str) -> str:
    """As ``DefaultRedactor`` names a child: ``path.key``, or ``path["other key"]``."""
    if name.isidentifier():
        return f"{path}.{name}" if path else name
    return f"{path}[{orjson.dumps(name).decode()}]"


class _ScrubState:
    __slots__ = ("found", "invalid", "long")

    def __init__(self) -> None:
        self.found: list[list[Any]] = []
        self.invalid = 0
        self.long = False

    def key(self, key: Any) -> str:
        if type(key) is not str:
            key = _safe_key(key)
        text, bad = _valid_text(key)
        self.invalid += bad
        return text


def _safe_key(key: Any) -> str:
    if type(key) in (int, float, bool) or key is None:
        return str(key)
    return f"<{_type_name(key)}>"


def _valid_text(value: str) -> tuple[str, bool]:
    """``value`` as valid UTF-8 and whether anything was replaced."""
    if value.isascii():
        return value, False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8"), True
    return value, False


def _plain_str(value: Any) -> str | None:
    """A plain string as valid UTF-8; anything else ``None`` (no host code)."""
    return _valid_text(value)[0] if type(value) is str else None


def _str_items(mapping: dict[Any, Any]) -> dict[str, Any]:
    """The string-keyed items of a plain dict (iterating a dict runs no host code)."""
    return {k: v for k, v in list(mapping.items()) if type(k) is str}


def _plain(value: Any, depth: int, counts: Counter[str]) -> Any:
    """``value`` if built of plain JSON values only (valid strings), else ``_DROP``.

    Only ``dict``/``list``/``tuple`` of ``str``/``int``/``float``/``bool``/``None``:
    nothing here runs host code. Dropped values and invalid strings are counted.
    """
    cls = type(value)
    if value is None or cls is bool:
        return value
    if cls is str:
        text, bad = _valid_text(value)
        counts["invalid_utf8"] += bad
        return text
    if cls is int:
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
        return "<big int>"
    if cls is float:
        return value if math.isfinite(value) else str(value)
    if depth < _PLAIN_DEPTH and (cls is dict or cls is list or cls is tuple):
        try:
            items: list[tuple[Any, Any]] = (
                list(value.items()) if cls is dict else list(enumerate(value)))
        except Exception:
            counts["value_dropped"] += 1
            return _DROP
        out_dict: dict[str, Any] = {}
        out_list: list[Any] = []
        for key, item in items[:_PLAIN_ITEMS]:
            plain = _plain(item, depth + 1, counts)
            if plain is _DROP or (cls is dict and type(key) is not str):
                counts["value_dropped"] += 1
            elif cls is dict:
                text, bad = _valid_text(key)
                counts["invalid_utf8"] += bad
                out_dict[text] = plain
            else:
                out_list.append(plain)
        if len(items) > _PLAIN_ITEMS:
            counts["items_truncated"] += 1
        return out_dict if cls is dict else out_list
    counts["value_dropped"] += 1
    return _DROP


def _collect_keys(value: Any, names: dict[str, None]) -> None:
    if type(value) is dict:
        for key, item in value.items():
            names[key] = None
            if type(item) is dict or type(item) is list:
                _collect_keys(item, names)
    elif type(value) is list:
        for item in value:
            if type(item) is dict or type(item) is list:
                _collect_keys(item, names)


def _rename_keys(value: Any, renamed: Mapping[str, str]) -> Any:
    """A copy of ``value`` with keys renamed; keys made equal get ``#2``, ``#3``..."""
    if type(value) is dict:
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = renamed.get(key, key)
            if name in out:
                n = 2
                while f"{name}#{n}" in out:
                    n += 1
                name = f"{name}#{n}"
            out[name] = _rename_keys(item, renamed)
        return out
    if type(value) is list:
        return [_rename_keys(item, renamed) for item in value]
    return value


def _cut_strings(value: Any, limit: int, counts: Counter[str]) -> Any:
    cls = type(value)
    if cls is str:
        return _cut_redacted(value, limit, counts)
    if cls is dict:
        return {k: _cut_strings(v, limit, counts) for k, v in value.items()}
    if cls is list:
        return [_cut_strings(v, limit, counts) for v in value]
    return value


def _cut_redacted(text: str, limit: int, counts: Counter[str]) -> str:
    """A redacted string cut to ``limit`` characters, with a truncation mark.

    A string the codec cut ahead of redaction (its mark at the end) loses its
    last characters too: a value cut there was not recognisable, and redaction
    may have shortened the text enough to bring that fragment under ``limit``.
    """
    mark = _CUT_MARK.search(text) if text.endswith(" chars>") else None
    if mark is None:
        if len(text) <= limit:
            return text
        counts["string_truncated"] += 1
        return text[:limit] + f"…<truncated {len(text) - limit} chars>"
    body = text[: mark.start()]
    keep = max(0, min(limit, len(body) - _TAIL_GUARD))
    dropped = len(body) - keep + int(mark.group(1))
    return body[:keep] + f"…<truncated {dropped} chars>"


def clean_cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters without leaving part of a word.

    The trailing run of non-space characters at the cut is dropped, so a value
    cut there (an e-mail address, a card number) leaves no recognisable fragment.
    """
    if len(text) <= limit:
        return text
    cut = text[:limit]
    floor = max(0, limit - _TAIL_GUARD)
    space = max(cut.rfind(" ", floor), cut.rfind("\n", floor), cut.rfind("\t", floor))
    return (cut[:space] if space >= 0 else cut[:floor]) + "…"


def _type_name(value: Any) -> str:
    cls = type(value)
    try:
        name: Any = cls.__qualname__
        module: Any = cls.__module__
        if type(name) is not str or type(module) is not str:
            return "object"
    except Exception:
        return "object"
    full = name if module == "builtins" else f"{module}.{name}"
    return _valid_text(full)[0]


def _validation_summary(exc: ValidationError) -> str:
    """Where and why a payload failed its schema, without the values."""
    try:
        return "; ".join(".".join(str(p) for p in e["loc"]) + f" {e['type']}"
                         for e in exc.errors(include_url=False, include_input=False)[:5])
    except Exception:
        return "invalid"


def _empty(name: str) -> Any:
    """A withheld content field: an empty list where the schema wants a list."""
    return [] if name in ("documents", "reasons") else None


def _must_propagate(exc: BaseException) -> bool:
    """Exceptions host code may raise that promptgov must not swallow: only
    :class:`HostCodeTimeout` (the caller degrades the event). Anything else raised
    by host code, ``SystemExit`` and ``KeyboardInterrupt`` included, only costs the
    event its content."""
    return isinstance(exc, HostCodeTimeout)


def _error_type(exc: Any) -> dict[str, str] | None:
    """The error as its type name only (no message: no host code)."""
    if exc is None:
        return None
    return {"type": _type_name(exc) if issubclass(type(exc), BaseException) else "error",
            "message": WITHHELD}


def _error(exc: Any) -> dict[str, str] | None:
    if exc is None:
        return None
    name = _type_name(exc) if isinstance(exc, BaseException) else "error"
    try:
        message = str(exc)  # host code: __str__
    except BaseException as failure:
        if _must_propagate(failure):
            raise
        message = "<unprintable>"
    return {"type": name, "message": clean_cut(message, _ERROR_MESSAGE_LIMIT)}


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
