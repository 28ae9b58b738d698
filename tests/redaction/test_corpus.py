"""Redaction quality on the labelled corpus (``corpus.jsonl``, made by ``make_corpus.py``)
and on the held-out set (``holdout.jsonl``, made by ``make_holdout.py``).

A labelled value is *detected* when every occurrence of it in the text lies inside redacted
spans whose kind is the labelled kind or an accepted equivalent (``ACCEPTED``): then the
value is gone from the output. A negative is a *false positive* when anything at all is
redacted in it. Recall is counted per labelled value.

Print the tables (the ones in docs/redaction.md) with ``python3 tests/redaction/test_corpus.py``;
add ``--misses`` to list the values missed and the negatives redacted.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptgov.governance.redaction import BUILTIN_KINDS, DefaultRedactor

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus.jsonl"
HOLDOUT = HERE / "holdout.jsonl"

RECALL_OVERALL = 0.98
RECALL_PER_KIND = 0.95
FALSE_POSITIVE_RATE = 0.02

_CREDENTIALS = frozenset({"api_key", "secret", "bearer_token"})
ACCEPTED: dict[str, frozenset[str]] = {kind: frozenset({kind}) for kind in BUILTIN_KINDS}
# A credential in a header or an assignment may be reported under any credential kind: the
# merged placeholder takes the most specific kind found there (e.g. an OpenAI key sent as
# "Authorization: Bearer sk-..." is reported as a bearer token). A JWT is always "jwt".
ACCEPTED.update({kind: _CREDENTIALS for kind in _CREDENTIALS})


def load(path: Path = CORPUS) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def spans(redactor: DefaultRedactor, text: str) -> list[tuple[int, int, str]]:
    """The merged redaction spans of ``text`` (what ``redact_text`` replaces)."""
    from promptgov.governance.redaction import _merge

    return _merge(redactor._scan(text))


def covered(found: list[tuple[int, int, str]], start: int, end: int, kinds: frozenset[str]) -> bool:
    """True if ``[start, end)`` lies inside spans (gaps not allowed) of accepted kinds."""
    pos = start
    for s, e, kind in found:
        if e <= pos or s >= end:
            continue
        if s > pos or kind not in kinds:
            return False
        pos = e
        if pos >= end:
            return True
    return pos >= end


def occurrences(text: str, value: str) -> list[int]:
    out, pos = [], text.find(value)
    while pos != -1:
        out.append(pos)
        pos = text.find(value, pos + 1)
    return out


@dataclass
class Report:
    samples: int = 0
    items: Counter[str] = field(default_factory=Counter)
    detected: Counter[str] = field(default_factory=Counter)
    exact: Counter[str] = field(default_factory=Counter)
    formats: Counter[str] = field(default_factory=Counter)
    negatives: int = 0
    false_positives: list[tuple[str, str, list[str]]] = field(default_factory=list)
    misses: list[tuple[str, str, str, str]] = field(default_factory=list)
    over_redacted: int = 0  # positives with a redaction away from every labelled value

    def recall(self, kind: str | None = None) -> float:
        if kind is None:
            return sum(self.detected.values()) / sum(self.items.values())
        return self.detected[kind] / self.items[kind]

    @property
    def fp_rate(self) -> float:
        return len(self.false_positives) / self.negatives

    def table(self) -> str:
        rows = [
            "| kind | labelled values | formats | recall | same kind |",
            "|---|---:|---:|---:|---:|",
        ]
        for kind in sorted(self.items):
            n = self.items[kind]
            rows.append(
                f"| {kind} | {n} | {self.formats[kind]} | {self.detected[kind] / n:.3f} |"
                f" {self.exact[kind] / n:.3f} |"
            )
        total = sum(self.items.values())
        rows.append(
            f"| **all** | **{total}** | {sum(self.formats.values())} | **{self.recall():.3f}**"
            f" | {sum(self.exact.values()) / total:.3f} |"
        )
        positives = self.samples - self.negatives
        rows += [
            "",
            "| negatives | false positives | FP rate |",
            "|---:|---:|---:|",
            f"| {self.negatives} | {len(self.false_positives)} | **{self.fp_rate:.3f}** |",
            "",
            f"{self.samples} samples: {positives} with labelled values, {self.negatives} "
            f"negatives; {self.over_redacted} of the {positives} positives also had something "
            "redacted that was not labelled.",
        ]
        return "\n".join(rows)


def evaluate(redactor: DefaultRedactor, samples: list[dict[str, Any]]) -> Report:
    report = Report(samples=len(samples))
    formats: dict[str, set[str]] = {}
    for sample in samples:
        text = sample["text"]
        found = spans(redactor, text)
        if not sample["expect"]:
            report.negatives += 1
            if found:
                report.false_positives.append(
                    (sample["id"], text, [f"{k}:{text[s:e]}" for s, e, k in found])
                )
            continue
        labelled: list[tuple[int, int]] = []
        for item in sample["expect"]:
            kind, value = item["kind"], item["value"]
            formats.setdefault(kind, set()).add(item["format"])
            report.items[kind] += 1
            starts = occurrences(text, value)
            assert starts, (sample["id"], value)
            labelled += [(s, s + len(value)) for s in starts]
            if all(covered(found, s, s + len(value), ACCEPTED[kind]) for s in starts):
                report.detected[kind] += 1
                if all(covered(found, s, s + len(value), frozenset({kind})) for s in starts):
                    report.exact[kind] += 1
            else:
                got = [f"{k}:{text[s:e]}" for s, e, k in found]
                report.misses.append((sample["id"], kind, item["format"], f"{value!r} -> {got}"))
        if any(all(e <= s2 or s >= e2 for s2, e2 in labelled) for s, e, _ in found):
            report.over_redacted += 1
    report.formats.update({kind: len(f) for kind, f in formats.items()})
    return report


_REPORTS: dict[Path, Report] = {}


def corpus_report(path: Path = CORPUS) -> Report:
    if path not in _REPORTS:
        _REPORTS[path] = evaluate(DefaultRedactor(), load(path))
    return _REPORTS[path]


# --- tests ------------------------------------------------------------------------------------


def test_corpus_is_reproducible() -> None:
    sys.path.insert(0, str(HERE))
    try:
        from make_corpus import build
    finally:
        sys.path.remove(str(HERE))
    assert build() == CORPUS.read_text(encoding="utf-8"), "run tests/redaction/make_corpus.py"


def test_corpus_covers_every_kind() -> None:
    samples = load()
    report = corpus_report()
    assert len(samples) >= 500
    assert report.negatives >= 300
    assert set(report.items) == BUILTIN_KINDS
    for kind in BUILTIN_KINDS:
        assert report.items[kind] >= 50, kind
    assert len({s["id"] for s in samples}) == len(samples)


def test_recall() -> None:
    report = corpus_report()
    print("\n" + report.table())
    misses = "\n".join(map(str, report.misses[:40]))
    assert report.recall() >= RECALL_OVERALL, misses
    for kind in sorted(report.items):
        assert report.recall(kind) >= RECALL_PER_KIND, (kind, report.recall(kind), misses)


def test_false_positive_rate() -> None:
    report = corpus_report()
    fps = "\n".join(map(str, report.false_positives))
    assert report.fp_rate <= FALSE_POSITIVE_RATE, fps


def test_holdout() -> None:
    """The held-out set is small (96 values): overall recall and false positives only."""
    report = corpus_report(HOLDOUT)
    print("\n" + report.table())
    assert report.recall() >= RECALL_OVERALL, report.misses
    assert report.fp_rate <= FALSE_POSITIVE_RATE, report.false_positives


def test_redact_text_removes_every_labelled_value() -> None:
    """The public API agrees with the span-level check used above."""
    redactor = DefaultRedactor()
    report = corpus_report()
    missed = {sample_id for sample_id, *_ in report.misses}
    for sample in load():
        if not sample["expect"] or sample["id"] in missed:
            continue
        out, counts = redactor.redact_text(sample["text"])
        for item in sample["expect"]:
            assert item["value"] not in out, sample["id"]
        assert redactor.find_kinds(sample["text"]) == set(counts)


def main() -> None:
    for title, path in (("corpus", CORPUS), ("held-out set", HOLDOUT)):
        report = corpus_report(path)
        print(f"## {title} ({path.name})\n\n{report.table()}\n")
        if "--misses" in sys.argv:
            print("missed:")
            for miss in report.misses:
                print("  ", *miss)
            print("false positives:")
            for fp in report.false_positives:
                print("  ", fp[0], repr(fp[1])[:160], fp[2])
            print()


if __name__ == "__main__":
    main()
