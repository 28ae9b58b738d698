"""Governance: redaction of PII and secrets before events leave the process."""

from promptgov.governance.redaction import (
    BUILTIN_KINDS,
    TRUNCATED_KIND,
    DefaultRedactor,
    Finding,
    JSONValue,
    NullRedactor,
    Redactor,
)

__all__ = [
    "BUILTIN_KINDS",
    "TRUNCATED_KIND",
    "DefaultRedactor",
    "Finding",
    "JSONValue",
    "NullRedactor",
    "Redactor",
]
