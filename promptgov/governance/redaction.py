"""Redaction of PII and secrets in JSON-safe values.

`DefaultRedactor` replaces sensitive substrings of string leaves with a placeholder such as
``[REDACTED:email]`` and reports *what* it found (kind, JSON path, count), never the value.
`DefaultRedactor.find_kinds` says which kinds a string holds without building the copy.

Kinds: ``email`` (also quoted and internationalised addresses), ``phone``, ``payment_card``
(issuer ranges + Luhn), ``iban`` (length + mod-97, any case, spaces or dashes), ``api_key``
(some thirty providers by prefix, e.g. OpenAI/Anthropic ``sk-``, AWS ``AKIA``/``ASIA``, GitHub,
GitLab, Hugging Face, Slack, Stripe, SendGrid, Twilio, Google, npm, and webhook URLs),
``secret`` (``key=``/``token:``/``password is``... values that are long and varied, passwords
in URLs), ``bearer_token`` (``Bearer x`` and ``Authorization:`` header values), ``jwt``,
``private_key`` (PEM blocks, also cut ones) and ``ip_address`` (IPv4 and IPv6). Labels are
kept: ``api_key=[REDACTED:secret]``, ``Bearer [REDACTED:bearer_token]``. Overlapping matches
become one placeholder. docs/redaction.md lists the formats, what is not detected, and the
measured recall, false-positive rate and speed.

Performance: detection runs on an ASCII byte view of the text (one byte per code point,
non-ASCII replaced by ``?``, so offsets match the original string). Every detector sits
behind a cheap pre-filter, patterns start with a literal so the regex engine can skip ahead
(one-byte and long anchors are found with ``find``, see `_matches`), repetitions are bounded
or unambiguous, and validators (Luhn, mod-97, issuer ranges, octet ranges, entropy, context
words) confirm candidates. Whole tokens found first (keys, JWTs, addresses) are blanked for
the detectors that follow. Scanning is linear in the text length. Several detectors share
one pattern (alternatives told apart by their groups) only where they share a leading
literal: an alternation of different leading bytes would be scanned byte by byte, ten times
slower than a literal.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
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
_View: TypeAlias = "bytes | bytearray"  # the ASCII view of a text: a copy if blanked
_START = itemgetter(0)

# --- shared character sets ---------------------------------------------------------------

_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_WORD = _ALNUM | {"_"}
_DIGITS = frozenset("0123456789")
_SHAPE = bytes.maketrans(b"123456789", b"000000000")  # every ASCII digit becomes b"0"
_DIGIT_GROUPS = bytes(c if c == 0x30 else 0x20 for c in range(256))  # b"000-00" -> b"000 00"
_DIGIT_RUN = re.compile(r"[0-9]+")
_HAS_DIGIT = re.compile(r"[0-9]")

# --- e-mail --------------------------------------------------------------------------------

# Anchored on "@" (a literal, so the scan is fast); the local part is recovered backwards. At
# most 126 labels (a domain has at most 253 characters): bounded backtracking per "@".
# ASCII text is matched on the byte view; other text with a Unicode pattern (IDN domains,
# internationalised local parts), both with the same structure.
_EMAIL_AT = re.compile(
    rb"@(?<=[A-Za-z0-9._%+\-'!#&\"]@)"
    rb"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.){1,126}"
    rb"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9\-]{1,59})(?![A-Za-z0-9\-])"
)
_EMAIL_AT_UNICODE = re.compile(
    r"@(?<=[^\W_]@|[._%+\-'!#&\"]@)"
    r"(?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.){1,126}"
    r"(?:[^\W\d_]{2,63}|xn--[A-Za-z0-9\-]{1,59})(?![\w\-])"
)
_EMAIL_LOCAL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-'!#&"
_EMAIL_LOCAL_REVERSED = re.compile(r"[\w\u0300-\u036f.%+\-'!#&]+")
_EMAIL_LEADING = ".'!#&%+-"  # not kept at the start of a local part ("'jane@x.org'")

# --- digit-based detectors, matched on the "shape" view (digits -> "0") ------------------

# One pass over the shape view finds the candidates of three detectors, told apart by their
# look-behind: an IBAN from its check digits (two letters before; the shortest IBAN is
# enough, its country's length is checked after), an IPv4 address (group 1), or a payment
# card / phone number (group 2): a run of 8-25 digits with single separators (spaces,
# dashes, dots, slashes, parentheses), each repeat unit holding exactly one digit.
_NUMBERS = re.compile(
    rb"0(?<!00)(?:"  # "(?<!00)": most digits continue a number, rejected at once
    rb"(?<=[A-Za-z][A-Za-z]0)(?<![A-Za-z0-9_][A-Za-z][A-Za-z]0)0(?:[ \-]?[A-Za-z0]){11}"
    rb"|(?<![A-Za-z0-9_.]0)(0{0,2}\.0{1,3}\.0{1,3}\.0{1,3})(?![A-Za-z0-9_]|\.0)"
    rb"|(?<![A-Za-z0-9_.,]0)((?:0|[ .\-/]\(?0|\(0|\)[ .\-]?0){7,24})(?![A-Za-z0-9_])"
    rb")"
)
# an IBAN of each registered length, from its country code; one kind of separator
_IBAN_BODY = {
    length: re.compile(
        rb"[A-Za-z]{2}00(?:[A-Za-z0]{%d}|(?: ?[A-Za-z0]){%d}|(?:-?[A-Za-z0]){%d})"
        % (length - 4, length - 4, length - 4)
    )
    for length in range(15, 35)
}
_IBAN_DIGITS = str.maketrans(  # A=10 ... Z=35; digits map to themselves (none is missing)
    {**{chr(c): str(c - 55) for c in range(65, 91)}, **{d: d for d in "0123456789"}}
)

# Labels that make a number an identifier rather than a phone number, card or address: the
# word directly before the number ("order no. 123-456-7890", "firmware 2.4.1.3").
_ID_WORDS = frozenset(
    ("order", "invoice", "inv", "ticket", "case", "ref", "reference", "tracking", "track",
     "sku", "rma", "po", "part", "serial", "s/n", "sn", "model", "zip", "postal", "postcode",
     "plz", "isbn", "ean", "upc", "gtin", "imei", "lot", "batch", "booking", "confirmation",
     "transaction", "txn", "loan", "claim", "barcode", "item", "article", "product")
)  # fmt: skip
_VERSION_WORDS = frozenset(
    ("v", "ver", "version", "build", "firmware", "fw", "release", "rel", "section", "sec",
     "table", "tab", "figure", "fig", "chapter", "ch", "clause", "article", "art", "revision",
     "rev", "paragraph", "para", "appendix", "annex", "edition", "patch", "oid", "driver",
     "bios", "kernel", "sdk", "python", "java", "ios", "android", "macos", "windows", "chrome",
     "firefox", "safari", "kb")
)  # fmt: skip
_NUMBER_WORDS = frozenset({"", "no", "nr", "number", "num", "id", "code", "#"})
_LABEL_STRIP = ".,:;#-()[]\"'=@/"
_VERSION_NEXT = ("release", "changelog", "beta", "alpha", "hotfix", "build")  # "1.2.3.4 beta"
_CARD_CONTEXT = re.compile(
    r"card|visa|credit|debit|\bcc\b|\bpan\b|karte|carte|tarjeta|cart[aã]o|payment|amex"
)

# --- IPv6 (anchored on ":hex:" fragments) ------------------------------------------------

# four octets of 0-255 without leading zeros (octal notation, versions)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")

_IPV6_HINT = re.compile(rb":[0-9A-Fa-f]{0,4}:")
_IPV6_TAIL = re.compile(rb"[0-9A-Fa-f:.]{0,45}(?:%[0-9A-Za-z]{1,15})?")
_HEX_COLON = b"0123456789ABCDEFabcdef:"
_HEX_GROUPS = re.compile(r"[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4})*")

# --- secrets with a recognisable prefix -------------------------------------------------

# the closing dashes are optional: a header cut short still starts a (cut) key block
_PEM_BEGIN = re.compile(rb"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-{0,5}")
_PEM_END = re.compile(rb"-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_JWT = re.compile(  # JWS (3 parts) and JWE (5 parts)
    rb"eyJ(?<![A-Za-z0-9_\-]eyJ)[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*"
    rb"(?:\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)?"
)


def _after(prefix: bytes, body: bytes, sep: bytes) -> tuple[int, bytes]:
    """One alternative of a separator-anchored key pattern: ``prefix`` + ``sep`` + ``body``,
    and the length of the prefix.

    The pattern is anchored on ``sep`` (a literal, so the regex engine skips ahead); the
    prefix is checked by look-behind, with no letter or digit before it.
    """
    whole = re.escape(prefix + sep)
    return len(prefix), rb"(?<=%s)(?<![A-Za-z0-9]%s)%s" % (whole, whole, body)


def _keys_after(head: bytes, rules: tuple[tuple[int, bytes], ...]) -> re.Pattern[bytes]:
    """One pattern for all ``rules`` (prefix length, alternative) after ``head``; each
    alternative ends with an empty group, so ``match.lastindex`` tells which one matched."""
    return re.compile(b"%s(?:%s)" % (head, b"|".join(rule + b"()" for _, rule in rules)))


# keys whose provider prefix ends with "_" (anchored on the "_")
_UNDERSCORE_RULES = (
    _after(b"hf", rb"[A-Za-z]{30,40}(?![A-Za-z0-9])", b"_"),  # Hugging Face
    _after(b"npm", rb"[A-Za-z0-9]{36}(?![A-Za-z0-9])", b"_"),
    _after(b"whsec", rb"[A-Za-z0-9+/=]{24,}", b"_"),  # Stripe webhook secret
    _after(b"gsk", rb"[A-Za-z0-9]{40,}", b"_"),  # Groq
    _after(b"r8", rb"[A-Za-z0-9]{30,}", b"_"),  # Replicate
    _after(b"sbp", rb"[a-f0-9]{40}", b"_"),  # Supabase
    (3, rb"(?<=gh[oprsu]_)(?<![A-Za-z0-9]gh[oprsu]_)[A-Za-z0-9]{30,}"),  # GitHub
    _after(b"github", rb"pat_[A-Za-z0-9_]{22,}", b"_"),
    _after(b"lin", rb"(?:api|oauth)_[A-Za-z0-9]{32,}", b"_"),  # Linear
    (5, rb"(?<=shp(?:at|ss|ca|pa)_)(?<![A-Za-z0-9]shp(?:at|ss|ca|pa)_)[a-fA-F0-9]{32}"),
    (3, rb"(?<=do[opr]_)(?<![A-Za-z0-9]do[opr]_)v1_[a-f0-9]{64}"),  # DigitalOcean
    (2, rb"(?<=[rs]k_)(?<![A-Za-z0-9][rs]k_)(?:live|test)_[A-Za-z0-9]{10,}"),  # Stripe
)
# (a "_" after any other character than a prefix's last is rejected at once)
_UNDERSCORE_KEYS = _keys_after(rb"_(?<=[abcfkmnoprstu8]_)", _UNDERSCORE_RULES)
_UNDERSCORE_PREFIX = (0, *(size for size, _ in _UNDERSCORE_RULES))  # by group number
# keys whose provider prefix ends with "-" (anchored on the "-")
_DASH_RULES = (
    _after(b"sk", rb"[A-Za-z0-9_\-]{20,}", b"-"),  # OpenAI, Anthropic
    (
        5,
        rb"(?<=gl(?:pat|ptt|cbt|imt|oas)-)(?<![A-Za-z0-9]gl(?:pat|ptt|cbt|imt|oas)-)"
        rb"[A-Za-z0-9_\-]{20,}",
    ),  # GitLab
    (4, rb"(?<=gl(?:dt|rt|ft)-)(?<![A-Za-z0-9]gl(?:dt|rt|ft)-)[A-Za-z0-9_\-]{20,}"),
    (4, rb"(?<=xox[abeoprs]-)(?<![A-Za-z0-9]xox[abeoprs]-)[A-Za-z0-9\-]{10,}"),  # Slack
    _after(b"xapp", rb"[0-9]-[A-Za-z0-9\-]{20,}", b"-"),
    _after(b"GOCSPX", rb"[A-Za-z0-9_\-]{24,}", b"-"),  # Google OAuth client secret
    _after(b"pypi", rb"AgE[A-Za-z0-9_\-]{50,}", b"-"),
    _after(b"PMAK", rb"[a-f0-9]{24}-[a-f0-9]{34}", b"-"),  # Postman
    _after(b"pplx", rb"[A-Za-z0-9]{40,}", b"-"),  # Perplexity
    _after(b"xai", rb"[A-Za-z0-9]{60,}", b"-"),
    _after(b"django", rb"insecure-[^\s\"'`]{30,}", b"-"),  # Django SECRET_KEY
)
_DASH_KEYS = _keys_after(rb"-(?<=[abeikoprstxKX]-)", _DASH_RULES)  # not "415-555"
_DASH_PREFIX = (0, *(size for size, _ in _DASH_RULES))
_DASH_KIND = ("", *(["api_key"] * (len(_DASH_RULES) - 1)), "secret")  # the last: Django
_A_KEYS = re.compile(  # AWS access key ids, Google API keys, Twilio account SIDs
    rb"A(?<![A-Za-z0-9]A)(?:[KS]IA[0-9A-Z]{16}|Iza[0-9A-Za-z_\-]{35}|C[0-9a-f]{32})"
    rb"(?![A-Za-z0-9_\-])"
)
_S_KEYS = re.compile(  # Twilio API key SIDs, SendGrid
    rb"S(?<![A-Za-z0-9]S)(?:K[0-9a-f]{32}(?![A-Za-z0-9])|G\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43})"
)
_DATABRICKS = re.compile(rb"dapi(?<![A-Za-z0-9]dapi)[a-f0-9]{32}(?:-[0-9])?(?![A-Za-z0-9])")
# an AWS secret access key written right after its access key id ("AKIA...,secret")
_AWS_PAIR = re.compile(rb"[ \t]{0,3}[,;:|/\t][ \t]{0,3}([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])")
_WEBHOOKS = (  # pattern, its leading literal, the most bytes it can have before "hooks"
    (
        re.compile(rb"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/\-]{20,}"),
        b"hooks.slack.com/",
        0,
    ),
    (
        re.compile(rb"discord(?:app)?\.com/api/webhooks/[0-9]{15,20}/[A-Za-z0-9_\-]{40,}"),
        b"discord",
        len(b"discordapp.com/api/web"),
    ),
)
_HOOKS = re.compile(rb"hooks")  # (the regex engine finds a short literal faster than find)
_URL_CREDENTIALS = re.compile(rb"://[^\s:/?#@\[\]\"'<>]{0,64}:([^\s/?#@\"'<>]{1,128})@")

# --- keyword-based detectors, matched on the lower-cased view ----------------------------

_AUTH_HEADER = re.compile(
    rb"authorization\\?[\"']?[ \t]{0,3}[:=][ \t]{0,3}\\?[\"']?"
    rb"(?:(bearer|basic|token|digest|negotiate|ntlm|apikey|api-key|sso-key)[ \t]+)?"
    rb"([a-z0-9._~+/=\-_]+)"
)
_BEARER = re.compile(rb"bearer(?<![a-z0-9_]bearer)[ \t]+([a-z0-9._~+/\-_]{16,}=*)")
# Keywords that introduce a secret. "pass" covers password, passwd, passphrase, passcode,
# Passwort and mot de passe; the value rules decide.
_SECRET_KEYWORDS = (b"key", b"secret", b"token", b"pass", b"pwd")
_PASSWORD_KEYWORDS = frozenset({b"pass", b"pwd"})
_PASSWORD_KEYWORDS_SCAN = (b"pass",)  # "password x" (no ":" or "=")
_SECRET_KEYWORD_PATTERNS = tuple((k, re.compile(re.escape(k))) for k in _SECRET_KEYWORDS)
_PASSWORD_KEYWORD_PATTERNS = tuple((k, re.compile(re.escape(k))) for k in _PASSWORD_KEYWORDS_SCAN)
_IS = re.compile(rb" is ")  # (see _HOOKS)
_SECRET_SCAN = 256  # value characters checked per keyword; longer values are still redacted
# after a keyword: a suffix such as "_id", an optional closing quote, ":" or "=", an optional
# opening quote, then the value (token-like for keys, almost anything for passwords)
_ASSIGN = rb"([a-z0-9_\-?]{0,24})\\?[\"']?[ \t]{0,3}(?::=|=>|->|[:=])[ \t]{0,3}(\\?[\"'`])?"
# "my password is x", "the token was x", "password x" (the verb is optional for passwords)
_PHRASE = (
    rb"([a-z0-9_\-?]{0,24})[ \t]{1,3}((?:is|was|ist|est|es)[ \t]{1,3}:?[ \t]{0,3})?(\\?[\"'`])?"
)
# one call for both: an assignment (groups 1-2), else a phrase (groups 3-5)
_ASSIGN_OR_PHRASE = re.compile(_ASSIGN + b"|" + _PHRASE)
_TOKEN_VALUE = re.compile(rb"[^\s\"'`,;&<>(){}\[\]=\\\x00]{1,%d}={0,2}" % _SECRET_SCAN)
_TOKEN_REST = re.compile(rb"[^\s\"'`,;&<>(){}\[\]=\\\x00]*={0,2}")
_PASSWORD_VALUE = re.compile(rb"[^\s\"'`,;\\\x00]{1,%d}" % _SECRET_SCAN)
_PASSWORD_REST = re.compile(rb"[^\s\"'`,;\\\x00]*")
_QUOTED_MAX = 512
# keyword suffixes naming something other than the secret ("token_type", "password_url")
_NOT_SECRET_SUFFIX = re.compile(
    rb"url|uri|endpoint|polic|reset|length|len\b|min|max|type|name|field|label|hint|path|file"
    rb"|format|prefix|header|rotat|expir|ttl|count|size|version|mode|usage|limit|strength"
    rb"|manag|store|provider|service|class|algo|less|izer|board|word_?protect"
)
_NOT_SECRET_ID = re.compile(rb"(?:^|[_\-])ids?$")  # key_id, token_id (not secret_id)
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_.~=-")
_IDENTIFIER_PART = r"(?:[A-Z]?[a-z]+(?:[A-Z][a-z]+)*|[A-Z]{1,6}|[0-9]{1,4})"
_IDENTIFIER = re.compile(rf"{_IDENTIFIER_PART}(?:[\-_./:]{_IDENTIFIER_PART})*")
_ALL_CAPS_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")  # YOUR_API_KEY, ACCESS_TOKEN
_MASK_CHARS = "*xX.-_#•"
_VOWELS = frozenset("aeiouy")

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
_IBAN_COUNTRY_DIGITS = {country: country.translate(_IBAN_DIGITS) for country in _IBAN_LENGTHS}


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
    version: str = "2"  # detection rules; reported with every finding

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
        if spans:  # merged as by _merge (inlined: no list of merged spans is built)
            spans.sort(key=None if self._extra else _START)
            priority = _PRIORITY.get
            cur_start, cur_end, cur_kind = spans[0]
            for start, end, kind in spans[1:]:
                if start < cur_end:
                    if end > cur_end:
                        cur_end = end
                    if priority(kind, -1) < priority(cur_kind, -1):
                        cur_kind = kind
                else:
                    pieces += (text[last:cur_start], placeholders[cur_kind])
                    counts[cur_kind] = counts.get(cur_kind, 0) + 1
                    last = cur_end
                    cur_start, cur_end, cur_kind = start, end, kind
            pieces += (text[last:cur_start], placeholders[cur_kind])
            counts[cur_kind] = counts.get(cur_kind, 0) + 1
            last = cur_end
        pieces.append(text[last:])
        if truncated:
            pieces.append(placeholders[TRUNCATED_KIND])
            counts[TRUNCATED_KIND] = 1
        return "".join(pieces), counts

    def find_kinds(self, text: str) -> set[str]:
        """Return the kinds found in ``text``, without building the redacted copy.

        The result equals the keys of ``redact_text(text)[1]``: each kind that would be
        redacted (overlapping matches count under the kind that wins the merge), plus
        ``"truncated"`` when ``text`` is longer than ``max_text_length``. Meant for cheap
        checks such as "does this user id contain PII?".
        """
        truncated = len(text) > self._max
        if truncated:
            text = text[: self._max]
        kinds = {kind for _, _, kind in _merge(self._scan(text), by_start=not self._extra)}
        if truncated:
            kinds.add(TRUNCATED_KIND)
        return kinds

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
        len_extra = len(spans)
        if len(text) < 6:  # shorter than any built-in match ("a@b.co")
            return spans
        private_key, email, api_key, jwt, bearer, secret, ip, card, iban, phone = self._flags
        # Every detector is gated by a fast test on ``text`` (membership of one character is
        # a memchr). Matching runs on ``view``: one byte per code point (non-ASCII -> "?"),
        # so offsets equal those in ``text``.
        view: _View = text.encode("ascii", "replace")  # a copy to blank in, if needed
        digit = _has_digit(text)
        # Whole tokens are found first and blanked (NUL bytes) for the detectors that follow:
        # a key block or a JWT is not searched for keys, a key is not re-examined as a
        # secret value, its digits are not numbers.
        if private_key and "-" in text and (begin := view.find(b"-----BEGIN")) != -1:
            _find_private_keys(view, spans, begin)
        if jwt and "J" in text:
            spans.extend((m.start(), m.end(), "jwt") for m in _matches(_JWT, view, b"eyJ"))
        if len(spans) > len_extra:
            view = bytearray(view)
            _blank(view, spans, len_extra)
        blanked = len(spans)
        if email and "@" in text:
            _find_emails(text, view, spans)
        if api_key:
            _find_api_keys(text, view, digit, spans)
        if len(spans) > blanked:
            if not isinstance(view, bytearray):
                view = bytearray(view)
            _blank(view, spans, blanked)
        if secret and ":" in text:
            _find_url_credentials(text, view, spans)
        if bearer or secret:
            _find_keyword_secrets(text, view, bearer, secret, digit, spans)
        if ip and ":" in text:
            _find_ipv6(text, view, spans)
        if (card or iban or phone or ip) and digit:
            shape = view.translate(_SHAPE)  # every digit -> "0": patterns start with a literal
            _find_numbers(text, view, shape, iban, card, phone, ip and "." in text, spans)
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


def _merge(spans: list[_Span], *, by_start: bool = False) -> list[_Span]:
    """Sort spans and merge overlaps; a merged span takes the highest-priority kind.

    ``by_start``: sort by start only (ten times fewer comparisons than whole tuples), for
    spans of built-in kinds only. The result is the same: spans with the same start overlap
    one another (none is empty), so their order does not change the merged end, and the
    kinds of built-in detectors have distinct priorities. (Extra kinds share the top
    priority: among them, the first in tuple order wins.)
    """
    if not spans:
        return []
    spans.sort(key=_START if by_start else None)
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


def _blank(view: bytearray, spans: list[_Span], first: int) -> None:
    """Overwrite ``spans[first:]`` in ``view`` with NUL bytes, copied from a shared zero
    buffer through a memoryview (faster than slice assignment on the bytearray, and no
    allocation, not even for a key block as long as the text)."""
    zeros = _ZEROS
    size = len(zeros)
    with memoryview(view) as target:
        for start, end, _ in spans[first:]:
            while end - start > size:
                target[start : start + size] = zeros
                start += size
            target[start:end] = zeros[: end - start]


_ZEROS = memoryview(bytes(65536))


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
    if size >= len(_C_LOG_C):
        return -sum(c / size * math.log2(c / size) for c in Counter(s).values())
    # log2(n) - sum(c * log2(c)) / n, with c * log2(c) looked up
    return math.log2(size) - sum(map(_C_LOG_C.__getitem__, map(s.count, set(s)))) / size


_C_LOG_C = [0.0] + [c * math.log2(c) for c in range(1, 1024)]


def _word_before(text: str, pos: int, *, skip_number_words: bool = True) -> str:
    """The word (lower case, no punctuation) directly before ``pos``; with
    ``skip_number_words``, the one before "no."/"number"/"#" ("order no. 123")."""
    # the last two words, and the rest (a conditional is cheaper than max())
    words = text[pos - 32 if pos > 32 else 0 : pos].rsplit(None, 2)
    if not words:
        return ""
    word = words[-1].lower().strip(_LABEL_STRIP)
    if skip_number_words and word in _NUMBER_WORDS and len(words) > 1:
        word = words[-2].lower().strip(_LABEL_STRIP)
    return word


# --- value heuristics -----------------------------------------------------------------------


def _is_placeholder(value: str) -> bool:
    """``YOUR_API_KEY``, ``********``, ``<token>``, ``${SECRET}``, ``xxxx``..."""
    lower = value.lower()
    if (
        "your" in lower
        or "xxxx" in lower
        or "***" in value
        or "<" in value
        or "${" in value
        or "{{" in value
        or "placeholder" in lower
        or "redacted" in lower
    ):
        return True
    if value.isupper() and "_" in value and _ALL_CAPS_NAME.fullmatch(value) is not None:
        return True
    # at most two distinct characters ("aaaa", "abab"), or only mask characters
    rest = value.replace(value[0], "") if value else ""
    return not rest or not rest.replace(rest[0], "") or not value.strip(_MASK_CHARS)


def _is_identifier(value: str) -> bool:
    """Words in CamelCase, kebab-, snake- or path-case: ``TokenManager``, ``signing-key-2024``."""
    return _IDENTIFIER.fullmatch(value) is not None


def _looks_token(value: str, *, quoted: bool) -> bool:
    """A generic secret value (after ``token=``, ``api_key:``...): long, varied, not a name."""
    if len(value) < 16:
        return False
    if quoted:
        if any(c.isspace() for c in value):
            return False
    elif not _TOKEN_CHARS.issuperset(value):
        return False
    return (
        _char_classes(value) >= 2
        and _high_entropy(value)
        and not _is_placeholder(value)
        and not _is_identifier(value)
    )


def _high_entropy(value: str) -> bool:
    """At least 3 bits per character (20+ distinct characters: taken as such)."""
    distinct = len(set(value))
    if distinct >= 20:
        return True
    if distinct < 8:
        return False
    size = len(value)
    # enough distinct characters for 3 bits whatever their counts: no need to count them
    if size < len(_SURELY_VARIED) and distinct >= _SURELY_VARIED[size]:
        return True
    return _entropy(value) >= 3.0


def _min_entropy(size: int, distinct: int) -> float:
    """The lowest entropy of ``size`` characters of which ``distinct`` differ: all but one
    occur once (entropy is Schur-concave, so the most uneven counts give the least)."""
    rest = size - distinct + 1
    return math.log2(size) - rest * math.log2(rest) / size


# _SURELY_VARIED[n]: the fewest distinct characters among n that always give 3+ bits per
# character (with a margin far above rounding errors; 20 where only more would)
_SURELY_VARIED = [
    next((d for d in range(8, min(n + 1, 20)) if _min_entropy(n, d) >= 3.0 + 1e-6), 20)
    for n in range(40)
]


def _looks_password(value: str, *, strict: bool) -> bool:
    """A password value; ``strict`` when no ``:``, ``=`` or verb introduced it."""
    if len(value) < 8 or _is_placeholder(value) or "://" in value:
        return False
    if strict:  # "password Summer2024!": a letter and a digit or a symbol, or a passphrase
        return any(c.isalpha() for c in value) and (
            any(c.isdigit() or (not c.isalnum() and c not in "-.'") for c in value)
            or value.count("-") >= 3
        )
    return _char_classes(value, symbols=True) >= 2


def _looks_bearer(token: str) -> bool:
    if _is_placeholder(token):
        return False
    if _char_classes(token) >= 2:
        return True
    letters = token.rstrip("=")
    if len(letters) < 20 or not letters.isalpha():
        return False
    # one letter case only: random (few vowels, or high entropy), not an English word
    vowels = sum(c in _VOWELS for c in letters.lower())
    return vowels < 0.3 * len(letters) or _entropy(letters) >= 3.6


# --- detectors ------------------------------------------------------------------------------


_FIND_LIMIT = 6
_FIND_ANCHOR = 8  # anchors this long are found faster by ``find`` than by the regex engine
_ENGINE_SCAN = 1024  # in this many bytes or more, the engine finds a shorter literal faster


def _matches(
    pattern: re.Pattern[bytes], buf: _View, anchor: bytes, pos: int = 0
) -> Iterable[re.Match[bytes]]:
    """``pattern.finditer(buf, pos)`` for a pattern that starts with the literal ``anchor``.

    The regex engine looks for a pattern's leading literal with a simple loop, faster than
    ``find`` for a literal of a few bytes in a long buffer; ``find`` is faster for one byte
    (memchr) and for long literals (it skips ahead by up to their length), and cheaper to
    call. So a one-byte anchor is located with ``find`` and the engine starts at its first
    occurrence (a text without it costs almost nothing); a short anchor in a long buffer is
    left to the engine; otherwise the anchor is located with ``find`` and matched in place
    while it stays rare, then the engine scans (the cost is linear either way).
    """
    if len(anchor) == 1:
        pos = buf.find(anchor, pos)
        return () if pos == -1 else pattern.finditer(buf, pos)
    if len(anchor) < _FIND_ANCHOR and len(buf) - pos >= _ENGINE_SCAN:
        return pattern.finditer(buf, pos)
    found: list[re.Match[bytes]] = []
    pos = buf.find(anchor, pos)
    tries = 0
    while pos != -1:
        tries += 1
        if tries > _FIND_LIMIT:  # not that rare after all
            found.extend(pattern.finditer(buf, pos))
            break
        m = pattern.match(buf, pos)
        if m is None:
            pos = buf.find(anchor, pos + 1)
        else:
            found.append(m)
            pos = buf.find(anchor, m.end())
    return found


def _find_private_keys(view: _View, spans: list[_Span], pos: int = 0) -> None:
    while (begin := _search(_PEM_BEGIN, view, b"-----BEGIN", pos)) is not None:
        end = _search(_PEM_END, view, b"-----END", begin.end())
        if end is None:  # unterminated block (e.g. cut off): redact through the end
            spans.append((begin.start(), len(view), "private_key"))
            return
        spans.append((begin.start(), end.end(), "private_key"))
        pos = end.end()


def _search(
    pattern: re.Pattern[bytes], buf: _View, anchor: bytes, pos: int
) -> re.Match[bytes] | None:
    """``pattern.search(buf, pos)`` for a pattern that starts with the long literal
    ``anchor``, located with ``find`` (which skips ahead by up to its length)."""
    while (pos := buf.find(anchor, pos)) != -1:
        m = pattern.match(buf, pos)
        if m is not None:
            return m
        pos += 1
    return None


def _find_emails(text: str, view: _View, spans: list[_Span]) -> None:
    ascii_text = text.isascii()
    found: Iterable[re.Match[bytes] | re.Match[str]] | None
    if ascii_text:
        found = _matches(_EMAIL_AT, view, b"@")
    else:  # ASCII domains on the byte view, others (IDN) with the Unicode pattern
        found = _emails_mixed(text, view)
        if found is None:  # many "@": the Unicode pattern scans for them faster
            found = _EMAIL_AT_UNICODE.finditer(text)
    size = len(text)
    for m in found:
        at, end = m.span()
        if end - at > 254:
            continue
        start = _email_start(text, view, at, ascii_text)
        if start is None:
            continue
        if end + 1 < size and text[end] == ":" and not text[end + 1].isspace():
            continue  # "git@github.com:org/repo.git": an SSH remote, not an address
        if start and text[start - 1] == ":" and _in_url_authority(text, start):
            continue  # "scheme://user:password@host": URL credentials, found as a secret
        spans.append((start, end, "email"))


def _emails_mixed(text: str, view: _View) -> list[re.Match[bytes] | re.Match[str]] | None:
    """The address candidates at each "@" of ``view``, or None if there are more than
    ``_FIND_LIMIT`` of them."""
    found: list[re.Match[bytes] | re.Match[str]] = []
    size = len(view)
    at = view.find(b"@")
    for _ in range(_FIND_LIMIT):
        if at == -1:
            return found
        m: re.Match[bytes] | re.Match[str] | None = _EMAIL_AT.match(view, at)
        if m is None or ((end := m.end()) < size and view[end] == 0x3F):  # "?": maybe a
            m = _EMAIL_AT_UNICODE.match(text, at)  # non-ASCII letter
        if m is not None:
            found.append(m)
        at = view.find(b"@", at + 1)
    return found if at == -1 else None


def _email_start(text: str, view: _View, at: int, ascii_text: bool) -> int | None:
    """Start of the local part that ends at ``at`` (the "@"), or None."""
    if text[at - 1] == '"':  # quoted local part: "john doe"@example.org (maybe JSON-escaped)
        quote = text.rfind('"', max(0, at - 66), at - 1)
        if quote == -1 or "\n" in text[quote:at]:
            return None
        if quote and text[quote - 1] == "\\":
            quote -= 1
        return quote
    window = view[at - 65 if at > 65 else 0 : at]
    start = at - (len(window) - len(window.rstrip(_EMAIL_LOCAL)))
    if not ascii_text and start and view[start - 1] == 0x3F:  # "?": maybe a non-ASCII letter
        # internationalised local part (letters of any script): matched backwards
        local = _EMAIL_LOCAL_REVERSED.match(text[max(0, at - 65) : at][::-1])
        start = at - (local.end() if local is not None else 0)
    if at - start > 64:
        return None
    while start < at and text[start] in _EMAIL_LEADING:
        start += 1
    return start if start < at else None


def _in_url_authority(text: str, pos: int) -> bool:
    window = text[max(0, pos - 200) : pos]
    scheme = window.rfind("://")
    return scheme != -1 and len(window[scheme:].split()) == 1  # no space since the scheme


def _varied(body: str) -> bool:
    """A key body, not a placeholder such as ``ghp_XXXX...``."""
    return _char_classes(body) >= 2 and _eight_distinct(body)


def _eight_distinct(s: str) -> bool:
    """``len(set(s)) >= 8``; a random key has them in its first 12 characters already."""
    return len(set(s[:12])) >= 8 or len(set(s)) >= 8


def _find_api_keys(text: str, view: _View, digit: bool, spans: list[_Span]) -> None:
    # every pattern starts with a literal, so running it is as cheap as a substring gate
    # a key starts with its provider prefix, just before the separator the pattern is
    # anchored on (no letter or digit precedes it); the group that matched tells which
    if "_" in text:
        for m in _matches(_UNDERSCORE_KEYS, view, b"_"):
            sep, end = m.span()
            if _eight_distinct(text[sep + 1 : end]):  # not "ghp_XXXX..."
                spans.append((sep - _UNDERSCORE_PREFIX[m.lastindex], end, "api_key"))  # type: ignore[index]
    if "-" in text:
        for m in _matches(_DASH_KEYS, view, b"-"):
            sep, end = m.span()
            if _varied(text[sep + 1 : end]):
                rule = m.lastindex
                spans.append((sep - _DASH_PREFIX[rule], end, _DASH_KIND[rule]))  # type: ignore[index]
    if "A" in text:
        for m in _matches(_A_KEYS, view, b"A"):
            start, end = m.span()
            if not _eight_distinct(text[start:end]):
                continue
            spans.append((start, end, "api_key"))
            if view[start + 2] == 0x49:  # "AKIA"/"ASIA": maybe followed by its secret key
                pair = _AWS_PAIR.match(view, end)
                if pair is not None and _char_classes(text[pair.start(1) : pair.end(1)]) >= 3:
                    spans.append((pair.start(1), pair.end(1), "api_key"))
    if "S" in text:
        for m in _matches(_S_KEYS, view, b"S"):
            if _varied(text[m.start() + 2 : m.end()]):
                spans.append((m.start(), m.end(), "api_key"))
    if digit:  # a Databricks token is 32 hex digits
        spans.extend((m.start(), m.end(), "api_key") for m in _matches(_DATABRICKS, view, b"dapi"))
    # both webhook URLs hold "hooks", at most 22 bytes after their start
    if "/" in text and (hooks := _HOOKS.search(view)) is not None:
        for pattern, anchor, lead in _WEBHOOKS:
            first = hooks.start() - lead
            for m in _matches(pattern, view, anchor, first if first > 0 else 0):
                start = m.start()
                for scheme in (b"https://", b"http://"):
                    if view.startswith(scheme, start - len(scheme)):
                        start -= len(scheme)
                        break
                spans.append((start, m.end(), "api_key"))


def _find_url_credentials(text: str, view: _View, spans: list[_Span]) -> None:
    for m in _matches(_URL_CREDENTIALS, view, b"://"):
        start, end = m.span(1)
        value = text[start:end]
        if not _is_placeholder(value) and value[0] != "$":
            spans.append((start, end, "secret"))


def _find_keyword_secrets(
    text: str, view: _View, bearer: bool, secret: bool, digit: bool, spans: list[_Span]
) -> None:
    assignment = ":" in text or "=" in text  # "key: ...", "Authorization: ..."
    lower = view.lower()
    if bearer:
        if assignment:
            for m in _matches(_AUTH_HEADER, lower, b"authorization"):
                start, end = m.span(2)
                token = text[start:end]
                if _is_placeholder(token):
                    continue
                if m.group(1) is not None or (len(token) >= 16 and _char_classes(token) >= 2):
                    spans.append((start, end, "bearer_token"))
        for m in _matches(_BEARER, lower, b"bearer"):
            start, end = m.span(1)
            if _looks_bearer(text[start:end]):
                spans.append((start, end, "bearer_token"))
    if not secret:
        return
    # without ":" or "=", only "password x" and "the token is x" (a value with a digit, as a
    # rule: the test keeps prose fast) can introduce a secret
    keywords = (
        _SECRET_KEYWORD_PATTERNS
        if assignment or (digit and _IS.search(lower) is not None)
        else _PASSWORD_KEYWORD_PATTERNS
    )
    if len(lower) < _ENGINE_SCAN:
        hits = []
        for keyword, _ in keywords:
            pos = lower.find(keyword)
            while pos != -1:
                hits.append((pos, keyword))
                pos = lower.find(keyword, pos + 1)
    else:  # faster (see _matches); no keyword overlaps itself, so finditer misses none
        hits = [(m.start(), k) for k, pattern in keywords for m in pattern.finditer(lower)]
    hits.sort()
    covered = 0  # keywords inside an already redacted value are skipped (keeps this linear)
    for pos, keyword in hits:
        if pos < covered:
            continue
        found = _secret_value(text, lower, pos + len(keyword), keyword)
        if found is not None:
            spans.append((found[0], found[1], "secret"))
            covered = found[1]


def _secret_value(text: str, lower: _View, pos: int, keyword: bytes) -> tuple[int, int] | None:
    """The span of the secret value introduced by the keyword that ends at ``pos``."""
    password = keyword in _PASSWORD_KEYWORDS
    m = _ASSIGN_OR_PHRASE.match(lower, pos)
    if m is None:
        return None
    suffix, quote, phrase_suffix, verb, phrase_quote = m.groups()
    phrase = suffix is None  # the assignment's suffix group always takes part in it
    strict = False
    if phrase:
        suffix, quote = phrase_suffix, phrase_quote
        if verb is None and not password:
            return None
        strict = verb is None and quote is None
    if suffix and (
        _NOT_SECRET_SUFFIX.search(suffix) is not None
        or (keyword in (b"key", b"token") and _NOT_SECRET_ID.search(suffix) is not None)
    ):
        return None
    start = m.end()
    if start < len(lower) and lower[start] == 0:
        return None  # already found (a key, a JWT...)
    if quote:  # the value runs to the closing quote
        close = lower.find(quote, start, start + _QUOTED_MAX)
        if close != -1 and lower.find(b"\n", start, close) == -1:
            value = text[start:close]
            ok = (
                _looks_password(value, strict=False)
                if password
                else _looks_token(value, quoted=True)
            )
            return (start, close) if ok else None
    value_match = (_PASSWORD_VALUE if password else _TOKEN_VALUE).match(lower, start)
    if value_match is None:
        return None
    end = value_match.end()
    value = text[start:end]
    if strict or phrase:
        check = value.rstrip(".,;:!?)")
        end = start + len(value.rstrip(".,;:)"))
    else:
        check = value.rstrip(".")
        end = start + len(check)
    ok = _looks_password(check, strict=strict) if password else _looks_token(check, quoted=False)
    if not ok:
        return None
    if value_match.end() - start >= _SECRET_SCAN:  # long value: redact all of it
        rest = (_PASSWORD_REST if password else _TOKEN_REST).match(lower, value_match.end())
        end = rest.end() if rest is not None else value_match.end()
    return start, end


def _find_ipv6(text: str, view: _View, spans: list[_Span]) -> None:
    pos = view.find(b":")  # memchr, then the regex engine
    if pos == -1:
        return  # every ":" was inside a key or token found before
    while (hint := _IPV6_HINT.search(view, pos)) is not None:
        at = hint.start()
        window = view[at - 40 if at > 40 else 0 : at]
        start = at - (len(window) - len(window.rstrip(_HEX_COLON)))
        tail = _IPV6_TAIL.match(view, at)
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
    head, double, tail = address.partition("::")
    if "::" in tail or len(address) - address.count(":") < 4:
        return False  # two "::", or a trivial form such as "::1" or slice syntax ("1::2")
    parts = (head.split(":") if head else []) + (tail.split(":") if tail else [])
    size = len(parts)
    if parts and "." in parts[-1]:  # an IPv4 tail: ::ffff:192.0.2.1
        v4 = parts.pop()
        if _IPV4.fullmatch(v4) is None:
            return False
        size += 1
    if size < 2 or (parts and _HEX_GROUPS.fullmatch(":".join(parts)) is None):
        return False  # not groups of 1-4 hex digits
    return size <= 7 if double else size == 8


def _ipv4_span(text: str, start: int, end: int) -> bool:
    if _IPV4.fullmatch(text, start, end) is None:
        return False
    if start >= 2 and text[start - 1] == "/" and text[start - 2] in _ALNUM:
        return False  # a product token such as "Chrome/120.0.0.0"
    word = _word_before(text, start, skip_number_words=False)
    if word in _VERSION_WORDS or word.endswith("version"):
        return False  # "version 1.2.3.4", "OID 2.5.4.3", "AssemblyVersion(\"1.0.0.0\")"
    after = text[end : end + 1]
    if after == "-":
        return not text[end + 1 : end + 2].isalpha()  # "1.0.0.0-SNAPSHOT", "2.1.0.4-rc1"
    return after != " " or not text[end + 1 : end + 10].lower().startswith(_VERSION_NEXT)


def _find_numbers(
    text: str,
    view: _View,
    shape: _View,
    iban: bool,
    card: bool,
    phone: bool,
    ip: bool,
    spans: list[_Span],
) -> None:
    """IBANs, IPv4 addresses, payment cards (13-19 digits), phone numbers (8-17 digits)."""
    pos = 0
    if len(shape) >= _ENGINE_SCAN:  # memchr: the regex engine starts at the first digit
        pos = shape.find(b"0")
        if pos == -1:
            return  # every digit was inside a key or token found before
    append = spans.append
    while True:
        for m in _NUMBERS.finditer(shape, pos):
            group = m.lastindex
            if group is None:  # an IBAN's check digits: the match may run past the IBAN
                start = m.start()
                account = _iban_span(text, shape, start - 2) if iban else None
                if account is not None:
                    append((account[0], account[1], "iban"))
                pos = start + 1 if account is None else account[1]
                break  # scan again from there
            if group != 1:  # a card or phone number
                chunk = m.group()  # the candidate's shape: b"0000 0000 0000 0000"
                start = m.start()
                digits = chunk.count(b"0")
                if card and digits >= 13:
                    hit = _card_in(text, view, chunk, start, digits)
                    if hit is not None:
                        append((hit[0], hit[1], "payment_card"))
                        if hit[1] < start + len(chunk):  # maybe another card follows
                            pos = hit[1]
                            break
                        continue
                if phone and digits <= 17:
                    found = _phone_span(text, chunk, start, start + len(chunk), digits)
                    if found is not None:
                        append(found)
            elif ip:
                start, end = m.span()
                if _ipv4_span(text, start, end):
                    append((start, end, "ip_address"))
        else:
            return


# card numbers as written: compact, groups of four with one kind of separator, 4-6-5 (Amex)
# and 4-6-4 (Diners)
_CARD_LAYOUT = re.compile(
    rb"0{13,19}|0{4}([ \-./])0{4}\1(?:0{4}\1)0{4}(?:\1?0{1,3})?|0{4}([ \-./])0{6}\2?0{4,5}"
)
_CARD_SEPARATORS = b" -./"
_GROUPS = re.compile(rb"(0+)([^0]*)")  # digit groups and the separator after each


def _card_in(
    text: str, view: _View, chunk: bytes, start: int, digits: int
) -> tuple[int, int] | None:
    """The widest run of whole digit groups in a candidate that is a valid card number.

    Grouped numbers use one kind of separator and groups of 3+ digits (only the last group
    may be shorter; with dots or slashes, only the usual layouts), which keeps this short.
    """
    end = start + len(chunk)
    layout = _CARD_LAYOUT.fullmatch(chunk) if digits <= 19 else None
    if layout is not None:
        number = view[start:end].translate(None, _CARD_SEPARATORS)
        # grouped as a card ("4111 1111 1111 1111"): no need to look for an "EAN" label
        valid = _valid_card(text, start, number, labelled=digits == len(chunk))
        return (start, end) if valid else None
    parts = _GROUPS.findall(chunk)
    sizes = [len(group) for group, _ in parts]
    offsets = [0] * len(parts)
    for i in range(1, len(parts)):
        offsets[i] = offsets[i - 1] + sizes[i - 1] + len(parts[i - 1][1])
    count = len(parts)
    best: tuple[int, int] | None = None
    remaining = digits  # in the groups from ``first`` on
    for first in range(count):
        if first:
            remaining -= sizes[first - 1]
            if remaining < 13:
                break  # too few digits left for a card
            if parts[first - 1][1] in (b".", b"/"):
                continue  # after a decimal point or a slash: part of another number
        separator = parts[first][1]
        total = 0
        for last in range(first, count):
            if last > first and (len(separator) != 1 or parts[last - 1][1] != separator):
                break  # one kind of single-character separator
            total += sizes[last]
            if total > 19:
                break
            if total >= 13 and (last + 1 == count or parts[last][1] not in (b".", b"/")):
                s0, e0 = start + offsets[first], start + offsets[last] + sizes[last]
                if (
                    (best is None or e0 - s0 > best[1] - best[0])
                    and (
                        last == first
                        or separator not in (b".", b"/")
                        or _CARD_LAYOUT.fullmatch(chunk, offsets[first], e0 - start) is not None
                    )
                    and _valid_card(text, s0, view[s0:e0].translate(None, _CARD_SEPARATORS))
                ):
                    best = (s0, e0)
            if sizes[last] < 3:
                break
    return best


# Issuer prefix and length of each card network (13-digit Visa: checked for context by the
# caller)
_CARD_NETWORK = re.compile(
    rb"4(?:[0-9]{12}|[0-9]{15}|[0-9]{18})"  # Visa: 13, 16 or 19 digits
    rb"|5[1-5][0-9]{14}"  # Mastercard 51-55
    rb"|5[0678][0-9]{14,17}"  # Maestro 50, 56-58
    rb"|220[0-4][0-9]{12,15}"  # Mir 2200-2204
    rb"|(?:222[1-9]|22[3-9][0-9]|2[3-6][0-9]{2}|27[01][0-9]|2720)[0-9]{12}"  # Mastercard 2-series
    rb"|3[47][0-9]{13}"  # Amex
    rb"|35(?:2[89]|[3-8][0-9])[0-9]{12,15}"  # JCB 3528-3589
    rb"|3[689][0-9]{12,17}|30[0-5][0-9]{11,16}|3095[0-9]{10,15}"  # Diners
    rb"|6[0-9]{15,18}"  # Discover, UnionPay, Maestro, RuPay
    rb"|8[12][0-9]{14}"  # UnionPay / RuPay 81-82
)
# Luhn: every second digit from the right is doubled (and reduced mod 9)
_LUHN_DOUBLE = bytes.maketrans(b"0123456789", b"0246813579")


def _valid_card(text: str, start: int, number: _View, *, labelled: bool = True) -> bool:
    """``number`` (its digits as bytes, written at ``start`` in ``text``) belongs to a card
    network, passes Luhn and is not labelled as another number; 13 digits need a card word.
    Anything but 13-19 ASCII digits (a parenthesis used as a separator...) is no card."""
    if _CARD_NETWORK.fullmatch(number) is None:
        return False
    # digit bytes are 48 + value
    if (sum(number[-1::-2]) + sum(number[-2::-2].translate(_LUHN_DOUBLE)) - 48 * len(number)) % 10:
        return False
    if labelled and _word_before(text, start) in _ID_WORDS:  # "EAN 4006381333931", "IMEI"
        return False
    # 13-digit numbers are far more often EAN-13 barcodes than (old) Visa cards
    return (
        len(number) != 13
        or _CARD_CONTEXT.search(text[start - 40 if start > 40 else 0 : start].lower()) is not None
    )


def _iban_span(text: str, shape: _View, start: int) -> tuple[int, int] | None:
    country = text[start : start + 2].upper()
    length = _IBAN_LENGTHS.get(country)
    if length is None:
        return None
    body = _IBAN_BODY[length].match(shape, start)
    if body is None:
        return None  # shorter than this country's IBAN length
    end = body.end()
    if end < len(text) and text[end] in _ALNUM:
        return None  # the cut falls inside a longer token
    iban = text[start:end].replace(" ", "").replace("-", "").upper()  # (faster than translate)
    # mod 97 of the account part, the country (letters as two digits) and the check digits
    account = iban[4:]
    if not account.isdigit():
        account = account.translate(_IBAN_DIGITS)
    if int(account + _IBAN_COUNTRY_DIGITS[country] + iban[2:4]) % 97 != 1:
        return None
    return start, end


# byte values: ``int in bytes`` is a memchr, ``bytes in bytes`` first fails to read the needle
# as an int (an exception raised and cleared), eight times slower
_SLASH, _DOT, _CLOSE = ord("/"), ord("."), ord(")")


def _phone_span(text: str, chunk: bytes, start: int, end: int, digits: int) -> _Span | None:
    """The phone number in a candidate (``chunk`` is its shape), or None."""
    lead = text[start - 1] if start else ""
    if (
        lead == "/"
        or lead == "-"
        or (  # part of a path, a range or a longer number
            end + 1 < len(text) and text[end] in ".,/-" and text[end + 1] in _DIGITS
        )
    ):
        return None
    separators = chunk.translate(None, b"0")
    if lead == "+":  # international: +CC, separators optional
        if digits > 15 or text[start] == "0" or _SLASH in separators:
            return None
        if start >= 2 and (text[start - 2] in _WORD or text[start - 2] == "+"):
            return None
        if separators == b".":
            return None  # a signed decimal such as "+48.858400"
        return start - 1, end, "phone"
    if not separators:  # a bare run of digits is an id, not a phone number
        return None
    trunk = text[start] == "0"
    if trunk and text[start + 1] == "0":  # 00 international prefix
        return (start, end, "phone") if digits >= 10 and text[start + 2] != "0" else None
    if digits > 12:
        return None
    sizes = list(map(len, chunk.translate(_DIGIT_GROUPS).split()))
    if max(sizes) > 8 or sizes[0] > (6 if trunk else 5):
        return None
    if _SLASH in separators and (
        chunk[sizes[0] : sizes[0] + 1] != b"/" or separators.count(b"/") > 1 or not trunk
    ):
        return None  # a slash only after a trunk-prefixed area code: "030/1234567"
    if len(sizes) == 2 and not trunk:
        return None  # two groups without a trunk "0": ZIP+4, decimals, references
    if _DOT in separators and (separators.strip(b".") or not _dotted_phone(sizes, trunk)):
        return None  # decimals ("3.14 2.71"), versions, IPs, dotted numbers ("1.234.567")
    if 4 in sizes and min(sizes) <= 2 and _looks_like_date(text[start:end]):
        return None
    if lead == "(" and _CLOSE in chunk.split(b"(", 1)[0]:
        start -= 1
    if _word_before(text, start) in _ID_WORDS:
        return None  # "order no. 123-456-7890", "tracking 1234 5678 9012"
    return start, end, "phone"


def _dotted_phone(sizes: list[int], trunk: bool) -> bool:
    """Dotted national numbers: 415.555.2671 (US), 01.23.45.67.89 (France)."""
    return sizes == [3, 3, 4] or (sizes == [2, 2, 2, 2, 2] and trunk)


def _looks_like_date(number: str) -> bool:
    groups = _DIGIT_RUN.findall(number)
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
