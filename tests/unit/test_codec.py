"""The codec: what snapshot copies on the host's thread, and what to_jsonable makes of it."""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import orjson
import pytest
from pydantic import BaseModel

from promptgov import hostcode
from promptgov.events.codec import Limits, snapshot, to_jsonable
from promptgov.governance.redaction import DefaultRedactor

MAX_ITEMS = Limits().max_items
MAX_COPIED = Limits().max_copied


def copied_items(copy: Any, original: Any, seen: set[int] | None = None) -> int:
    """How many items snapshot copied: the items of every container of ``copy`` it made."""
    seen = set() if seen is None else seen
    if copy is original or id(copy) in seen:
        return 0
    seen.add(id(copy))
    if isinstance(copy, dict):
        return len(copy) + sum(copied_items(copy[k], original[k], seen) for k in copy)
    if isinstance(copy, list) and not isinstance(original, (set, frozenset)):
        pairs = zip(copy, original, strict=False)  # a copy cut short pairs with the first items
        return len(copy) + sum(copied_items(c, o, seen) for c, o in pairs)
    if isinstance(copy, (set, tuple)):
        return len(copy)
    return 0


# --- host cost bounded by the limits -------------------------------------------------


def test_snapshot_of_a_10m_item_list_copies_max_items_and_keeps_the_marker() -> None:
    big = [0] * 10_000_000
    copy = snapshot((big,))
    assert len(copy[0]) == MAX_ITEMS
    assert copied_items(copy, (big,)) == 1 + MAX_ITEMS
    result, warnings = to_jsonable(copy[0])
    assert (result, warnings) == to_jsonable(big)  # the same as converting the whole list
    assert result[-1] == "<truncated: 9999000 more items>" and len(result) == MAX_ITEMS + 1
    assert warnings == ["items_truncated"]


def test_snapshot_of_a_2m_key_dict_copies_max_items_and_keeps_the_marker() -> None:
    big = dict.fromkeys(range(2_000_000), 0)
    copy = snapshot({"d": big})
    assert len(copy["d"]) == MAX_ITEMS
    assert copied_items(copy, {"d": big}) == 1 + MAX_ITEMS
    result, warnings = to_jsonable(copy["d"])
    assert (result, warnings) == to_jsonable(big)
    assert result["<truncated>"] == "1999000 more items" and len(result) == MAX_ITEMS + 1
    assert warnings == ["items_truncated"]


def test_snapshot_of_a_huge_set_copies_max_items_and_keeps_the_count() -> None:
    big = set(range(100_000))
    copy = snapshot(big)
    assert len(copy) == MAX_ITEMS
    result, warnings = to_jsonable(copy)
    assert result[-1] == f"<truncated: {100_000 - MAX_ITEMS} more items>"
    assert result[:-1] == sorted(result[:-1], key=repr) and warnings == ["items_truncated"]


def test_snapshot_of_a_wide_and_deep_structure_stops_at_the_budget() -> None:
    wide = [[list(range(100)) for _ in range(100)] for _ in range(50)]  # 500,000 leaves
    copy = snapshot(wide)
    assert MAX_COPIED <= copied_items(copy, wide) <= MAX_COPIED + MAX_ITEMS
    assert to_jsonable(copy) == to_jsonable(wide)  # the rest is read later, not lost


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


# --- later mutation is not recorded ----------------------------------------------------


class Point(NamedTuple):
    x: list[int]
    y: int


class MyList(list[Any]):
    pass


class MyTuple(tuple[Any, ...]):
    __slots__ = ()


class MyDict(dict[str, Any]):
    pass


def _mutators() -> list[tuple[str, Any, Any]]:
    """(name, value, a function mutating it in place) for every container snapshot copies."""
    ordered = OrderedDict(a=1, b=[1], c=3)
    ordered.move_to_end("a")
    return [
        ("dict", {"a": [1]}, lambda v: (v["a"].append(2), v.update(b=2))),
        ("OrderedDict", ordered, lambda v: (v["b"].append(2), v.move_to_end("b"))),
        ("defaultdict", defaultdict(list, a=[1]), lambda v: (v["a"].append(2), v["b"])),
        ("Counter", Counter(a=1), lambda v: v.update(a=5, b=1)),
        ("dict subclass", MyDict(a=[1]), lambda v: v["a"].append(2)),
        ("list", [1, [2]], lambda v: (v[1].append(3), v.append(4))),
        ("list subclass", MyList([1, [2]]), lambda v: (v[1].append(3), v.append(4))),
        ("tuple subclass", MyTuple(([1], 2)), lambda v: v[0].append(3)),
        ("namedtuple", Point([1], 2), lambda v: v.x.append(3)),
        ("set", {1, 2}, lambda v: (v.add(3), v.discard(1))),
        ("deque", deque([1, [2]]), lambda v: (v[1].append(3), v.appendleft(0))),
        ("bytearray", bytearray(b"before"), lambda v: v.__setitem__(slice(None), b"after!")),
        ("memoryview", memoryview(bytearray(b"before")),
         lambda v: v.__setitem__(slice(None), b"after!")),
    ]


@pytest.mark.parametrize(("name", "value", "mutate"), _mutators(),
                         ids=[m[0] for m in _mutators()])
def test_later_mutation_is_not_recorded(name: str, value: Any, mutate: Any) -> None:
    expected = to_jsonable(value)
    copy = snapshot({"arg": value})
    mutate(value)
    assert to_jsonable(value) != expected  # the mutation shows in the original
    assert to_jsonable(copy["arg"]) == expected


def test_mutation_below_depth_6_is_not_recorded_up_to_the_converters_depth() -> None:
    root: list[Any] = []
    level = root
    for _ in range(Limits().max_depth):
        child: list[Any] = []
        level.append(child)
        level = child
    expected = to_jsonable(root)
    copy = snapshot(root)
    level.append("later")  # the deepest list the converter reads
    assert to_jsonable(copy) == expected


def test_copies_keep_order_cycles_and_named_tuples() -> None:
    ordered = OrderedDict(a=1, b=2)
    ordered.move_to_end("a")
    assert list(snapshot(ordered)) == ["b", "a"] and type(snapshot(ordered)) is dict
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    copy = snapshot(cyclic)
    assert copy is not cyclic and copy[1] is copy
    point = snapshot(Point([1], 2))
    assert type(point) is Point and point.y == 2  # mappers may read its fields


def test_objects_and_overriding_containers_are_kept_by_reference() -> None:
    class Model(BaseModel):
        tags: list[str]

    class Record:
        def to_dict(self) -> dict[str, Any]:
            return {}

    class Hiding(dict[str, Any]):
        def items(self) -> Any:  # host code: not run by snapshot
            raise RuntimeError("never on the host's thread")

    model, record, hiding = Model(tags=["a"]), Record(), Hiding(a=1)
    for value in (model, record, hiding, frozenset({1}), "text", b"bytes"):
        assert snapshot(value) is value
    assert snapshot([model])[0] is model  # read on the publisher's side, later


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
