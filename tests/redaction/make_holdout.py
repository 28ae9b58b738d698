"""Generate ``holdout.jsonl``: a second labelled set, written by hand after the detectors.

Each sample's text was written for this file (not from ``make_corpus.py``'s templates); the
values are made with its generators (valid Luhn and mod-97 numbers). It was measured once,
before any change to the detectors (see docs/redaction.md). Run from the repository root:
``python3 tests/redaction/make_holdout.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_corpus as mc  # noqa: E402

OUT = HERE / "holdout.jsonl"

mc.rng.seed(777)


def card(prefix: str, n: int, sep: str = " ") -> str:
    num = mc.luhn_complete(prefix + mc.rand(mc.DI, n - len(prefix) - 1))
    if not sep:
        return num
    out, i = [], 0
    for size in mc.group_digits(num):
        out.append(num[i : i + size])
        i += size
    return sep.join(out)


def iban(country: str, style: str = "spaced") -> str:
    x = mc.iban_compact(country)
    groups = [x[i : i + 4] for i in range(0, len(x), 4)]
    return {
        "spaced": " ".join(groups),
        "compact": x,
        "lower": " ".join(groups).lower(),
        "dash": "-".join(groups),
    }[style]


P: list[tuple[str, list[tuple[str, str]]]] = []  # (text, [(kind, value)])


def add(text: str, *items: tuple[str, str]) -> None:
    P.append((text, list(items)))


N: list[str] = []


def neg(text: str) -> None:
    N.append(text)


# --- positives, written by hand ---
e = "m.schneider@stadtwerke-muenchen.de"
add(
    f"Sehr geehrte Damen und Herren, meine neue Mailadresse lautet {e}. Bitte ändern.", ("email", e)
)
e = "dev+ci-alerts@infra.example.io"
add(f"we route CI failures to {e} (filter on the +ci-alerts tag)", ("email", e))
e = "Rahul.Verma@Company.IN"
add(f"Escalate to {e} if not solved by EOD", ("email", e))
e = "ana.lima@empresa.com.br"
add(f"oi, meu email é {e}, obrigada", ("email", e))
e = "kim.jisoo@naver.com"
add(f"email={e}&plan=pro", ("email", e))
e = "peter_parker@dailybugle.net"
add(f"<td>{e}</td>", ("email", e))
e = "noreply@github.com"
add(f"I got a notification from {e} saying my token was revoked", ("email", e))
e = "o.reilly@books.co.uk"
add(f'From: "O\'Reilly, Oscar" <{e}>', ("email", e))
e = "jürgen@beispiel.de"
add(f"Kontakt: {e}", ("email", e))
e = "support@münchen.de"
add(f"Die Adresse {e} funktioniert nicht", ("email", e))
e = '"john smith"@example.org'
add(f"the RFC allows {e} but our form rejects it", ("email", e))
e = "a.b.c.d@sub.sub2.example.travel"
add(f"address: {e}", ("email", e))
e = "hello@xn--80aswg.xn--p1ai"
add(f"пишите на {e}", ("email", e))
e = "USER123@MAIL.RU"
add(f"LOGIN {e} FAILED 3 TIMES", ("email", e))
p = "+1 (212) 555-0142"
add(f"Call our NY office at {p} between 9 and 5.", ("phone", p))
p = "212-555-0187"
add(f"my cell is {p}", ("phone", p))
p = "+44 7911 123456"
add(f"Reach me on WhatsApp {p}", ("phone", p))
p = "07911 123456"
add(f"mobile: {p}", ("phone", p))
p = "+49 (0) 89 1234 5678"
add(f"Telefon {p}, Fax folgt", ("phone", p))
p = "0049 89 12345678"
add(f"Tel.: {p}", ("phone", p))
p = "+33 1 42 68 53 00"
add(f"Standard : {p}", ("phone", p))
p = "+81 3-1234-5678"
add(f"Tokyo office {p}", ("phone", p))
p = "+61 2 9374 4000"
add(f"Sydney: {p}", ("phone", p))
p = "(11) 98765-4321"
add(f"meu celular {p}", ("phone", p))
p = "+7 916 123-45-67"
add(f"звоните {p}", ("phone", p))
p = "+31 20 794 0800"
add(f"bel {p} voor afspraken", ("phone", p))
p = "+34 915 123 456"
add(f"llamar al {p}", ("phone", p))
p = "+91 22 2778 5555"
add(f"Mumbai branch: {p}", ("phone", p))
p = "+86 21 6123 4567"
add(f"上海办公室 {p}", ("phone", p))
p = "+14155550123"
add(f'{{"from": "{p}", "body": "STOP"}}', ("phone", p))
p = "415.555.0100"
add(f"fax {p}", ("phone", p))
p = "1 800 555 0199"
add(f"toll free {p}", ("phone", p))
c = card("4", 16)
add(f"Please charge {c} for the annual plan", ("payment_card", c))
c = card("5425", 16, "-")
add(f"card={c}", ("payment_card", c))
c = card("37", 15)
add(f"AMEX {c} exp 04/29", ("payment_card", c))
c = card("6011", 16, "")
add(f"discover: {c}", ("payment_card", c))
c = card("3530", 16, ".")
add(f"JCB {c}", ("payment_card", c))
c = card("4", 16, "/")
add(f"the form accepted {c} with slashes", ("payment_card", c))
c = card("2720", 16, " ")
add(f"Mastercard ending... no, full: {c}", ("payment_card", c))
c = card("62", 19, " ")
add(f"UnionPay {c}", ("payment_card", c))
c = card("4", 16, "")
add(f'{{"pan":"{c}","cvv":"123"}}', ("payment_card", c))
c = card("5", 16, " ")
add(f"My credit card number is {c} and the CVC is on the back", ("payment_card", c))
i = iban("DE", "spaced")
add(f"Bankverbindung: {i}, BIC COBADEFFXXX", ("iban", i))
i = iban("FR", "compact")
add(f"RIB / IBAN {i}", ("iban", i))
i = iban("NL", "lower")
add(f"iban {i} please refund", ("iban", i))
i = iban("ES", "dash")
add(f"cuenta {i}", ("iban", i))
i = iban("IT", "spaced")
add(f"Bonifico su {i}", ("iban", i))
i = iban("GB", "compact")
add(f"sort code is in the IBAN {i}", ("iban", i))
i = iban("CH", "lower")
add(f"konto: {i}", ("iban", i))
i = iban("PL", "spaced")
add(f"przelew na {i}", ("iban", i))
i = iban("BE", "dash")
add(f"IBAN: {i}", ("iban", i))
i = iban("AT", "compact")
add(f'{{"iban":"{i}"}}', ("iban", i))
k = "sk-" + mc.rand(mc.B62, 48)
add(f"openai.api_key = '{k}'", ("api_key", k))
k = "sk-ant-api03-" + mc.rand(mc.B64URL, 93) + "AA"
add(f"ANTHROPIC_API_KEY={k}", ("api_key", k))
k = "ghp_" + mc.rand(mc.B62, 36)
add(f"git remote set-url origin https://{k}@github.com/acme/app.git", ("api_key", k))
k = "glpat-" + mc.rand(mc.B64URL, 20)
add(f"PRIVATE-TOKEN: {k}", ("api_key", k))
k = "hf_" + mc.rand(mc.UP + mc.LO, 34)
add(f"huggingface-cli login --token {k}", ("api_key", k))
k = "xoxb-" + mc.rand(mc.DI, 12) + "-" + mc.rand(mc.DI, 13) + "-" + mc.rand(mc.B62, 24)
add(f'slack_client = WebClient(token="{k}")', ("api_key", k))
k = "AKIA" + mc.rand(mc.UP + "234567", 16)
add(f"the access key {k} belongs to the ci user", ("api_key", k))
k = "AIza" + mc.rand(mc.B64URL, 35)
add(f'<script src="https://maps.googleapis.com/maps/api/js?key={k}"></script>', ("api_key", k))
k = "sk_live_" + mc.rand(mc.B62, 24)
add(f'Stripe::api_key = "{k}"', ("api_key", k))
k = "whsec_" + mc.rand(mc.B62, 32)
add(f"endpoint secret {k}", ("api_key", k))
k = "npm_" + mc.rand(mc.B62, 36)
add(f"//registry.npmjs.org/:_authToken={k}", ("api_key", k))
k = "SG." + mc.rand(mc.B64URL, 22) + "." + mc.rand(mc.B64URL, 43)
add(f"sendgrid key {k}", ("api_key", k))
k = "SK" + mc.rand(mc.HEX, 32)
add(f"twilio api key sid {k}", ("api_key", k))
k = (
    "https://hooks.slack.com/services/T"
    + mc.rand(mc.UP + mc.DI, 8)
    + "/B"
    + mc.rand(mc.UP + mc.DI, 10)
    + "/"
    + mc.rand(mc.B62, 24)
)
add(f"webhook_url: {k}", ("api_key", k))
ak = "AKIA" + mc.rand(mc.UP + "234567", 16)
sk = mc.aws_secret()
add(f"aws_access_key_id={ak}\naws_secret_access_key={sk}", ("api_key", ak), ("api_key", sk))
t = mc.rand(mc.B62, 40)
add(f'curl -s -H "Authorization: Bearer {t}" https://api.example.com/v1/me', ("bearer_token", t))
t = mc.rand(mc.LO + mc.DI, 40)
add(f"requests.get(url, headers={{'Authorization': 'bearer {t}'}})", ("bearer_token", t))
t = mc.rand(mc.LO, 32)
add(f"Authorization: Bearer {t}", ("bearer_token", t))
t = mc.rand(mc.B64URL, 60)
add(f"The header was 'Authorization: Token {t}'", ("bearer_token", t))
j, _ = mc.jwt()
add(f"access_token: {j}", ("jwt", j))
j, _ = mc.jwt()
add(f"Cookie: session={j}; theme=dark", ("jwt", j))
j, _ = mc.jwt()
add(f"paste your token into jwt.io: {j}", ("jwt", j))
j, _ = mc.jwt()
add(f'{{"id_token":"{j}"}}', ("jwt", j))
add("password: S3cure!Pass", ("secret", "S3cure!Pass"))
add("the wifi password is Gr33nH0use2024", ("secret", "Gr33nH0use2024"))
add("DB_PASS=hX9#kL2$mQ7", ("secret", "hX9#kL2$mQ7"))
add(
    "mysql://admin:Adm1nPass99@10.1.2.3:3306/prod",
    ("secret", "Adm1nPass99"),
    ("ip_address", "10.1.2.3"),
)
add(
    "client_secret = 'a8f5f167f44f4964e6c998dee827110c'",
    ("secret", "a8f5f167f44f4964e6c998dee827110c"),
)
add("JWT_SECRET=7d8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b", ("secret", "7d8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b"))
add("x-api-key: 9f8e7d6c5b4a39281706f5e4d3c2b1a0", ("secret", "9f8e7d6c5b4a39281706f5e4d3c2b1a0"))
add("my PIN is 1234 and my password Winter#2023", ("secret", "Winter#2023"))
pk = mc.pem("rsa")
add(f"Here is id_rsa:\n{pk}", ("private_key", pk))
pk = mc.pem("openssh")
cut = pk[:150]
add(f"ssh key (truncated in the log): {cut}", ("private_key", cut))
add("client 192.0.2.146 connected", ("ip_address", "192.0.2.146"))
add(
    "DENY 198.51.100.23 -> 10.0.0.8:443",
    ("ip_address", "198.51.100.23"),
    ("ip_address", "10.0.0.8"),
)
add("my home IP 86.12.201.7 got banned", ("ip_address", "86.12.201.7"))
add(
    "server listens on [2001:db8:85a3::8a2e:370:7334]:8080",
    ("ip_address", "2001:db8:85a3::8a2e:370:7334"),
)
add("ipv6 fd12:3456:789a:1::1 is our ULA", ("ip_address", "fd12:3456:789a:1::1"))
add(
    "Name: Li Wei, email li.wei@qq.com, tel +86 139 1234 5678, card " + (c := card("4", 16)),
    ("email", "li.wei@qq.com"),
    ("phone", "+86 139 1234 5678"),
    ("payment_card", c),
)
# --- negatives, written by hand ---
for t in [
    "Build 1.0.0.1 is flaky on Windows",
    "Kernel 5.15.0.91 generic",
    "see RFC 5322 section 3.4.1 for addresses",
    "our SLA is 99.95% and RTO 4h",
    "Invoice #2024-0042 total 1,250.00 EUR",
    "Order 112-3345678-9912345 delivered",
    "tracking: 1Z999AA10123456784",
    "EAN 5901234123457",
    "ISBN 978-0-13-110362-7",
    "IMEI: 490154203237518",
    "commit a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
    "uuid 3fa85f64-5717-4562-b3fc-2c963f66afa6",
    "colors #ff5733 and #33ff57",
    "it happened at 10:45:12 on 2024-02-29",
    "meeting 14:00-15:30, room 2.14",
    "Use the TokenBucket rate limiter",
    "class PasswordHasher: pass",
    "def get_api_key(user): return None",
    "the secret sauce is patience",
    "key findings: latency up 12%",
    "token count: 15342",
    "passport photo attached",
    "Bearer shares are transferable",
    "authorization pending manager approval",
    "API_KEY=${API_KEY}",
    "password: <set in vault>",
    "token = os.environ['GITHUB_TOKEN']",
    "Firefox/124.0 on Linux x86_64",
    "Chrome 124.0.6367.91",
    "node v20.11.1, npm 10.2.4",
    "OID 1.2.840.10045.3.1.7 (prime256v1)",
    "lat 52.520008, lon 13.404954",
    "price went from 3.499,00 € to 2.999,00 €",
    "qty 1 x 12.99 = 12.99",
    "call me maybe",
    "phone number field is optional",
    "support@ is not an address",
    "email me at jane at example dot com",
    "the ratio is 16:9 and 4:3",
    "port 8080 and 8443",
    "version=2.31.0",
    "v1.2.3.4-beta",
    "release 10.0.22631.3296",
    "retry in 30 s, attempt 3/5",
    "SKU 4006381333931",
    "barcode: 036000291452",
    "case number 00412345",
    "ref: 20240315-000123",
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "The AWS region eu-central-1 and account 123456789012",
    "AKIA is just a prefix",
    "Stripe publishable keys start with pk_",
    "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAL\n-----END CERTIFICATE-----",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 user@laptop",
    "matrix: [[1, 2, 3], [4, 5, 6]]",
    "x = a[1:3] + b[::2]",
    "SELECT count(*) FROM users WHERE created_at > '2024-01-01';",
    "numbers 1234 5678 9012 3456 (a test pattern)",
    "Spotify track 4uLU6hMCjMI75M1A2tKUQC",
    "YouTube video dQw4w9WgXcQ",
    "password reset requested",
    "Your one-time code is 839201",
    "Gate B23, seat 14C, flight LH 456",
]:
    neg(t)
out: list[dict[str, object]] = []
for n, (text, items) in enumerate(P):
    for _, value in items:
        assert value in text, (value, text)
    out.append(
        {
            "id": f"holdout-{n:03d}",
            "text": text,
            "expect": [{"kind": k, "value": v, "format": "holdout"} for k, v in items],
            "group": items[0][0],
        }
    )
for n, text in enumerate(N):
    out.append({"id": f"holdout-neg-{n:03d}", "text": text, "expect": [], "group": "negative"})
OUT.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in out), encoding="utf-8")
print(f"wrote {len(P)} positives and {len(N)} negatives to {OUT}")
