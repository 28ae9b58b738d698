"""LangChain: a callback handler recording chat model, LLM, retriever and tool runs.

::

    from promptgov.integrations.langchain import PromptgovCallbackHandler

    handler = PromptgovCallbackHandler()
    with promptgov.interaction(conversation_id="c-1", user_id="u-7"):
        chain.invoke({"question": q}, config={"callbacks": [handler]})

A chat model or LLM run gives a ``prompt`` event when it starts (the messages,
the model and its parameters) and a ``response`` when it ends (the output,
usage, finish reasons, streamed tokens, the error); a retriever run gives a
``retrieval`` event with its documents, a tool run a ``tool_call`` event.
Chain runs give no event of their own: what runs inside them belongs to the
nearest recorded run around them.

Lineage is kept per LangChain run id, never in handler-wide state: one
handler can serve any number of concurrent runs, and a run may start in one
thread or task and end in another. A top-level run takes its lineage from the
context it was started in (the current :func:`promptgov.interaction`, the
enclosing captured call, the OpenTelemetry context); a nested run takes it
from its parent run, so its events name the enclosing run's event as parent
(the prompt of an LLM run, the event of a retriever or tool run).

The handler never changes a context variable of the host's, and nothing it
does can fail the run: its own errors are counted (``governor.stats()``) and
logged once.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from opentelemetry import context as otel_context

from promptgov.capture.calls import CallRecorder, CallSpec, llm_call, retrieval, tool
from promptgov.capture.context import (
    InteractionContext,
    current_call_var,
    enclosing_call,
    interaction_var,
)
from promptgov.events.llm_shapes import REQUEST_PARAMETERS
from promptgov.governor import Governor, resolve_governor

__all__ = ["PromptgovCallbackHandler"]

_log = logging.getLogger("promptgov.integrations.langchain")

# LangChain message types and the chat roles they stand for.
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool",
          "function": "function", "developer": "developer", "remove": "remove"}
# LangSmith metadata a chat model adds to its runs, and the parameter each stands for.
_LS_PARAMETERS = (("ls_temperature", "temperature"), ("ls_max_tokens", "max_tokens"),
                  ("ls_stop", "stop"))
_MODEL_KEYS = ("model", "model_name", "model_id")


class _Lineage:
    """What a run passes on to the runs nested in it."""

    __slots__ = ("call", "ctx", "gov", "otel")

    def __init__(self, gov: Governor | None, ctx: InteractionContext | None, call: Any,
                 otel: otel_context.Context | None) -> None:
        self.gov = gov
        self.ctx = ctx
        self.call = call
        self.otel = otel


class _Run:
    """One LangChain run the handler knows about (chains included, with no recorder)."""

    __slots__ = ("call_id", "lineage", "recorder", "streamed")

    def __init__(self, lineage: _Lineage, recorder: CallRecorder | None = None) -> None:
        self.lineage = lineage
        self.recorder = recorder
        self.call_id: str | None = None
        self.streamed = False


class PromptgovCallbackHandler(BaseCallbackHandler):
    """Records LangChain runs as promptgov events, with the decorators' lineage.

    ``governor``: the governor to record with (default: the one decorators
    would use where the top-level run starts). ``max_open_runs``: runs whose end
    never came (a stream dropped unfinished) are forgotten past this many open
    runs, the oldest first, and recorded as ``abandoned``.

    Pass it where LangChain takes callbacks (``config={"callbacks": [handler]}``,
    a model's or chain's ``callbacks=``); one handler may be shared by every
    run of the process, sync and async.
    """

    run_inline = True  # never blocks: called on the run's own thread or task, in order
    raise_error = False

    def __init__(self, *, governor: Governor | None = None,
                 max_open_runs: int = 10_000) -> None:
        super().__init__()
        self._governor = governor
        self._max_open_runs = max(1, int(max_open_runs))
        self._runs: dict[UUID, _Run] = {}
        self._lock = threading.Lock()
        self._logged = False

    # --- chat models and LLMs ------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """A chat model run starts: the prompt event, with the messages."""
        try:
            spec = self._llm_spec("chat", serialized, metadata, kwargs)
            conversation = [_message(m) for m in (messages[0] if messages else [])]
            self._open(run_id, parent_run_id, spec,
                       lambda rec: rec.record_request(messages=conversation))
        except Exception:
            self._fault("on_chat_model_start", run_id)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """A text-completion LLM run starts: the prompt event, with the prompt."""
        try:
            spec = self._llm_spec("text_completion", serialized, metadata, kwargs)
            prompt: Any = prompts[0] if len(prompts) == 1 else list(prompts)
            self._open(run_id, parent_run_id, spec, lambda rec: rec.record_request(prompt))
        except Exception:
            self._fault("on_llm_start", run_id)

    def on_llm_new_token(
        self,
        token: Any,
        *,
        chunk: Any = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """A streamed token: one chunk of the response."""
        try:
            run = self._runs.get(run_id)
            if run is not None and run.recorder is not None:
                run.streamed = True
                run.recorder.record_chunk(_token_text(token, chunk))
        except Exception:
            self._fault("on_llm_new_token", run_id)

    def on_llm_end(self, response: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                   **kwargs: Any) -> None:
        """The run returned: the response event (output, usage, finish reasons)."""
        run = self._pop(run_id)
        if run is None or run.recorder is None:
            return
        rec = run.recorder
        try:
            fields = _llm_result(response)
            if run.streamed:  # the output is the streamed text
                fields.pop("output", None)
            rec.record_response(**fields)
        except Exception:
            self._fault("on_llm_end", run_id)
        rec.finish("ok")

    def on_llm_error(self, error: BaseException, *, run_id: UUID,
                     parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        """The run raised: the response event with status ``error`` (or ``cancelled``)."""
        self._fail(run_id, error)

    # --- retrievers ----------------------------------------------------------------

    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """A retriever run starts (its event is sent when it ends)."""
        try:
            spec = retrieval(name=_run_name(serialized, kwargs))
            self._open(run_id, parent_run_id, spec, lambda rec: rec.record_request(query))
        except Exception:
            self._fault("on_retriever_start", run_id)

    def on_retriever_end(self, documents: Sequence[Any], *, run_id: UUID,
                         parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        """The retrieval event, with the documents."""
        run = self._pop(run_id)
        if run is None or run.recorder is None:
            return
        rec = run.recorder
        try:
            rec.record_response(documents=[_document(d) for d in documents])
        except Exception:
            self._fault("on_retriever_end", run_id)
        rec.finish("ok")

    def on_retriever_error(self, error: BaseException, *, run_id: UUID,
                           parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        """The retrieval event with status ``error``."""
        self._fail(run_id, error)

    # --- tools ---------------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """A tool run starts (its event is sent when it ends)."""
        try:
            name = (serialized or {}).get("name") or kwargs.get("name") or "tool"
            spec = tool(name=str(name))
            arguments: Any = inputs if inputs is not None else input_str
            run = self._open(run_id, parent_run_id, spec,
                             lambda rec: rec.record_request(arguments))
            call_id = kwargs.get("tool_call_id")
            if run is not None and isinstance(call_id, str):
                run.call_id = call_id
        except Exception:
            self._fault("on_tool_start", run_id)

    def on_tool_end(self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                    **kwargs: Any) -> None:
        """The tool_call event, with the result (a ``ToolMessage``'s content)."""
        run = self._pop(run_id)
        if run is None or run.recorder is None:
            return
        rec = run.recorder
        status = "ok"
        try:
            result, call_id, failed = _tool_output(output)
            rec.record_response(result, call_id=call_id or run.call_id)
            if failed:  # an error the tool handled (handle_tool_error): its message is the result
                status = "error"
        except Exception:
            self._fault("on_tool_end", run_id)
        rec.finish(status)

    def on_tool_error(self, error: BaseException, *, run_id: UUID,
                      parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        """The tool_call event with status ``error``."""
        self._fail(run_id, error, kwargs.get("tool_call_id"))

    # --- chains: no event, only lineage -------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember where the chain's nested runs belong."""
        try:
            self._add(run_id, _Run(self._lineage(parent_run_id)))
        except Exception:
            self._fault("on_chain_start", run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                     **kwargs: Any) -> None:
        """Forget the chain."""
        self._pop(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID,
                       parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        """Forget the chain."""
        self._pop(run_id)

    # --- lineage for code inside a run ---------------------------------------------------

    @contextlib.contextmanager
    def lineage(self) -> Iterator[InteractionContext | None]:
        """Inside a tool's, retriever's or runnable's own code: adopt its run's lineage.

        Decorated calls and ``with`` blocks in the block then belong to the run's
        interaction and name its event as parent (a tool run's ``tool_call``
        event)::

            @langchain_tool
            def lookup(order_id: str) -> str:
                with handler.lineage():
                    return fetch_order(order_id)   # a @promptgov.tool

        Outside a run this handler recorded, it changes nothing. Yields the
        current interaction.
        """
        tokens: tuple[Any, Any, Any] | None = None
        try:
            lineage = self._enclosing_lineage()
            if lineage is not None:
                tokens = (interaction_var.set(lineage.ctx), current_call_var.set(lineage.call),
                          otel_context.attach(lineage.otel) if lineage.otel is not None
                          else None)
        except Exception:
            self._fault("lineage", None)
        try:
            yield interaction_var.get()
        finally:
            if tokens is not None:
                ctx_token, call_token, otel_token = tokens
                if otel_token is not None:
                    try:
                        otel_context.detach(otel_token)
                    except Exception:
                        pass
                try:
                    current_call_var.reset(call_token)
                    interaction_var.reset(ctx_token)
                except ValueError:  # left in another context: that context is not ours
                    pass

    def _enclosing_lineage(self) -> _Lineage | None:
        from langchain_core.runnables.config import var_child_runnable_config

        config = var_child_runnable_config.get()
        callbacks = config.get("callbacks") if config else None
        parent = getattr(callbacks, "parent_run_id", None)
        if not isinstance(parent, UUID):
            return None
        run = self._runs.get(parent)
        return None if run is None else run.lineage

    # --- the run table -------------------------------------------------------------------

    def _lineage(self, parent_run_id: UUID | None) -> _Lineage:
        """The parent run's lineage, else the current context's (a top-level run)."""
        if parent_run_id is not None:
            parent = self._runs.get(parent_run_id)
            if parent is not None:
                return parent.lineage
        gov = self._governor or resolve_governor()
        return _Lineage(gov, interaction_var.get(), enclosing_call(), otel_context.get_current())

    def _open(self, run_id: UUID, parent_run_id: UUID | None, spec: CallSpec,
              request: Callable[[CallRecorder], None]) -> _Run:
        """Start recording a run in its lineage; ``request`` records what it was asked."""
        lineage = self._lineage(parent_run_id)
        started = None
        if lineage.gov is not None:
            spec.governor = lineage.gov
            started = contextvars.copy_context().run(_start, spec, lineage)
        if started is None:  # capture off: nested runs still find their lineage
            run = _Run(lineage)
        else:
            rec, otel = started
            run = _Run(_Lineage(lineage.gov, rec.interaction, rec, otel), rec)
        self._add(run_id, run)
        if run.recorder is not None:
            request(run.recorder)
        return run

    def _add(self, run_id: UUID, run: _Run) -> None:
        evicted: list[_Run] = []
        with self._lock:
            self._runs[run_id] = run
            while len(self._runs) > self._max_open_runs:
                evicted.append(self._runs.pop(next(iter(self._runs))))
        for old in evicted:
            if old.recorder is not None:
                old.recorder.finish("abandoned", from_finalizer=True)

    def _pop(self, run_id: UUID) -> _Run | None:
        with self._lock:
            return self._runs.pop(run_id, None)

    def _fail(self, run_id: UUID, error: BaseException, call_id: Any = None) -> None:
        """The run raised ``error``: its closing event, with status ``error`` or ``cancelled``."""
        try:
            run = self._pop(run_id)
            if run is None or run.recorder is None:
                return
            call_id = call_id if isinstance(call_id, str) else run.call_id
            if call_id is not None:
                run.recorder.record_response(call_id=call_id)
            run.recorder.fail(error)
        except Exception:
            self._fault("run error", run_id)

    def _llm_spec(self, operation: str, serialized: dict[str, Any] | None,
                  metadata: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> CallSpec:
        meta = metadata or {}
        params = kwargs.get("invocation_params")
        params = params if isinstance(params, Mapping) else {}
        model = meta.get("ls_model_name") or next(
            (params[k] for k in _MODEL_KEYS if isinstance(params.get(k), str)), None)
        parameters = {k: params[k] for k in REQUEST_PARAMETERS if params.get(k) is not None}
        for ls_key, name in _LS_PARAMETERS:
            if meta.get(ls_key) is not None:
                parameters.setdefault(name, meta[ls_key])
        options: dict[str, Any] = {
            "name": _run_name(serialized, kwargs),
            "operation": operation,
            "provider": meta.get("ls_provider"),
            "model": model,
            "parameters": parameters,
            "prompt_template": meta.get("promptgov_prompt_template"),
            "template_version": meta.get("promptgov_template_version"),
        }
        return llm_call(**{k: v for k, v in options.items() if v})

    def _fault(self, what: str, run_id: UUID | None) -> None:
        """An error of the handler's own: counted and logged once, never raised."""
        try:
            run = self._runs.get(run_id) if run_id is not None else None
            gov = run.lineage.gov if run is not None else (
                self._governor or resolve_governor())
            if gov is not None:
                gov.count_internal_error(f"langchain {what}")
            if not self._logged:
                self._logged = True
                _log.warning("promptgov: the LangChain handler failed in %s; the run goes on "
                             "(further failures are counted in governor.stats())", what,
                             exc_info=True)
        except Exception:
            pass


def _start(spec: CallSpec, lineage: _Lineage) -> tuple[CallRecorder, Any] | None:
    """In a copy of the context: the lineage made current, the call started in it."""
    interaction_var.set(lineage.ctx)
    current_call_var.set(lineage.call)
    if lineage.otel is not None:
        otel_context.attach(lineage.otel)
    rec = spec.__enter__()  # the with-block entry; the copy of the context is dropped after
    if not isinstance(rec, CallRecorder):
        return None  # capture off, governor shut down
    return rec, otel_context.get_current()  # with the call's span, when tracing


def _run_name(serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> str:
    name = kwargs.get("name")
    if isinstance(name, str) and name:
        return name
    serialized = serialized or {}
    name = serialized.get("name")
    if isinstance(name, str) and name:
        return name
    ident = serialized.get("id")
    if isinstance(ident, list) and ident and isinstance(ident[-1], str):
        return ident[-1]
    return "langchain"


def _message(message: Any) -> Any:
    """A LangChain message as a chat message dict (role, content, tool calls)."""
    kind = getattr(message, "type", None)
    if not isinstance(kind, str):
        return message
    if kind.endswith("MessageChunk"):
        kind = kind[: -len("MessageChunk")].lower()
    role = getattr(message, "role", None) if kind == "chat" else _ROLES.get(kind, kind)
    out: dict[str, Any] = {"role": role, "content": getattr(message, "content", None)}
    name = getattr(message, "name", None)
    if name:
        out["name"] = name
    tool_calls = getattr(message, "tool_calls", None)
    if tool_calls:
        out["tool_calls"] = [
            {"id": _get(c, "id"), "name": _get(c, "name"), "arguments": _get(c, "args")}
            for c in tool_calls]
    tool_call_id = getattr(message, "tool_call_id", None)
    if tool_call_id:
        out["tool_call_id"] = tool_call_id
    return out


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def _token_text(token: Any, chunk: Any) -> str:
    """The text of one streamed token (a string, or content blocks)."""
    if isinstance(token, str):
        return token
    if isinstance(token, list):
        pieces = []
        for block in token:
            if isinstance(block, str):
                pieces.append(block)
            elif isinstance(block, Mapping) and isinstance(block.get("text"), str):
                pieces.append(block["text"])
        return "".join(pieces)
    text = getattr(chunk, "text", None)
    return text if isinstance(text, str) else ""


def _own_id(value: Any) -> str | None:
    """A provider's response id, not one LangChain made up from its run id."""
    if not isinstance(value, str) or value.startswith(("run-", "lc_run-")):
        return None
    return value


def _llm_result(response: Any) -> dict[str, Any]:
    """From an ``LLMResult``: output, usage, finish reasons, response model and id."""
    generations = getattr(response, "generations", None) or []
    first = generations[0] if generations else []
    outputs: list[Any] = []
    reasons: list[str] = []
    usage: Any = None
    model: Any = None
    response_id: Any = None
    for generation in first:
        message = getattr(generation, "message", None)
        reason: Any = None
        if message is not None:
            outputs.append(_message(message))
            meta = getattr(message, "response_metadata", None) or {}
            usage = usage or getattr(message, "usage_metadata", None)
            model = model or meta.get("model_name") or meta.get("model")
            response_id = response_id or _own_id(meta.get("id")) or _own_id(
                getattr(message, "id", None))
            reason = meta.get("finish_reason") or meta.get("stop_reason")
        else:
            outputs.append(getattr(generation, "text", None))
        info = getattr(generation, "generation_info", None) or {}
        reason = info.get("finish_reason") or reason
        if isinstance(reason, str):
            reasons.append(reason)
    llm_output = getattr(response, "llm_output", None) or {}
    usage = usage or llm_output.get("token_usage") or llm_output.get("usage")
    model = model or llm_output.get("model_name") or llm_output.get("model")
    fields: dict[str, Any] = {
        "output": outputs[0] if len(outputs) == 1 else (outputs or None),
        "finish_reasons": reasons or None,
        "response_model": model if isinstance(model, str) else None,
        "response_id": response_id,
    }
    if isinstance(usage, Mapping):
        fields["usage"] = {k: v for k, v in usage.items() if isinstance(v, int)}
    return fields


def _document(document: Any) -> Any:
    """A LangChain ``Document`` as id, content and metadata."""
    content = getattr(document, "page_content", None)
    if content is None:
        return document
    metadata = getattr(document, "metadata", None)
    return {"id": getattr(document, "id", None), "content": content,
            "metadata": dict(metadata) if isinstance(metadata, Mapping) else None}


def _tool_output(output: Any) -> tuple[Any, str | None, bool]:
    """A tool's result, its call id and whether it reports an error (``ToolMessage``)."""
    if getattr(output, "type", None) == "tool" and hasattr(output, "tool_call_id"):
        call_id = getattr(output, "tool_call_id", None)
        return (getattr(output, "content", None),
                call_id if isinstance(call_id, str) else None,
                getattr(output, "status", None) == "error")
    return output, None, False
