"""The evidence side: stages that consume promptgov topics and derive events.

A stage has a name, a version, inputs and a transform (one event in, zero or
more :class:`Output` out). :class:`StageRunner` runs one copy: a consumer group
named after the stage, and per input partition a transactional producer that
commits the outputs and the input offsets together (exactly once). Every
derived event carries ``lineage`` (source topic, partition, offset, event id,
stage, stage version) and a deterministic event id. See ``docs/stages.md``.
"""

from promptgov.stages.builtin import BUILTIN, RuleClassifier, Verdict, policy_stage, redact_stage
from promptgov.stages.runner import StageRunner, StageStats, run_stage
from promptgov.stages.stage import Output, Source, Stage, derive, derived_event_id, stage

__all__ = [
    "BUILTIN",
    "Output",
    "RuleClassifier",
    "Source",
    "Stage",
    "StageRunner",
    "StageStats",
    "Verdict",
    "derive",
    "derived_event_id",
    "policy_stage",
    "redact_stage",
    "run_stage",
    "stage",
]
