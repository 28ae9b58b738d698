"""JSON-safe representation of arbitrary values and canonical JSON bytes.

``snapshot`` runs on the host's thread and only copies containers, so later
mutation by the host does not change what is recorded. ``to_jsonable`` runs on
the publisher's side and turns anything (models, dataclasses, bytes, cycles,
invalid UTF-8, megabyte strings) into a JSON value, reporting each fix-up as a
warning code instead of raising.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import math
import uuid
from collections import deque
from collections.abc import Mapping
from itertools import islice
from pathlib import PurePath
from typing import Any

import orjson
from pydantic import BaseModel

from promptgov.hostcode import HostCodeTimeout

JSONValue = Any  # dict[str, JSONValue] | list[JSONValue] | str | int | float | bool | None

_SNAPSHOT_DEPTH = 6
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def snapshot(value: Any, depth: int = _SNAPSHOT_DEPTH) -> Any:
    """Copy dicts, lists and tuples (not their leaves) so later mutation is not recorded.

    Shared and cyclic containers stay shared and cyclic in the copy. Runs on the
    host's thread, so leaves are handled inline, without a call each.
    """
    cls = type(value)
    if cls is dict or cls is list or cls is tuple:
        return _copy(value, depth, {})
    return value


def _copy(value: Any, depth: int, memo: dict[int, Any]) -> Any:
    key = id(value)
    if key in memo:
        return memo[key]
    if depth <= 0:
        return value
    if type(value) is dict:
        copied: dict[Any, Any] = {}
        memo[key] = copied
        for k, v in value.items():
            cls = type(v)
            copied[k] = _copy(v, depth - 1, memo) if (
                cls is dict or cls is list or cls is tuple) else v
        return copied
    items: list[Any] = []
    memo[key] = items
    append = items.append
    for v in value:
        cls = type(v)
        append(_copy(v, depth - 1, memo) if (cls is dict or cls is list or cls is tuple) else v)
    return items


@dataclasses.dataclass(slots=True)
class Limits:
    """Bounds on what one captured value may become."""

    max_string: int = 65_536
    max_items: int = 1_000
    max_depth: int = 20


class _Converter:
    __slots__ = ("_active", "limits", "warnings")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.warnings: list[str] = []
        self._active: set[int] = set()

    def convert(self, value: Any, depth: int) -> JSONValue:
        cls = type(value)
        if value is None or cls is bool:
            return value
        if cls is str:
            if value.isascii() and len(value) <= self.limits.max_string:
                return value  # the common case: nothing to check further
            return self._string(value)
        if cls is int:
            return value if _INT64_MIN <= value <= _UINT64_MAX else self._big_int(value)
        if cls is float:
            return value if math.isfinite(value) else self._non_finite(value)
        if depth > self.limits.max_depth:
            self.warnings.append("depth_exceeded")
            return f"<depth limit: {_type_name(value)}>"
        key = id(value)
        if key in self._active:
            self.warnings.append("cycle")
            return f"<cycle: {_type_name(value)}>"
        self._active.add(key)
        try:
            return self._container(value, depth)
        except HostCodeTimeout:  # the watchdog's: the caller degrades the whole event
            raise
        except BaseException:  # a hostile __iter__/model_dump, SystemExit included: never raise
            self.warnings.append("unserialisable")
            return _safe_repr(value)
        finally:
            self._active.discard(key)

    def _container(self, value: Any, depth: int) -> JSONValue:
        max_items = self.limits.max_items
        if type(value) is dict or isinstance(value, Mapping):
            out: dict[str, JSONValue] = {}
            max_string = self.limits.max_string
            shown = 0
            cut = False
            for k, v in islice(value.items(), max_items + 1):
                if shown == max_items:
                    cut = True
                    break
                shown += 1
                name = k if type(k) is str and k.isascii() and len(k) <= max_string else (
                    self._key(k))
                out[name] = self.convert(v, depth + 1)
            if cut:
                out["<truncated>"] = self._more(value, shown)
            return out
        if type(value) is list or isinstance(value, (list, tuple, set, frozenset, deque)):
            items = list(islice(value, max_items + 1))
            cut = len(items) > max_items
            if cut:
                del items[max_items:]
            if isinstance(value, (set, frozenset)):
                items.sort(key=repr)  # of the first max_items in iteration order
            out_list = [self.convert(v, depth + 1) for v in items]
            if cut:
                out_list.append(f"<truncated: {self._more(value, len(items))}>")
            return out_list
        if isinstance(value, enum.Enum):
            return self.convert(value.value, depth + 1)
        if isinstance(value, str):
            return self._string(str(value))
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return self.convert(int(value), depth + 1)
        if isinstance(value, float):
            return self.convert(float(value), depth + 1)
        if isinstance(value, BaseModel):
            return self.convert(value.model_dump(mode="python"), depth + 1)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            return self.convert(fields, depth + 1)
        if isinstance(value, (dt.datetime, dt.date, dt.time)):
            return value.isoformat()
        if isinstance(value, dt.timedelta):
            return value.total_seconds()
        if isinstance(value, (uuid.UUID, decimal.Decimal, complex, PurePath)):
            return str(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self._bytes(bytes(value))
        if isinstance(value, BaseException):
            return {"type": _type_name(value), "message": self._string(str(value))}
        for method in ("model_dump", "to_dict", "dict"):  # pydantic v1, SDK objects
            fn = getattr(value, method, None)
            if callable(fn):
                result = fn()
                if isinstance(result, Mapping):
                    return self.convert(result, depth + 1)
        self.warnings.append("unserialisable")
        return _safe_repr(value)

    def _more(self, value: Any, shown: int) -> str:
        """"N more items": what ``value`` has past the ``shown`` ones; counts a warning."""
        self.warnings.append("items_truncated")
        try:
            more = len(value) - shown
        except HostCodeTimeout:
            raise
        except BaseException:  # a hostile __len__
            more = 0
        return f"{more} more items" if more > 0 else "more items"  # len() disagrees

    def _bytes(self, value: bytes) -> dict[str, Any]:
        """Text for the redactor to see; otherwise only the length (and a hash past 32 bytes)."""
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            if len(value) > 32:
                return {"$bytes_length": len(value), "sha256": hashlib.sha256(value).hexdigest()}
            return {"$bytes_length": len(value)}
        return {"$bytes_text": self._string(text)}

    def _string(self, value: str) -> str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self.warnings.append("invalid_utf8")
            value = value.encode("utf-8", "replace").decode("utf-8")
        if len(value) > self.limits.max_string:
            self.warnings.append("string_truncated")
            cut = len(value) - self.limits.max_string
            return value[: self.limits.max_string] + f"…<truncated {cut} chars>"
        return value

    def _key(self, key: Any) -> str:
        if isinstance(key, (str, int, float, bool)) or key is None:
            return self._string(str(key))
        self.warnings.append("non_string_key")
        return self._string(_safe_repr(key))

    def _big_int(self, value: int) -> str:
        self.warnings.append("big_int")
        return str(value)

    def _non_finite(self, value: float) -> str:
        self.warnings.append("non_finite_float")
        return str(value)


def to_jsonable(value: Any, limits: Limits | None = None) -> tuple[JSONValue, list[str]]:
    """A JSON-safe copy of ``value`` and the list of fix-ups applied (warning codes)."""
    converter = _Converter(limits or Limits())
    try:
        result = converter.convert(value, 0)
    except RecursionError:
        return "<unserialisable: recursion>", ["unserialisable"]
    return result, converter.warnings


def _type_name(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def _safe_repr(value: Any, limit: int = 200) -> str:
    try:
        text = repr(value)
    except HostCodeTimeout:
        raise
    except BaseException:  # SystemExit, KeyboardInterrupt... from a hostile __repr__
        text = f"<{_type_name(value)}>"
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + "…"


_SORTED = orjson.OPT_SORT_KEYS


def canonical_json(value: BaseModel | Mapping[str, Any]) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 (orjson)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return orjson.dumps(value, option=_SORTED)

