"""The codec: what snapshot copies on the host's thread, and what to_jsonable makes of it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from promptgov import hostcode
from promptgov.events.codec import Limits, snapshot, to_jsonable
from promptgov.governance.redaction import DefaultRedactor

MAX_ITEMS = Limits().max_items

# --- bounded reading ----------------------------------------------------------------


def test_to_jsonable_reads_at_most_max_items_of_any_container() -> None:
    pulled = {"list": 0, "set": 0, "mapping": 0}

    class CountingList(list[int]):
        def __iter__(self) -> Iterator[int]:
            for item in super().__iter__():
                pulled["list"] += 1
                yield item

    class CountingSet(set[int]):
        def __iter__(self) -> Iterator[int]:
            for item in super().__iter__():
                pulled["set"] += 1
                yield item

    class CountingMapping(Mapping[str, int]):
        def __init__(self, n: int) -> None:
            self.n = n

        def __getitem__(self, key: str) -> int:
            return int(key)

        def __len__(self) -> int:
            return self.n

        def __iter__(self) -> Iterator[str]:
            for i in range(self.n):
                pulled["mapping"] += 1
                yield str(i)

    values = {"list": CountingList(range(200_000)), "set": CountingSet(range(200_000)),
              "mapping": CountingMapping(200_000)}
    result, warnings = to_jsonable(values)
    assert all(n <= MAX_ITEMS + 1 for n in pulled.values()), pulled
    assert result["list"][-1] == result["set"][-1] == "<truncated: 199000 more items>"
    assert result["mapping"]["<truncated>"] == "199000 more items"
    assert warnings == ["items_truncated"] * 3


def test_an_endless_iterator_is_cut_at_max_items() -> None:
    class Endless(list[int]):
        def __iter__(self) -> Iterator[int]:
            while True:
                yield 1

    endless = Endless()
    assert snapshot(endless) is endless  # its own __iter__: not run on the host's thread
    result, warnings = to_jsonable({"x": endless})
    assert len(result["x"]) == MAX_ITEMS + 1 and result["x"][-1] == "<truncated: more items>"
    assert warnings == ["items_truncated"]


# --- invalid UTF-8 in keys ---------------------------------------------------------------


def test_lone_surrogates_in_keys_are_replaced() -> None:
    kwargs = {"\udcff": "\udcff", "caf\udce9": 1, "ok": {"inner\udcfe": 2}}
    result, warnings = to_jsonable(snapshot(kwargs))
    orjson.dumps(result)  # valid UTF-8 throughout
    assert set(result) == {"?", "caf?", "ok"} and result["ok"] == {"inner?": 2}
    assert "invalid_utf8" in warnings


def test_long_keys_are_truncated_like_strings() -> None:
    result, warnings = to_jsonable({"k" * 100: 1}, Limits(max_string=10))
    assert list(result) == ["kkkkkkkkkk…<truncated 90 chars>"] and warnings == ["string_truncated"]


# --- bytes -------------------------------------------------------------------------------


def test_utf8_bytes_become_text_the_redactor_sees() -> None:
    secret = b"mail bob@example.com please"
    result, warnings = to_jsonable({"b": secret, "ba": bytearray(secret), "m": memoryview(secret)})
    assert result["b"] == result["ba"] == result["m"] == {"$bytes_text": secret.decode()}
    assert warnings == []
    redacted, findings = DefaultRedactor().redact(result)
    assert "bob@example.com" not in orjson.dumps(redacted).decode() and findings


def test_other_bytes_give_their_length_and_a_hash_only_past_32_bytes() -> None:
    short, long = b"\xff\xfe\x00", b"\xff" * 33
    result, _ = to_jsonable({"short": short, "long": long})
    assert result["short"] == {"$bytes_length": 3}
    assert result["long"] == {"$bytes_length": 33, "sha256": hashlib.sha256(long).hexdigest()}


# --- host code never kills or hangs the publisher --------------------------------------


def test_host_code_raising_base_exceptions_is_contained() -> None:
    class ReprExits:
        def __repr__(self) -> str:
            raise SystemExit(1)

    class StrInterrupts(str):
        def __str__(self) -> str:
            raise KeyboardInterrupt

    class DumpFails(BaseModel):
        x: int = 1

        def model_dump(self, *args: Any, **kwargs: Any) -> Any:
            raise GeneratorExit

    class IterExits(list[int]):
        def __iter__(self) -> Iterator[int]:
            raise SystemExit(2)

    value = {"repr": ReprExits(), "str": StrInterrupts("s"), "dump": DumpFails(),
             "iter": IterExits([1])}
    result, warnings = to_jsonable(value)
    assert result["repr"].startswith("<") and result["repr"].endswith("ReprExits>")
    assert result["str"] == "'s'" and result["iter"] == "[1]"
    assert result["dump"].startswith("DumpFails(")
    assert warnings.count("unserialisable") == 4
    orjson.dumps(result)


def test_the_watchdogs_timeout_is_not_swallowed() -> None:
    class Raises:
        def to_dict(self) -> dict[str, Any]:
            raise hostcode.HostCodeTimeout

    class Loops:
        def __repr__(self) -> str:
            while True:
                pass

    with pytest.raises(hostcode.HostCodeTimeout):
        to_jsonable({"a": Raises()})
    with pytest.raises(hostcode.HostCodeTimeout):
        hostcode.bounded(0.1, to_jsonable, {"a": Loops()})
