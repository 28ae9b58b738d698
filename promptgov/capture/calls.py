"""``llm_call``, ``retrieval`` and ``tool``: decorators and ``with`` blocks.

Each works bare (``@tool``) or with options (``@llm_call(model=...)``), on
sync and async functions, sync and async generators, methods, and as
``with`` / ``async with`` blocks for code that cannot be decorated. The
wrapped call's return value and exception always pass through unchanged; any
failure of promptgov itself is counted and swallowed.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar, cast, overload

from opentelemetry import context as otel_context
from opentelemetry import trace

from promptgov import governor as _gov
from promptgov import telemetry
from promptgov.capture.context import (
    InteractionContext,
    current_call_var,
    current_interaction,
    note_last_event,
)
from promptgov.capture.streams import TracedAsyncIterator, TracedIterator
from promptgov.events import llm_shapes
from promptgov.events.codec import snapshot
from promptgov.events.draft import CallSite, Draft, EventRef
from promptgov.events.ids import now_ns

F = TypeVar("F", bound=Callable[..., Any])

_OPERATIONS = {"llm": "chat", "retrieval": "retrieval", "tool": "execute_tool"}
_CLOSING_EVENT = {"llm": "response", "retrieval": "retrieval", "tool": "tool_call"}
_CANCELLED = (asyncio.CancelledError, KeyboardInterrupt, SystemExit)
# Stack of (spec, recorder) for ``with`` blocks, per context.
_blocks: contextvars.ContextVar[tuple[tuple[Any, Any, Any], ...]] = contextvars.ContextVar(
    "promptgov_blocks", default=()
)


def status_for(exc: BaseException) -> str:
    """How a call ended, from the exception that ended it."""
    if isinstance(exc, GeneratorExit):
        return "closed_early"
    if isinstance(exc, _CANCELLED):
        return "cancelled"
    return "error"


class CallRecorder:
    """One call in progress. Inside a ``with`` block (or via :func:`current_call`)
    its ``record_*`` methods add what promptgov cannot see by itself."""

    __slots__ = (
        "_args",
        "_chunks",
        "_ctx",
        "_done",
        "_event_ref",
        "_explicit",
        "_first_chunk_ns",
        "_first_token_ns",
        "_gov",
        "_input",
        "_kwargs",
        "_messages",
        "_model",
        "_parent",
        "_prompt_payload",
        "_prompt_sent",
        "_site",
        "_span",
        "_span_ids",
        "_start_perf",
        "_streaming",
        "anchor",
    )

    def __init__(self, gov: _gov.Governor, site: CallSite, streaming: bool, *,
                 own_span: bool = True, request_model: str | None = None) -> None:
        self._gov = gov
        self._site = site
        self._streaming = streaming
        self._ctx = current_interaction()
        outer = current_call_var.get()  # a parent only from the same interaction
        self._parent: EventRef | None = outer.anchor if (
            outer is not None and outer._ctx is self._ctx) else None
        self._args: Any = ()
        self._kwargs: Any = None
        self._input: Any = None
        self._messages: Any = None
        self._model: dict[str, Any] | None = None
        self._explicit: dict[str, Any] | None = None
        self._chunks: list[Any] | None = None
        self._first_chunk_ns: int | None = None
        self._first_token_ns: int | None = None
        self._prompt_sent = False
        self._prompt_payload: dict[str, Any] | None = None
        self._done = False
        self._event_ref: EventRef | None = None
        # The id nested events name as their parent: the prompt for an LLM call,
        # the call's own (closing) event otherwise.
        self.anchor = EventRef()
        self._span: trace.Span | None = None
        if own_span and gov.settings.tracing:
            ctx = self._ctx
            self._span = telemetry.start_span(
                site.kind, site.operation, request_model or _span_name(site),
                lambda: _span_attributes(site, ctx, request_model))
        ids = telemetry.span_ids(self._span) if self._span is not None else \
            telemetry.current_trace_ids()
        self._span_ids = ids
        self._start_perf = time.perf_counter_ns()

    @property
    def interaction(self) -> InteractionContext | None:
        """The interaction this call belongs to (current when it started)."""
        return self._ctx

    @property
    def anchor_id(self) -> str:
        """The id nested events name as their parent."""
        return self.anchor.id

    @property
    def prompt_event_id(self) -> str | None:
        """The prompt event's id (LLM calls)."""
        return self.anchor.id if self._site.kind == "llm" else None

    @property
    def event_id(self) -> str | None:
        """The closing event's id (response, retrieval or tool_call), once the call ended."""
        ref = self._event_ref
        return None if ref is None else ref.id

    # --- explicit recording (with blocks, current_call()) -----------------------------

    def record_request(
        self,
        input: Any = None,
        *,
        messages: Any = None,
        model: str | None = None,
        provider: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        """The request: input (or chat ``messages``) and model; sends the prompt event."""
        try:
            if input is not None:
                self._input = snapshot(input)
            if messages is not None:
                self._messages = snapshot(messages)
            if model or provider or parameters:
                self._model = {"name": model, "provider": provider,
                               "parameters": dict(parameters or {})}
            if self._site.kind == "llm":
                self._send_prompt()
        except Exception:
            self._gov.count_internal_error("record_request")

    def record_chunk(self, chunk: Any) -> None:
        """One streamed chunk (text or an SDK chunk object)."""
        try:
            if self._first_chunk_ns is None:
                self._first_chunk_ns = time.perf_counter_ns()
                if self._site.kind == "llm" and not self._prompt_sent:
                    self._send_prompt()
                self._chunks = []
            if self._first_token_ns is None and llm_shapes.carries_output(chunk):
                # time to first token: role-only chunks and start events are not tokens
                self._first_token_ns = time.perf_counter_ns()
            cast(list[Any], self._chunks).append(chunk)
        except Exception:
            self._gov.count_internal_error("record_chunk")

    def record_response(
        self,
        output: Any = None,
        *,
        usage: Mapping[str, int] | None = None,
        finish_reasons: list[str] | None = None,
        response_model: str | None = None,
        response_id: str | None = None,
        documents: Any = None,
        call_id: str | None = None,
    ) -> None:
        """The result, with anything not recognisable from it (usage, finish reasons...)."""
        try:
            explicit = self._explicit or {}
            if output is not None:
                explicit["output"] = snapshot(output)
            if documents is not None:
                explicit["documents"] = snapshot(documents)
            for key, value in (("usage", usage), ("finish_reasons", finish_reasons),
                               ("response_model", response_model),
                               ("response_id", response_id), ("call_id", call_id)):
                if value is not None:
                    explicit[key] = value
            self._explicit = explicit
        except Exception:
            self._gov.count_internal_error("record_response")

    # --- lifecycle ----------------------------------------------------------------

    def begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Capture the arguments; for an LLM call, send the prompt event now."""
        if kwargs.get("stream") is True:  # an SDK call asking for a stream
            self._streaming = True
        self._args = snapshot(args)
        self._kwargs = snapshot(kwargs)
        if self._site.kind == "llm":
            self._send_prompt()

    def enter(self) -> tuple[Any, Any]:
        """Make this call the parent of what runs inside it (and its span current)."""
        token = current_call_var.set(self)
        otel_token = None
        if self._span is not None:
            otel_token = otel_context.attach(trace.set_span_in_context(self._span))
        return token, otel_token

    def exit(self, tokens: tuple[Any, Any]) -> None:
        """Undo :meth:`enter`."""
        token, otel_token = tokens
        try:
            current_call_var.reset(token)
        except ValueError:  # reset from another context: leave it be
            pass
        if otel_token is not None:
            try:
                otel_context.detach(otel_token)
            except Exception:
                pass

    def succeed(self, result: Any, *, awaitable: bool = False) -> Any:
        """The call returned: wrap a stream it returned, else record the result.

        ``awaitable``: the call is synchronous, so a coroutine (or future) it
        returns is the real call, recorded when it completes.
        """
        try:
            if awaitable and getattr(type(result), "__await__", None) is not None:
                if inspect.iscoroutine(result):
                    started: list[bool] = []
                    traced = _await_call(result, self, started)
                    weakref.finalize(traced, _abandon, self, started)
                    return traced
                if isinstance(result, asyncio.Future):
                    result.add_done_callback(self._future_done)
                    return result
            if inspect.isgenerator(result) or (llm_shapes.is_stream_object(result)
                                               and hasattr(result, "__next__")):
                self._streaming = True
                return TracedIterator(result, self)
            if inspect.isasyncgen(result) or (llm_shapes.is_stream_object(result)
                                              and hasattr(result, "__anext__")):
                self._streaming = True
                return TracedAsyncIterator(result, self)
            self.finish("ok", output=result)
        except Exception:
            self._gov.count_internal_error("succeed")
        return result

    def fail(self, exc: BaseException) -> None:
        """The call raised ``exc`` (which the caller re-raises unchanged)."""
        self.finish(status_for(exc), error=exc)

    def _future_done(self, future: asyncio.Future[Any]) -> None:
        try:
            if future.cancelled():
                self.finish("cancelled", from_finalizer=True)
            elif future.exception() is not None:
                exc = future.exception()
                self.finish(status_for(cast(BaseException, exc)), error=exc,
                            from_finalizer=True)
            else:
                self.finish("ok", output=future.result(), from_finalizer=True)
        except Exception:
            self._gov.count_internal_error("future_done")

    def block(
        self,
        *,
        policy: str | Mapping[str, Any] | tuple[str, str] | None = None,
        reasons: Iterable[str] = (),
        rules: Iterable[str] = (),
        score: float | None = None,
        output: Any = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> str:
        """A guard blocked this call: record it without calling the model.

        Sends the prompt event (with what :meth:`record_request` recorded) if
        not sent yet, a ``policy_decision`` (``block``) targeting it, and ends
        the call at once with status ``blocked`` (``output``: what the user
        was shown instead, if anything); whatever the block then does (return,
        raise) is not recorded again. Returns the policy decision's event id
        ("" if none was recorded).
        """
        try:
            if self._done:
                return ""
            if self._site.kind == "llm" and not self._prompt_sent:
                self._send_prompt()
            decision = self._gov.policy_decision(
                "block", policy=policy, target_event_id=self.anchor.id, reasons=reasons,
                rules=rules, score=score, attributes=attributes)
            self.finish("blocked", output=output)
            return decision
        except Exception:
            self._gov.count_internal_error("block")
            return ""

    def finish(
        self,
        status: str,
        *,
        output: Any = None,
        error: BaseException | None = None,
        from_finalizer: bool = False,
    ) -> None:
        """Send the closing event once. ``from_finalizer``: called by GC, touch no context."""
        if self._done:
            return
        self._done = True
        try:
            self._finish(status, output, error, from_finalizer)
        except Exception:
            self._gov.count_internal_error("finish")

    def _finish(self, status: str, output: Any, error: BaseException | None,
                from_finalizer: bool) -> None:
        end_perf = time.perf_counter_ns()
        site = self._site
        explicit = self._explicit or {}
        if output is not None and "output" not in explicit:
            output = snapshot(output)
        else:
            output = explicit.pop("output", None)
        payload: dict[str, Any] = {
            "site": site,
            "status": status,
            "output": output,
            "chunks": self._chunks,
            "error": error,
            "duration_ns": end_perf - self._start_perf,
            "explicit": explicit,
        }
        if site.kind == "llm":
            if not self._prompt_sent:
                self._send_prompt()
            payload["prompt_event_id"] = self.anchor
            payload["prompt_payload"] = self._prompt_payload
            payload["ttft_ns"] = None if self._first_token_ns is None else \
                self._first_token_ns - self._start_perf
            ref, parent = EventRef(), self.anchor  # type: EventRef, EventRef | None
        else:  # the call's own event is the anchor its nested events named as parent
            payload.update(args=self._args, kwargs=self._kwargs, input=self._input,
                           documents=explicit.pop("documents", None),
                           call_id=explicit.pop("call_id", None))
            ref, parent = self.anchor, self._parent
        self._event_ref = ref
        accepted = self._emit(_CLOSING_EVENT[site.kind], ref, parent, payload)
        if accepted and not from_finalizer:
            note_last_event(self._ctx, ref)
        if self._span is not None:
            call_id = payload.get("call_id")
            if isinstance(call_id, str):
                self._span.set_attribute("gen_ai.tool.call.id", call_id)
            _end_span(self._span, status, error, output, self._chunks)

    def _send_prompt(self) -> None:
        if self._prompt_sent:
            return
        self._prompt_sent = True
        payload = {"site": self._site, "args": self._args, "kwargs": self._kwargs,
                   "input": self._input, "messages": self._messages,
                   "streaming": self._streaming}
        self._prompt_payload = payload
        self._emit("prompt", self.anchor, self._parent, payload)

    def _emit(self, event_type: str, ref: EventRef, parent: EventRef | None,
              payload: dict[str, Any]) -> bool:
        gov = self._gov
        trace_id, span_id = self._span_ids
        return gov.emit(Draft(event_type, ref, gov.next_seq(), now_ns(), payload, self._ctx, parent,
                       trace_id, span_id, self._model, self._site.prompt_template))


class _NullRecorder:
    """Stands in when capture is off, so ``call.record_*`` still works."""

    anchor = None
    anchor_id = None
    event_id = None
    prompt_event_id = None

    def record_request(self, *args: Any, **kwargs: Any) -> None:
        """Does nothing."""

    def record_chunk(self, chunk: Any) -> None:
        """Does nothing."""

    def record_response(self, *args: Any, **kwargs: Any) -> None:
        """Does nothing."""

    def block(self, **kwargs: Any) -> str:
        """Does nothing; no event id."""
        return ""


NULL_RECORDER = _NullRecorder()


def current_call() -> CallRecorder | _NullRecorder:
    """The call being captured here (inside a decorated function or ``with`` block)."""
    call = current_call_var.get()
    return call if call is not None else NULL_RECORDER


# --- specs: decorator factories and with blocks ------------------------------------


class CallSpec:
    """The options of one ``llm_call`` / ``retrieval`` / ``tool`` use.

    Calling it with a function decorates the function; ``with`` / ``async with``
    captures a block and yields a :class:`CallRecorder`.
    """

    def __init__(self, kind: str, options: dict[str, Any]) -> None:
        self.kind = kind
        self.governor: _gov.Governor | None = options.pop("governor", None)
        self.streaming = bool(options.pop("streaming", False))
        self.options = options
        self._block_site: CallSite | None = None

    def site(self, fn: Callable[..., Any] | None) -> CallSite:
        o = self.options
        signature = None
        skip_first = False
        function = o.get("name") or "block"
        if fn is not None:
            function = f"{fn.__module__}.{fn.__qualname__}"
            try:
                signature = inspect.signature(fn)
                params = list(signature.parameters)
                skip_first = bool(params) and params[0] in ("self", "cls")
            except (TypeError, ValueError):
                signature = None
        # The signature's defaults for the model and its parameters, under the options:
        # ``def f(messages, temperature=0.3)`` called as ``f(msgs)`` ran with 0.3.
        default_model, default_params = _request_defaults(signature)
        parameters = {**default_params, **dict(o.get("parameters") or {})}
        name = o.get("model") or default_model
        model = None
        if name or o.get("provider") or o.get("model_version") or parameters:
            model = {"provider": o.get("provider"), "name": name,
                     "version": o.get("model_version"), "parameters": parameters}
        template = None
        if o.get("prompt_template"):
            template = {"id": str(o["prompt_template"]),
                        "version": None if o.get("template_version") is None
                        else str(o["template_version"])}
        short = o.get("name") or (fn.__name__ if fn is not None else None)
        return CallSite(
            self.kind,
            function,
            operation=o.get("operation") or _OPERATIONS[self.kind],
            signature=signature,
            skip_first=skip_first,
            model=model,
            prompt_template=template,
            tool_name=short if self.kind == "tool" else o.get("name"),
            input_mapper=o.get("input_mapper"),
            output_mapper=o.get("output_mapper"),
        )

    def _begin(self, site: CallSite, streaming: bool) -> CallRecorder | None:
        try:
            gov = self.governor or _gov.resolve_governor()
            if gov is None or gov._closed or not gov.settings.enabled:
                return None
            return CallRecorder(gov, site, streaming or self.streaming)
        except Exception:
            return None

    def _begin_streaming(self, site: CallSite, streaming: bool) -> CallRecorder | None:
        return self._begin(site, True)

    # --- decorator ------------------------------------------------------------------

    def __call__(self, fn: F) -> F:
        if isinstance(fn, (staticmethod, classmethod)):
            return cast(F, type(fn)(self(fn.__func__)))
        site = self.site(fn)
        begin = self._begin
        if _streams_by_default(site.signature):  # ``stream=True`` by default: it streams
            begin = self._begin_streaming
        wrapper: Callable[..., Any]

        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            proxy = TracedAsyncIterator if inspect.isasyncgenfunction(fn) else TracedIterator
            wrapper = _GeneratorFunction(fn, site, begin, proxy)

        elif inspect.iscoroutinefunction(fn):
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                rec = _started(begin(site, False), args, kwargs)
                if rec is None:
                    return await fn(*args, **kwargs)
                tokens = rec.enter()
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    rec.exit(tokens)
                    rec.fail(exc)
                    raise
                rec.exit(tokens)
                return rec.succeed(result)

        else:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                rec = _started(begin(site, False), args, kwargs)
                if rec is None:
                    return fn(*args, **kwargs)
                tokens = rec.enter()
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    rec.exit(tokens)
                    rec.fail(exc)
                    raise
                rec.exit(tokens)
                return rec.succeed(result, awaitable=True)

        functools.update_wrapper(wrapper, fn)
        setattr(wrapper, "__promptgov_site__", site)  # noqa: B010
        return cast(F, wrapper)

    # --- with blocks ----------------------------------------------------------------

    def __enter__(self) -> CallRecorder | _NullRecorder:
        if self._block_site is None:
            self._block_site = self.site(None)
        rec = self._begin(self._block_site, False)
        tokens = rec.enter() if rec is not None else None
        _blocks.set((*_blocks.get(), (self, rec, tokens)))
        return rec if rec is not None else NULL_RECORDER

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack = _blocks.get()
        if not stack or stack[-1][0] is not self:
            return
        _blocks.set(stack[:-1])
        _, rec, tokens = stack[-1]
        if rec is None:
            return
        rec.exit(tokens)
        if exc is not None:
            rec.fail(exc)
        else:
            rec.finish("ok")

    async def __aenter__(self) -> CallRecorder | _NullRecorder:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class _GeneratorFunction:
    """A decorated (async) generator function that ``inspect`` still sees as one.

    ``inspect.isgeneratorfunction`` / ``isasyncgenfunction`` accept a callable
    that exposes the function's ``__code__``, ``__defaults__``, ``__kwdefaults__``,
    ``__annotations__`` and ``__name__`` (frameworks choose how to drive a callable
    by them); ``__get__`` binds it as a method, like a function. A call sends the
    prompt event and returns the traced proxy of the stream.
    """

    def __init__(self, fn: Callable[..., Any], site: CallSite,
                 begin: Callable[[CallSite, bool], CallRecorder | None],
                 proxy: type[TracedIterator] | type[TracedAsyncIterator]) -> None:
        self._fn = fn
        self._site = site
        self._begin = begin
        self._proxy = proxy

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fn = self._fn
        rec = _started(self._begin(self._site, True), args, kwargs)
        if rec is None:
            return fn(*args, **kwargs)
        try:
            stream = fn(*args, **kwargs)
        except BaseException as exc:
            rec.fail(exc)
            raise
        return self._proxy(stream, rec)

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        return self if instance is None else types.MethodType(self, instance)

    @property
    def __code__(self) -> types.CodeType:
        return cast(types.CodeType, getattr(self._fn, "__code__"))  # noqa: B009

    @property
    def __defaults__(self) -> tuple[Any, ...] | None:
        return cast("tuple[Any, ...] | None", getattr(self._fn, "__defaults__"))  # noqa: B009

    @property
    def __kwdefaults__(self) -> dict[str, Any] | None:
        return cast("dict[str, Any] | None", getattr(self._fn, "__kwdefaults__"))  # noqa: B009

    def __reduce__(self) -> str:  # pickled by name, like the function it replaces
        return cast(str, getattr(self, "__qualname__"))  # noqa: B009

    def __repr__(self) -> str:
        return f"<traced function {getattr(self, '__qualname__', '?')} at {id(self):#x}>"


async def _await_call(awaitable: Any, rec: CallRecorder, started: list[bool]) -> Any:
    """Await what a synchronous captured call returned, as part of that call."""
    started.append(True)
    tokens = rec.enter()
    try:
        result = await awaitable
    except GeneratorExit:  # collected while suspended: no context to restore
        rec.finish("abandoned", from_finalizer=True)
        raise
    except BaseException as exc:
        rec.exit(tokens)
        rec.fail(exc)
        raise
    rec.exit(tokens)
    return rec.succeed(result)


def _abandon(rec: CallRecorder, started: list[bool]) -> None:
    """A traced coroutine was collected: never awaited, the call was abandoned."""
    if not started:
        rec.finish("abandoned", from_finalizer=True)


def _started(rec: CallRecorder | None, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> CallRecorder | None:
    if rec is None:
        return None
    try:
        rec.begin(args, kwargs)
    except Exception:
        rec._gov.count_internal_error("begin")
    return rec


def _request_defaults(signature: inspect.Signature | None) -> tuple[Any, dict[str, Any]]:
    """The default ``model`` and request parameters (``temperature``...) of a signature."""
    if signature is None:
        return None, {}
    model = None
    params: dict[str, Any] = {}
    for param in signature.parameters.values():
        default = param.default
        if default is inspect.Parameter.empty or llm_shapes.is_unset(default):
            continue
        if param.name in llm_shapes.REQUEST_PARAMETERS:
            params[param.name] = default
        elif param.name == "model" and isinstance(default, str):
            model = default
    return model, params


def _streams_by_default(signature: inspect.Signature | None) -> bool:
    if signature is None:
        return False
    param = signature.parameters.get("stream")
    return param is not None and param.default is True


def _span_name(site: CallSite) -> str:
    if site.kind == "tool":
        return site.tool_name or ""
    if site.model and site.model.get("name"):
        return str(site.model["name"])
    return site.tool_name or ""


def _span_attributes(site: CallSite, ctx: Any, request_model: str | None = None
                     ) -> dict[str, Any]:
    model = site.model or {}
    return {
        "gen_ai.operation.name": site.operation,
        "gen_ai.provider.name": model.get("provider"),
        "gen_ai.request.model": request_model or model.get("name"),
        "gen_ai.tool.name": site.tool_name if site.kind == "tool" else None,
        "gen_ai.conversation.id": getattr(ctx, "conversation_id", None),
        "code.function": site.function,
    }


def _end_span(span: trace.Span, status: str, error: BaseException | None, output: Any,
              chunks: list[Any] | None) -> None:
    fields = llm_shapes.aggregate_chunks(chunks) if chunks is not None else \
        llm_shapes.extract_response(output)
    if fields:
        usage = fields.get("usage") or {}
        for key, value in (("gen_ai.response.model", fields.get("response_model")),
                           ("gen_ai.response.id", fields.get("response_id")),
                           ("gen_ai.usage.input_tokens", usage.get("input_tokens")),
                           ("gen_ai.usage.output_tokens", usage.get("output_tokens"))):
            if value is not None:
                span.set_attribute(key, value)
        if fields.get("finish_reasons"):
            span.set_attribute("gen_ai.response.finish_reasons", fields["finish_reasons"])
    if error is not None:
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(trace.Status(trace.StatusCode.ERROR, status))
    span.end()


# --- public factories ------------------------------------------------------------------


@overload
def llm_call(fn: F, /) -> F: ...
@overload
def llm_call(fn: None = None, /, **options: Any) -> CallSpec: ...
def llm_call(fn: Any = None, /, **options: Any) -> Any:
    """Capture an LLM call: a ``prompt`` event when it starts, a ``response`` when it ends.

    Options: ``provider``, ``model``, ``model_version``, ``parameters``,
    ``prompt_template``, ``template_version``, ``operation`` (default ``chat``),
    ``name``, ``input_mapper``, ``output_mapper``, ``governor``, ``streaming``
    (the prompt event says the call streams; also known from a generator
    function or a ``stream=True`` argument).
    """
    return _factory("llm", fn, options)


@overload
def retrieval(fn: F, /) -> F: ...
@overload
def retrieval(fn: None = None, /, **options: Any) -> CallSpec: ...
def retrieval(fn: Any = None, /, **options: Any) -> Any:
    """Capture a retrieval call: the query and the documents returned (one event)."""
    return _factory("retrieval", fn, options)


@overload
def tool(fn: F, /) -> F: ...
@overload
def tool(fn: str | None = None, /, **options: Any) -> CallSpec: ...
def tool(fn: Any = None, /, **options: Any) -> Any:
    """Capture a tool call: name, arguments, result, status, duration (one event).

    ``@tool``, ``@tool("name")`` or ``@tool(name="name")``.
    """
    return _factory("tool", fn, options)


def _factory(kind: str, fn: Any, options: dict[str, Any]) -> Any:
    if isinstance(fn, str):
        options = {"name": fn, **options}
        fn = None
    unknown = set(options) - _OPTIONS
    if unknown:
        raise TypeError(f"unknown option(s) for {kind}: {', '.join(sorted(unknown))}; "
                        f"use {', '.join(sorted(_OPTIONS))}")
    spec = CallSpec(kind, dict(options))
    return spec(fn) if fn is not None else spec


_OPTIONS = {
    "name", "provider", "model", "model_version", "parameters", "prompt_template",
    "template_version", "operation", "input_mapper", "output_mapper", "governor", "streaming",
}
