"""Capture: decorators, ``with`` blocks, context propagation and stream proxies."""
