"""Built-in stages: ``policy`` (guardrail decisions) and ``redact`` (raw to redacted).

Each is usable as it is (``promptgov stage run policy``) and as an example of
writing a stage.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson

from promptgov.config import Settings
from promptgov.governance.processor import EventProcessor, Warnings
from promptgov.governance.redaction import DefaultRedactor, Redactor
from promptgov.stages.stage import Output, Source, Stage


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A classifier's answer: ``allow``, ``block``, ``redact`` or ``escalate``.

    Reasons and rules are codes: they must not contain user content.
    """

    decision: str
    reasons: Sequence[str] = ()
    rules: Sequence[str] = ()
    score: float | None = None


Classifier = Callable[[dict[str, Any]], "Verdict | None"]

_INJECTION = (
    r"ignore (?:all |any )?(?:the )?(?:previous|prior|above|earlier) (?:instructions|prompts?|"
    r"rules)",
    r"disregard (?:all |any )?(?:the )?(?:previous|prior|above|system) (?:instructions|prompt)",
    r"(?:reveal|print|show|repeat) (?:me )?(?:your|the) (?:system|hidden|initial) prompt",
    r"you are now (?:dan|in developer mode|unrestricted|jailbroken)",
    r"\bjailbreak\b",
    r"pretend (?:that )?you (?:have|are under) no (?:rules|restrictions|guidelines)",
)


class RuleClassifier:
    """A small rule-based classifier: prompt-injection phrases block, listed topics
    escalate. Looks at the text of prompts (messages, input) and responses (output).
    """

    def __init__(self, blocked_topics: Iterable[str] = (),
                 injection_patterns: Iterable[str] = _INJECTION) -> None:
        self._injection = [re.compile(p, re.IGNORECASE) for p in injection_patterns]
        self._topics = [(t, re.compile(rf"\b{re.escape(t)}\b", re.IGNORECASE))
                        for t in blocked_topics]

    def __call__(self, event: dict[str, Any]) -> Verdict:
        text = "\n".join(_texts(event.get("payload")))
        rules = [f"injection.{i}" for i, p in enumerate(self._injection) if p.search(text)]
        if rules:
            return Verdict("block", ["prompt_injection"], rules, 1.0)
        topics = [f"topic.{name}" for name, p in self._topics if p.search(text)]
        if topics:
            return Verdict("escalate", ["blocked_topic"], topics, 0.5)
        return Verdict("allow", [], [], 0.0)


def _texts(value: Any, depth: int = 0) -> Iterable[str]:
    if depth > 20:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _texts(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item, depth + 1)


def policy_stage(classifier: Classifier | None = None, *,
                 policy: tuple[str, str] = ("promptgov.rules", "1"), name: str = "policy",
                 version: str = "1", kinds: Iterable[str] = ("prompt", "response"),
                 inputs: tuple[str, ...] = ("events",)) -> Stage:
    """Guardrail decisions: ``classifier(event) -> Verdict`` for each prompt and response,
    one ``policy_decision`` (targeting the source, carrying the policy id and version) to
    ``<prefix>.decisions``. Default classifier: :class:`RuleClassifier`."""
    classify = classifier or RuleClassifier()
    policy_ref = {"id": policy[0], "version": policy[1]}

    def transform(event: dict[str, Any], source: Source) -> list[Output]:
        verdict = classify(event)
        if verdict is None:
            return []
        return [Output("policy_decision", {
            "decision": verdict.decision, "target_event_id": event.get("event_id"),
            "reasons": list(verdict.reasons), "rules": list(verdict.rules),
            "score": verdict.score,
        }, fields={"policy": policy_ref})]

    return Stage(name, version, transform, inputs=inputs, kinds=frozenset(kinds),
                 routes={"policy_decision": "decisions"},
                 description="guardrail decisions on prompts and responses")


def redact_stage(redactor: Redactor | None = None, *, name: str = "redact",
                 version: str | None = None, inputs: tuple[str, ...] = ("raw",)) -> Stage:
    """Raw records (``<prefix>.raw``) to redacted copies on ``<prefix>.redacted``.

    When the redactor finds something else than the source recorded (a newer redactor,
    other kinds), a ``redaction`` correction event targeting the source id goes to
    ``<prefix>.events`` as well. The version defaults to the redactor's own.
    """
    chosen = redactor or DefaultRedactor()
    processor = EventProcessor(Settings(capture_content="redacted", redactor=chosen),
                               f"stage:{name}", Warnings())

    def transform(event: dict[str, Any], source: Source) -> list[Output]:
        if event.get("classification") != "raw":
            return []
        completed = {k: v for k, v in event.items()
                     if k not in ("classification", "redaction", "integrity")}
        (record, *_) = processor.govern(completed)
        governed = orjson.loads(record.value)
        outputs = [Output(event["event_type"], governed["payload"], fields={
            "classification": governed["classification"],
            "redaction": governed["redaction"],
            "attributes": governed["attributes"],
            "model": governed["model"],
        }, topic="redacted")]
        before = _finding_set(event.get("redaction"))
        after = _finding_set(governed["redaction"])
        if before != after:
            changed = sorted({f for _, f, _ in before ^ after})
            was = event.get("redaction") or {}
            outputs.append(Output("redaction", {
                "target_event_id": event.get("event_id"),
                "fields": changed,
                "reason": f"re-redacted by {chosen.name} {chosen.version} (recorded: "
                          f"{was.get('redactor')} {was.get('version')})",
                "findings": (governed["redaction"] or {}).get("findings", []),
            }, fields={"classification": "metadata"}))
        return outputs

    return Stage(name, version or f"{chosen.name}-{chosen.version}", transform, inputs=inputs,
                 routes={"redaction": "events"},
                 description="raw records to redacted copies, with redaction corrections")


def _finding_set(redaction: Any) -> set[tuple[str, str, int]]:
    if not isinstance(redaction, Mapping):
        return set()
    return {(str(f.get("kind")), str(f.get("field")), int(f.get("count") or 0))
            for f in redaction.get("findings") or () if isinstance(f, Mapping)}


BUILTIN: dict[str, Callable[[], Stage]] = {"policy": policy_stage, "redact": redact_stage}
"""Built-in stages by name (``promptgov stage run NAME``)."""

__all__ = ["BUILTIN", "RuleClassifier", "Verdict", "policy_stage", "redact_stage"]
