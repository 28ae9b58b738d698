"""Rough timing of DefaultRedactor (not a test): prints microseconds per call.

Run with: python benchmarks/redaction_speed.py
"""

from __future__ import annotations

import random
import timeit
from collections.abc import Callable
from functools import partial

from promptgov.governance.redaction import DefaultRedactor, JSONValue

WORDS = [
    *("the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "was", "on"),
    *("be", "by", "this", "are", "or", "an", "from", "at", "which", "model", "prompt"),
    *("answer", "summary", "context", "document", "user", "assistant", "system", "please"),
    *("write", "explain", "about", "following", "question", "policy", "review", "customer"),
    *("order", "account", "report", "data", "quickly", "carefully", "brown", "fox", "jumps"),
    *("over", "lazy", "dog", "retrieval", "response", "governance"),
]


def plain_text(size: int, seed: int = 7) -> str:
    """English-like words with capitals, commas and full stops; no digits or symbols."""
    rng = random.Random(seed)
    sentences: list[str] = []
    length = 0
    while length < size:
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 16))]
        words[0] = words[0].capitalize()
        sentence = " ".join(words) + rng.choice((".", ".", ",", "?"))
        sentences.append(sentence)
        length += len(sentence) + 1
    return " ".join(sentences)[:size]


PII = (
    "reach me at jane.doe@example.com",
    "or call +1 415-555-2671",
    "card 4111 1111 1111 1111",
    "from 203.0.113.42",
    "key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ",
)


def text_with_pii(size: int) -> str:
    base = plain_text(size)
    chunk = len(base) // (len(PII) + 1)
    parts = [base[i * chunk : (i + 1) * chunk] for i in range(len(PII) + 1)]
    out = parts[0]
    for item, part in zip(PII, parts[1:], strict=True):
        out += " " + item + " " + part
    return out[:size]


def per_call_us(fn: Callable[[], object], min_time: float = 0.3) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    number = max(1, int(number * min_time / 0.2))
    return min(timer.repeat(repeat=5, number=number)) / number * 1e6


def report(label: str, micros: float) -> None:
    print(f"{label:29s}: {micros:8.1f} us")


def main() -> None:
    redactor = DefaultRedactor()
    plain = plain_text(2048)
    pii = text_with_pii(2048)
    found = redactor.redact_text(pii)[1]
    assert sum(found.values()) == len(PII), found

    report("2 KB plain words", per_call_us(lambda: redactor.redact_text(plain)))
    report(f"2 KB with {len(PII)} PII items", per_call_us(lambda: redactor.redact_text(pii)))

    event: JSONValue = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": plain_text(400, seed=1)},
            {"role": "user", "content": pii[:1200]},
            {"role": "assistant", "content": plain_text(400, seed=2)},
        ],
        "temperature": 0.2,
        "metadata": {"user": "u-123", "tags": ["a", "b"]},
    }
    report("event dict (~2 KB, redact())", per_call_us(lambda: redactor.redact(event, "input")))

    print("pathological inputs (time should grow linearly with size):")
    cases: dict[str, Callable[[int], str]] = {
        "single word 'a'*n": lambda n: "a" * n,
        "digits '1'*n": lambda n: "1" * n,
        "'a@' * n/2": lambda n: "a@" * (n // 2),
        "'1 ' * n/2": lambda n: "1 " * (n // 2),
        "'1.' * n/2": lambda n: "1." * (n // 2),
        "':a' * n/2": lambda n: ":a" * (n // 2),
        "'key=' * n/4": lambda n: "key=" * (n // 4),
        "'-----BEGIN PRIVATE KEY-----'*": lambda n: "-----BEGIN PRIVATE KEY-----" * (n // 27),
        "'eyJa.' * n/5": lambda n: "eyJa." * (n // 5),
    }
    for name, make in cases.items():
        small, large = make(10_000), make(100_000)
        t_small = per_call_us(partial(redactor.redact_text, small), min_time=0.1)
        t_large = per_call_us(partial(redactor.redact_text, large), min_time=0.1)
        print(
            f"  {name:32s} 10 KB {t_small:9.1f} us   100 KB {t_large:9.1f} us"
            f"   ratio {t_large / t_small:5.1f}"
        )


if __name__ == "__main__":
    main()
