"""Lineage carried in context variables: the interaction and the enclosing call.

Context variables follow ``await`` and ``asyncio.create_task`` by themselves,
and ``asyncio.to_thread``; plain thread pools and ``loop.run_in_executor`` do
not copy them, so :func:`bind_context` and :class:`ContextThreadPoolExecutor`
carry them across.
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


_interaction: contextvars.ContextVar[InteractionContext | None] = contextvars.ContextVar(
    "promptgov_interaction", default=None
)
# The call whose events are the parent of anything emitted inside it.
current_call_var: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "promptgov_current_call", default=None
)
# The id of the last event emitted by this context (for feedback on a response).
last_event_var: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "promptgov_last_event", default=None
)


def current_interaction() -> InteractionContext | None:
    """The interaction active in this context, if any."""
    return _interaction.get()


def last_event_id() -> str | None:
    """The id of the last event this context emitted (e.g. the response to rate)."""
    ref = last_event_var.get()
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
        outer = _interaction.get()
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
        self._tokens: list[contextvars.Token[InteractionContext | None]] = []

    @property
    def interaction_id(self) -> str:
        """The id every event inside carries."""
        return self.context.interaction_id

    def __enter__(self) -> InteractionContext:
        self._tokens.append(_interaction.set(self.context))
        return self.context

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token = self._tokens.pop()
        try:
            _interaction.reset(token)
        except ValueError:  # exited in another context (e.g. a generator moved tasks)
            _interaction.set(token.old_value if token.old_value is not token.MISSING else None)

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
