"""Which argument, key and header names hold secrets.

A name is split into lower-case words (on anything not a letter or digit, and
on camelCase boundaries: ``openaiApiKey``, ``X-API-Key``, ``db_password``).
It names a secret when:

- a word is, or contains, a secret word (``password``, ``passwd``, ``pwd``,
  ``passphrase``, ``secret``, ``credential``, ``apikey``, ``privatekey``...),
  or is ``bearer``, ``cookie``, ``authorization`` or ``auth``;
- its last word is ``token`` or ends with it (``session_token``,
  ``accessToken``, ``X-Auth-Token``) -- but not ``tokens`` (``max_tokens``,
  ``input_tokens``) and not a ``token`` followed by other words
  (``token_count``, ``token_type``);
- its last word is ``key`` (or ``keys``) qualified by the word before it
  (``api_key``, ``private_key``, ``aws_secret_access_key``, ``signing_key``),
  never ``key`` alone (``key``, ``sort_key``, ``cache_key``); the same holds
  for a ``token`` or a qualified ``key`` followed by a word saying it holds
  the value itself (``private_key_pem``, ``token_value``).

Names the host adds with the ``secret_argument_names`` setting match exactly
(case-insensitively), on top of these rules.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from functools import lru_cache

__all__ = ["is_secret_name", "name_words"]

_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")

# a word that is one of these names a secret wherever it stands
_SECRET_WORDS = frozenset({
    "password", "passwords", "passwd", "pwd", "passphrase", "passcode", "secret", "secrets",
    "bearer", "credential", "credentials", "creds", "cookie", "cookies", "authorization",
    "auth", "apikey", "apikeys", "privatekey", "secretkey", "accesskey", "signingkey",
    "sessionkey", "masterkey", "passkey", "jwt",
})
# a word containing one of these names a secret (``dbpassword``, ``clientsecret``)
_SECRET_PARTS = ("password", "passwd", "passphrase", "secret", "credential", "apikey",
                 "privatekey", "authorization", "cookie")
# the word before a final "key" that makes it a secret key
_KEY_QUALIFIERS = frozenset({
    "api", "secret", "private", "access", "signing", "sign", "encryption", "encrypt",
    "decryption", "client", "master", "auth", "session", "license", "licence", "subscription",
    "ssh", "gpg", "pgp", "hmac", "aws", "root", "shared", "service", "account", "app",
    "consumer", "webhook", "crypto", "cipher", "aes", "rsa", "jwt", "token", "password",
    "pass", "admin", "write", "read", "storage", "sas", "vault", "kms", "dek", "kek",
})
# words after a secret word that still name its value ("private_key_pem", "token_value")
_VALUE_SUFFIXES = frozenset({
    "pem", "der", "value", "values", "data", "bytes", "raw", "b64", "base64", "hex", "str",
    "string", "text", "material", "plain", "plaintext", "encoded",
})
_CACHED_LENGTH = 128  # longer names are checked without the cache


def name_words(name: str) -> list[str]:
    """The lower-case words of a name: ``"openaiApiKey"`` -> ``["openai", "api", "key"]``."""
    return [w.lower() for w in _WORDS.findall(name)]


@lru_cache(maxsize=8192)
def _cached(name: str) -> bool:
    return _matches(name)


def _matches(name: str) -> bool:
    words = name_words(name)
    # drop trailing numbers and value words: "token_2", "private_key_pem", "token_value"
    while len(words) > 1 and (words[-1].isdigit() or words[-1] in _VALUE_SUFFIXES):
        words.pop()
    if not words:
        return False
    for word in words:
        if word in _SECRET_WORDS:
            return True
        for part in _SECRET_PARTS:
            if part in word:
                return True
    last = words[-1]
    if last.endswith("token") or last.endswith("pwd"):
        return True
    if last in ("key", "keys") and len(words) > 1:
        before = words[-2]
        return before in _KEY_QUALIFIERS or before.endswith("api")
    return False


def is_secret_name(name: str, extra: Collection[str] = ()) -> bool:
    """``True`` when ``name`` names a secret (the rules above, or one of ``extra``).

    ``extra`` holds lower-case names that match exactly.
    """
    if extra and name.lower() in extra:
        return True
    return _cached(name) if len(name) <= _CACHED_LENGTH else _matches(name)
