"""Sensitive data that leaves the process: records, keys, headers, spool entries, log lines.

Drafts are built directly and run through ``EventProcessor.complete`` (what the
spool holds) and ``govern`` (the records); the tests search the bytes for the
plaintext.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from promptgov import Governor
from promptgov.capture.context import InteractionContext
from promptgov.config import resolve_settings
from promptgov.events import parse_event
from promptgov.events.codec import to_jsonable
from promptgov.events.draft import CallSite, Draft, EventRef
from promptgov.governance.processor import EventProcessor, Warnings, clean_cut, safe_detail
from promptgov.governance.redaction import DefaultRedactor, Finding, JSONValue
from promptgov.governance.secrets import is_secret_name
from promptgov.hostcode import HostCodeTimeout
from promptgov.transport.record import Record

EMAIL = "bob@example.com"
CARD = "4111 1111 1111 1111"


def processor(tmp_path: Path, **settings: Any) -> EventProcessor:
    resolved = resolve_settings({"local_dir": tmp_path, **settings}, environ={})
    return EventProcessor(resolved, "producer-1", Warnings())


def call_site(fn: Callable[..., Any] | None = None, kind: str = "tool", **options: Any) -> CallSite:
    operation = {"tool": "execute_tool", "retrieval": "retrieval", "llm": "chat"}[kind]
    return CallSite(kind, "app.fn", operation=operation,
                    signature=inspect.signature(fn) if fn is not None else None, **options)


def call_draft(site: CallSite, *args: Any, event_type: str = "tool_call", output: Any = None,
               error: BaseException | None = None, context: Any = None,
               attributes: dict[str, Any] | None = None, model: dict[str, Any] | None = None,
               documents: Any = None, **kwargs: Any) -> Draft:
    payload: dict[str, Any] = {
        "site": site, "status": "ok" if error is None else "error", "output": output,
        "chunks": None, "error": error, "duration_ns": 1_000_000, "explicit": {},
        "args": args, "kwargs": kwargs, "input": None, "documents": documents,
        "call_id": None,
    }
    return Draft(event_type, EventRef(), 1, time.time_ns(), payload, context=context,
                 attributes=attributes, model=model)


def host_draft(event_type: str, payload: dict[str, Any], **options: Any) -> Draft:
    return Draft(event_type, EventRef(), 1, time.time_ns(), payload, **options)


def publish(proc: EventProcessor, draft: Draft) -> tuple[bytes, list[Record]]:
    """complete -> spool bytes -> govern; what was spooled and the records."""
    spooled = orjson.dumps(proc.complete(draft))
    return spooled, proc.govern(orjson.loads(spooled))


def wire(records: list[Record]) -> bytes:
    """Every byte that goes to the broker: values, keys, header names and values."""
    return b"\n".join(r.value + b"\n" + r.key + b"".join(k.encode() + v for k, v in r.headers)
                      for r in records)


def event_of(records: list[Record]) -> dict[str, Any]:
    event: dict[str, Any] = orjson.loads(records[0].value)
    parse_event(records[0].value)  # still a valid envelope
    return event


# --- 1. secret-named keys ------------------------------------------------------------------

SECRET_NAMES = [
    "openai_api_key", "db_password", "aws_secret_access_key", "session_token", "passphrase",
    "pwd", "bearer", "X-API-Key", "Cookie", "Proxy-Authorization", "api_key", "apiKey",
    "openaiApiKey", "XAPIKey", "APIKEY", "Authorization", "auth", "client_secret",
    "access_token", "accessToken", "refresh_token", "id_token", "credentials", "private_key",
    "privateKeyPem", "signing_key", "encryption_key", "SECRET_KEY", "userPassword",
    "X-Auth-Token", "Set-Cookie", "x-goog-api-key", "Ocp-Apim-Subscription-Key", "token",
]
NOT_SECRET_NAMES = [
    "max_tokens", "input_tokens", "output_tokens", "token_count", "tokenizer", "key",
    "session_id", "user_id", "sort_key", "cache_key", "monkey", "author", "keyboard",
    "token_type", "primary_key", "api_key_id", "messages", "temperature", "stop", "query",
    "prompt_tokens", "max_completion_tokens", "keys", "passage",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_name_matcher_positives(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", NOT_SECRET_NAMES)
def test_secret_name_matcher_negatives(name: str) -> None:
    assert not is_secret_name(name)


def test_configured_names_match_exactly(tmp_path: Path) -> None:
    settings = resolve_settings({"local_dir": tmp_path, "secret_argument_names": "ssn, pin"},
                                environ={})
    assert {"ssn", "pin"} <= settings.secret_argument_names
    assert "s" not in settings.secret_argument_names  # a string is names, not characters
    assert is_secret_name("SSN", settings.secret_argument_names)
    assert not is_secret_name("ssn_hint", settings.secret_argument_names)


def test_arguments_named_like_secrets_are_never_captured(tmp_path: Path) -> None:
    def call(query: str, openai_api_key: str, db_password: str, aws_secret_access_key: str,
             session_token: str, passphrase: str, pwd: str, bearer: str, max_tokens: int,
             **extra: Any) -> None: ...

    values = [f"S3cret-value-{i:02d}" for i in range(8)]
    proc = processor(tmp_path)
    draft = call_draft(call_site(call), "q", *values[:7], max_tokens=5, tokenCount=3,
                       apiKey=values[7])
    spooled, records = publish(proc, draft)
    for value in values:
        assert value.encode() not in spooled and value.encode() not in wire(records)
    arguments = event_of(records)["payload"]["arguments"]
    assert arguments == {"query": "q", "max_tokens": 5, "tokenCount": 3}


def test_secret_named_keys_are_scrubbed_in_headers_attributes_and_parameters(
        tmp_path: Path) -> None:
    def call(url: str, headers: dict[str, str]) -> None: ...

    headers = {"X-API-Key": "k-0001-header", "Cookie": "sid=c-0002-cookie",
               "Proxy-Authorization": "Basic p-0003-proxy", "Accept": "text/plain"}
    proc = processor(tmp_path, attributes={"deploy": {"db_password": "a-0004-attr"}})
    draft = call_draft(call_site(call), "https://x", headers,
                       output={"rows": [{"session_token": "r-0005-result"}]},
                       attributes={"openai_api_key": "a-0006-attr"},
                       model={"name": "m", "parameters": {"client_secret": "m-0007-param",
                                                          "max_tokens": 9}})
    spooled, records = publish(proc, draft)
    for secret in (b"k-0001", b"c-0002", b"p-0003", b"a-0004", b"r-0005", b"a-0006", b"m-0007"):
        assert secret not in spooled and secret not in wire(records)
    event = event_of(records)
    assert event["payload"]["arguments"]["headers"] == {
        "X-API-Key": "[REDACTED:secret]", "Cookie": "[REDACTED:secret]",
        "Proxy-Authorization": "[REDACTED:secret]", "Accept": "text/plain"}
    assert event["model"]["parameters"] == {"client_secret": "[REDACTED:secret]",
                                            "max_tokens": 9}
    fields = {f["field"] for f in event["redaction"]["findings"] if f["kind"] == "secret"}
    assert {"payload.arguments.headers.Cookie", "payload.result.rows[0].session_token",
            "attributes.openai_api_key", "attributes.deploy.db_password",
            "model.parameters.client_secret"} <= fields


# --- 2. dict keys --------------------------------------------------------------------------


def test_dict_keys_are_redacted_in_arguments_results_and_document_metadata(
        tmp_path: Path) -> None:
    def call(contacts: dict[str, Any]) -> None: ...

    proc = processor(tmp_path)
    draft = call_draft(call_site(call), {EMAIL: "friend", "alice@example.org": "boss",
                                         "plain": {CARD: 1}},
                       output={"by_mail": {"carol@example.net": {"password": "x"}}})
    _, records = publish(proc, draft)
    data = wire(records)
    for value in (EMAIL, "alice@example.org", "carol@example.net", CARD):
        assert value.encode() not in data
    event = event_of(records)
    contacts = event["payload"]["arguments"]["contacts"]
    assert sorted(contacts.values(), key=str) == sorted(["friend", "boss", {
        "[REDACTED:payment_card]": 1}], key=str)  # colliding keys keep every value
    assert "[REDACTED:email]" in contacts and "[REDACTED:email]#2" in contacts
    fields = {(f["kind"], f["field"]) for f in event["redaction"]["findings"]}
    assert ("email", "payload.arguments.contacts.<key>") in fields
    # the secret finding's path uses the redacted key, not the address
    assert ("secret", "payload.result.by_mail.[REDACTED:email].password") in fields

    retrieval = call_draft(call_site(kind="retrieval"), "q", event_type="retrieval",
                           documents=[{"content": "c", "metadata": {EMAIL: "owner",
                                                                    "source": "s"}}])
    _, records = publish(proc, retrieval)
    assert EMAIL.encode() not in wire(records)
    doc = event_of(records)["payload"]["documents"][0]
    assert doc["metadata"] == {"[REDACTED:email]": "owner", "source": "s"}


def test_document_metadata_is_redacted_in_metadata_mode(tmp_path: Path) -> None:
    proc = processor(tmp_path, capture_content="metadata")
    draft = call_draft(call_site(kind="retrieval"), "q", event_type="retrieval",
                       documents=[{"content": "c", "metadata": {EMAIL: "owner",
                                                                "author": "x " + EMAIL}}])
    _, records = publish(proc, draft)
    assert EMAIL.encode() not in wire(records)
    doc = event_of(records)["payload"]["documents"][0]
    assert doc["content"] is None and doc["metadata"]["[REDACTED:email]"] == "owner"


def test_bytes_that_decode_as_text_are_redacted(tmp_path: Path) -> None:
    converted, _ = to_jsonable(EMAIL.encode())
    if "$bytes" in converted:
        pytest.skip("this codec publishes bytes as base64, not as text")
    proc = processor(tmp_path)

    def call(data: bytes) -> None: ...

    _, records = publish(proc, call_draft(call_site(call), f"mail {EMAIL}".encode()))
    assert EMAIL.encode() not in wire(records)


# --- 3. every host-given string field ---------------------------------------------------


@pytest.mark.parametrize("mode", ["redacted", "metadata", "raw"])
def test_attributes_and_model_parameters_are_redacted_in_every_mode(
        tmp_path: Path, mode: str) -> None:
    proc = processor(tmp_path, capture_content=mode,
                     attributes={"owner": f"settings {EMAIL}"})
    context = InteractionContext(interaction_id="i-1", user_id="u-1",
                                 attributes={"contact": f"call {CARD}", EMAIL: 1})
    draft = call_draft(call_site(kind="llm"), event_type="prompt", context=context,
                       attributes={"note": "alice@example.org wrote"},
                       model={"name": "gpt", "parameters": {"stop": [EMAIL, "\n"],
                                                            "user": "carol@example.net"}})
    _, records = publish(proc, draft)
    data = wire(records)
    for value in (EMAIL, CARD, "alice@example.org", "carol@example.net"):
        assert value.encode() not in data
    event = event_of(records)
    assert event["attributes"]["owner"] == "settings [REDACTED:email]"
    assert event["model"]["parameters"]["stop"] == ["[REDACTED:email]", "\n"]
    assert event["user_id"] == "u-1" and event["interaction_id"] == "i-1"
    kinds = {(f["kind"], f["field"]) for f in event["redaction"]["findings"]}
    assert ("email", "attributes.owner") in kinds


@pytest.mark.parametrize("mode", ["redacted", "metadata"])
def test_feedback_and_policy_fields_are_redacted(tmp_path: Path, mode: str) -> None:
    proc = processor(tmp_path, capture_content=mode)
    feedback = host_draft("feedback", {
        "target_event_id": "e-1", "name": f"rated by {EMAIL}", "score": 1.0,
        "label": f"card {CARD}", "comment": "alice@example.org", "reviewer": EMAIL,
        "reviewer_kind": "human"}, attributes={"who": "carol@example.net"})
    _, records = publish(proc, feedback)
    data = wire(records)
    for value in (EMAIL, CARD, "alice@example.org", "carol@example.net"):
        assert value.encode() not in data
    payload = event_of(records)["payload"]
    assert payload["reviewer"] == "[REDACTED:email]"
    assert payload["label"] == "card [REDACTED:payment_card]"

    policy = host_draft("policy_decision", {
        "decision": "block", "target_event_id": "e-1", "reasons": [f"mentions {EMAIL}"],
        "rules": [f"rule for {CARD}"], "score": None})
    _, records = publish(proc, policy)
    assert EMAIL.encode() not in wire(records) and CARD.encode() not in wire(records)
    payload = event_of(records)["payload"]
    assert payload["reasons"] == ["mentions [REDACTED:email]"]
    assert payload["rules"] == ["rule for [REDACTED:payment_card]"]


def test_fields_of_an_invalid_host_payload_are_redacted(tmp_path: Path) -> None:
    proc = processor(tmp_path)
    draft = host_draft("feedback", {"target_event_id": "e", EMAIL: f"x {CARD}"})
    _, records = publish(proc, draft)
    assert EMAIL.encode() not in wire(records) and CARD.encode() not in wire(records)
    proc = processor(tmp_path, capture_content="metadata")
    _, records = publish(proc, draft)
    assert EMAIL.encode() not in wire(records) and CARD.encode() not in wire(records)


def test_identifiers_stay_as_given_and_pii_in_them_is_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    proc = processor(tmp_path)
    context = InteractionContext(interaction_id="i-1", user_id=EMAIL, tenant_id="acme",
                                 conversation_id="c-1", session_id="+44 20 7946 0958")
    draft = call_draft(call_site(kind="llm"), event_type="prompt", context=context)
    with caplog.at_level(logging.WARNING, logger="promptgov"):
        _, records = publish(proc, draft)
    event = event_of(records)
    assert event["user_id"] == EMAIL and event["tenant_id"] == "acme"  # as given
    assert proc.warnings.snapshot()["pii_in_identifier"] == 2
    assert EMAIL not in caplog.text and "7946" not in caplog.text
    clean = call_draft(call_site(kind="llm"), event_type="prompt",
                       context=InteractionContext(interaction_id="i-2", user_id="u-42"))
    publish(proc, clean)
    assert proc.warnings.snapshot()["pii_in_identifier"] == 2


# --- 4. truncation -------------------------------------------------------------------------


def test_a_cut_leaves_no_fragment_of_an_email(tmp_path: Path) -> None:
    def call(text: str) -> None: ...

    proc = processor(tmp_path, max_string_length=64)
    text = "x" * 55 + " " + EMAIL + " and more text after the address"
    _, records = publish(proc, call_draft(call_site(call), text))
    data = wire(records)
    assert b"bob@" not in data and b"bob" not in data
    value = event_of(records)["payload"]["arguments"]["text"]
    assert value.startswith("x" * 55 + " [REDA") and "…<truncated " in value
    assert len(value.split("…")[0]) == 64
    assert proc.warnings.snapshot()["string_truncated"] >= 1


def test_a_cut_ahead_of_redaction_leaves_no_fragment_after_redaction_shrinks_text(
        tmp_path: Path) -> None:
    def call(text: str) -> None: ...

    proc = processor(tmp_path, max_string_length=64)
    key = "-----BEGIN PRIVATE KEY-----" + "A" * 4078 + "-----END PRIVATE KEY-----"
    # the address straddles the cut made ahead of redaction (64 + 4096 characters), and
    # redacting the key brings what is left of it under 64 characters
    text = key + " " * 25 + EMAIL + " " * 5000
    assert text.index(EMAIL) < 64 + 4096 < text.index(EMAIL) + len(EMAIL)
    _, records = publish(proc, call_draft(call_site(call), text))
    data = wire(records)
    assert b"bob@" not in data and b"AAAAAAAA" not in data
    value = event_of(records)["payload"]["arguments"]["text"]
    assert value.endswith(" chars>") and len(value) < 120


def test_error_messages_are_cut_between_words(tmp_path: Path) -> None:
    message = "y " * 995 + "carol@example.net is the user"
    assert len(message) > 2000
    cut = clean_cut(message, 2000)
    assert cut.endswith("…") and "carol" not in cut and len(cut) <= 2001
    proc = processor(tmp_path)

    def call() -> None: ...

    draft = call_draft(call_site(call), error=RuntimeError(message))
    _, records = publish(proc, draft)
    assert b"carol" not in wire(records)


# --- 5. log lines and warnings -------------------------------------------------------------


def test_warning_details_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    warnings = Warnings()
    with caplog.at_level(logging.WARNING, logger="promptgov"):
        warnings.add(["internal_error"], f"feedback: could not convert {EMAIL!r} {CARD}")
    assert EMAIL not in caplog.text and CARD not in caplog.text
    assert "[REDACTED:email]" in caplog.text
    assert safe_detail("a\udcffb") == "a?b"


def test_a_rejected_feedback_score_is_not_logged(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    gov = Governor(local_dir=tmp_path, register_atexit=False, durability="memory")
    try:
        with caplog.at_level(logging.WARNING, logger="promptgov"):
            assert gov.feedback("e-1", score="x@y.com") == ""  # type: ignore[arg-type]
        assert "internal_error" in caplog.text and "x@y.com" not in caplog.text
    finally:
        gov.shutdown(5)


def test_an_invalid_payload_is_logged_without_its_values(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    proc = processor(tmp_path)
    draft = host_draft("feedback", {"target_event_id": "e", "score": "Alice Smith",
                                    "reviewer_kind": "Bob Jones"})
    with caplog.at_level(logging.WARNING, logger="promptgov"):
        publish(proc, draft)
    assert "invalid_payload" in caplog.text
    assert "Alice" not in caplog.text and "Bob" not in caplog.text


def test_mapper_failures_are_logged_by_type_only(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    def mapper(*args: Any) -> Any:
        raise ValueError(f"no user {EMAIL}")

    proc = processor(tmp_path)
    with caplog.at_level(logging.WARNING, logger="promptgov"):
        publish(proc, call_draft(call_site(None, input_mapper=mapper, output_mapper=mapper),
                                 "q"))
    assert "input_mapper_failed" in caplog.text and "output_mapper_failed" in caplog.text
    assert "bob" not in caplog.text


def test_warnings_work_after_a_fork_with_their_lock_held() -> None:
    warnings = Warnings()
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with warnings._lock:
            held.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    try:
        warnings.after_fork()  # what the child does: the holder thread is gone there
        warnings.add(["x"])
        assert warnings.snapshot() == {"x": 1}
    finally:
        release.set()
        thread.join()


# --- 6. host code ----------------------------------------------------------------------------


class Exploding:
    """Raises ``exc`` from everything promptgov might call."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def model_dump(self, *args: Any, **kwargs: Any) -> Any:
        raise self.exc

    def __repr__(self) -> str:
        raise self.exc

    __str__ = __repr__


@pytest.mark.parametrize("exc", [SystemExit(3), GeneratorExit(), ValueError("v")])
def test_host_code_raising_anything_only_withholds_content(tmp_path: Path,
                                                           exc: BaseException) -> None:
    def mapper(*args: Any) -> Any:
        raise exc

    proc = processor(tmp_path)
    draft = call_draft(call_site(None, input_mapper=mapper, output_mapper=mapper), "q",
                       output=Exploding(exc), error=None)
    _, records = publish(proc, draft)
    event = event_of(records)
    assert event["event_type"] == "tool_call" and event["payload"]["function"] == "app.fn"


def test_keyboard_interrupt_in_a_mapper_on_the_publisher_thread_is_contained(
        tmp_path: Path) -> None:
    def mapper(*args: Any) -> Any:
        raise KeyboardInterrupt

    proc = processor(tmp_path)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(proc.complete(
        call_draft(call_site(None, input_mapper=mapper), "q"))))
    thread.start()
    thread.join()
    assert results and results[0]["event_type"] == "tool_call"
    assert proc.warnings.snapshot()["input_mapper_failed"] == 1


def test_host_code_timeout_propagates_out_of_complete(tmp_path: Path) -> None:
    def mapper(*args: Any) -> Any:
        raise HostCodeTimeout

    class Slow(Exception):
        def __str__(self) -> str:
            raise HostCodeTimeout

    proc = processor(tmp_path)
    with pytest.raises(HostCodeTimeout):
        proc.complete(call_draft(call_site(None, input_mapper=mapper), "q"))
    with pytest.raises(HostCodeTimeout):
        proc.complete(call_draft(call_site(None), "q", error=Slow()))


def test_unprintable_exceptions_keep_their_type(tmp_path: Path) -> None:
    class Odd(Exception):
        def __str__(self) -> str:
            raise SystemExit(1)

    proc = processor(tmp_path)
    _, records = publish(proc, call_draft(call_site(None), error=Odd()))
    error = event_of(records)["payload"]["error"]
    assert error["type"].endswith("Odd") and error["message"] == "<unprintable>"


def test_complete_degraded_runs_no_host_code(tmp_path: Path) -> None:
    calls: list[str] = []

    class Spy:
        def __getattribute__(self, name: str) -> Any:
            calls.append(name)
            raise AssertionError("host code ran")

    class SpyError(Exception):
        def __str__(self) -> str:
            calls.append("str")
            return EMAIL

    def mapper(*args: Any) -> Any:
        calls.append("mapper")
        return args

    site = call_site(None, input_mapper=mapper, output_mapper=mapper, model={
        "name": "gpt", "parameters": {"temperature": 0.2, "logit_bias": Spy()}})
    context = InteractionContext(interaction_id="i-1", user_id="u-1",
                                 attributes={"plain": "ok", "spy": Spy(), "n": [1, Spy()]})
    draft = call_draft(site, Spy(), output=Spy(), error=SpyError(), context=context,
                       attributes={EMAIL: "x", "api_key": "sk-not-this-one"}, secret=Spy())
    proc = processor(tmp_path)
    event = proc.complete_degraded(draft, "host_code_timeout")
    assert calls == []
    orjson.dumps(event)
    assert event["attributes"]["promptgov.content_withheld"] == "host_code_timeout"
    assert event["attributes"]["plain"] == "ok" and "spy" not in event["attributes"]
    assert event["attributes"]["n"] == [1]
    assert event["payload"]["error"] == {"type": event["payload"]["error"]["type"],
                                         "message": "[withheld]"}
    assert event["payload"]["arguments"] is None and event["payload"]["result"] is None
    assert event["model"]["parameters"] == {"temperature": 0.2}
    assert proc.warnings.snapshot()["value_dropped"] >= 3
    normal = proc.complete(call_draft(call_site(None), "q"))
    assert set(event) - {"_secrets", "_long"} == set(normal) - {"_secrets", "_long"}
    records = proc.govern(event)
    data = wire(records)
    assert EMAIL.encode() not in data and b"sk-not-this-one" not in data
    assert calls == []


def test_degrade_withholds_content_and_avoids_the_configured_redactor(tmp_path: Path) -> None:
    class Failing:
        name, version = "failing", "1"

        def redact(self, value: JSONValue, path: str = "") -> tuple[JSONValue, list[Finding]]:
            raise RuntimeError("boom")

    proc = processor(tmp_path, redactor=Failing())
    draft = call_draft(call_site(None), f"mail {EMAIL}", attributes={"who": EMAIL},
                       output={"x": 1})
    event = proc.complete(draft)
    degraded = proc.degrade(dict(event), "host_code_timeout")
    assert event["payload"]["arguments"] is not None  # not modified
    records = proc.govern(degraded)
    out = event_of(records)
    assert EMAIL.encode() not in wire(records)
    assert out["attributes"] == {"who": "[REDACTED:email]",
                                 "promptgov.content_withheld": "host_code_timeout"}
    assert out["payload"]["arguments"] is None and out["payload"]["result"] is None
    assert out["redaction"]["redactor"] == DefaultRedactor.name


# --- 7. invalid UTF-8 ----------------------------------------------------------------------


def test_lone_surrogates_anywhere_never_make_an_event_unserialisable(tmp_path: Path) -> None:
    bad = "x\udcffy"

    def call(**kwargs: Any) -> None: ...

    context = InteractionContext(interaction_id=bad, conversation_id=bad, user_id=bad,
                                 session_id=bad, tenant_id=bad, attributes={bad: bad})
    proc = processor(tmp_path)
    draft = call_draft(call_site(call), context=context, attributes={bad: {bad: bad}},
                       model={"name": bad, "parameters": {bad: bad}},
                       output={bad: [bad, {bad: 1}]}, **{bad: bad})
    draft.parent_event_id = bad
    event = proc.complete(draft)
    orjson.dumps(event)
    records = proc.govern(event)
    out = event_of(records)
    assert out["user_id"] == "x?y" and records[0].key == b"x?y"
    assert proc.warnings.snapshot()["invalid_utf8"] >= 6
    degraded = proc.complete_degraded(draft, "processing_failed")
    orjson.dumps(degraded)
    proc.govern(degraded)


def test_surrogates_in_a_host_payload_and_event_type(tmp_path: Path) -> None:
    proc = processor(tmp_path)
    draft = host_draft("feedback", {"target_event_id": "e\udcff", "label": "l\udcff",
                                    "x\udcff": 1})
    orjson.dumps(proc.complete(draft))
    odd = host_draft("k\udcffind", {"a\udcff": "b\udcff"})
    orjson.dumps(proc.complete(odd))
    orjson.dumps(proc.complete_degraded(odd, "processing_failed"))


def test_record_keys_and_headers_never_fail_on_invalid_text() -> None:
    from promptgov.governance.routing import record_headers, record_key

    envelope = {"conversation_id": "c\udcff", "event_id": "e", "event_type": "k\udcff",
                "occurred_at": "t", "schema_version": "1", "trace_id": None, "span_id": None}
    assert record_key(envelope) == b"c?"
    assert dict(record_headers(envelope, "/promptgov/a\udcff/b"))["ce_type"].endswith(b"k?")
