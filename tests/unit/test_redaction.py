"""Tests for promptgov.governance.redaction."""

from __future__ import annotations

import copy
import dataclasses
import re
import time
from collections.abc import Callable
from functools import partial

import pytest

from promptgov.governance.redaction import (
    BUILTIN_KINDS,
    DefaultRedactor,
    Finding,
    JSONValue,
    NullRedactor,
    Redactor,
)

R = DefaultRedactor()


def kinds_found(text: str, redactor: DefaultRedactor = R) -> dict[str, int]:
    return redactor.redact_text(text)[1]


def assert_redacted(text: str, kind: str, secret: str, count: int = 1) -> str:
    """``secret`` (a substring of ``text``) is replaced by a ``kind`` placeholder."""
    assert secret in text
    out, counts = R.redact_text(text)
    assert counts == {kind: count}, (text, out, counts)
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out
    return out


def assert_untouched(text: str) -> None:
    assert R.redact_text(text) == (text, {})


# --- e-mail ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("write to john.doe@example.com today", "john.doe@example.com"),
        ("<a.b+tag@mail.sub.example.co.uk>", "a.b+tag@mail.sub.example.co.uk"),
        ("mail: jane_o'brien is JANE-OB@Example.ORG.", "JANE-OB@Example.ORG"),
        ("x" * 50 + " first.last@gmail.com", "first.last@gmail.com"),
    ],
)
def test_email_detected(text: str, secret: str) -> None:
    out = assert_redacted(text, "email", secret)
    assert out.replace("[REDACTED:email]", secret) == text  # only the address is replaced


@pytest.mark.parametrize(
    "address",
    [
        '"john doe"@example.org',  # quoted local part
        '"jane@home"@example.org',
        "josé.garcía@correo.es",  # internationalised local part
        "用户@例子.广告",
        "info@müller-bäckerei.de",  # IDN domain
        "kontakt@xn--mller-kva.de",  # punycode
        "user@mail.xn--p1ai",
        "noah#novak@example.com",
        "o'brien@example.ie",
        "hello@studio.photography",
    ],
)
def test_email_formats(address: str) -> None:
    out = assert_redacted(f"mail {address} today", "email", address)
    assert out == "mail [REDACTED:email] today"


def test_json_escaped_quoted_email() -> None:
    assert R.redact_text('{"to": "\\"john doe\\"@example.org"}')[1] == {"email": 1}


@pytest.mark.parametrize(
    "text",
    [
        "user@localhost",
        "an @ sign",
        "@handle on social",
        "foo@bar",
        "a@example.c",
        "a@@b.com",
        "git clone git@github.com:acme/app.git",  # an SSH remote
        "nginx@sha256:abc",
        "lodash@4.17.21",
    ],
)
def test_email_negative(text: str) -> None:
    assert "email" not in kinds_found(text)


# --- phone -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "+1 415-555-2671",
        "+44 20 7946 0958",
        "+14155552671",
        "+49 30 1234567",
        "+33 (0)1 23 45 67 89",
        "(415) 555-2671",
        "415-555-2671",
        "415.555.2671",
        "020 7946 0958",
        "06 12 34 56 78",
        "0044 20 7946 0958",
    ],
)
def test_phone_detected(number: str) -> None:
    out = assert_redacted(f"call me on {number}, thanks", "phone", number)
    assert out == "call me on [REDACTED:phone], thanks"


@pytest.mark.parametrize(
    "number",
    [
        "030/1234567",  # German area code with a slash
        "01.43.70.00.98",  # French, dotted
        "+1.415.555.2671",
        "8 (800) 555-35-35",  # Russian
        "(11) 91234-5678",  # Brazilian
        "092203 69476",  # Indian, trunk prefix
        "090-1234-5678",  # Japanese
    ],
)
def test_phone_formats(number: str) -> None:
    assert_redacted(f"Tel: {number}", "phone", number)


@pytest.mark.parametrize(
    "text",
    [
        "order 4155552671 shipped",  # plain 10-digit id
        "ts=1700000000123",  # timestamp
        "created 2024-01-15 10:30",  # date and time
        "on 15.01.2024",
        "pi is 3.14159 2.71828",  # decimals
        "version 10.2.3",
        "call 555-1234",  # only 7 digits
        "reference 12345678",  # bare digits
        "sum 1.234.567",  # dotted thousands
        "ZIP 94103-1234",  # ZIP+4
        "coordinates 48.858400, 2.294500",
        "Chrome 120.0.6099.109",
        "order number 415-555-2671 was cancelled",  # labelled as an order number
        "FedEx tracking 7712 3456 7890",
        "RMA 2024-117-5532 approved",
    ],
)
def test_phone_negative(text: str) -> None:
    assert_untouched(text)


def test_card_is_not_a_phone() -> None:
    assert kinds_found("pay with 4111 1111 1111 1111 now") == {"payment_card": 1}


# --- payment cards -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "card",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "5555555555554444",
        "378282246310005",
        "3782 822463 10005",
        "6011 0009 9013 9424",
        "30569309025904",
        "2223003122003222",
        "4222222222222",
        "4111111111111111110",
    ],
)
def test_card_detected(card: str) -> None:
    out = assert_redacted(f"card: {card} exp 12/27", "payment_card", card)
    assert out == "card: [REDACTED:payment_card] exp 12/27"


@pytest.mark.parametrize(
    "card",
    [
        "4111.1111.1111.1111",
        "4111/1111/1111/1111",
        "3782.822463.10005",
        "3530 1113 3330 0000",  # JCB
        "6200 0000 0000 0005",  # UnionPay
        "2200 0000 0000 0004",  # Mir
    ],
)
def test_card_separators_and_networks(card: str) -> None:
    assert_redacted(f"pay with {card} please", "payment_card", card)


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # Luhn-invalid
        "4111111111111112",
        "1234567890123456",
        "1700000000129",  # Luhn-valid, but a millisecond timestamp (no card network)
        "0000 0000 0000 0000",
        "id 4111111111111111a",  # part of a longer token
        "0.4111111111111111",  # decimal
        "EAN 4006381333931",  # an EAN-13 barcode (Luhn-valid, starts with 4)
        "barcode 4006381333931",
        "IMEI 490154203237518",  # Luhn-valid, 15 digits, not a card network
        "order #4111111111111111",
        "version 4111.1111.1111.1111.2",
    ],
)
def test_card_negative(text: str) -> None:
    assert "payment_card" not in kinds_found(text)


def test_adjacent_cards_are_both_found() -> None:
    text = "4111 1111 1111 1111 5555 5555 5555 4444"
    assert R.redact_text(text) == (
        "[REDACTED:payment_card] [REDACTED:payment_card]",
        {"payment_card": 2},
    )


def test_card_followed_by_other_digits() -> None:
    assert R.redact_text("4111111111111111 2027") == (
        "[REDACTED:payment_card] 2027",
        {"payment_card": 1},
    )


# --- IBAN --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iban",
    [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82WEST12345698765432",
        "GB82 WEST 1234 5698 7654 32",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91ABNA0417164300",
        "NO9386011117947",
    ],
)
def test_iban_detected(iban: str) -> None:
    out = assert_redacted(f"IBAN: {iban} BIC DEUTDEFF", "iban", iban)
    assert out == "IBAN: [REDACTED:iban] BIC DEUTDEFF"


@pytest.mark.parametrize(
    "iban",
    [
        "de89 3704 0044 0532 0130 00",
        "de89370400440532013000",
        "DE89-3704-0044-0532-0130-00",
        "gb82-west-1234-5698-7654-32",
    ],
)
def test_iban_lower_case_and_dashes(iban: str) -> None:
    assert_redacted(f"refund to {iban} please", "iban", iban)


def test_two_ibans_in_a_row() -> None:
    text = "DE89 3704 0044 0532 0130 00 or gb82 west 1234 5698 7654 32"
    assert kinds_found(text) == {"iban": 2}


@pytest.mark.parametrize(
    "text",
    [
        "DE89 3704 0044 0532 0130 01",  # wrong check digits
        "GB82WEST12345698765431",
        "ZZ89370400440532013000",  # unknown country
        "XDE89370400440532013000",  # inside a longer token
    ],
)
def test_iban_negative(text: str) -> None:
    assert "iban" not in kinds_found(text)


# --- API keys and secrets ------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "sk-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ0aB3cD6eF9gH2",  # OpenAI (legacy)
        "sk-proj-Ab3dEf6hIj9kLm2n_Op5qRs8tUv1wXyZ-0aB3cD6eF9gH2iJ",  # OpenAI project
        "sk-ant-api03-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ0aB3cD6eF9gH2-xyzAA",  # Anthropic
        "AKIAIOSFODNN7EXAMPLE",  # AWS access key id
        "ASIAY34FZKBOKMUTVV7A",
        "ghp_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ0aB3c",  # GitHub
        "gho_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ0aB3c",
        "ghs_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ0aB3c",
        "ghu_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ0aB3c",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789",
        "xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",  # Slack
        "xoxp-1234567890-abcdef",
        "AIzaSyA-1234567890abcdefghijklmnopqrstu",  # Google
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",  # Stripe
        "rk_live_4eC39HqLyjWDarjtT1zdp7dc",
    ],
)
def test_api_key_detected(key: str) -> None:
    out = assert_redacted(f"use {key} please", "api_key", key)
    assert out == "use [REDACTED:api_key] please"


@pytest.mark.parametrize(
    "key",
    [
        "glpat-Ab3dEf6hIj9kLm2nOp5q",  # GitLab
        "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh",  # Hugging Face
        "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",  # SendGrid
        "whsec_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ0",  # Stripe webhook secret
        "npm_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ0aB3c",
        "SK0123456789abcdef0123456789abcdef",  # Twilio API key SID
        "AC0123456789abcdef0123456789abcdef",  # Twilio account SID
        "xapp-1-A0123ABCDEF-1234567890123-0123456789abcdef0123456789abcdef",  # Slack app
        "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",  # Google OAuth client secret
        "dop_v1_" + "0123456789abcdef" * 4,  # DigitalOcean
        "shpat_0123456789abcdef0123456789abcdef",  # Shopify
        "gsk_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ0aB3cD6eF9gH2iJ",  # Groq
        "https://hooks.slack.com/services/T0ABCDEFG/B0ABCDEFGHI/AbCdEfGhIjKlMnOpQrStUvWx",
    ],
)
def test_more_api_keys(key: str) -> None:
    assert_redacted(f"use {key} please", "api_key", key)


def test_aws_secret_after_its_access_key() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    out, counts = R.redact_text(f"AKIAIOSFODNN7EXAMPLE,{secret}")
    assert counts == {"api_key": 2}
    assert secret not in out


@pytest.mark.parametrize(
    "text",
    [
        "task-management-system-for-teams",  # contains "sk-"
        "sk-short",
        "sk-placeholderplaceholderplaceholder",  # no mix of character classes
        "ASIA PACIFIC REGION",
        "AKIA",
        "the ghp_ prefix",
        "xox-not-a-token",
        "ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",  # placeholders
        "hf_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "glpat-xxxxxxxxxxxxxxxxxxxx",
        "hf_hub_download(repo_id)",
    ],
)
def test_api_key_negative(text: str) -> None:
    assert_untouched(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("api_key=Zx8fQ2mLp9TrWv4KbN7s", "Zx8fQ2mLp9TrWv4KbN7s"),
        (
            '{"client_secret": "3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e"}',
            "3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e",
        ),
        (
            "export AUTH_TOKEN='dGhpcyBpcyBhIHNlY3JldCB0b2tlbg=='",
            "dGhpcyBpcyBhIHNlY3JldCB0b2tlbg==",
        ),
        ("secretKey: q8W2e4R6t8Y0u2I4", "q8W2e4R6t8Y0u2I4"),
        ("password: Tr0ub4dor&3", "Tr0ub4dor&3"),
        ("db_passwd=hunter2hunter2", "hunter2hunter2"),
    ],
)
def test_secret_assignment_detected(text: str, value: str) -> None:
    out = assert_redacted(text, "secret", value)
    assert out == text.replace(value, "[REDACTED:secret]")  # the key name is kept


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("my password is Summer2024!", "Summer2024!"),
        ("login jane / password Tr0ub4dor&3", "Tr0ub4dor&3"),
        ("the token is q8W2e4R6t8Y0u2I4z6X8, sorry", "q8W2e4R6t8Y0u2I4z6X8"),
        ("Passwort: Gr33nH0use2024", "Gr33nH0use2024"),
        ('auth_token = \\"fqCuKb4RzJducPOdOyf693iq\\"', "fqCuKb4RzJducPOdOyf693iq"),
        ("SECRET_KEY = 'a8f(5f1)67f4&4f49=64e6c998'", "a8f(5f1)67f4&4f49=64e6c998"),
        ("DATABASE_URL=postgres://app:S3cretPass@db.internal:5432/crm", "S3cretPass"),
        ("redis://:Pa55word@cache:6379/0", "Pa55word"),
    ],
)
def test_secret_phrases_and_urls(text: str, value: str) -> None:
    out = assert_redacted(text, "secret", value)
    assert out == text.replace(value, "[REDACTED:secret]")


def test_url_without_password_has_no_secret() -> None:
    assert "secret" not in kinds_found("postgres://app@db.internal/crm")


@pytest.mark.parametrize(
    "text",
    [
        "key: get_secret_from_vault",  # low-variety identifier
        "token: the quick brown fox",
        "password: required.",
        "password=********",
        "key=short",
        "the key point is: simplicity",
        "monkey business",
        "secret = ${SECRET_VALUE}",
        "token: AuthTokenProvider",  # product and class names
        "secret: KubernetesSecretStore",
        "key_id: signing-key-2024",
        "token_type: Bearer",
        "password_reset_url: https://example.com/reset",
        "api_key: YOUR_API_KEY_HERE",
        "password is required.",
        "password must contain 1 digit",
    ],
)
def test_secret_assignment_negative(text: str) -> None:
    assert_untouched(text)


def test_long_secret_value_is_redacted_entirely() -> None:
    value = "Ab3dEf6hIj9kLm2n" * 40  # longer than the per-keyword scan window
    out, counts = R.redact_text(f"token={value} end")
    assert out == "token=[REDACTED:secret] end"
    assert counts == {"secret": 1}


# --- bearer tokens and JWTs --------------------------------------------------------------

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ('{"Authorization": "token 9f8e7d6c5b4a"}', "9f8e7d6c5b4a"),
        ("AUTHORIZATION=Zx8fQ2mLp9TrWv4KbN7s", "Zx8fQ2mLp9TrWv4KbN7s"),
        ("curl -H 'x: 1' with bearer AbCdEf0123456789xyz", "AbCdEf0123456789xyz"),
    ],
)
def test_bearer_token_detected(text: str, token: str) -> None:
    out = assert_redacted(text, "bearer_token", token)
    assert out == text.replace(token, "[REDACTED:bearer_token]")


@pytest.mark.parametrize(
    "token",
    [
        "xulkunvglqyximptlmsrrnla",  # one case, letters only: random, not a word
        "8f14e45fceea167a5a36dedd4bea2543",
        "ab_cd-ef.gh~ij+kl/mn0123",
    ],
)
def test_bearer_token_formats(token: str) -> None:
    assert_redacted(f"the app sends Bearer {token} in the header", "bearer_token", token)
    assert_redacted(f"authorization: bearer {token}", "bearer_token", token)


@pytest.mark.parametrize(
    "text",
    [
        "bearer bonds are old-fashioned",
        "Bearer internationalization",  # no digits / mixed case
        "The Authorization: header is required",
        "authorization: required",
        "Authorization: Bearer <token>",
        "Authorization: Bearer $ACCESS_TOKEN",
        "Authorization: Bearer YOUR_ACCESS_TOKEN",
        "Bearer electroencephalographically",
    ],
)
def test_bearer_negative(text: str) -> None:
    assert_untouched(text)


def test_jwt_detected() -> None:
    assert_redacted(f"token {JWT} ok", "jwt", JWT)
    assert_redacted(f"id_token={JWT}", "jwt", JWT)  # jwt wins over the generic secret


def test_jwe_is_redacted_whole() -> None:
    jwe = (
        "eyJhbGciOiJSU0EtT0FFUCJ9.OKOawDo13gRp2oja.48V1_ALb6US04U3b"
        ".5eym8TW_c8SuK0ltJ3rp.XFBoMYUZodetZdvTiFvSkQ"
    )
    assert R.redact_text(f"token {jwe} end") == ("token [REDACTED:jwt] end", {"jwt": 1})


def test_bearer_jwt_is_one_finding() -> None:
    out, counts = R.redact_text(f"Authorization: Bearer {JWT}")
    assert out == "Authorization: Bearer [REDACTED:jwt]"
    assert counts == {"jwt": 1}


@pytest.mark.parametrize(
    "text", ["eyJ", "eyJhbGciOiJIUzI1NiJ9", "xeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.x"]
)
def test_jwt_negative(text: str) -> None:
    assert "jwt" not in kinds_found(text)


# --- private keys ------------------------------------------------------------------------

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu3aozN3tihPmljnnudb9G3HECdnH\n"
    "lWu2/a1gB9JW5TBQ+AVpum9Okx7KfqkfBKL9mcHgSL0yWMdjMfNOqNtrQqKlN4kE\n"
    "-----END RSA PRIVATE KEY-----"
)


def test_private_key_block_detected() -> None:
    out, counts = R.redact_text(f"key:\n{PEM}\nthanks")
    assert out == "key:\n[REDACTED:private_key]\nthanks"
    assert counts == {"private_key": 1}


@pytest.mark.parametrize(
    "header", ["PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY"]
)
def test_private_key_variants(header: str) -> None:
    block = f"-----BEGIN {header}-----\nAAAA\n-----END {header}-----"
    assert R.redact_text(block) == ("[REDACTED:private_key]", {"private_key": 1})


def test_unterminated_private_key_is_redacted_to_the_end() -> None:
    out, counts = R.redact_text("see " + PEM[:120])
    assert out == "see [REDACTED:private_key]"
    assert counts == {"private_key": 1}


@pytest.mark.parametrize(
    "cut",
    [
        PEM[:31],  # the header only
        PEM[:29],  # the header itself cut
        PEM.replace("\n", "\\n")[:90],  # JSON-escaped, cut
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\nlQOYBF",
    ],
)
def test_cut_private_key_variants(cut: str) -> None:
    assert R.redact_text(f'"key": "{cut}') == ('"key": "[REDACTED:private_key]', {"private_key": 1})


def test_private_key_cut_by_max_text_length() -> None:
    redactor = DefaultRedactor(max_text_length=100)
    out, counts = redactor.redact_text("key " + PEM + " more")
    assert out == "key [REDACTED:private_key][REDACTED:truncated]"
    assert counts == {"private_key": 1, "truncated": 1}


def test_certificate_is_not_a_private_key() -> None:
    assert_untouched("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----")


# --- IP addresses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "192.168.1.10",
        "8.8.8.8",
        "255.255.255.255",
        "2001:db8::ff00:42:8329",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "fe80::1%eth0",
        "::ffff:192.0.2.1",
    ],
)
def test_ip_detected(address: str) -> None:
    out = assert_redacted(f"from {address}.", "ip_address", address)
    assert out == "from [REDACTED:ip_address]."


@pytest.mark.parametrize(
    "text",
    [
        "1.2.3.4.5",
        "999.1.1.1",
        "1.2.3",
        "version 1.2.3 released",
        "v1.2.3.4",
        "01.02.03.04",
        "::1",
        "at 12:30:45",
        "std::vector<int>",
        "a[::2]",
        "mac 00:1a:2b:3c:4d:5e",
        "version 1.2.3.4",
        "firmware 2.4.1.3",
        "OID 2.5.4.3",
        "see section 4.2.1.3",
        '[assembly: AssemblyVersion("1.0.0.0")]',
        "Chrome/120.0.0.0 Safari/537.36",
        "1.0.0.0-SNAPSHOT",
        "4.2.0.1 release notes",
    ],
)
def test_ip_negative(text: str) -> None:
    assert_untouched(text)


@pytest.mark.parametrize(
    "address",
    ["http://10.0.0.1/admin", "10.0.0.0/8", "[2001:db8::1]:443", "x-forwarded-for: 10.1.2.3"],
)
def test_ip_in_urls_and_headers(address: str) -> None:
    assert kinds_found(address) == {"ip_address": 1}


# --- structures, paths and findings ------------------------------------------------------


def test_nested_structure_paths_and_aggregation() -> None:
    value: JSONValue = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "be nice"},
            {
                "role": "user",
                "content": "mail a@example.com or b@example.org, call +1 415-555-2671",
            },
        ],
        "x-api-key": "sk-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ0aB3cD6eF9gH2",
        "ip": ["10.0.0.1", 42, None, "10.0.0.2 and 10.0.0.3"],
    }
    out, findings = R.redact(value, "input")
    assert out == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "be nice"},
            {
                "role": "user",
                "content": "mail [REDACTED:email] or [REDACTED:email], call [REDACTED:phone]",
            },
        ],
        "x-api-key": "[REDACTED:api_key]",
        "ip": [
            "[REDACTED:ip_address]",
            42,
            None,
            "[REDACTED:ip_address] and [REDACTED:ip_address]",
        ],
    }
    assert findings == [
        Finding("email", "input.messages[1].content", 2),
        Finding("phone", "input.messages[1].content", 1),
        Finding("api_key", 'input["x-api-key"]', 1),
        Finding("ip_address", "input.ip[0]", 1),
        Finding("ip_address", "input.ip[3]", 2),
    ]


def test_paths_without_base() -> None:
    _, findings = R.redact({"messages": [{"content": "x"}, {"content": "a@example.com"}]})
    assert findings == [Finding("email", "messages[1].content", 1)]
    _, findings = R.redact(["a@example.com"])
    assert findings == [Finding("email", "[0]", 1)]
    assert R.redact("a@example.com", "output") == (
        "[REDACTED:email]",
        [Finding("email", "output", 1)],
    )


def test_findings_never_contain_values() -> None:
    secrets = [
        "john.doe@example.com",
        "+1 415-555-2671",
        "4111 1111 1111 1111",
        "DE89 3704 0044 0532 0130 00",
        "sk-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ0aB3cD6eF9gH2",
        "192.168.1.10",
        JWT,
    ]
    value: JSONValue = {"a": " | ".join(secrets), "b": [{"c": s} for s in secrets]}
    out, findings = R.redact(value, "payload")
    dumped = repr(findings) + repr(out) + " ".join(str(dataclasses.asdict(f)) for f in findings)
    for secret in secrets:
        assert secret not in dumped
    # and not even a recognisable fragment of them
    for fragment in ("john.doe", "2671", "4111", "0130", "Ab3dEf", "168.1", "SflKxw"):
        assert fragment not in dumped
    assert sum(f.count for f in findings) == 2 * len(secrets)


def test_input_not_mutated_and_keys_untouched() -> None:
    value: dict[str, JSONValue] = {
        "jane@example.com": "contact jane@example.com",
        "nested": {"list": ["10.0.0.1", {"deep": "sk-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ0a"}]},
    }
    before = copy.deepcopy(value)
    out, _ = R.redact(value)
    assert value == before
    assert isinstance(out, dict)
    assert list(out) == ["jane@example.com", "nested"]  # keys are not redacted
    assert out["jane@example.com"] == "contact [REDACTED:email]"
    assert out is not value and out["nested"] is not value["nested"]


def test_non_string_leaves_untouched() -> None:
    value: dict[str, JSONValue] = {
        "int": 4111111111111111,
        "float": 192.168,
        "bool": True,
        "none": None,
        "big": 10**30,
    }
    out, findings = R.redact(value)
    assert isinstance(out, dict)
    assert out == value and findings == []
    assert all(out[k] is value[k] for k in value)


def test_tuple_is_returned_as_list() -> None:
    out, findings = R.redact(("a@example.com", 1))  # type: ignore[arg-type]
    assert out == ["[REDACTED:email]", 1]
    assert findings == [Finding("email", "[0]", 1)]


def test_mixed_kinds_in_one_string() -> None:
    text = "a@example.com, b@example.com, 4111111111111111, 8.8.8.8"
    assert kinds_found(text) == {"email": 2, "payment_card": 1, "ip_address": 1}


def test_redacted_output_is_stable() -> None:
    text = f"mail a@example.com, card 4111111111111111, jwt {JWT}, +1 415-555-2671"
    once, _ = R.redact_text(text)
    assert R.redact_text(once) == (once, {})


def test_finding_is_frozen_and_slotted() -> None:
    finding = Finding("email", "x", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.count = 2  # type: ignore[misc]
    assert not hasattr(finding, "__dict__")


# --- find_kinds --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identifier", "kinds"),
    [
        ("u-12345", set()),
        ("550e8400-e29b-41d4-a716-446655440000", set()),
        ("jane.doe@example.com", {"email"}),
        ("session:+14155552671", {"phone"}),
        ("user-4111111111111111", {"payment_card"}),
        ("tenant 10.0.0.1 / jane@example.com", {"email", "ip_address"}),
    ],
)
def test_find_kinds(identifier: str, kinds: set[str]) -> None:
    assert R.find_kinds(identifier) == kinds
    assert R.find_kinds(identifier) == set(R.redact_text(identifier)[1])


def test_find_kinds_merges_like_redact_text() -> None:
    text = f"Authorization: Bearer {JWT}"
    assert R.find_kinds(text) == {"jwt"} == set(R.redact_text(text)[1])
    short = DefaultRedactor(max_text_length=10)
    assert short.find_kinds("a@example.com and more") == {"truncated"}
    assert DefaultRedactor(kinds=["phone"]).find_kinds("a@example.com") == set()


# --- configuration -----------------------------------------------------------------------


def test_replacement_format() -> None:
    redactor = DefaultRedactor(replacement="<{kind}>")
    assert redactor.redact_text("mail a@example.com") == ("mail <email>", {"email": 1})
    redactor = DefaultRedactor(replacement="***")
    assert redactor.redact_text("mail a@example.com now") == ("mail *** now", {"email": 1})
    redactor = DefaultRedactor(replacement="{0} {kind} {kind}")  # no str.format surprises
    assert redactor.redact_text("a@example.com")[0] == "{0} email email"


def test_extra_patterns() -> None:
    redactor = DefaultRedactor(
        extra_patterns={
            "employee_id": r"EMP-\d{6}",
            "project": re.compile(r"(?i)project\s+falcon"),
            "boundary": r"\b",  # zero-length matches are ignored
        }
    )
    out, counts = redactor.redact_text("EMP-123456 works on Project Falcon, mail a@example.com")
    assert out == "[REDACTED:employee_id] works on [REDACTED:project], mail [REDACTED:email]"
    assert counts == {"employee_id": 1, "project": 1, "email": 1}


def test_extra_pattern_wins_on_overlap() -> None:
    redactor = DefaultRedactor(extra_patterns={"customer_email": r"\S+@customer\.example"})
    out, counts = redactor.redact_text("to bob@customer.example")
    assert out == "to [REDACTED:customer_email]"
    assert counts == {"customer_email": 1}


def test_kinds_filter() -> None:
    text = "mail a@example.com or call +1 415-555-2671 from 10.0.0.1"
    only_email = DefaultRedactor(kinds=["email"])
    assert only_email.kinds == frozenset({"email"})
    assert only_email.redact_text(text) == (
        "mail [REDACTED:email] or call +1 415-555-2671 from 10.0.0.1",
        {"email": 1},
    )
    assert DefaultRedactor(kinds=[]).redact_text(text) == (text, {})
    assert DefaultRedactor().kinds == BUILTIN_KINDS
    no_phone = DefaultRedactor(kinds=BUILTIN_KINDS - {"phone"})
    assert kinds_found(text, no_phone) == {"email": 1, "ip_address": 1}


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError, match="unknown"):
        DefaultRedactor(kinds=["email", "ssn"])
    with pytest.raises(TypeError):
        DefaultRedactor(kinds="email")
    with pytest.raises(ValueError):
        DefaultRedactor(max_text_length=0)
    with pytest.raises(ValueError):
        DefaultRedactor(extra_patterns={"": "x"})
    DefaultRedactor(kinds=["email", "custom"], extra_patterns={"custom": "x"})  # ok


def test_truncation() -> None:
    redactor = DefaultRedactor(max_text_length=20)
    out, counts = redactor.redact_text("a@example.com and then a lot more text b@example.com")
    assert out == "[REDACTED:email] and th[REDACTED:truncated]"
    assert counts == {"email": 1, "truncated": 1}
    assert redactor.redact_text("x" * 20) == ("x" * 20, {})
    _, findings = redactor.redact({"long": "y" * 21})
    assert findings == [Finding("truncated", "long", 1)]


def test_unicode_and_invalid_surrogates() -> None:
    text = "naïve café — contact jane@example.com 😀 \ud800 card 4111 1111 1111 1111 \udfff"
    out, counts = R.redact_text(text)
    assert out == (
        "naïve café — contact [REDACTED:email] 😀 \ud800 card [REDACTED:payment_card] \udfff"
    )
    assert counts == {"email": 1, "payment_card": 1}
    for lone in ("\ud800", "\udfff" * 100, "\ud83d" + "a@b.com", "\udc00:" * 50 + "1.2.3.4"):
        R.redact_text(lone)  # must not raise
    out2, findings = R.redact({"k\ud800": ["\udfffx@example.com"]})
    assert out2 == {"k\ud800": ["\udfff[REDACTED:email]"]}
    assert findings[0].kind == "email"


def test_protocol_and_null_redactor() -> None:
    value: JSONValue = {"a": ["a@example.com"]}
    null = NullRedactor()
    assert null.redact(value, "x") == (value, [])
    assert isinstance(null, Redactor)
    assert isinstance(R, Redactor)
    assert (R.name, R.version) == ("promptgov.default", "2")
    assert null.name == "promptgov.null"


# --- performance: linear time on adversarial input -----------------------------------------


def best_time(fn: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def prompt_2kb() -> str:
    """A 2 KB prompt: plain sentences with five PII items."""
    words = ["The", "model", "read", "a", "document", "and", "wrote", "a", "summary", "for", "you."]
    text = " ".join(words[i % len(words)] for i in range(400))
    items = [
        "jane.doe@example.com",
        "+1 415-555-2671",
        "4111 1111 1111 1111",
        "203.0.113.42",
        "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXyZ",
    ]
    chunk = (2048 - sum(len(item) + 2 for item in items)) // len(items)
    return " ".join(text[i * chunk : (i + 1) * chunk] + " " + item for i, item in enumerate(items))


def test_pathological_single_word_is_fast() -> None:
    prompt = prompt_2kb()
    assert sum(R.redact_text(prompt)[1].values()) == 5
    baseline = best_time(partial(R.redact_text, prompt), repeat=20)
    # the classic trap for e-mail patterns: a long run of word characters, with or without "@"
    for word in ("a" * 100_000, "a" * 99_999 + "@", "@" + "a" * 99_999, "a." * 50_000):
        elapsed = best_time(partial(R.redact_text, word))
        assert elapsed < 50 * baseline, (word[:4], elapsed, baseline)


ADVERSARIAL: dict[str, Callable[[int], str]] = {
    "digits": lambda n: "1" * n,
    "letters and digits": lambda n: "x7" * (n // 2),
    "mixed case and digits": lambda n: "Ab3" * (n // 3),
    "spaced digits": lambda n: "1 " * (n // 2),
    "digit groups": lambda n: "111 " * (n // 4),
    "dotted digits": lambda n: "1." * (n // 2),
    "dashed digits": lambda n: "12-" * (n // 3),
    "at signs": lambda n: "a@" * (n // 2),
    "email domain": lambda n: "a@" + "b." * (n // 2),
    "colons": lambda n: ":a" * (n // 2),
    "hex colons": lambda n: "ab:" * (n // 3),
    "key assignments": lambda n: "key=" * (n // 4),
    "password assignments": lambda n: "password=" * (n // 9),
    "bearer": lambda n: "Bearer " * (n // 7),
    "authorization": lambda n: "Authorization: " * (n // 15),
    "pem begins": lambda n: "-----BEGIN PRIVATE KEY-----" * (n // 27),
    "jwt-ish": lambda n: "eyJa." * (n // 5),
    "sk dashes": lambda n: "sk-" * (n // 3),
    "aws-ish": lambda n: "AKIA" * (n // 4),
    "iban-ish": lambda n: "DE00" * (n // 4),
    "plus digits": lambda n: "+1 " * (n // 3),
    "parens": lambda n: "(1)" * (n // 3),
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_input_scales_linearly(name: str) -> None:
    make = ADVERSARIAL[name]
    small, large = make(2_000), make(100_000)
    t_small = best_time(lambda: R.redact_text(small), repeat=7)
    t_large = best_time(lambda: R.redact_text(large), repeat=3)
    # 50x the input: linear time gives ~50x, quadratic ~2500x
    assert t_large < 250 * t_small + 0.005, (name, t_small, t_large)
