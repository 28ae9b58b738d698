"""Generate ``corpus.jsonl``: a labelled redaction corpus (seeded, deterministic).

Run from the repository root: ``python3 tests/redaction/make_corpus.py``. The output is
checked in; ``test_corpus.py`` fails if this script no longer reproduces it byte for byte.

Each line is ``{"id", "text", "expect": [{"kind", "value", "format"}], "group"}``.
``value`` is an exact substring of ``text`` that must be gone from the redacted text (every
occurrence); negatives have ``expect == []`` and must come back untouched. Values are
valid where validity is checkable (Luhn, IBAN mod-97, provider key shapes), random
otherwise; the surrounding text is support-chat, agent tool-call, log, config and code
text, in several languages.
"""

from __future__ import annotations

import base64
import json
import random
import string
import sys
from collections.abc import Callable
from pathlib import Path

SEED = 20261127
OUT = Path(__file__).resolve().parent / "corpus.jsonl"

rng = random.Random(SEED)

UP = string.ascii_uppercase
LO = string.ascii_lowercase
DI = string.digits
B62 = UP + LO + DI
B64URL = B62 + "-_"
HEX = "0123456789abcdef"


def rand(chars: str, n: int) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


def pick(seq: list[str] | tuple[str, ...]) -> str:
    return rng.choice(seq)


def digits_from(template: str) -> str:
    """'#' any digit, 'N' 2-9, other characters are kept."""
    out = []
    for c in template:
        if c == "#":
            out.append(rng.choice(DI))
        elif c == "N":
            out.append(rng.choice("23456789"))
        else:
            out.append(c)
    return "".join(out)


FIRST = ["jane", "john", "maria", "jose", "wei", "aisha", "lukas", "sofia", "mohammed", "yuki",
         "olga", "pierre", "emma", "liam", "priya", "chen", "fatima", "noah", "zoe", "mateo",
         "ingrid", "tomasz", "amara", "kenji", "lucia", "oliver", "nadia", "rahul", "elena",
         "samuel"]
LAST = ["doe", "smith", "garcia", "mueller", "nguyen", "khan", "rossi", "kowalski", "tanaka",
        "dubois", "silva", "ivanova", "oconnor", "andersen", "patel", "kim", "haddad", "novak",
        "fischer", "lopez", "okafor", "berg", "moreau", "sato", "costa", "walsh"]
DOMAINS = ["gmail.com", "outlook.com", "yahoo.co.uk", "acme-corp.com", "mail.example.org",
           "proton.me", "web.de", "orange.fr", "company.io", "students.uni-heidelberg.de",
           "sub.mail.bigcorp.co.jp", "icloud.com", "fastmail.fm", "hey.com", "globex.net",
           "initech.co", "contoso.onmicrosoft.com", "example.edu.au", "posteo.de", "libero.it",
           "t-online.de", "hotmail.fr", "example.museum", "shop.example.com.br"]


def name() -> str:
    return f"{pick(FIRST).capitalize()} {pick(LAST).capitalize()}"


# --- value generators -------------------------------------------------------------------------


def email() -> tuple[str, str]:
    first, last, dom = pick(FIRST), pick(LAST), pick(DOMAINS)
    choice = rng.randrange(16)
    if choice == 0:
        return f"{first}.{last}@{dom}", "plain"
    if choice == 1:
        tag = pick(["shopping", "news", "support", "2024", "ebay", "work"])
        return f"{first}+{tag}@{dom}", "plus-addressing"
    if choice == 2:
        return f"{first}_{last}{rng.randint(1, 99)}@{dom}", "underscore-digits"
    if choice == 3:
        return f"{first.capitalize()}.{last.capitalize()}@{dom.capitalize()}", "mixed-case"
    if choice == 4:
        local = pick([f'"{first} {last}"', f'"{first}..{last}"', f'"{first}@home"',
                      f'"{last}, {first}"'])
        return f"{local}@{dom}", "quoted-local"
    if choice == 5:
        idn = pick(["müller-bäckerei.de", "bücher.example", "例え.jp", "почта.рф",
                    "café-paris.fr", "straße.de", "ñandú.com.ar", "παράδειγμα.gr",
                    "exämple.ch", "bäckerei-schmidt.at"])
        return f"{pick([first, 'info', 'kontakt', 'team'])}@{idn}", "idn-domain"
    if choice == 6:
        return pick(["josé.garcía@correo.es", "用户@例子.广告", "δοκιμή@παράδειγμα.gr",
                     "müller@firma.de", "zoë@example.co.uk", "anaïs.dupont@orange.fr",
                     "søren@firma.dk", "łukasz.nowak@poczta.pl", "ünsal@şirket.com.tr",
                     "françois@société.fr", "иван@почта.рф", "たなか@例え.jp"]), "unicode-local"
    if choice == 7:
        return pick(["info@xn--mller-kva.de", "kontakt@xn--bcher-kva.example",
                     f"{first}@xn--80ak6aa92e.com", f"{first}@xn--caf-dma.fr",
                     f"{last}@mail.xn--p1ai"]), "punycode"
    if choice == 8:
        dept = pick(["sales", "eng", "hr", "billing", "it"])
        city = pick(["berlin", "nyc", "tokyo", "lyon"])
        return f"{first}@{dept}.{city}.corp.example.com", "subdomains"
    if choice == 9:
        return f"{rng.randint(10000, 999999999)}@{pick(['qq.com', '163.com', 'yandex.ru'])}", (
            "numeric-local")
    if choice == 10:
        return pick([f"{first}.o'brien@example.ie", f"mary-{first}@{dom}",
                     f"{first}.{last}-{rng.randint(1, 9)}@{dom}",
                     f"{first}!{last}@{dom}", f"{first}#{last}@{dom}"]), "special-chars"
    if choice == 11:
        tld = pick(["photography", "technology", "consulting", "international"])
        return f"{pick(['hello', first, 'team'])}@{pick(['studio', 'acme', 'northwind'])}.{tld}", (
            "long-tld")
    if choice == 12:
        return f"{first}.{last}@{dom}".upper(), "upper-case"
    if choice == 13:
        return f"{first}.{last}+{pick(['a', 'newsletter', 'x1'])}@mail.{dom}", "plus-subdomain"
    if choice == 14:
        return f"{first[0]}{last}@{dom}", "short-local"
    return f"{first}{rng.randint(70, 99)}@{dom}", "digits"


PHONE_FORMATS: dict[str, list[str]] = {
    "us": ["+1 N##-N##-####", "(N##) N##-####", "N##-N##-####", "N##.N##.####",
           "+1 (N##) N##-####", "1-800-N##-####", "+1N##N######", "N## N## ####",
           "+1.N##.N##.####", "1 (N##) N##-####", "+1-N##-N##-####"],
    "uk": ["+44 20 N### ####", "020 N### ####", "07N## ######", "+44 7N## ######",
           "+44 (0)20 N### ####", "+447N#########", "0161 N## ####", "+44 161 N## ####"],
    "de": ["+49 30 N######", "030 N######", "030/N######", "+49 (0)30 N#######",
           "0151 N#######", "+49 151 N#######", "0151-N## ### ##", "+49 89 N## ### ##",
           "089 N#######"],
    "fr": ["06 ## ## ## ##", "+33 6 ## ## ## ##", "01 ## ## ## ##", "01.##.##.##.##",
           "+33 (0)1 ## ## ## ##", "06-##-##-##-##", "+33 1 ## ## ## ##", "07 ## ## ## ##"],
    "es": ["+34 6## ## ## ##", "91N ### ###", "+34 91N ### ###", "6## ### ###"],
    "it": ["+39 06 N### ####", "3## ### ####", "+39 3## #######", "02 N### ####"],
    "nl": ["06-N#######", "+31 6 N#######", "020-N## ####", "+31 (0)20 N## ####"],
    "in": ["+91 9#### #####", "09#### #####", "+91-9#########", "+91 80 N### ####"],
    "br": ["+55 11 9####-####", "(11) 9####-####", "+55 (21) 9####-####", "(21) 3###-####"],
    "jp": ["03-N###-####", "090-N###-####", "+81 90-N###-####", "+81 3-N###-####"],
    "au": ["(02) N### ####", "04## ### ###", "+61 4## ### ###", "+61 2 N### ####"],
    "cn": ["+86 13# #### ####", "13#-####-####", "+86 10 N### ####", "+86 13#########"],
    "ru": ["+7 (495) N##-##-##", "8 (800) N##-##-##", "+7 9## N##-##-##", "8 9## N## ## ##"],
    "mx": ["+52 55 N### ####", "+52 1 55 N### ####", "(55) N### ####"],
    "ch": ["+41 44 N## ## ##", "044 N## ## ##", "+41 79 N## ## ##"],
    "intl-00": ["0044 20 N### ####", "00 49 30 N######", "0033 6 ## ## ## ##",
                "001 N## N## ####"],
}


def phone() -> tuple[str, str]:
    country = pick(list(PHONE_FORMATS))
    template = pick(PHONE_FORMATS[country])
    return digits_from(template), country


def luhn_complete(body: str) -> str:
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d)
        if i % 2 == 0:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return body + str((10 - total % 10) % 10)


CARD_NETWORKS: dict[str, tuple[list[str], list[int]]] = {
    "visa": (["4"], [16, 16, 16, 19]),
    "mastercard": (["51", "52", "53", "54", "55"], [16]),
    "mastercard-2series": ([str(x) for x in range(2221, 2721, 37)], [16]),
    "amex": (["34", "37"], [15]),
    "discover": (["6011", "65", "644", "647", "649"], [16]),
    "diners": (["36", "38", "300", "305"], [14]),
    "jcb": ([str(x) for x in range(3528, 3590, 7)], [16]),
    "unionpay": (["62"], [16, 19]),
    "maestro": (["5018", "5020", "6759", "6304"], [16]),
    "mir": (["2200", "2201", "2202", "2204"], [16]),
}


def group_digits(number: str) -> list[int]:
    n = len(number)
    if n == 15:
        return [4, 6, 5]
    if n == 14:
        return [4, 6, 4]
    if n == 19:
        return [4, 4, 4, 4, 3]
    return [4] * (n // 4) + ([n % 4] if n % 4 else [])


def card() -> tuple[str, str]:
    network = pick(list(CARD_NETWORKS))
    prefixes, lengths = CARD_NETWORKS[network]
    prefix, length = pick(prefixes), rng.choice(lengths)
    number = luhn_complete(prefix + rand(DI, length - len(prefix) - 1))
    sep = pick([" ", " ", "-", "", "", ".", "/"])
    if sep == "":
        return number, f"{network}/compact"
    parts, i = [], 0
    for size in group_digits(number):
        parts.append(number[i : i + size])
        i += size
    label = {" ": "spaces", "-": "dashes", ".": "dots", "/": "slashes"}[sep]
    return sep.join(parts), f"{network}/{label}"


IBAN_BBAN: dict[str, str] = {  # n: digit, a: upper letter, c: upper letter or digit
    "DE": "n18", "GB": "a4n14", "FR": "n10c11n2", "ES": "n20", "IT": "a1n10c12",
    "NL": "a4n10", "BE": "n12", "CH": "n5c12", "AT": "n16", "PL": "n24", "SE": "n20",
    "NO": "n11", "DK": "n14", "FI": "n14", "IE": "a4n14", "PT": "n21", "LU": "n3c13",
    "GR": "n7c16", "CZ": "n20", "HU": "n24", "RO": "a4c16", "HR": "n17", "SI": "n15",
    "LT": "n16", "LV": "a4c13", "EE": "n16", "MT": "a4n5c18", "TR": "n6c16", "SA": "n2c18",
    "AE": "n19", "BR": "n23a1c1", "IL": "n19", "CY": "n8c16", "BG": "a4n6c8", "SK": "n20",
    "MC": "n10c11n2", "IS": "n22", "LI": "n5c12", "QA": "a4c21", "KW": "a4c22",
}


def iban_compact(country: str) -> str:
    spec = IBAN_BBAN[country]
    bban = ""
    i = 0
    while i < len(spec):
        kind = spec[i]
        j = i + 1
        while j < len(spec) and spec[j].isdigit():
            j += 1
        count = int(spec[i + 1 : j])
        chars = {"n": DI, "a": UP, "c": UP + DI + DI}[kind]
        bban += rand(chars, count)
        i = j
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    return f"{country}{check:02d}{bban}"


def iban() -> tuple[str, str]:
    country = pick(list(IBAN_BBAN))
    compact = iban_compact(country)
    style = rng.randrange(8)
    groups = [compact[i : i + 4] for i in range(0, len(compact), 4)]
    if style in (0, 1):
        return " ".join(groups), f"{country}/spaced"
    if style == 2:
        return compact, f"{country}/compact"
    if style == 3:
        return " ".join(groups).lower(), f"{country}/lower-spaced"
    if style == 4:
        return compact.lower(), f"{country}/lower-compact"
    if style == 5:
        return "-".join(groups), f"{country}/dashed"
    if style == 6:
        return "-".join(groups).lower(), f"{country}/lower-dashed"
    return compact[:4] + " " + " ".join(groups[1:]), f"{country}/spaced"


def aws_secret() -> str:
    while True:
        s = rand(B62 + "/+", 40)
        if any(c.isupper() for c in s) and any(c.islower() for c in s) and any(
            c.isdigit() for c in s
        ):
            return s


def aws_key_id(prefix: str = "AKIA") -> str:
    return prefix + rand(UP + "234567", 16)


API_KEYS: dict[str, Callable[[], str]] = {
    "openai-legacy": lambda: "sk-" + rand(B62, 48),
    "openai-project": lambda: "sk-proj-" + rand(B64URL, rng.randint(60, 80)) + "T3BlbkFJ"
    + rand(B64URL, rng.randint(60, 80)),
    "openai-service-account": lambda: "sk-svcacct-" + rand(B64URL, 74) + "T3BlbkFJ"
    + rand(B64URL, 74),
    "anthropic": lambda: "sk-ant-api03-" + rand(B64URL, 93) + "AA",
    "anthropic-admin": lambda: "sk-ant-admin01-" + rand(B64URL, 93) + "AA",
    "aws-access-key-id": lambda: aws_key_id(pick(["AKIA", "ASIA"])),
    "github-classic": lambda: pick(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]) + rand(B62, 36),
    "github-fine-grained": lambda: "github_pat_11" + rand(UP + DI, 20) + "_" + rand(B62, 59),
    "gitlab": lambda: "glpat-" + rand(B64URL, 20),
    "huggingface": lambda: "hf_" + rand(UP + LO, 34),
    "sendgrid": lambda: "SG." + rand(B64URL, 22) + "." + rand(B64URL, 43),
    "stripe-secret": lambda: pick(["sk_live_", "sk_test_", "rk_live_", "rk_test_"])
    + rand(B62, rng.choice([24, 99])),
    "stripe-webhook": lambda: "whsec_" + rand(B62, 32),
    "npm": lambda: "npm_" + rand(B62, 36),
    "twilio-api-key": lambda: "SK" + rand(HEX, 32),
    "twilio-account-sid": lambda: "AC" + rand(HEX, 32),
    "slack-token": lambda: pick([
        "xoxb-" + rand(DI, 12) + "-" + rand(DI, 13) + "-" + rand(B62, 24),
        "xoxp-" + rand(DI, 11) + "-" + rand(DI, 11) + "-" + rand(DI, 13) + "-" + rand(HEX, 32),
        "xapp-1-A0" + rand(UP + DI, 9) + "-" + rand(DI, 13) + "-" + rand(HEX, 64),
    ]),
    "slack-webhook": lambda: "https://hooks.slack.com/services/T" + rand(UP + DI, 8) + "/B"
    + rand(UP + DI, 10) + "/" + rand(B62, 24),
    "google-api-key": lambda: "AIza" + rand(B64URL, 35),
    "google-oauth-secret": lambda: "GOCSPX-" + rand(B64URL, 28),
    "digitalocean": lambda: "dop_v1_" + rand(HEX, 64),
    "shopify": lambda: pick(["shpat_", "shpss_", "shpca_"]) + rand(HEX, 32),
    "pypi": lambda: "pypi-AgEIcHlwaS5vcmc" + rand(B64URL, 60),
    "groq": lambda: "gsk_" + rand(B62, 52),
    "replicate": lambda: "r8_" + rand(B62, 37),
    "discord-webhook": lambda: "https://discord.com/api/webhooks/" + rand(DI, 18) + "/"
    + rand(B64URL, 68),
    "databricks": lambda: "dapi" + rand(HEX, 32),
    "linear": lambda: "lin_api_" + rand(B62, 40),
}

ENV_NAMES = {
    "openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "aws": "AWS_ACCESS_KEY_ID",
    "github": "GITHUB_TOKEN", "gitlab": "GITLAB_TOKEN", "huggingface": "HF_TOKEN",
    "sendgrid": "SENDGRID_API_KEY", "stripe": "STRIPE_SECRET_KEY", "npm": "NPM_TOKEN",
    "twilio": "TWILIO_API_KEY", "slack": "SLACK_BOT_TOKEN", "google": "GOOGLE_API_KEY",
    "digitalocean": "DIGITALOCEAN_TOKEN", "shopify": "SHOPIFY_ACCESS_TOKEN",
    "pypi": "TWINE_PASSWORD", "groq": "GROQ_API_KEY", "replicate": "REPLICATE_API_TOKEN",
    "discord": "DISCORD_WEBHOOK_URL", "databricks": "DATABRICKS_TOKEN", "linear": "LINEAR_API_KEY",
}


def b64url_json(obj: object) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt() -> tuple[str, str]:
    alg = pick(["HS256", "RS256", "ES256", "none"])
    header = {"alg": alg, "typ": "JWT"}
    if alg != "HS256" and rng.random() < 0.5:
        header["kid"] = rand(B62, 16)
    payload = {"sub": str(rng.randint(1000, 99999999)), "iat": 1710000000 + rng.randint(0, 10**7)}
    if rng.random() < 0.6:
        payload["email"] = f"{pick(FIRST)}@{pick(DOMAINS)}"
    if rng.random() < 0.5:
        payload["scope"] = pick(["read write", "openid profile email", "admin"])
    if rng.random() < 0.4:
        payload["exp"] = payload["iat"] + 3600
    sig_bytes = {"HS256": 32, "RS256": 256, "ES256": 64, "none": 0}[alg]
    sig = base64.urlsafe_b64encode(rng.randbytes(sig_bytes)).rstrip(b"=").decode()
    return f"{b64url_json(header)}.{b64url_json(payload)}.{sig}", alg


def pem(kind: str) -> str:
    label = {"rsa": "RSA PRIVATE KEY", "pkcs8": "PRIVATE KEY", "ec": "EC PRIVATE KEY",
             "openssh": "OPENSSH PRIVATE KEY", "encrypted": "ENCRYPTED PRIVATE KEY",
             "dsa": "DSA PRIVATE KEY", "pgp": "PGP PRIVATE KEY BLOCK"}[kind]
    prefix = {"rsa": "MIIEowIBAAKCAQEA", "pkcs8": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
              "ec": "MHcCAQEEI", "openssh": "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
              "encrypted": "MIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI",
              "dsa": "MIIBuwIBAAKBgQD", "pgp": "lQOYBF"}[kind]
    lines = rng.randint(3, 9)
    body = prefix + base64.b64encode(rng.randbytes(48 * lines)).decode()
    wrapped = [body[i : i + 64] for i in range(0, len(body), 64)]
    middle = "\n".join(wrapped)
    if kind == "pgp":
        middle = "Version: GnuPG v2\n\n" + middle + "\n=" + rand(B62, 4)
    return f"-----BEGIN {label}-----\n{middle}\n-----END {label}-----"


def opaque_token() -> tuple[str, str]:
    choice = rng.randrange(9)
    if choice == 0:
        return rand(B62, rng.randint(32, 64)), "base62"
    if choice == 1:
        return rand(HEX, rng.choice([32, 40])), "hex-lower"
    if choice == 2:
        return rand(B64URL, 43), "base64url"
    if choice == 3:
        return rand(LO + DI, 32), "lower-alnum"
    if choice == 4:
        return rand(LO, rng.randint(24, 40)), "lower-letters"
    if choice == 5:
        return "ya29.a0" + rand(B64URL, 120), "google-oauth"
    if choice == 6:
        return rand(LO + "234567", 32), "base32-lower"
    if choice == 7:
        return rand(HEX.upper(), 40), "hex-upper"
    return "sl.B" + rand(B64URL, 130), "dropbox-style"


def password() -> str:
    choice = rng.randrange(6)
    words = ["Summer", "Winter", "Sunshine", "Dragon", "Monkey", "Tr0ub4dor", "correct",
             "horse", "Welcome", "P@ssw0rd", "Hunter", "Berlin", "Kaffee", "Soleil"]
    if choice == 0:
        return pick(words) + str(rng.randint(1, 2026)) + pick(["!", "", "#", "?"])
    if choice == 1:
        return rand(B62 + "!@#$%^&*", rng.randint(10, 20))
    if choice == 2:
        return "-".join(pick(words).lower() for _ in range(4))
    if choice == 3:
        return pick(words) + pick(["&", "_", "."]) + rand(DI, 3)
    if choice == 4:
        return rand(LO, 6) + rand(DI, 4)
    return rand(B62, 16)


def ipv4() -> tuple[str, str]:
    choice = rng.randrange(5)
    if choice == 0:
        return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}", "private"
    if choice == 1:
        return f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}", "private"
    if choice == 2:
        return f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}", "private"
    return (f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
            f"{rng.randint(1, 254)}"), "public"


def ipv6() -> tuple[str, str]:
    def grp() -> str:
        return format(rng.randint(0, 0xFFFF), "x")

    choice = rng.randrange(6)
    if choice == 0:
        return ":".join(format(rng.randint(0, 0xFFFF), "04x") for _ in range(8)), "v6-full"
    if choice == 1:
        return f"2001:db8::{grp()}:{grp()}", "v6-compressed"
    if choice == 2:
        return f"fe80::{grp()}:{grp()}:{grp()}:{grp()}%{pick(['eth0', 'en0', 'wlan0', '12'])}", (
            "v6-zone")
    if choice == 3:
        return f"::ffff:{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}." \
               f"{rng.randint(1, 254)}", "v6-mapped-v4"
    if choice == 4:
        return f"2a02:{grp()}:{grp()}:{grp()}::{grp()}", "v6-compressed"
    return ":".join(format(rng.randint(0, 0xFFFF), "X") for _ in range(8)), "v6-upper"


# --- contexts ----------------------------------------------------------------------------------

WRAPPERS = [
    "{t}", "{t}", "{t}", "User: {t}", "customer: {t}", "[support-chat] {t}",
    "{t}\n\nThanks in advance!", "Hi team,\n{t}\nBest, {n}", "> {t}",
    '{{"role": "user", "content": {j}}}', "tool_result: {j}",
    "2024-05-12T10:31:07.412Z INFO chat.message {j}",
]


FILLERS_BEFORE = [
    "Hello!", "Hi there,", "Good morning.", "Quick question.", "Sorry to bother you again.",
    "I've been waiting for two weeks now.", "This is my third message about this.",
    "Following up on my previous chat.", "Guten Tag,", "Bonjour,", "Hey support team,",
]
FILLERS_AFTER = [
    "Thanks!", "Please hurry, it's urgent.", "Let me know if you need anything else.",
    "Cheers", "Danke im Voraus.", "I'm available all afternoon.", "Is that enough info?",
    "The app keeps crashing when I open the settings page.", "Merci beaucoup.",
]


def chatty(text: str) -> str:
    """Sometimes surround a message with small talk, as real chat messages are."""
    r = rng.random()
    if r < 0.25:
        return f"{pick(FILLERS_BEFORE)} {text}"
    if r < 0.5:
        return f"{text} {pick(FILLERS_AFTER)}"
    if r < 0.6:
        return f"{pick(FILLERS_BEFORE)} {text}\n{pick(FILLERS_AFTER)}"
    return text


def wrap(text: str) -> str:
    w = pick(WRAPPERS)
    return w.format(t=text, j=json.dumps(text, ensure_ascii=False), n=name())


EMAIL_CTX = [
    "Hi, my email is {v}, can you resend the invoice?",
    "Please update the contact address to {v} — the old one bounces.",
    "From: {n} <{v}>\nSubject: refund for damaged item",
    "I never got the password reset link at {v}.",
    "cc {v} on the ticket please",
    '{{"tool": "send_email", "args": {{"to": "{v}", "subject": "Your refund"}}}}',
    "user {v} reported a 500 on checkout",
    "Contact: {v}.",
    "Bonjour, mon adresse est {v}, merci de me recontacter.",
    "Hallo, bitte schicken Sie die Rechnung an {v}!",
    "Reply to ({v}) by Friday",
    "login ok user={v} method=password",
    "Can you merge the account {v} with my new one?",
    "the invite went to '{v}' instead of my work address",
    "42,{n},{v},active,2023-11-02",
    "[{v}](mailto:{v})",
    "Hola, escríbanme a {v} por favor.",
    "my colleague ({n}, {v}) will take over the case",
    "send the export to {v}; thanks",
    "The customer wrote from {v}: 'where is my parcel?'",
]

PHONE_CTX = [
    "You can reach me on {v} after 5pm.",
    "Call me back at {v} please",
    "my number changed to {v}",
    '{{"name": "{n}", "phone": "{v}"}}',
    "Tel: {v}",
    "Mobile {v} / office hours 9-17",
    "Rufen Sie mich bitte unter {v} an.",
    "Mon numéro : {v}",
    "Text me at {v} when the courier arrives",
    "customer_phone={v} country=auto",
    "whatsapp: {v}",
    "Phone: {v} (ask for {n})",
    "I tried calling {v} three times yesterday",
    "emergency contact {n}, {v}",
    "Llámame al {v}, gracias.",
    "the delivery driver should ring {v} on arrival",
    "| {n} | {v} | gold tier |",
    "callback number: {v}.",
]

CARD_CTX = [
    "My card {v} was charged twice for the same order.",
    "card number: {v}, exp 09/27",
    "I paid with {v} but the payment failed",
    '{{"payment_method": {{"number": "{v}", "exp_month": 9, "exp_year": 2027}}}}',
    "Can you refund to the card {v}?",
    "PAN={v}",
    "the card ending in 4 digits... actually the full number is {v}",
    "Kartennummer {v}, gültig bis 08/26",
    "numéro de carte : {v}",
    "charge failed for card {v} (insufficient funds)",
    "cc: {v} exp 11/25",
    "please use {v} for the renewal",
    "tarjeta {v} caducada",
    "customer read out the credit card {v} on the call",
]

IBAN_CTX = [
    "Please refund to IBAN {v}.",
    "my bank account: {v} (BIC DEUTDEFFXXX)",
    "IBAN: {v}",
    '{{"iban": "{v}", "holder": "{n}"}}',
    "Überweisung an {v}, Verwendungszweck Rechnung 118",
    "wire it to {v} please",
    "new payout account {v}",
    "Bitte auf {v} zurückerstatten.",
    "virement sur le compte {v} svp",
    "account {v} was debited twice",
    "iban={v}",
    "can you check why the transfer to {v} bounced?",
]

KEY_CTX = [
    "here is my key: {v}",
    "export {e}={v}",
    "{e}={v}",
    'client = Client(api_key="{v}")',
    "I accidentally pasted {v} in the public channel, how do I rotate it?",
    "The request with {v} returns 401 Unauthorized",
    "config.yaml:\n  provider:\n    token: {v}\n",
    '{{"tool": "http_get", "headers": {{"X-Api-Key": "{v}"}}}}',
    "curl https://api.example.com/v1/models -H 'Authorization: Bearer {v}'",
    "is {v} still valid?",
    "`{v}`",
    "Revoked {v} (leaked in CI logs)",
    "my key {v} stopped working yesterday",
    "error: invalid credentials ({v})",
    "Using {v} from the vault",
]

WEBHOOK_CTX = [
    "post alerts to {v}",
    "{e}={v}",
    "the webhook {v} returns 404 since yesterday",
    '{{"channel": "#ops", "url": "{v}"}}',
    "curl -X POST -d '{{\"text\": \"deploy done\"}}' {v}",
]

AWS_SECRET_CTX = [
    "[default]\naws_access_key_id = {k}\naws_secret_access_key = {v}\nregion = eu-west-1",
    "AWS secret: {v}",
    "Access key ID: {k}\nSecret access key: {v}",
    "Access key ID,Secret access key\n{k},{v}",
    '{{"AccessKey": {{"AccessKeyId": "{k}", "SecretAccessKey": "{v}", "Status": "Active"}}}}',
    "export AWS_ACCESS_KEY_ID={k}\nexport AWS_SECRET_ACCESS_KEY={v}",
    "my aws secret is {v} — please rotate it",
    "the IAM user {k} / {v} can't list the bucket",
]

BEARER_CTX = [
    "Authorization: Bearer {v}",
    "authorization: bearer {v}",
    'headers = {{"Authorization": "Bearer {v}"}}',
    'curl -H "Authorization: Bearer {v}" https://api.example.com/orders',
    "I'm sending Bearer {v} and still get 403",
    "-H 'authorization: Token {v}'",
    "GET /v2/me HTTP/1.1\nHost: api.example.com\nAuthorization: Bearer {v}\nAccept: */*",
    "AUTHORIZATION: BEARER {v}",
    '{{"headers": {{"authorization": "Bearer {v}", "content-type": "application/json"}}}}',
    "the app sends `Bearer {v}` in the header",
    "request failed: Authorization=Bearer {v}",
]

JWT_CTX = [
    "Authorization: Bearer {v}",
    "id_token={v}",
    "my session cookie is session={v}; Path=/; HttpOnly",
    '{{"access_token": "{v}", "token_type": "Bearer", "expires_in": 3600}}',
    "decode this for me: {v}",
    "https://app.example.com/callback?token={v}&redirect=/home",
    "jwt: {v}",
    "the token {v} says expired but I just logged in",
    "Set-Cookie: auth={v}; Secure",
]

SECRET_CTX = [
    "password: {v}",
    "DB_PASSWORD={v}",
    '{{"username": "{u}", "password": "{v}"}}',
    "pwd={v}",
    "my password is {v}",
    "the new password is {v} but it says invalid",
    "db_passwd = '{v}'",
    "Passwort: {v}",
    "mot de passe : {v}",
    "PASSWORD=\"{v}\"",
    "login {u} / password {v}",
    "set wifi passphrase: {v}",
]

GENERIC_SECRET_CTX = [
    '{{"client_secret": "{v}"}}',
    "SECRET_KEY = '{v}'",
    "api_key: {v}",
    "x-api-key: {v}",
    "X-Auth-Token: {v}",
    "access_token={v}&state=xyz",
    "refresh_token: {v}",
    "webhook_secret={v}",
    "auth_token = \"{v}\"",
    "apiKey: '{v}'",
    "TWILIO_AUTH_TOKEN={v}",
    "encryption key = {v}",
    "session_token: {v}",
]

URL_SECRET_CTX = [
    "DATABASE_URL=postgres://{u}:{v}@db.internal:5432/app",
    "mongodb+srv://admin:{v}@cluster0.ab1cd.mongodb.net/prod",
    "redis://:{v}@cache.example.com:6379/0",
    "amqp://{u}:{v}@rabbit.svc:5672/",
    "connect with mysql://root:{v}@10.0.0.5/shop",
    "the proxy is http://{u}:{v}@proxy.corp.example.com:3128",
]

PEM_CTX = [
    "here's the deploy key:\n{v}\n",
    "```\n{v}\n```",
    "Please check why ssh fails with this key\n{v}\nthanks",
    "{v}",
    "key.pem contents:\r\n{vr}",
]

IP_CTX = [
    "Connection refused from {v}",
    "X-Forwarded-For: {v}, {w}",
    "ssh admin@{v} -p 2222",
    '{{"client_ip": "{v}", "path": "/login"}}',
    "ping {v} times out since this morning",
    "allowlist {v}/32 please",
    '{v} - - [12/Mar/2024:10:01:22 +0000] "GET /api/orders HTTP/1.1" 200 512',
    "my IP is {v}",
    "the server at {v}:8443 rejects the cert",
    "blocked {v} after 50 failed logins",
    "Ihre IP-Adresse {v} wurde gesperrt.",
    "host={v} port=5432",
]

IP6_CTX = [
    "Connection refused from {v}",
    "my IPv6 is {v}",
    "the server at [{v}]:8443 rejects the cert",
    "inet6 {v} prefixlen 64",
    '{{"client_ip": "{v}"}}',
    "ping6 {v} fails",
    "ALLOW from {v} to any port 22",
]


def sample_id(prefix: str, counter: dict[str, int]) -> str:
    counter[prefix] = counter.get(prefix, 0) + 1
    return f"{prefix}-{counter[prefix]:04d}"


def positives() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    ids: dict[str, int] = {}

    def add(kind: str, text: str, items: list[tuple[str, str, str]]) -> None:
        for i, (k, value, f) in enumerate(items):
            if value not in text:  # inside a JSON wrapper: the value appears escaped
                value = json.dumps(value, ensure_ascii=False)[1:-1]
                items[i] = (k, value, f)
            assert value in text, (value, text)
        out.append({
            "id": sample_id(kind, ids),
            "text": text,
            "expect": [{"kind": k, "value": v, "format": f} for k, v, f in items],
            "group": kind,
        })

    for _ in range(110):
        v, fmt = email()
        add("email", wrap(chatty(pick(EMAIL_CTX).format(v=v, n=name()))), [("email", v, fmt)])
    for _ in range(120):
        v, fmt = phone()
        add("phone", wrap(chatty(pick(PHONE_CTX).format(v=v, n=name()))), [("phone", v, fmt)])
    for _ in range(110):
        v, fmt = card()
        add("payment_card", wrap(chatty(pick(CARD_CTX).format(v=v))), [("payment_card", v, fmt)])
    for _ in range(100):
        v, fmt = iban()
        add("iban", wrap(chatty(pick(IBAN_CTX).format(v=v, n=name()))), [("iban", v, fmt)])
    providers = list(API_KEYS)
    for i in range(150):
        provider = providers[i % len(providers)]
        v = API_KEYS[provider]()
        env = next((e for p, e in ENV_NAMES.items() if provider.startswith(p)), "API_KEY")
        ctx = pick(WEBHOOK_CTX if provider.endswith("-webhook") and "stripe" not in provider
                   else KEY_CTX)
        add("api_key", wrap(chatty(ctx.format(v=v, e=env))), [("api_key", v, provider)])
    for _ in range(24):
        k, v = aws_key_id(), aws_secret()
        ctx = pick(AWS_SECRET_CTX)
        items = [("api_key", v, "aws-secret-access-key")]
        if "{k}" in ctx:
            items.append(("api_key", k, "aws-access-key-id"))
        add("api_key", ctx.format(v=v, k=k), items)
    for _ in range(90):
        v, fmt = opaque_token()
        ctx = pick(BEARER_CTX)
        if "BEARER" in ctx:
            v, fmt = v.upper(), fmt + "/upper"
        add("bearer_token", wrap(ctx.format(v=v)), [("bearer_token", v, fmt)])
    for _ in range(12):
        raw = f"{pick(FIRST)}:{password()}"
        v = base64.b64encode(raw.encode()).decode()
        ctx = pick(["Authorization: Basic {v}", "Proxy-Authorization: Basic {v}",
                    "curl -H 'Authorization: Basic {v}' https://registry.example.com"])
        add("bearer_token", ctx.format(v=v), [("bearer_token", v, "basic-auth")])
    for _ in range(85):
        v, fmt = jwt()
        add("jwt", wrap(chatty(pick(JWT_CTX).format(v=v))), [("jwt", v, fmt)])
    for _ in range(60):
        v = password()
        add("secret", wrap(pick(SECRET_CTX).format(v=v, u=pick(FIRST))),
            [("secret", v, "password")])
    for _ in range(50):
        v = pick([rand(HEX, 32), rand(B62, 40), rand(B64URL, 43), rand(HEX, 64),
                  "django-insecure-" + rand(LO + DI + "!@#%^&*(-_=+)", 50), rand(B62, 24)])
        add("secret", wrap(pick(GENERIC_SECRET_CTX).format(v=v)), [("secret", v, "assignment")])
    for _ in range(24):
        v = pick([password(), rand(B62, 20)]).replace("@", "").replace("/", "").replace(":", "")
        v = v.replace("#", "").replace("?", "")
        ctx = pick(URL_SECRET_CTX)
        items = [("secret", v, "url-credentials")]
        if "10.0.0.5" in ctx:
            items.append(("ip_address", "10.0.0.5", "private"))
        add("secret", ctx.format(v=v, u=pick(FIRST)), items)
    kinds = ["rsa", "pkcs8", "ec", "openssh", "encrypted", "dsa", "pgp"]
    for i in range(56):
        block = pem(kinds[i % len(kinds)])
        style = i % 4
        if style == 0:
            ctx = pick(PEM_CTX)
            if "{vr}" in ctx:  # Windows line ends
                block = block.replace("\n", "\r\n")
            add("private_key", ctx.format(v=block, vr=block),
                [("private_key", block, kinds[i % len(kinds)])])
        elif style == 1:  # JSON-escaped, as in a service-account file
            escaped = block.replace("\n", "\\n")
            client = f"svc-{rand(LO, 6)}@project-{rand(DI, 6)}.iam.gserviceaccount.com"
            text = ('{"type": "service_account", "project_id": "demo", "private_key": "'
                    + escaped + '\\n", "client_email": "' + client + '"}')
            add("private_key", text, [("private_key", escaped, "json-escaped"),
                                      ("email", client, "service-account")])
        else:  # cut: BEGIN present, END missing (a truncated string)
            cut = block[: rng.randint(60, len(block) - 40)]
            text = pick(["key: {v}", "{v}", "log: loaded key material {v}",
                         '{{"private_key": "{v}'])
            add("private_key", text.format(v=cut.replace("\n", "\\n") if "{{" in text else cut),
                [("private_key", cut.replace("\n", "\\n") if "{{" in text else cut, "cut")])
    for _ in range(70):
        v, fmt = ipv4()
        w, wfmt = ipv4()
        ctx = pick(IP_CTX)
        items = [("ip_address", v, fmt)] + ([("ip_address", w, wfmt)] if "{w}" in ctx else [])
        add("ip_address", wrap(chatty(ctx.format(v=v, w=w))), items)
    for _ in range(40):
        v, fmt = ipv6()
        add("ip_address", wrap(chatty(pick(IP6_CTX).format(v=v))), [("ip_address", v, fmt)])
    # PII-dense messages: several kinds at once
    for _ in range(60):
        items: list[tuple[str, str, str]] = []
        parts = []
        for kind in rng.sample(["email", "phone", "payment_card", "iban", "ip_address"], 3):
            if kind == "email":
                v, f = email()
                parts.append(f"mail {v}")
            elif kind == "phone":
                v, f = phone()
                parts.append(f"phone {v}")
            elif kind == "payment_card":
                v, f = card()
                parts.append(f"card {v}")
            elif kind == "iban":
                v, f = iban()
                parts.append(f"IBAN {v}")
            else:
                v, f = ipv4()
                parts.append(f"last login from {v}")
            items.append((kind, v, f))
        text = f"Customer {name()} — " + "; ".join(parts) + ". Please verify and update."
        out.append({
            "id": sample_id("mixed", ids),
            "text": text,
            "expect": [{"kind": k, "value": v, "format": f} for k, v, f in items],
            "group": "mixed",
        })
    return out


# --- hard negatives -----------------------------------------------------------------------------


def ean13() -> str:
    body = pick(["400", "401", "402", "403", "404", "405", "406", "407", "408", "409", "410",
                 "420", "440", "500", "590", "760", "800", "871", "890"]) + rand(DI, 9)
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def upc() -> str:
    body = rand(DI, 11)
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def isbn13() -> str:
    body = pick(["978", "979"]) + rand(DI, 9)
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    d = body + str((10 - total % 10) % 10)
    return f"{d[:3]}-{d[3]}-{d[4:7]}-{d[7:12]}-{d[12]}"


def imei() -> str:
    return luhn_complete(pick(["35", "86", "01", "49"]) + rand(DI, 12))


def chrome_version() -> str:
    return f"{rng.randint(100, 131)}.0.{rng.randint(4000, 6999)}.{rng.randint(10, 250)}"


NEG_TEMPLATES: list[Callable[[], str]] = [
    # versions, OIDs, section numbers (IP-shaped)
    lambda: f"Upgraded the agent to v{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}."
            f"{rng.randint(0, 99)} and the crash is gone",
    lambda: f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{chrome_version()} Safari/537.36",
    lambda: f"user agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Chrome/"
            f"{rng.randint(100, 131)}.0.0.0 Safari/537.36 Edg/{chrome_version()}",
    lambda: f"I'm on Chrome {chrome_version()} (Official Build) (64-bit)",
    lambda: f"Firefox {rng.randint(100, 130)}.0.{rng.randint(1, 3)} on Ubuntu 22.04",
    lambda: "OID " + pick(["2.5.4.3", "2.5.4.10", "1.3.6.1.4.1.311.21.8", "1.2.840.113549.1.1.11",
                           "2.5.29.17", "1.3.6.1.5.5.7.3.1"]) + " is missing from the certificate",
    lambda: f"snmpget -v2c -c public host {pick(['1.3.6.1.2.1.1.3.0', '1.3.6.1.2.1.2.2.1.10.1'])}",
    lambda: f"see section {rng.randint(1, 9)}.{rng.randint(1, 9)}.{rng.randint(1, 9)}."
            f"{rng.randint(1, 9)} of the terms",
    lambda: f'[assembly: AssemblyVersion("{rng.randint(1, 9)}.0.{rng.randint(0, 9)}.0")]',
    lambda: f"firmware {rng.randint(1, 5)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}."
            f"{rng.randint(0, 200)} bricked my router",
    lambda: f"pip install requests=={rng.randint(2, 2)}.{rng.randint(25, 32)}.{rng.randint(0, 9)}"
            f" urllib3=={rng.randint(1, 2)}.{rng.randint(0, 26)}.{rng.randint(0, 20)}",
    lambda: f"Windows build 10.0.{rng.randint(19041, 22631)}.{rng.randint(100, 4000)}",
    lambda: f"release 2024.{rng.randint(1, 12)}.{rng.randint(1, 28)}.{rng.randint(1, 9)} is out",
    lambda: f"semver {rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}-beta."
            f"{rng.randint(1, 9)}+build.{rng.randint(10, 999)}",
    lambda: f"Python {rng.randint(3, 3)}.{rng.randint(8, 13)}.{rng.randint(0, 12)} and node "
            f"v{rng.randint(16, 22)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
    lambda: f"iOS {rng.randint(15, 18)}.{rng.randint(0, 6)}.{rng.randint(1, 3)} app version "
            f"{rng.randint(1, 9)}.{rng.randint(0, 40)}.{rng.randint(0, 9)} "
            f"({rng.randint(1000, 9999)})",
    lambda: f"the library ships as lodash@{rng.randint(3, 4)}.{rng.randint(0, 17)}."
            f"{rng.randint(0, 21)} and @types/node@{rng.randint(16, 22)}.{rng.randint(0, 11)}.9",
    # dates, times, durations, numbers
    lambda: f"created 2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
    lambda: f"delivery expected on {rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.2025 "
            f"between {rng.randint(8, 11)}:00 and {rng.randint(12, 18)}:30",
    lambda: f"the call lasted 00:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}."
            f"{rng.randint(0, 999):03d}",
    lambda: f"timestamp {rng.randint(1600000000, 1800000000)}{rng.randint(100, 999)} ms",
    lambda: f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
            f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z "
            f"request finished in {rng.randint(1, 900)} ms",
    lambda: f"total: ${rng.randint(1, 9)},{rng.randint(100, 999)}.{rng.randint(0, 99):02d} incl. "
            f"tax (€ {rng.randint(1, 9)}.{rng.randint(100, 999)},{rng.randint(0, 99):02d})",
    lambda: f"the price went from 1 {rng.randint(100, 999)} {rng.randint(100, 999)} ₽ to "
            f"{rng.randint(100, 999)} {rng.randint(100, 999)} ₽",
    lambda: f"coordinates {rng.uniform(-80, 80):.6f}, {rng.uniform(-170, 170):.6f}",
    lambda: "pi ≈ 3.14159 26535 89793 and e ≈ 2.71828 18284",
    lambda: f"population 8.{rng.randint(0, 9)} billion, "
            f"{rng.randint(100, 999)}.{rng.randint(100, 999)}."
            f"{rng.randint(100, 999)} exactly",
    lambda: f"screen 1920x1080 @ {rng.randint(60, 144)} Hz, aspect 16:9",
    lambda: f"ZIP {rng.randint(10000, 99999)}-{rng.randint(1000, 9999)}, "
            f"suite {rng.randint(100, 999)}",
    # order / ticket / tracking numbers
    lambda: f"Order #{rng.randint(100, 999)}-{rng.randint(1000000, 9999999)}-"
            f"{rng.randint(1000000, 9999999)} hasn't arrived",
    lambda: f"order number {rng.randint(100, 999)}-{rng.randint(100, 999)}-"
            f"{rng.randint(1000, 9999)} was cancelled",
    lambda: f"my order no. {rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}-"
            f"{rng.randint(10, 99)} is late",
    lambda: f"Invoice INV-2024-{rng.randint(10000, 99999)} and "
            f"PO {rng.randint(4500000000, 4599999999)}",
    lambda: f"ticket #{rng.randint(10000, 99999)}, case {rng.randint(10000000, 99999999)}",
    lambda: f"tracking number 1Z{rand(UP + DI, 6)}{rand(DI, 10)}",
    lambda: f"FedEx tracking {rng.randint(1000, 9999)} {rng.randint(1000, 9999)} "
            f"{rng.randint(1000, 9999)}",
    lambda: f"USPS tracking 9400 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)} "
            f"{rng.randint(1000, 9999)} {rng.randint(1000, 9999)} {rng.randint(10, 99)}",
    lambda: f"RMA {rng.randint(2020, 2025)}-{rng.randint(100, 999)}-"
            f"{rng.randint(1000, 9999)} approved",
    lambda: f"reference {rng.randint(10000000, 99999999)}{rng.randint(10000000, 99999999)} "
            f"on the statement",
    lambda: f"transaction id {rand(DI, 12)}, auth code {rand(UP + DI, 6)}",
    lambda: f"SKU {rng.randint(100, 999)}-{rng.randint(1000, 9999)}-{rng.randint(100, 999)} is "
            f"out of stock",
    # barcodes, ISBNs, IMEIs
    lambda: f"EAN {ean13()} scans as the wrong product",
    lambda: f"barcode {ean13()}",
    lambda: f"UPC {upc()} / EAN {ean13()}",
    lambda: f"ISBN {isbn13()}",
    lambda: f"ISBN-13: {isbn13().replace('-', '')}",
    lambda: f"IMEI {imei()} is blocked",
    lambda: f"gtin: {ean13()}, qty 3",
    # identifiers and hashes
    lambda: f"request id {rand(HEX, 8)}-{rand(HEX, 4)}-4{rand(HEX, 3)}-a{rand(HEX, 3)}-"
            f"{rand(HEX, 12)} failed",
    lambda: f"fixed in commit {rand(HEX, 40)}",
    lambda: f"git cherry-pick {rand(HEX, 7)} {rand(HEX, 7)}",
    lambda: f"image nginx@sha256:{rand(HEX, 64)}",
    lambda: f"color: #{rand(HEX, 6)}; background: #{rand('0123456789ABCDEF', 3)};",
    lambda: f"md5 {rand(HEX, 32)}  report.pdf",
    lambda: f"session expired after {rng.randint(1, 90)} minutes; user id u_{rand(LO + DI, 10)}",
    lambda: f"conversation {rand(HEX, 24)} was archived",
    # product names and keyword lookalikes
    lambda: pick(["TokenManager", "SecretsManagerClient", "KeyVaultClient",
                  "PasswordResetService", "ApiKeyAuthenticator"])
            + " throws a NullPointerException",
    lambda: f"token: {pick(['AuthTokenProvider', 'DefaultTokenService', 'TokenRefreshScheduler'])}",
    lambda: "secret: "
            + pick(["KubernetesSecretStore", "VaultSecretBackend", "AwsSecretsProvider"]),
    lambda: f"key: {pick(['PrimaryKeyConstraint', 'CompositeKeyGenerator', 'ForeignKeyResolver'])}",
    lambda: "api_key: YOUR_API_KEY_HERE",
    lambda: "password: ********",
    lambda: "password=<redacted>",
    lambda: "token=${GITHUB_TOKEN}",
    lambda: "key: ${{ secrets.NPM_TOKEN }}",
    lambda: "OPENAI_API_KEY=<your key>",
    lambda: "Authorization: Bearer <token>",
    lambda: "Authorization: Bearer $ACCESS_TOKEN",
    lambda: "Authorization: Bearer {{access_token}}",
    lambda: "Authorization: Bearer YOUR_ACCESS_TOKEN",
    lambda: "the bearer of bad news was the invoice",
    lambda: "Bearer token required: see the docs on authentication",
    lambda: f"max_tokens={rng.randint(256, 8192)} temperature=0.{rng.randint(0, 9)}",
    lambda: f"tokenizer: {pick(['cl100k_base', 'o200k_base', 'bert-base-uncased'])}",
    lambda: f"secret_name: {pick(['prod/db/credentials', 'staging-api-keys', 'payments/webhook'])}",
    lambda: f"key_id: {pick(['signing-key-2024', 'kms-main', 'primary'])}",
    lambda: "password_reset_url: https://example.com/account/reset",
    lambda: f"password_policy: min {rng.randint(8, 16)} chars, 1 digit",
    lambda: "token_type: Bearer\nexpires_in: 3600",
    lambda: "token_endpoint: https://auth.example.com/oauth2/token",
    lambda: "the key point is: keep it simple",
    lambda: "monkey=banana, donkey=carrot",
    lambda: "passwordless login is enabled for this tenant",
    lambda: f"keyboard layout: {pick(['de-latin1-nodeadkeys', 'us-international', 'fr-azerty'])}",
    lambda: "ghp_ tokens are the classic GitHub personal access tokens",
    lambda: "sk-... is how the dashboard shows the key",
    lambda: "ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    lambda: "hf_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    lambda: "glpat-xxxxxxxxxxxxxxxxxxxx",
    lambda: "sk_test_... is the test-mode prefix",
    lambda: "the scikit-learn and sk-image packages",
    lambda: "ASIA PACIFIC REGION sales",
    lambda: "AKIA is the prefix of long-term access key ids",
    lambda: "The Authorization: header is missing",
    lambda: "-----BEGIN CERTIFICATE-----\n"
            "MIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJ\n"
            "-----END CERTIFICATE-----",
    lambda: "-----BEGIN PUBLIC KEY-----\n"
            "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
            "-----END PUBLIC KEY-----",
    lambda: f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{rand(B62, 43)} deploy@ci-runner",
    lambda: "eyJhbGciOiJIUzI1NiJ9 is just the header of a token",
    # code, paths, e-mail lookalikes
    lambda: "for (int i = 0; i < 10; i++) { total += a[i]; }",
    lambda: "std::vector<int> v; auto it = v.begin(); x = y ? 1 : 2;",
    lambda: "result = arr[::2] + arr[1::3]",
    lambda: f"SELECT * FROM orders WHERE id = {rng.randint(1, 99999)} AND total > 100.50;",
    lambda: "@app.route('/users/<int:user_id>') decorator returns 404",
    lambda: "@Override public String toString() { return name; }",
    lambda: "ping user@localhost or root@server01",
    lambda: "git clone git@github.com:acme/payments-service.git",
    lambda: "mention @jane_doe and @support in the thread",
    lambda: "the handle is name@domain, without a TLD",
    lambda: f"/usr/local/lib/python3.{rng.randint(8, 12)}/site-packages/requests/adapters.py line "
            f"{rng.randint(10, 999)}",
    lambda: r"C:\Users\jane\AppData\Local\Temp\report-2024-03.xlsx",
    lambda: f"https://docs.example.com/v{rng.randint(1, 4)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}"
            f"/api/index.html#section-{rng.randint(1, 9)}",
    lambda: "mac address 00:1A:2B:3C:4D:5E and fe80 prefix",
    lambda: "a ratio of 3:2:1 and the time 12:30:45",
    lambda: "IPv6 loopback is ::1 and unspecified is ::",
    lambda: "range 0x1F:0x2A in the register map",
    lambda: f"x = {rng.randint(1, 9)}.{rng.randint(1, 9)}.{rng.randint(1, 9)}  # not four parts",
    lambda: "the model gpt-4o-2024-08-06 and claude-3-5-sonnet-20241022",
    lambda: f"rate limit: {rng.randint(100, 9999)} requests per minute, "
            f"retry-after: {rng.randint(1, 60)}",
    lambda: "Thanks for your help, the issue is solved now!",
    lambda: "Hi, I can't log in since the update. It says 'session expired' every time.",
    lambda: "Could you explain the difference between the Pro and Team plans?",
    lambda: "The export button is greyed out in Firefox but works in Safari.",
    lambda: "Bitte stornieren Sie mein Abo zum Monatsende.",
    lambda: "Je n'arrive pas à télécharger ma facture du mois dernier.",
    lambda: f"Meeting at {rng.randint(8, 17)}:30 in room "
            f"{rng.randint(1, 5)}.{rng.randint(10, 40)}, "
            f"building B",
    lambda: f"flight LH {rng.randint(100, 2999)} departs "
            f"{rng.randint(6, 22)}:{rng.randint(10, 59)} "
            f"from gate B{rng.randint(1, 40)}, seat {rng.randint(1, 40)}A",
    lambda: f"Your verification code is {rand(DI, 6)}",
    lambda: f"the error code was 0x{rand('0123456789ABCDEF', 8)}",
    lambda: f"docker run -p {rng.randint(1024, 9999)}:80 -p 5432:5432 "
            f"postgres:{rng.randint(12, 16)}",
    lambda: f"kubectl -n kube-system logs coredns-{rand(HEX, 10)}-{rand(LO + DI, 5)}",
    lambda: f"CVE-2024-{rng.randint(1000, 49999)} affects xz 5.6.0 and 5.6.1",
    lambda: f"JIRA PROJ-{rng.randint(100, 9999)} and PROJ-{rng.randint(100, 9999)} are duplicates",
    lambda: f"lot number L2024-{rng.randint(1, 12):02d}-{rng.randint(100, 999)}, expiry "
            f"{rng.randint(1, 12):02d}/2026",
    lambda: f"temperature 36.{rng.randint(0, 9)} °C, blood pressure 1{rng.randint(10, 40)}/"
            f"{rng.randint(60, 95)}",
    lambda: f"sum of {rng.randint(1, 9)},{rng.randint(100, 999)},{rng.randint(100, 999)}."
            f"{rng.randint(10, 99)} and {rng.randint(10, 99)},{rng.randint(100, 999)}.43",
    lambda: f"build #{rng.randint(1000, 99999)} passed in "
            f"{rng.randint(1, 59)}m {rng.randint(1, 59)}s",
    lambda: f"image tag {rng.randint(1, 2)}.{rng.randint(20, 27)}.{rng.randint(0, 9)}-alpine3."
            f"{rng.randint(15, 20)}",
    lambda: f"tweet id {rng.randint(10**18, 2 * 10**18)} and "
            f"discord id {rng.randint(10**17, 10**18)}",
    lambda: f"credit score {rng.randint(500, 850)}, limit ${rng.randint(1, 20)},000",
    lambda: "call it as lookup(key='user_id', value=42, token=None, secret=False)",
    lambda: "use the --password-stdin flag instead of --password",
    lambda: "password must contain 1 uppercase letter, 1 digit and 8+ characters",
    lambda: f"API key rotation happens every {rng.randint(30, 180)} days",
    lambda: f"host key fingerprint SHA256:{rand(B62 + '+/', 43)}",
    lambda: f"sha1: {rand(HEX, 40)}",
    lambda: "base64 of hello world is aGVsbG8gd29ybGQ=",
    lambda: f"the UUID {rand(HEX, 8)}-{rand(HEX, 4)}-4{rand(HEX, 3)}-8{rand(HEX, 3)}-"
            f"{rand(HEX, 12)}",
    lambda: "the phone field should be E.164 formatted, e.g. +CC then the number",
    lambda: f"copy it to /var/lib/docker/overlay2/{rand(HEX, 64)}/merged",
    lambda: f"order {rng.randint(10**9, 10**10)} contains {rng.randint(2, 9)} items, weight "
            f"{rng.randint(1, 20)}.{rng.randint(0, 9)} kg",
    lambda: f"Paket {rng.randint(10**11, 10**12)} wurde am "
            f"{rng.randint(1, 28)}.{rng.randint(1, 12)}. "
            f"zugestellt",
    lambda: f"your booking reference is {rand(UP, 2)}{rand(DI, 4)}{rand(UP, 2)}, "
            "check-in from 15:00",
    lambda: f"the loan ID LN-{rng.randint(2019, 2025)}-{rand(DI, 6)} was approved",
    lambda: f"model: {pick(['gpt-4o-mini', 'claude-3-haiku-20240307', 'llama-3.1-70b-instruct'])}, "
            f"top_p: 0.9, seed: {rng.randint(1, 99999)}",
    lambda: f"{rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)} "
            f"release notes: fixed the login loop",
    lambda: f"table 4.{rng.randint(1, 9)}.{rng.randint(1, 9)}.{rng.randint(1, 9)} shows the totals",
]


def negatives() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    ids: dict[str, int] = {}
    seen: set[str] = set()
    for round_ in range(3):
        for make in NEG_TEMPLATES:
            text = make()
            if round_ == 1:
                text = wrap(text)
            if text in seen:
                continue
            seen.add(text)
            out.append({"id": sample_id("negative", ids), "text": text, "expect": [],
                        "group": "negative"})
    return out


def build() -> str:
    rng.seed(SEED)
    samples = positives() + negatives()
    return "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)


def main() -> int:
    content = build()
    if "--check" in sys.argv:
        return 0 if OUT.read_text(encoding="utf-8") == content else 1
    OUT.write_text(content, encoding="utf-8")
    print(f"wrote {content.count(chr(10))} samples to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
