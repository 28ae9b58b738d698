"""Redaction of PII and secrets in JSON-safe values.

`DefaultRedactor` replaces sensitive substrings of string leaves with a placeholder such as
``[REDACTED:email]`` and reports *what* it found (kind, JSON path, count), never the value.

Kinds: ``email``, ``phone``, ``payment_card`` (Luhn), ``iban`` (length + mod-97),
``api_key`` (OpenAI/Anthropic ``sk-``, AWS ``AKIA``/``ASIA``, GitHub, Slack, Google, Stripe),
``secret`` (``key=``/``token:``/``password=``... assignments with a long, varied value),
``bearer_token`` (``Bearer x`` and ``Authorization:`` header values), ``jwt``, ``private_key``
(PEM blocks) and ``ip_address`` (IPv4 and IPv6). Labels are kept: ``api_key=[REDACTED:secret]``,
``Bearer [REDACTED:bearer_token]``. Overlapping matches become one placeholder.

Performance: detection runs on an ASCII byte view of the text (one byte per code point,
non-ASCII replaced by ``?``, so offsets match the original string). Every detector sits
behind a cheap substring pre-filter, patterns start with a literal so the regex engine can
skip ahead, repetitions are bounded or unambiguous, and validators (Luhn, mod-97, octet
ranges, ``ipaddress``, entropy) confirm candidates. Scanning is linear in the text length.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

__all__ = [
    "BUILTIN_KINDS",
    "TRUNCATED_KIND",
    "DefaultRedactor",
    "Finding",
    "JSONValue",
    "NullRedactor",
    "Redactor",
]

JSONValue: TypeAlias = dict[str, "JSONValue"] | list["JSONValue"] | str | int | float | bool | None

TRUNCATED_KIND = "truncated"
"""Pseudo-kind reported once for a string cut at ``max_text_length``."""

# Overlapping matches are merged into one redaction, reported under the kind listed first
# here. Extra (user) patterns win over all built-ins.
_PRIORITY: dict[str, int] = {
    kind: rank
    for rank, kind in enumerate(
        (
            "private_key",
            "jwt",
            "bearer_token",
            "api_key",
            "secret",
            "iban",
            "payment_card",
            "email",
            "phone",
            "ip_address",
        )
    )
}
BUILTIN_KINDS: frozenset[str] = frozenset(_PRIORITY)
"""Kinds detected by `DefaultRedactor` (selectable with its ``kinds`` argument)."""

_Span = tuple[int, int, str]

# --- shared character sets ---------------------------------------------------------------

_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_WORD = _ALNUM | {"_"}
_SHAPE = bytes.maketrans(b"123456789", b"000000000")  # every ASCII digit becomes b"0"
_RUN0 = re.compile(rb"0+")
_LUHN_DOUBLE = str.maketrans("0123456789", "0246813579")
_DIGIT_RUN = re.compile(r"[0-9]+")
_HAS_DIGIT = re.compile(r"[0-9]")

# --- e-mail --------------------------------------------------------------------------------

# Anchored on "@" (a literal, so the scan is fast); the local part is recovered with rstrip.
_EMAIL_AT = re.compile(
    rb"@(?<=[A-Za-z0-9._%+\-]@)"
    rb"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
    rb"(?![A-Za-z0-9\-])"
)
_EMAIL_LOCAL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-"

# --- digit-based detectors, matched on the "shape" view (digits -> "0") ------------------

# payment cards: 13-19 digits, single spaces/dashes between groups
_CARD = re.compile(rb"0(?<![A-Za-z0-9_.,]0)(?:0|[ \-](?=0)){12,25}(?![A-Za-z0-9_])")
# phones: each repeat unit holds exactly one digit, so the body has 8-17 digits
_PHONE = re.compile(
    rb"0(?<![A-Za-z0-9_.,/\-]0)(?:0|[ .\-]\(?0|\(0|\)[ .\-]?0){7,16}"
    rb"(?![A-Za-z0-9_]|[.,/\-]0)"
)
# IBAN: matched from the check digits, the country code is checked by look-behind
_IBAN = re.compile(rb"00(?<=[A-Z][A-Z]00)(?<![A-Za-z0-9_][A-Z][A-Z]00)(?: ?[A-Z0]){11,30}")
_IPV4 = re.compile(rb"0(?<![A-Za-z0-9_.]0)0{0,2}\.0{1,3}\.0{1,3}\.0{1,3}(?![A-Za-z0-9_]|\.0)")

# --- IPv6 (anchored on ":hex:" fragments) ------------------------------------------------

_IPV6_HINT = re.compile(rb":[0-9A-Fa-f]{0,4}:")
_IPV6_TAIL = re.compile(rb"[0-9A-Fa-f:.]{0,45}(?:%[0-9A-Za-z]{1,15})?")
_HEX_COLON = b"0123456789ABCDEFabcdef:"
_HEX = frozenset("0123456789ABCDEFabcdef")

# --- secrets with a recognisable prefix -------------------------------------------------

_PEM_BEGIN = re.compile(rb"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(rb"-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_JWT = re.compile(
    rb"eyJ(?<![A-Za-z0-9_\-]eyJ)[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*"
)
_SK_KEY = re.compile(rb"sk-(?<![A-Za-z0-9_\-]sk-)[A-Za-z0-9_\-]{20,}")  # OpenAI, Anthropic
_STRIPE_KEY = re.compile(rb"k_(?<=[rs]k_)(?<![A-Za-z0-9_][rs]k_)(?:live|test)_[A-Za-z0-9]{10,}")
_GITHUB_TOKEN = re.compile(
    rb"g(?<![A-Za-z0-9_]g)(?:h[oprsu]_[A-Za-z0-9]{30,}|ithub_pat_[A-Za-z0-9_]{22,})"
)
_SLACK_TOKEN = re.compile(rb"xox[abeoprs]-(?<![A-Za-z0-9]xox[abeoprs]-)[A-Za-z0-9\-]{10,}")
_A_KEYS = re.compile(  # AWS access key ids, Google API keys
    rb"A(?:(?<![A-Za-z0-9]A)[KS]IA[0-9A-Z]{16}(?![A-Za-z0-9])"
    rb"|(?<![A-Za-z0-9_\-]A)Iza[0-9A-Za-z_\-]{35}(?![A-Za-z0-9_\-]))"
)

# --- keyword-based detectors, matched on the lower-cased view ----------------------------

_AUTH_HEADER = re.compile(
    rb"authorization[\"']?[ \t]{0,3}[:=][ \t]{0,3}[\"']?"
    rb"(?:(bearer|basic|token|digest|negotiate|ntlm|apikey)[ \t]+)?"
    rb"([a-z0-9._~+/=\-]+)"
)
_BEARER = re.compile(rb"bearer(?<![a-z0-9_]bearer)[ \t]+([a-z0-9._~+/\-]{16,}=*)")
_SECRET_KEYWORDS = (b"key", b"secret", b"token", b"passw", b"pwd")
_SECRET_SCAN = 256  # value characters checked per keyword; longer values are still redacted
# after a keyword: a suffix such as "_id", an optional closing quote, ":" or "=", an optional
# opening quote, then the value (token-like for keys, almost anything for passwords)
_ASSIGN = rb"[a-z0-9_\-]{0,24}[\"']?[ \t]{0,3}[:=][ \t]{0,3}[\"']?"
_TOKEN_VALUE = rb"[^\s\"'`,;&<>(){}\[\]=]"
_PASSWORD_VALUE = rb"[^\s\"'`,;]"
_SECRET_TAIL = re.compile(_ASSIGN + rb"(%s{8,%d}={0,2})" % (_TOKEN_VALUE, _SECRET_SCAN))
_SECRET_REST = re.compile(_TOKEN_VALUE + rb"*={0,2}")
_PASSWORD_TAIL = re.compile(_ASSIGN + rb"(%s{8,%d})" % (_PASSWORD_VALUE, _SECRET_SCAN))
_PASSWORD_REST = re.compile(_PASSWORD_VALUE + rb"*")
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_.~=-")

# --- IBAN lengths by country (ISO 13616 registry) ----------------------------------------

_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


# --- public API ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One kind of sensitive data found in one field: never carries the value itself."""

    kind: str
    field: str
    count: int


@runtime_checkable
class Redactor(Protocol):
    """Anything that can redact a JSON-safe value and report its findings."""

    name: str
    version: str

    def redact(self, value: JSONValue, path: str = "") -> tuple[JSONValue, list[Finding]]:
        """Return a redacted copy of ``value`` and the findings, keyed by JSON path."""
        ...


class NullRedactor:
    """A `Redactor` that passes values through unchanged and finds nothing."""

    name: str = "promptgov.null"
    version: str = "1"

    def redact(self, value: JSONValue, path: str = "") -> tuple[JSONValue, list[Finding]]:
        """Return ``value`` itself and no findings."""
        return value, []


class DefaultRedactor:
    """Regex-and-validator redactor for common PII and secrets.

    Args:
        kinds: built-in kinds to detect (default: all of `BUILTIN_KINDS`).
        replacement: placeholder text; ``{kind}`` is replaced with the finding kind.
        extra_patterns: additional ``{kind: regex}`` detectors, always active and applied to
            the original text. They win over built-ins when matches overlap.
        max_text_length: strings longer than this many characters are cut: the first
            ``max_text_length`` characters are scanned and kept (redacted), the rest is
            replaced by one placeholder and reported as kind ``"truncated"``.

    Overlapping matches are merged into a single placeholder. Instances are immutable
    after construction and safe to share between threads.
    """

    __slots__ = ("_enabled", "_extra", "_flags", "_max", "_placeholders")

    name: str = "promptgov.default"
    version: str = "1"

    def __init__(
        self,
        *,
        kinds: Iterable[str] | None = None,
        replacement: str = "[REDACTED:{kind}]",
        extra_patterns: Mapping[str, str | re.Pattern[str]] | None = None,
        max_text_length: int = 1_000_000,
    ) -> None:
        extra: list[tuple[str, re.Pattern[str]]] = []
        for kind, pattern in (extra_patterns or {}).items():
            if not kind:
                raise ValueError("extra_patterns: kind names must be non-empty")
            extra.append((kind, re.compile(pattern) if isinstance(pattern, str) else pattern))
        if kinds is None:
            enabled = BUILTIN_KINDS
        else:
            if isinstance(kinds, str):
                raise TypeError("kinds must be an iterable of kind names, not a string")
            enabled = frozenset(kinds)
            unknown = enabled - BUILTIN_KINDS - {k for k, _ in extra} - {TRUNCATED_KIND}
            if unknown:
                raise ValueError(
                    f"unknown redaction kinds {sorted(unknown)}; known: {sorted(BUILTIN_KINDS)}"
                )
        if max_text_length < 1:
            raise ValueError("max_text_length must be >= 1")
        self._enabled = enabled & BUILTIN_KINDS
        self._flags = tuple(kind in enabled for kind in _SCAN_ORDER)
        self._extra = tuple(extra)
        self._max = max_text_length
        self._placeholders = {
            kind: replacement.replace("{kind}", kind)
            for kind in (*BUILTIN_KINDS, TRUNCATED_KIND, *(k for k, _ in extra))
        }

    @property
    def kinds(self) -> frozenset[str]:
        """Built-in kinds this instance detects (extra pattern kinds are always active)."""
        return self._enabled

    def redact_text(self, text: str) -> tuple[str, dict[str, int]]:
        """Redact one string; return the new string and counts per kind."""
        truncated = len(text) > self._max
        if truncated:
            text = text[: self._max]
        spans = self._scan(text)
        if not spans and not truncated:
            return text, {}
        placeholders = self._placeholders
        counts: dict[str, int] = {}
        pieces: list[str] = []
        last = 0
        for start, end, kind in _merge(spans):
            pieces.append(text[last:start])
            pieces.append(placeholders[kind])
            counts[kind] = counts.get(kind, 0) + 1
            last = end
        pieces.append(text[last:])
        if truncated:
            pieces.append(placeholders[TRUNCATED_KIND])
            counts[TRUNCATED_KIND] = 1
        return "".join(pieces), counts

    def redact(self, value: JSONValue, path: str = "") -> tuple[JSONValue, list[Finding]]:
        """Return a redacted copy of ``value`` (never mutated) and findings per (kind, field).

        Dict keys are kept as-is; only string values are redacted; other leaves are returned
        unchanged and tuples come back as lists. Child paths are ``path.key`` for
        identifier-like keys, ``path["other key"]`` otherwise, and ``path[i]`` for list items.
        """
        found: dict[tuple[str, str], int] = {}
        out = self._walk(value, path, found)
        return out, [Finding(kind, field, n) for (kind, field), n in found.items()]

    # --- internals ----------------------------------------------------------------------

    def _walk(self, value: JSONValue, path: str, found: dict[tuple[str, str], int]) -> JSONValue:
        if isinstance(value, str):
            text, counts = self.redact_text(value)
            for kind, n in counts.items():
                found[(kind, path)] = found.get((kind, path), 0) + n
            return text
        if isinstance(value, dict):
            return {k: self._walk(v, _child_path(path, k), found) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._walk(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
        return value

    def _scan(self, text: str) -> list[_Span]:
        spans: list[_Span] = []
        for kind, pattern in self._extra:
            spans.extend((m.start(), m.end(), kind) for m in pattern.finditer(text) if m.group())
        if len(text) < 6:  # shorter than any built-in match ("a@b.co")
            return spans
        private_key, email, api_key, jwt, bearer, secret, ip, card, iban, phone = self._flags
        # Every detector is gated by a fast substring test on ``text`` (``str`` membership:
        # ``bytes`` membership costs ~10x more on short strings). Matching runs on ``view``:
        # one byte per code point (non-ASCII -> "?"), so offsets equal those in ``text``.
        view = text.encode("ascii", "replace")
        if private_key and "-----BEGIN" in text:
            _find_private_keys(view, spans)
        if email and "@" in text:
            _find_emails(view, spans)
        if api_key and ("A" in text or "_" in text or "-" in text):
            _find_api_keys(text, view, spans)
        if jwt and "J" in text:
            spans.extend((m.start(), m.end(), "jwt") for m in _JWT.finditer(view))
        assignment = ":" in text or "=" in text  # "key: ...", "Authorization: ..."
        if (secret and assignment) or (
            bearer
            and (
                assignment
                or (("b" in text or "B" in text) and ("earer" in text or "EARER" in text))
            )
        ):
            _find_keyword_secrets(text, view, bearer, secret and assignment, assignment, spans)
        if ip and ":" in text:
            _find_ipv6(text, view, spans)
        if (card or iban or phone or ip) and _has_digit(text):
            shape = view.translate(_SHAPE)  # every digit -> b"0": patterns start with a literal
            if card:
                _find_cards(text, shape, spans)
            if iban:
                _find_ibans(text, shape, spans)
            if phone:
                _find_phones(text, shape, spans)
            if ip and "." in text:
                for m in _IPV4.finditer(shape):
                    if _valid_ipv4(text[m.start() : m.end()]):
                        spans.append((m.start(), m.end(), "ip_address"))
        return spans


_SCAN_ORDER = (
    "private_key", "email", "api_key", "jwt", "bearer_token", "secret",
    "ip_address", "payment_card", "iban", "phone",
)  # fmt: skip


def _child_path(path: str, key: object) -> str:
    name = key if isinstance(key, str) else str(key)
    if name.isidentifier():
        return f"{path}.{name}" if path else name
    return f"{path}[{json.dumps(name, ensure_ascii=False)}]"


def _merge(spans: list[_Span]) -> list[_Span]:
    """Sort spans and merge overlaps; a merged span takes the highest-priority kind."""
    if not spans:
        return []
    spans.sort()
    merged: list[_Span] = []
    cur_start, cur_end, cur_kind = spans[0]
    for start, end, kind in spans[1:]:
        if start < cur_end:
            if end > cur_end:
                cur_end = end
            if _PRIORITY.get(kind, -1) < _PRIORITY.get(cur_kind, -1):
                cur_kind = kind
        else:
            merged.append((cur_start, cur_end, cur_kind))
            cur_start, cur_end, cur_kind = start, end, kind
    merged.append((cur_start, cur_end, cur_kind))
    return merged


def _has_digit(text: str) -> bool:
    # ten memchr-speed substring tests beat one regex character-class scan by ~30x
    return (
        "0" in text
        or "1" in text
        or "2" in text
        or "3" in text
        or "4" in text
        or "5" in text
        or "6" in text
        or "7" in text
        or "8" in text
        or "9" in text
    )


def _char_classes(s: str, *, symbols: bool = False) -> int:
    """Number of character classes (lower, upper, digit[, other]) present in ``s``."""
    n = (s.upper() != s) + (s.lower() != s) + (_HAS_DIGIT.search(s) is not None)
    if symbols and not s.isalnum():
        n += 1
    return n


def _entropy(s: str) -> float:
    """Shannon entropy in bits per character."""
    size = len(s)
    return -sum(c / size * math.log2(c / size) for c in Counter(s).values())


# --- detectors ------------------------------------------------------------------------------


def _find_private_keys(view: bytes, spans: list[_Span]) -> None:
    pos = 0
    while (begin := _PEM_BEGIN.search(view, pos)) is not None:
        end = _PEM_END.search(view, begin.end())
        if end is None:  # unterminated block (e.g. cut off): redact through the end
            spans.append((begin.start(), len(view), "private_key"))
            return
        spans.append((begin.start(), end.end(), "private_key"))
        pos = end.end()


def _find_emails(view: bytes, spans: list[_Span]) -> None:
    for m in _EMAIL_AT.finditer(view):
        at = m.start()
        window = view[max(0, at - 65) : at]
        local = len(window) - len(window.rstrip(_EMAIL_LOCAL))
        start = at - local
        while start < at and view[start] == 0x2E:  # no leading "."
            start += 1
        if 0 < at - start <= 64 and local <= 64 and m.end() - at <= 254:
            spans.append((start, m.end(), "email"))


def _find_api_keys(text: str, view: bytes, spans: list[_Span]) -> None:
    # patterns start with a literal, so running them is as cheap as a substring gate
    if "-" in text:
        for m in _SK_KEY.finditer(view):
            if _char_classes(text[m.start() + 3 : m.end()]) >= 2:
                spans.append((m.start(), m.end(), "api_key"))
        spans.extend((m.start(), m.end(), "api_key") for m in _SLACK_TOKEN.finditer(view))
    if "_" in text:
        spans.extend((m.start(), m.end(), "api_key") for m in _GITHUB_TOKEN.finditer(view))
        if "k_live_" in text or "k_test_" in text:
            spans.extend((m.start() - 1, m.end(), "api_key") for m in _STRIPE_KEY.finditer(view))
    if "A" in text:
        spans.extend((m.start(), m.end(), "api_key") for m in _A_KEYS.finditer(view))


def _find_keyword_secrets(
    text: str, view: bytes, bearer: bool, secret: bool, assignment: bool, spans: list[_Span]
) -> None:
    lower = view.lower()
    if bearer:
        if assignment and lower.find(b"authorization") != -1:
            for m in _AUTH_HEADER.finditer(lower):
                start, end = m.span(2)
                token = text[start:end]
                if m.group(1) is not None or (len(token) >= 16 and _char_classes(token) >= 2):
                    spans.append((start, end, "bearer_token"))
        if lower.find(b"bearer") != -1:
            for m in _BEARER.finditer(lower):
                start, end = m.span(1)
                if _char_classes(text[start:end]) >= 2:
                    spans.append((start, end, "bearer_token"))
    if not secret:
        return
    hits: list[tuple[int, bytes]] = []
    for keyword in _SECRET_KEYWORDS:
        pos = lower.find(keyword)
        while pos != -1:
            hits.append((pos, keyword))
            pos = lower.find(keyword, pos + 1)
    hits.sort()
    covered = 0  # keywords inside an already redacted value are skipped (keeps this linear)
    for pos, keyword in hits:
        if pos < covered:
            continue
        password = keyword in (b"passw", b"pwd")
        tail = (_PASSWORD_TAIL if password else _SECRET_TAIL).match(lower, pos + len(keyword))
        if tail is None:
            continue
        start, end = tail.span(1)
        value = text[start:end].rstrip(".")
        if _looks_secret(value, password=password):
            if end - start >= _SECRET_SCAN:  # long value: redact all of it
                rest = (_PASSWORD_REST if password else _SECRET_REST).match(lower, end)
                end = rest.end() if rest is not None else end
            else:
                end = start + len(value)
            spans.append((start, end, "secret"))
            covered = end


def _looks_secret(value: str, *, password: bool) -> bool:
    if password:
        return len(value) >= 8 and _char_classes(value, symbols=True) >= 2
    return (
        len(value) >= 16
        and _TOKEN_CHARS.issuperset(value)
        and _char_classes(value) >= 2
        and _entropy(value) >= 3.0
    )


def _find_ipv6(text: str, view: bytes, spans: list[_Span]) -> None:
    pos = 0
    while (hint := _IPV6_HINT.search(view, pos)) is not None:
        window = view[max(0, hint.start() - 40) : hint.start()]
        start = hint.start() - (len(window) - len(window.rstrip(_HEX_COLON)))
        tail = _IPV6_TAIL.match(view, hint.start())
        end = tail.end() if tail is not None else hint.end()
        while end > start and view[end - 1] == 0x2E:  # sentence-ending "."
            end -= 1
        # hints inside this run would yield the same candidate: continue after it
        pos = max(end, hint.end() - 1)
        if start > 0 and (text[start - 1] in _WORD or text[start - 1] in ".:"):
            continue
        if end < len(text) and (text[end] in _WORD or text[end] == ":"):
            continue
        if _valid_ipv6(text[start:end]):
            spans.append((start, end, "ip_address"))


def _valid_ipv6(candidate: str) -> bool:
    address = candidate.partition("%")[0]
    # skip trivial forms such as "::", "::1" or slice syntax like "1::2"
    groups = [g for g in address.split(":") if g]
    if len(groups) < 2 or sum(c in _HEX for c in address) < 4:
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _valid_ipv4(candidate: str) -> bool:
    # the pattern guarantees four dot-separated runs of 1-3 digits
    return all(
        int(octet) <= 255 and (octet[0] != "0" or len(octet) == 1) for octet in candidate.split(".")
    )


def _find_cards(text: str, shape: bytes, spans: list[_Span]) -> None:
    pos = 0
    while (m := _CARD.search(shape, pos)) is not None:
        hit = _card_window(text, shape, m.start(), m.end())
        if hit is None:
            pos = m.end()
        else:
            spans.append((hit[0], hit[1], "payment_card"))
            pos = hit[1]


def _card_window(text: str, shape: bytes, start: int, end: int) -> tuple[int, int] | None:
    """Find the widest run of whole digit groups in a candidate that is a valid card number.

    Grouped numbers use one kind of separator and groups of 3+ digits (only the last group
    may be shorter), which keeps the search short.
    """
    total = shape.count(b"0", start, end)
    if total < 13 or shape.find(b"000", start, end) == -1:
        return None
    groups = [g.span() for g in _RUN0.finditer(shape, start, end)]
    if len(groups) == 1:
        return (start, end) if _valid_card(text[start:end]) else None
    if (  # fast path: the whole candidate is a well-formed card number
        total <= 19
        and len({shape[b] for _, b in groups[:-1]}) == 1
        and min(b - a for a, b in groups[:-1]) >= 3
        and _valid_card("".join(text[a:b] for a, b in groups))
    ):
        return start, end
    best: tuple[int, int] | None = None
    for first in range(len(groups)):
        digits = 0
        for last in range(first, len(groups)):
            a, b = groups[last]
            digits += b - a
            if digits > 19 or (last > first and shape[a - 1] != shape[groups[first][1]]):
                break  # too long, or a different separator
            if (
                digits >= 13
                and (best is None or b - groups[first][0] > best[1] - best[0])
                and _valid_card("".join(text[x:y] for x, y in groups[first : last + 1]))
            ):
                best = (groups[first][0], b)
            if b - a < 3:
                break
    return best


def _valid_card(digits: str) -> bool:
    # major networks start with 2-6; 13-digit numbers are Visa only
    if not 13 <= len(digits) <= 19 or digits[0] not in "23456":
        return False
    if len(digits) == 13 and digits[0] != "4":
        return False
    # Luhn: digit bytes are 48 + value; every second digit from the right is doubled (mod 9)
    plain = digits[-1::-2].encode()
    doubled = digits[-2::-2].translate(_LUHN_DOUBLE).encode()
    return (sum(plain) + sum(doubled) - 48 * len(digits)) % 10 == 0


def _find_ibans(text: str, shape: bytes, spans: list[_Span]) -> None:
    for m in _IBAN.finditer(shape):
        start = m.start() - 2
        length = _IBAN_LENGTHS.get(text[start : start + 2])
        if length is None:
            continue
        seen = 0
        for end in range(start + 1, m.end() + 1):
            if text[end - 1] != " ":
                seen += 1
                if seen == length:
                    break
        else:
            continue  # shorter than this country's IBAN length
        if end < len(text) and text[end] in _ALNUM:
            continue  # the cut falls inside a longer token
        iban = text[start:end].replace(" ", "")
        rearranged = iban[4:] + iban[:4]
        if int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1:
            spans.append((start, end, "iban"))


def _find_phones(text: str, shape: bytes, spans: list[_Span]) -> None:
    for m in _PHONE.finditer(shape):
        span = _phone_span(text, shape, m.start(), m.end())
        if span is not None:
            spans.append((span[0], span[1], "phone"))


def _phone_span(text: str, shape: bytes, start: int, end: int) -> tuple[int, int] | None:
    digits = shape.count(b"0", start, end)
    lead = text[start - 1] if start else ""
    if lead == "+":  # international: +CC, separators optional
        if start >= 2 and (text[start - 2] in _WORD or text[start - 2] == "+"):
            return None
        if text[start] == "0" or not 8 <= digits <= 15:
            return None
        return start - 1, end
    if digits > 12 and text[start : start + 2] != "00":
        return None
    body = text[start:end]
    groups = _DIGIT_RUN.findall(body)
    if len(groups) < 2:  # a bare run of digits is an id, not a phone number
        return None
    if body.startswith("00"):  # 00 international prefix
        return (start, end) if 10 <= digits <= 17 and body[2] != "0" else None
    if digits < 8 or len(groups[0]) > 5 or max(map(len, groups)) > 8:
        return None
    separators = {s for s in _DIGIT_RUN.split(body)[1:-1] if "(" not in s and ")" not in s}
    if "." in separators and len(separators) > 1:  # decimals such as "3.14 2.71"
        return None
    if separators == {"."} and len(groups) >= 3 and max(map(len, groups)) <= 3:
        return None  # dotted numbers / versions such as 1.234.567
    if _looks_like_date(groups):
        return None
    if lead == "(" and ")" in body.split("(", 1)[0]:
        start -= 1
    return start, end


def _looks_like_date(groups: list[str]) -> bool:
    for a, b, c in zip(groups, groups[1:], groups[2:], strict=False):
        if len(a) == 4 and len(b) <= 2 and len(c) <= 2:
            year, month, day = int(a), int(b), int(c)
        elif len(a) <= 2 and len(b) <= 2 and len(c) == 4:
            year, month, day = int(c), int(b), int(a)
            if month > 12:
                month, day = day, month
        else:
            continue
        if 1900 <= year <= 2099 and 1 <= month <= 12 and 1 <= day <= 31:
            return True
    return False
