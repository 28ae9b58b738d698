"""Integrations with the frameworks people already use.

Each lives in its own module and is imported only when asked for, so
``import promptgov`` never imports a framework:

- :mod:`promptgov.integrations.langchain`: ``PromptgovCallbackHandler``, a
  LangChain callback handler recording chat model / LLM, retriever and tool
  runs (needs ``langchain-core``: ``pip install 'promptgov[langchain]'``).
- :mod:`promptgov.integrations.asgi`: ``PromptgovMiddleware``, a pure ASGI
  middleware for FastAPI, Starlette and any ASGI app, opening one interaction
  per request and continuing the W3C trace context (no extra dependency).
"""

from __future__ import annotations
