"""Lineage carried in context variables: the interaction and the enclosing call.

Context variables follow ``await`` and ``asyncio.create_task`` by themselves,
and ``asyncio.to_thread``; plain thread pools and ``loop.run_in_executor`` do
not copy them, so :func:`bind_context` and :class:`ContextThreadPoolExecutor`
carry them across.

Nothing is taken from another interaction: an enclosing call is a parent, and
the last event a default target, only if they belong to the current interaction
(a context outlives its interactions: a worker thread serves request after
request).
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from promptgov.events.ids import uuid7

P = ParamSpec("P")
R = TypeVar("R")


@dataclasses.dataclass(frozen=True, slots=True)
class InteractionContext:
    """Who and what every event inside an :func:`interaction` belongs to."""

    interaction_id: str
    conversation_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    tenant_id: str | None = None
    attributes: Mapping[str, Any] | None = None


interaction_var: contextvars.ContextVar[InteractionContext | None] = contextvars.ContextVar(
    "promptgov_interaction", default=None
)
# The call whose events are the parent of anything emitted inside it (a CallRecorder).
current_call_var: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "promptgov_current_call", default=None
)
# The last event emitted by this context, with the interaction it belongs to (for
# feedback on a response): (InteractionContext | None, EventRef).
last_event_var: contextvars.ContextVar[tuple[InteractionContext | None, Any] | None] = \
    contextvars.ContextVar("promptgov_last_event", default=None)


def current_interaction() -> InteractionContext | None:
    """The interaction active in this context, if any."""
    return interaction_var.get()


def enclosing_call() -> Any:
    """The captured call around this code, if it belongs to the current interaction."""
    call = current_call_var.get()
    if call is not None and call.interaction is interaction_var.get():
        return call
    return None


def note_last_event(ctx: InteractionContext | None, ref: Any) -> None:
    """Remember ``ref`` (an accepted event of interaction ``ctx``) as this context's last."""
    last_event_var.set((ctx, ref))


def last_event_ref() -> Any:
    """The last event this context emitted in the current interaction (an EventRef), if any."""
    last = last_event_var.get()
    if last is None or last[0] is not interaction_var.get():
        return None
    return last[1]


def last_event_id() -> str | None:
    """The id of the last event this context emitted in the current interaction (e.g. the
    response to rate); None outside the interaction that emitted it."""
    ref = last_event_ref()
    return None if ref is None else str(ref.id)


class interaction:
    """Sets lineage for everything inside: ``with`` or ``async with``.

    Fields left unset are inherited from an enclosing interaction; a new
    ``interaction_id`` is generated unless one is given. Create one object per
    block: the same object must not be entered twice at once.
    """

    def __init__(
        self,
        *,
        conversation_id: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        tenant_id: str | None = None,
        interaction_id: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        outer = interaction_var.get()
        inherited_attrs = dict(outer.attributes or {}) if outer else {}
        inherited_attrs.update(attributes or {})
        self.context = InteractionContext(
            interaction_id=_text(interaction_id) or uuid7(),
            conversation_id=_text(conversation_id) or (outer.conversation_id if outer else None),
            user_id=_text(user_id) or (outer.user_id if outer else None),
            session_id=_text(session_id) or (outer.session_id if outer else None),
            tenant_id=_text(tenant_id) or (outer.tenant_id if outer else None),
            attributes=inherited_attrs or None,
        )
        # Per entry: the token, and this context's last event when it was entered.
        self._tokens: list[tuple[contextvars.Token[InteractionContext | None], Any]] = []

    @property
    def interaction_id(self) -> str:
        """The id every event inside carries."""
        return self.context.interaction_id

    def __enter__(self) -> InteractionContext:
        self._tokens.append((interaction_var.set(self.context), last_event_var.get()))
        return self.context

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, outer_last = self._tokens.pop()
        try:
            interaction_var.reset(token)
        except ValueError:
            # Exited in another context than it was entered in: a generator that
            # opened it, closed by another thread or task (or the garbage collector).
            # That context's interaction is its own business, unless it is this one.
            if interaction_var.get() is not self.context:
                return
            interaction_var.set(None if token.old_value is token.MISSING else token.old_value)
        last = last_event_var.get()
        if last is not None and last[0] is self.context:  # back to the outer's last event
            last_event_var.set(outer_last)

    async def __aenter__(self) -> InteractionContext:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def bind_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap ``fn`` to run in a copy of the current context (for threads and executors)."""
    captured = contextvars.copy_context()

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return captured.copy().run(fn, *args, **kwargs)

    return run


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A thread pool whose tasks run in the submitter's context (lineage included).

    Also usable as an asyncio loop's default executor, so
    ``loop.run_in_executor(None, fn)`` keeps the interaction.
    """

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        context = contextvars.copy_context()
        return super().submit(context.run, fn, *args, **kwargs)
