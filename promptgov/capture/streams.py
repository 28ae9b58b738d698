"""Proxies for streamed results: sync and async iterators and generators.

A proxy records each chunk and the end of the stream: exhausted (``ok``),
raised (``error``), cancelled, closed early by the consumer
(``closed_early``), or never closed and collected by the garbage collector
(``abandoned``). The last case runs in ``__del__``, possibly in another
task's or thread's context, so it touches no context variable.
Everything else is forwarded to the wrapped object.

A stream belongs to the call that created it, wherever it is consumed: while
it runs a step of its body (``next``, ``send``, ``close``...), that call is
the current call and the creator's interaction the current interaction. An
interaction the body opens itself stays the body's, from step to step, and
never shows in the consumer's context.
"""

from __future__ import annotations

import contextvars
from types import TracebackType
from typing import TYPE_CHECKING, Any

from promptgov.capture.context import InteractionContext, current_call_var, interaction_var

if TYPE_CHECKING:
    from promptgov.capture.calls import CallRecorder


def _status(exc: BaseException) -> str:
    from promptgov.capture.calls import status_for

    return status_for(exc)


class _StreamProxy:
    """What the sync and async proxies share: the end of the stream, recorded once."""

    __slots__ = ("__weakref__", "_body_ctx", "_done", "_it", "_rec")

    def __init__(self, it: Any, rec: CallRecorder) -> None:
        self._it = it
        self._rec = rec
        self._done = False
        # The interaction current in the body: the creator's, until the body opens its own.
        self._body_ctx: InteractionContext | None = rec.interaction

    def _enter(self) -> tuple[contextvars.Token[Any], contextvars.Token[Any]]:
        """Before running the body: the stream's call and interaction are current."""
        return current_call_var.set(self._rec), interaction_var.set(self._body_ctx)

    def _leave(self, tokens: tuple[contextvars.Token[Any], contextvars.Token[Any]]) -> None:
        """After running the body: the consumer's own call and interaction are back."""
        call_token, ctx_token = tokens
        self._body_ctx = interaction_var.get()
        interaction_var.reset(ctx_token)
        current_call_var.reset(call_token)

    def _end(self, status: str, error: BaseException | None = None,
             finalizer: bool = False) -> None:
        if not self._done:
            self._done = True
            self._rec.finish(status, error=error, from_finalizer=finalizer)

    def __del__(self) -> None:
        if not self._done:
            self._end("abandoned", finalizer=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._it, name)


class TracedIterator(_StreamProxy):
    """Wraps a generator or iterator returned by a captured call."""

    __slots__ = ()

    def __iter__(self) -> TracedIterator:
        return self

    def __next__(self) -> Any:
        return self._step(self._it.__next__)

    def send(self, value: Any) -> Any:
        """Forwarded to the generator."""
        return self._step(self._it.send, value)

    def throw(self, *args: Any) -> Any:
        """Forwarded to the generator."""
        return self._step(self._it.throw, *args)

    def close(self) -> None:
        """Close the generator; the stream is recorded as closed early."""
        tokens = self._enter()  # what the body runs on closing belongs to the stream too
        try:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()
        finally:
            self._leave(tokens)
            self._end("closed_early")

    def _step(self, fn: Any, *args: Any) -> Any:
        tokens = self._enter()
        try:
            chunk = fn(*args)
        except StopIteration:
            self._end("ok")
            raise
        except BaseException as exc:
            self._end(_status(exc), exc)
            raise
        finally:
            self._leave(tokens)
        self._rec.record_chunk(chunk)
        return chunk

    def __enter__(self) -> TracedIterator:
        enter = getattr(self._it, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Any:
        result = None
        exit_ = getattr(self._it, "__exit__", None)
        if exit_ is not None:
            result = exit_(exc_type, exc, tb)
        if not self._done:
            self._end("closed_early" if exc is None else _status(exc), exc)
        return result


class TracedAsyncIterator(_StreamProxy):
    """Wraps an async generator or async iterator returned by a captured call."""

    __slots__ = ()

    def __aiter__(self) -> TracedAsyncIterator:
        return self

    async def __anext__(self) -> Any:
        return await self._step(self._it.__anext__)

    async def asend(self, value: Any) -> Any:
        """Forwarded to the async generator."""
        return await self._step(self._it.asend, value)

    async def athrow(self, *args: Any) -> Any:
        """Forwarded to the async generator."""
        return await self._step(self._it.athrow, *args)

    async def aclose(self) -> None:
        """Close the async generator; the stream is recorded as closed early."""
        tokens = self._enter()  # what the body runs on closing belongs to the stream too
        try:
            aclose = getattr(self._it, "aclose", None) or getattr(self._it, "close", None)
            if aclose is not None:
                result = aclose()
                if hasattr(result, "__await__"):
                    await result
        finally:
            self._leave(tokens)
            self._end("closed_early")

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._it, name)
        if name == "close" and callable(attr):  # SDK async streams: ``await stream.close()``
            return self._closer(attr)
        return attr

    def _closer(self, close: Any) -> Any:
        def closer(*args: Any, **kwargs: Any) -> Any:
            tokens = self._enter()
            try:
                result = close(*args, **kwargs)
            except BaseException:
                self._leave(tokens)
                self._end("closed_early")
                raise
            self._leave(tokens)
            if not hasattr(result, "__await__"):
                self._end("closed_early")
                return result
            return self._await_close(result)

        return closer

    async def _await_close(self, awaitable: Any) -> Any:
        tokens = self._enter()
        try:
            return await awaitable
        finally:
            self._leave(tokens)
            self._end("closed_early")

    async def _step(self, fn: Any, *args: Any) -> Any:
        tokens = self._enter()
        try:
            chunk = await fn(*args)
        except StopAsyncIteration:
            self._end("ok")
            raise
        except BaseException as exc:
            self._end(_status(exc), exc)
            raise
        finally:
            self._leave(tokens)
        self._rec.record_chunk(chunk)
        return chunk

    async def __aenter__(self) -> TracedAsyncIterator:
        enter = getattr(self._it, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> Any:
        result = None
        exit_ = getattr(self._it, "__aexit__", None)
        if exit_ is not None:
            result = await exit_(exc_type, exc, tb)
        if not self._done:
            self._end("closed_early" if exc is None else _status(exc), exc)
        return result
