"""Patching client methods so they record exactly what ``@llm_call`` records.

A :class:`Target` names one method of an SDK class. :func:`patch` replaces it
with a wrapper that opens a :class:`~promptgov.capture.calls.CallRecorder`
(the decorator's machinery: prompt event at the request, response event at
the end, lineage, spans) and returns the client's own result: the same object,
the same exception. A stream stays the SDK's stream object (the same type):
only its internal iterator is traced, and the SDK's ``close`` methods end the
record as ``closed_early``.

Nothing here imports an SDK; the provider modules (``openai.py``,
``anthropic.py``) list their targets.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from promptgov import governor as _gov
from promptgov.capture.calls import CallRecorder, CallSpec
from promptgov.capture.streams import TracedAsyncIterator, TracedIterator, _StreamProxy
from promptgov.events.draft import CallSite

log = logging.getLogger("promptgov.instrument")

# Operations whose span is the model call itself: a promptgov span around the
# same call would duplicate it. (An agent or tool span around it is a parent.)
MODEL_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
_UNSET_TYPES = frozenset({"NotGiven", "Omit"})
_EXTRAS = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})


@dataclass
class Target:
    """One method to patch: ``owner.name``.

    ``kind``: ``sync`` (returns the result), ``async`` (returns an awaitable of
    it), ``manager`` / ``async_manager`` (a helper that returns a stream
    manager whose private ``__api_request`` makes the request), ``close`` /
    ``async_close`` (a stream's ``close``: ends the record of a traced stream).
    """

    owner: type
    name: str
    kind: str
    operation: str = "chat"
    provider: str | None = None
    streams: bool = False
    # (resource) -> True when the client opens its own GenAI span for this call
    client_span: Callable[[Any], bool] | None = None


@dataclass
class _Patch:
    target: Target
    original: Any
    wrapper: Any
    active: list[bool] = field(default_factory=lambda: [True])


class State:
    """The process-wide registry of patches, by library."""

    def __init__(self) -> None:
        self.patches: dict[str, list[_Patch]] = {}
        self.governor: _gov.Governor | None = None


STATE = State()


def patch(library: str, targets: Iterable[Target]) -> int:
    """Patch every target (once); returns how many were patched."""
    done = STATE.patches.setdefault(library, [])
    count = 0
    for target in targets:
        original = target.owner.__dict__.get(target.name)
        if original is None or getattr(original, "__promptgov_patch__", None) is not None:
            continue
        active = [True]
        wrapper = _make_wrapper(target, original, active)
        setattr(wrapper, "__promptgov_patch__", library)  # noqa: B010
        setattr(target.owner, target.name, wrapper)
        done.append(_Patch(target, original, wrapper, active))
        count += 1
    return count


def unpatch(library: str) -> bool:
    """Restore what :func:`patch` replaced; a wrapper someone else wrapped stays, inert."""
    patches = STATE.patches.pop(library, None)
    if patches is None:
        return False
    for p in reversed(patches):
        p.active[0] = False
        if p.target.owner.__dict__.get(p.target.name) is p.wrapper:
            setattr(p.target.owner, p.target.name, p.original)
    return True


# --- wrappers ------------------------------------------------------------------------------


def _make_wrapper(target: Target, original: Any, active: list[bool]) -> Any:
    if target.kind in ("close", "async_close"):
        return _close_wrapper(original, target.kind == "async_close")
    spec = CallSpec("llm", {"provider": target.provider, "operation": target.operation})
    site = spec.site(original)
    if target.kind == "sync":
        return _sync_wrapper(target, original, site, active)
    if target.kind == "async":
        return _async_wrapper(target, original, site, active)
    return _manager_wrapper(target, original, site, active)


def _sync_wrapper(target: Target, original: Any, site: CallSite, active: list[bool]) -> Any:
    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        rec = start(target, site, self, args, kwargs) if active[0] else None
        if rec is None:
            return original(self, *args, **kwargs)
        tokens = rec.enter()
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            rec.exit(tokens)
            rec.fail(exc)
            raise
        rec.exit(tokens)
        return finish(rec, result)

    return wrapper


def _async_wrapper(target: Target, original: Any, site: CallSite, active: list[bool]) -> Any:
    @functools.wraps(original)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        rec = start(target, site, self, args, kwargs) if active[0] else None
        if rec is None:
            return await original(self, *args, **kwargs)
        tokens = rec.enter()
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            rec.exit(tokens)
            rec.fail(exc)
            raise
        rec.exit(tokens)
        return finish(rec, result)

    return wrapper


def _manager_wrapper(target: Target, original: Any, site: CallSite, active: list[bool]) -> Any:
    """``stream(...)`` helpers whose manager makes the request itself, on ``__enter__``."""

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        manager = original(self, *args, **kwargs)
        if not active[0]:
            return manager
        try:
            name = next(n for n in vars(manager) if n.endswith("__api_request"))
            request = getattr(manager, name)
            if target.kind == "async_manager":
                traced: Any = _traced_async_request(target, site, self, args, kwargs, request)
            else:
                traced = _traced_request(target, site, self, args, kwargs, request)
            setattr(manager, name, traced)
        except Exception:  # an SDK version without the attribute: not recorded
            _internal_error("stream manager")
        return manager

    return wrapper


def _traced_request(target: Target, site: CallSite, resource: Any, args: tuple[Any, ...],
                    kwargs: dict[str, Any], request: Callable[[], Any]) -> Callable[[], Any]:
    def traced() -> Any:
        rec = start(target, site, resource, args, kwargs)
        if rec is None:
            return request()
        tokens = rec.enter()
        try:
            result = request()
        except BaseException as exc:
            rec.exit(tokens)
            rec.fail(exc)
            raise
        rec.exit(tokens)
        return finish(rec, result)

    return traced


async def _traced_async_request(target: Target, site: CallSite, resource: Any,
                                args: tuple[Any, ...], kwargs: dict[str, Any],
                                request: Any) -> Any:
    rec = start(target, site, resource, args, kwargs)
    if rec is None:
        return await request
    tokens = rec.enter()
    try:
        result = await request
    except BaseException as exc:
        rec.exit(tokens)
        rec.fail(exc)
        raise
    rec.exit(tokens)
    return finish(rec, result)


def _close_wrapper(original: Any, is_async: bool) -> Any:
    if is_async:
        @functools.wraps(original)
        async def async_close(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await original(self, *args, **kwargs)
            finally:
                closed(self)

        return async_close

    @functools.wraps(original)
    def close(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        finally:
            closed(self)

    return close


# --- one call ------------------------------------------------------------------------------


def start(target: Target, site: CallSite, resource: Any, args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> CallRecorder | None:
    """Open the record of one call (the prompt event is sent), or None when capture is off."""
    try:
        gov = STATE.governor or _gov.resolve_governor()
        if gov is None or gov._closed:
            return None
        request = request_arguments(kwargs)
        streaming = target.streams or request.get("stream") is True
        own_span = not genai_span_current() and not (
            target.client_span is not None and target.client_span(resource))
        model = request.get("model")
        rec = CallRecorder(gov, site, streaming, own_span=own_span,
                           request_model=model if isinstance(model, str) else None)
        rec.begin((resource, *args), request)
        return rec
    except Exception:
        _internal_error("start")
        return None


def request_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments as the caller gave them: without the SDK's "not given" placeholders,
    the ``None`` defaults of ``extra_*`` / ``timeout``, and the SDK's own helper headers."""
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if type(value).__name__ in _UNSET_TYPES or (value is None and key in _EXTRAS):
            continue
        if key == "extra_headers" and isinstance(value, dict):
            value = {k: v for k, v in value.items()
                     if not (isinstance(k, str) and k.lower().startswith("x-stainless-"))}
            if not value:
                continue
        out[key] = value
    return out


def finish(rec: CallRecorder, result: Any) -> Any:
    """Record the result; a stream is traced in place and returned as it is."""
    try:
        if _is_sdk_stream(result):
            return trace_stream(rec, result)
        rec.finish("ok", output=result)
    except Exception:
        _internal_error("finish")
    return result


def _is_sdk_stream(obj: Any) -> bool:
    return type(obj).__name__ in ("Stream", "AsyncStream") and hasattr(obj, "response")


def trace_stream(rec: CallRecorder, stream: Any) -> Any:
    """Trace an SDK ``Stream`` / ``AsyncStream`` through its own iterator, so every way
    of reading it (iteration, helpers built on it) is recorded and its type is kept;
    a stream without that iterator is wrapped in a proxy instead."""
    try:
        inner = stream._iterator  # openai: an attribute; anthropic: made on first use
        if not (hasattr(inner, "__next__") or hasattr(inner, "__anext__")):
            raise TypeError("no iterator")
    except Exception:
        return rec.succeed(stream)
    rec._streaming = True
    proxy: _StreamProxy = (TracedAsyncIterator(inner, rec) if hasattr(inner, "__anext__")
                           else TracedIterator(inner, rec))
    stream.__dict__["_iterator"] = proxy
    return stream


def closed(stream: Any) -> None:
    """A stream (or a helper stream over one) was closed: a traced one ended early."""
    try:
        raw = stream.__dict__.get("_raw_stream", stream)
        proxy = vars(raw).get("_iterator")
        if isinstance(proxy, _StreamProxy) and not proxy._done:
            proxy._end("closed_early")
    except Exception:
        _internal_error("close")


def genai_span_current() -> bool:
    """Whether the current span is already a GenAI model-call span (another
    instrumentation's, or a decorated ``llm_call``'s): promptgov then records
    under its ids instead of opening a second span for the same call."""
    span = trace.get_current_span()
    if not span.is_recording():
        return False
    attributes = getattr(span, "attributes", None)
    if not attributes:
        return False
    operation = attributes.get("gen_ai.operation.name")
    if operation is not None:
        return operation in MODEL_OPERATIONS
    return "gen_ai.request.model" in attributes or "gen_ai.system" in attributes


def _internal_error(where: str) -> None:
    try:
        gov = STATE.governor or _gov.get_governor()
        if gov is not None:
            gov.count_internal_error(f"instrument: {where}")
    except Exception:
        pass
