"""ASGI middleware (FastAPI, Starlette, any ASGI app): one interaction per request.

::

    from fastapi import FastAPI
    from promptgov.integrations.asgi import PromptgovMiddleware

    app = FastAPI()
    app.add_middleware(PromptgovMiddleware)

Every HTTP request (and WebSocket connection) runs inside its own
:func:`promptgov.interaction`, with the conversation, user, session and tenant
ids taken from request headers or from a callback of your own; the W3C trace
context of the request (``traceparent``) is continued, so events carry the
caller's trace id. Calls captured anywhere in the request get that lineage: in
async endpoints, sync endpoints run in the thread pool, while a streaming
response's body is produced, and in background tasks.

A pure ASGI middleware: it does not read, wrap or buffer the request or the
response (streaming stays streaming), and nothing it does can fail the
request. It imports no web framework.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import TextMapPropagator

from promptgov.capture.context import interaction
from promptgov.governor import Governor, resolve_governor

__all__ = ["DEFAULT_HEADERS", "PromptgovMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
LineageResult = Mapping[str, Any] | None
LineageCallback = Callable[[Scope], "LineageResult | Awaitable[LineageResult]"]

#: The request headers read by default, for each interaction field.
DEFAULT_HEADERS: Mapping[str, str] = {
    "conversation_id": "x-conversation-id",
    "user_id": "x-user-id",
    "session_id": "x-session-id",
    "tenant_id": "x-tenant-id",
}
_FIELDS = ("conversation_id", "user_id", "session_id", "tenant_id", "interaction_id")

_log = logging.getLogger("promptgov.integrations.asgi")


class PromptgovMiddleware:
    """Opens one :func:`promptgov.interaction` per HTTP request or WebSocket connection.

    ``headers``: which request header gives each interaction field
    (``conversation_id``, ``user_id``, ``session_id``, ``tenant_id``,
    ``interaction_id``), merged over :data:`DEFAULT_HEADERS`; map a field to
    ``None`` to stop reading it. A missing or empty header leaves the field unset.

    ``lineage``: a callable ``(scope) -> dict | None`` (or a coroutine function)
    returning any of those fields and ``attributes``; what it returns wins over
    the headers. Use it to take the user from your authentication (``scope["user"]``,
    ``scope["state"]``) rather than from a header the client controls. If it
    raises, the request goes on with the header values (the failure is counted
    and logged once).

    ``trace_context``: continue the request's trace context (``traceparent``,
    ``tracestate``, ``baggage``, through the OpenTelemetry global propagator or
    ``propagator``) for the duration of the request. Skipped when a span is
    already current (an OpenTelemetry ASGI instrumentation outside this
    middleware already did it, with its own server span).

    ``governor``: made current for the request (``governor.use()``), for
    decorators that name none.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        headers: Mapping[str, str | None] | None = None,
        lineage: LineageCallback | None = None,
        trace_context: bool = True,
        propagator: TextMapPropagator | None = None,
        governor: Governor | None = None,
        websockets: bool = True,
    ) -> None:
        merged: dict[str, str | None] = dict(DEFAULT_HEADERS)
        merged.update(headers or {})
        unknown = set(merged) - set(_FIELDS)
        if unknown:
            raise TypeError(f"unknown interaction field(s) in headers: {sorted(unknown)}; "
                            f"use {', '.join(_FIELDS)}")
        self.app = app
        # header name (bytes, lower case) -> interaction field
        self._headers = {name.lower().encode("latin-1"): field
                         for field, name in merged.items() if name}
        self._lineage = lineage
        self._trace_context = trace_context
        self._propagator = propagator
        self._governor = governor
        self._types = ("http", "websocket") if websockets else ("http",)
        self._logged = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in self._types:
            await self.app(scope, receive, send)
            return
        try:
            fields, remote = await self._prepare(scope)
            block = interaction(**fields)
        except Exception:  # never fail the request: serve it without lineage
            self._fault("request lineage")
            await self.app(scope, receive, send)
            return
        otel_token = None
        if remote is not None:
            try:
                otel_token = otel_context.attach(remote)
            except Exception:
                self._fault("trace context")
        use: contextlib.AbstractContextManager[Any] = (
            self._governor.use() if self._governor is not None else contextlib.nullcontext())
        try:
            with use, block:  # current until the app returns: body streamed, background done
                await self.app(scope, receive, send)
        finally:
            if otel_token is not None:
                try:
                    otel_context.detach(otel_token)
                except Exception:
                    pass

    async def _prepare(self, scope: Scope) -> tuple[dict[str, Any], otel_context.Context | None]:
        """The request's interaction fields and its remote trace context, if any."""
        raw_headers: Iterable[tuple[bytes, bytes]] = scope.get("headers") or ()
        fields: dict[str, Any] = {}
        # The trace context, unless a span is current already (an instrumentation outside).
        propagator = None
        if self._trace_context and not trace.get_current_span().get_span_context().is_valid:
            propagator = self._propagator or propagate.get_global_textmap()
        wanted = {f.lower().encode("latin-1") for f in propagator.fields} if propagator else ()
        carrier: dict[str, str] = {}
        for name, value in raw_headers:
            field = self._headers.get(name)
            if field is not None and field not in fields:
                text = value.decode("latin-1").strip()
                if text:
                    fields[field] = text
            if name in wanted:
                key, text = name.decode("latin-1"), value.decode("latin-1")
                carrier[key] = f"{carrier[key]},{text}" if key in carrier else text
        if self._lineage is not None:
            try:
                given = self._lineage(scope)
                if inspect.isawaitable(given):
                    given = await given
                if given:
                    for key, value in dict(given).items():
                        if key in _FIELDS and value is not None:
                            fields[key] = value
                        elif key == "attributes" and isinstance(value, Mapping):
                            fields["attributes"] = value
            except Exception:
                self._fault("lineage callback")
        remote = propagator.extract(carrier) if propagator is not None and carrier else None
        return fields, remote

    def _fault(self, what: str) -> None:
        """A failure of the middleware's own: counted, logged once, never raised."""
        try:
            gov = self._governor or resolve_governor()
            if gov is not None:
                gov.count_internal_error(f"asgi {what}")
            if not self._logged:
                self._logged = True
                _log.warning("promptgov: the ASGI middleware failed (%s); requests are "
                             "served (further failures are counted in governor.stats())",
                             what, exc_info=True)
        except Exception:
            pass

