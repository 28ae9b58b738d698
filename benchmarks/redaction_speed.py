"""Speed of DefaultRedactor (not a test): median microseconds per call, and linearity.

Run with: ``python3 -m benchmarks.redaction_speed`` (``--quick`` for fewer repeats).

Reports the median time to redact 2 KB of plain prose, 2 KB with five PII items, a PII-dense
2 KB support transcript (32 items of every kind), 2 KB of JSON customer records (e-mail,
phone, card and IP on every line) and a ~2 KB event dict, over all calls and over the
quietest fifth of them (other processes on a shared machine inflate the first); then, for
adversarial inputs, the time on n and 4n characters and their ratio (about 4 when the scan
is linear, about 16 when it is quadratic).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

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


JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
# A support transcript with an agent's tool output: 32 items of every kind in 1.5 KB.
PII_DENSE_ITEMS = 32
PII_DENSE = (
    "[ticket 48213] Customer Jane Doe <jane.doe@example.com>, also j.doe+billing@mail.example"
    ".co.uk and “josé.garcía@correo.es”. Phones: +1 415-555-2671 (mobile), (415) 555-0199 "
    "office, +49 30 1234567 in Berlin, 06 12 34 56 78 in Lyon, 0044 20 7946 0958.\n"
    "Cards: 4111 1111 1111 1111 exp 12/27, old one 5555-5555-5555-4444, Amex 3782 822463 "
    "10005. Refund to IBAN DE89 3704 0044 0532 0130 00 or gb82 west 1234 5698 7654 32.\n"
    "Login from 203.0.113.42 and 2001:db8::ff00:42:8329; X-Forwarded-For: 198.51.100.7, "
    "10.0.0.12.\nAgent: I looked the account up, here is the tool output:\n"
    '{"tool": "crm_lookup", "headers": {"Authorization": "Bearer ' + JWT + '"}, '
    '"config": {"api_key": "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ", '
    '"github_token": "ghp_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ0aB3c", "hf": '
    '"hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh", "password": "Tr0ub4dor&3", '
    '"db": "postgres://app:S3cretPass2024@db.internal:5432/crm"}}\n'
    "AWS: AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY. Slack bot "
    "xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx posts to "
    "https://hooks.slack.com/services/T0ABCDEFG/B0ABCDEFGHI/AbCdEfGhIjKlMnOpQrStUvWx.\n"
    "Customer: my password is Summer2024! and the token is q8W2e4R6t8Y0u2I4z6X8, "
    "sorry. Also stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc and webhook secret "
    "whsec_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ0.\n"
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu3aozN3tihPmljnnudb9G3HECdnH\n"
)


def pii_dense_2kb() -> str:
    """``PII_DENSE`` after a prose preamble, 2048 characters (the key block stays cut)."""
    return plain_text(2047 - len(PII_DENSE), seed=3) + "\n" + PII_DENSE


def _luhn(body: str) -> str:
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return body + str(-total % 10)


def records_2kb() -> tuple[str, int]:
    """A CRM export cut to 2048 characters: JSON lines of e-mail, phone, card and IP."""
    rng = random.Random(11)
    lines, items = [], 0
    for i in range(40):
        card = _luhn("4" + "".join(rng.choice("0123456789") for _ in range(14)))
        line = (
            f'{{"id": {1000 + i}, "email": "user{i}@example.com", '
            f'"phone": "+1 415-555-{rng.randint(1000, 9999)}", '
            f'"card": "{card[:4]} {card[4:8]} {card[8:12]} {card[12:]}", '
            f'"ip": "10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}"}}'
        )
        if sum(map(len, lines)) + len(lines) + len(line) > 2048:
            break
        lines.append(line)
        items += 4
    text = "\n".join(lines)
    return text + " " * (2048 - len(text)), items


def median_us(fn: Callable[[], object], runs: int = 2000) -> tuple[float, float]:
    """Median of ``runs`` single-call timings in microseconds (after a warm-up), and the
    lowest median of five equal batches of them (the quietest stretch on a shared machine)."""
    for _ in range(min(runs, 200)):
        fn()
    timings: list[float] = []
    clock = time.perf_counter
    for _ in range(runs):
        t0 = clock()
        fn()
        timings.append(clock() - t0)
    size = max(1, runs // 5)
    batches = [timings[i : i + size] for i in range(0, runs - size + 1, size)]
    quietest = min(statistics.median(batch) for batch in batches)
    return statistics.median(timings) * 1e6, quietest * 1e6


def best_us(fn: Callable[[], object], repeat: int = 5) -> float:
    """Best of ``repeat`` timings of one call, in microseconds (for long inputs)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e6


ADVERSARIAL: dict[str, Callable[[int], str]] = {
    "'a'*n": lambda n: "a" * n,
    "'@'*n": lambda n: "@" * n,
    "'a@'*n/2": lambda n: "a@" * (n // 2),
    "'a@'+'b.'*n/2": lambda n: "a@" + "b." * (n // 2),
    "'1'*n": lambda n: "1" * n,
    "'1 '*n/2": lambda n: "1 " * (n // 2),
    "'1.'*n/2": lambda n: "1." * (n // 2),
    "'12-'*n/3": lambda n: "12-" * (n // 3),
    "'1/'*n/2": lambda n: "1/" * (n // 2),
    "'-'*n": lambda n: "-" * n,
    "'_'*n": lambda n: "_" * n,
    "':'*n": lambda n: ":" * n,
    "':a'*n/2": lambda n: ":a" * (n // 2),
    "'ab:'*n/3": lambda n: "ab:" * (n // 3),
    "'key='*n/4": lambda n: "key=" * (n // 4),
    "'password '*n/9": lambda n: "password " * (n // 9),
    "'token is '*n/9": lambda n: "token is " * (n // 9),
    "'key: \"'*n/6": lambda n: 'key: "' * (n // 6),
    "'Bearer '*n/7": lambda n: "Bearer " * (n // 7),
    "'Authorization: '*n/15": lambda n: "Authorization: " * (n // 15),
    "'-----BEGIN PRIVATE KEY-----'*": lambda n: "-----BEGIN PRIVATE KEY-----" * (n // 27),
    "'eyJa.'*n/5": lambda n: "eyJa." * (n // 5),
    "'sk-'*n/3": lambda n: "sk-" * (n // 3),
    "'hf_'*n/3": lambda n: "hf_" * (n // 3),
    "'AKIA'*n/4": lambda n: "AKIA" * (n // 4),
    "'DE00'*n/4": lambda n: "DE00" * (n // 4),
    "'de00 '*n/5": lambda n: "de00 " * (n // 5),
    "'+1 '*n/3": lambda n: "+1 " * (n // 3),
    "'(1)'*n/3": lambda n: "(1)" * (n // 3),
    "'://a:b@'*n/7": lambda n: "://a:b@" * (n // 7),
    "'\"a\"@b.co '*n/9": lambda n: '"a"@b.co ' * (n // 9),
    "'é@'*n/2": lambda n: "é@" * (n // 2),
    "'é'*n+'@a.b'": lambda n: "é" * n + "@a.bc",
}


def run(quick: bool = False) -> dict[str, Any]:
    """Measure; return the figures (microseconds) and the machine they were measured on."""
    redactor = DefaultRedactor()
    runs = 300 if quick else 3000
    plain = plain_text(2048)
    pii = text_with_pii(2048)
    dense = pii_dense_2kb()
    assert len(dense) == 2048 and len(plain) == 2048 and len(pii) == 2048
    found = redactor.redact_text(dense)[1]
    assert sum(found.values()) == PII_DENSE_ITEMS, found
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
    records, record_items = records_2kb()
    assert sum(redactor.redact_text(records)[1].values()) == record_items
    medians: dict[str, tuple[float, float]] = {
        "2 KB plain prose": median_us(lambda: redactor.redact_text(plain), runs),
        "2 KB with 5 PII items": median_us(lambda: redactor.redact_text(pii), runs),
        f"2 KB PII-dense ({PII_DENSE_ITEMS} items)": median_us(
            lambda: redactor.redact_text(dense), runs
        ),
        "2 KB PII-dense, find_kinds()": median_us(lambda: redactor.find_kinds(dense), runs),
        f"2 KB JSON records ({record_items} items)": median_us(
            lambda: redactor.redact_text(records), runs
        ),
        "event dict (~2 KB, redact())": median_us(lambda: redactor.redact(event, "input"), runs),
    }
    n = 25_000 if quick else 100_000
    linearity: dict[str, tuple[float, float, float]] = {}
    for name, make in ADVERSARIAL.items():
        small, large = make(n), make(4 * n)
        t_small = best_us(lambda s=small: redactor.redact_text(s))  # type: ignore[misc]
        t_large = best_us(lambda s=large: redactor.redact_text(s))  # type: ignore[misc]
        linearity[name] = (t_small, t_large, t_large / t_small)
    return {
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "median_us": medians,
        "linearity_n": n,
        "linearity_us": linearity,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.redaction_speed")
    parser.add_argument("--quick", action="store_true", help="fewer runs, smaller inputs")
    args = parser.parse_args(argv)
    result = run(quick=args.quick)
    machine = result["machine"]
    print(f"{machine['cpu']}, {machine['cores']} cores, Python {machine['python']}")
    print("per call, median of all calls / of the quietest fifth:")
    for label, (micros, quietest) in result["median_us"].items():
        print(f"  {label:34s} {micros:8.1f} us  {quietest:8.1f} us")
    n = result["linearity_n"]
    print(f"adversarial inputs, n = {n:,} characters (ratio ~4 = linear, ~16 = quadratic):")
    for name, (small, large, ratio) in result["linearity_us"].items():
        print(
            f"  {name:34s} n {small / 1000:8.2f} ms   4n {large / 1000:8.2f} ms   "
            f"ratio {ratio:4.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
