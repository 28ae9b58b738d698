"""Exceptions raised by promptgov.

Only configuration errors are ever raised into the host application, and only
from :func:`promptgov.configure` / :class:`promptgov.Governor` construction.
"""

from __future__ import annotations


class PromptGovError(Exception):
    """Base class of promptgov's exceptions."""


class ConfigurationError(PromptGovError, ValueError):
    """A setting is invalid; the message names the setting and the fix."""

    def __init__(self, setting: str, problem: str, fix: str) -> None:
        self.setting = setting
        super().__init__(f"promptgov setting {setting!r}: {problem}. Fix: {fix}")
