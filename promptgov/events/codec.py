"""JSON-safe representation of arbitrary values and canonical JSON bytes.

``snapshot`` runs on the host's thread and only copies containers (at most
what the limits let the converter read), so later mutation by the host does not
change what is recorded; it runs no host code. ``to_jsonable`` runs on the
publisher's side and turns anything (models, dataclasses, bytes, cycles,
invalid UTF-8, megabyte strings, hostile objects) into a JSON value, reporting
each fix-up as a warning code instead of raising. It reads at most
``max_items`` items of any container and lets only
:class:`~promptgov.hostcode.HostCodeTimeout` through.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import math
import uuid
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable, Mapping
from itertools import islice
from pathlib import PurePath
from typing import Any

import orjson
from pydantic import BaseModel

from promptgov.hostcode import HostCodeTimeout

JSONValue = Any  # dict[str, JSONValue] | list[JSONValue] | str | int | float | bool | None

_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


@dataclasses.dataclass(slots=True)
class Limits:
    """Bounds on what one captured value may become (and on what snapshot copies)."""

    max_string: int = 65_536
    max_items: int = 1_000
    max_depth: int = 20
    max_copied: int = 10_000  # items snapshot copies in all; beyond, containers are read later


_DEFAULT_LIMITS = Limits()
_MAX_DEPTH = _DEFAULT_LIMITS.max_depth
_MAX_COPIED = _DEFAULT_LIMITS.max_copied
_MAX_ITEMS = _DEFAULT_LIMITS.max_items


def snapshot(value: Any, limits: Limits | None = None) -> Any:
    """Copy the containers of ``value`` (not its leaves) so later mutation is not recorded.

    Runs on the host's thread for every captured value, so it runs no host code
    and its cost is bounded by ``limits``, whatever the size of ``value``: at
    most ``max_items`` items of each container are copied (the copy notes how
    many were left out, for the converter's truncation marker); containers
    deeper than ``max_depth``, and all of them once ``max_copied`` items have
    been copied, are kept by reference. Dicts and their subclasses become dicts
    (in iteration order); lists, tuples, deques and their subclasses lists
    (named tuples stay named tuples); sets sets; bytearrays and memoryviews
    bytes. Strings, numbers, frozensets and objects (models, dataclasses...) are
    kept by reference. Cyclic containers stay cyclic in the copy.
    """
    cls = type(value)
    if cls in _LEAVES:
        return value
    if (cls is dict or cls is tuple) and not value:  # no keyword or no positional argument
        return {} if cls is dict else []
    try:
        try:
            copier = _COPIERS[cls]
        except KeyError:
            copier = _copier(cls)
        if limits is None:
            return copier(value, _MAX_DEPTH, {}, [_MAX_COPIED, _MAX_ITEMS])
        return copier(value, limits.max_depth, {}, [limits.max_copied, limits.max_items])
    except Exception:  # e.g. another thread resized a container meanwhile: keep the reference
        return value


# A copier takes (value, depth left, memo: id -> copy, state: [items left to copy, max_items]).
_Copier = Callable[[Any, int, dict[int, Any], list[int]], Any]
_LEAVES = frozenset({str, int, float, bool, type(None), bytes, frozenset})


class _CutList(list[Any]):
    """A list copied short by snapshot: ``omitted`` items were left out."""

    __slots__ = ("omitted",)
    omitted: int


class _CutDict(dict[Any, Any]):
    """A dict copied short by snapshot: ``omitted`` items were left out."""

    __slots__ = ("omitted",)
    omitted: int


class _CutSet(set[Any]):
    """A set copied short by snapshot: ``omitted`` items were left out."""

    __slots__ = ("omitted",)
    omitted: int


_CUT = (_CutList, _CutDict, _CutSet)


def _keep(value: Any, depth: int, memo: dict[int, Any], state: list[int]) -> Any:
    return value


def _copy_list(value: Any, depth: int, memo: dict[int, Any], state: list[int]) -> Any:
    """Lists, tuples, deques (and subclasses whose ``__iter__`` is builtin) as lists."""
    key = id(value)
    if key in memo:
        return memo[key]
    left = state[0]
    if left <= 0 or depth < 0:
        return value
    size = len(value)
    max_items = state[1]
    out: list[Any]
    if size > max_items:
        out = cut = _CutList(islice(value, max_items))
        cut.omitted = size - max_items
        size = max_items
    else:
        out = list(value)
    state[0] = left - size
    depth -= 1
    leaves = _LEAVES
    i = 0
    for v in out:
        cls = type(v)
        if cls not in leaves:
            if cls is dict and depth >= 0 and len(v) <= max_items and state[0] > 0:
                d = v.copy()  # inline, for speed: a dict of leaves (a chat message)
                for x in d.values():
                    if type(x) not in leaves:
                        break
                else:
                    state[0] -= len(d)
                    out[i] = d
                    i += 1
                    continue
            memo[key] = out  # before the children: a cycle back to it finds the copy
            try:
                copier = _COPIERS[cls]
            except KeyError:
                copier = _copier(cls)
            out[i] = copier(v, depth, memo, state)
        i += 1
    return out


def _copy_dict(value: Any, depth: int, memo: dict[int, Any], state: list[int]) -> Any:
    """Dicts and subclasses whose ``items`` is builtin (defaultdict, Counter) as dicts."""
    key = id(value)
    if key in memo:
        return memo[key]
    left = state[0]
    if left <= 0 or depth < 0:
        return value
    size = len(value)
    max_items = state[1]
    out: dict[Any, Any]
    if type(value) is dict and size <= max_items:
        out = value.copy()
    else:
        out = _dict_copy(value, size, max_items)
        size = min(size, max_items)
    state[0] = left - size
    depth -= 1
    leaves = _LEAVES
    for k, v in out.items():
        cls = type(v)
        if cls not in leaves:
            memo[key] = out
            try:
                copier = _COPIERS[cls]
            except KeyError:
                copier = _copier(cls)
            out[k] = copier(v, depth, memo, state)  # an existing key: the dict keeps its size
    return out


def _dict_copy(value: Any, size: int, max_items: int) -> dict[Any, Any]:
    items = OrderedDict.items(value) if isinstance(value, OrderedDict) else dict.items(value)
    if size <= max_items:
        return dict(items)
    out = _CutDict(islice(items, max_items))
    out.omitted = size - max_items
    return out


def _copy_set(value: Any, depth: int, memo: dict[int, Any], state: list[int]) -> Any:
    """Sets (and subclasses whose ``__iter__`` is builtin); members are hashable, kept as is."""
    key = id(value)
    if key in memo:
        return memo[key]
    left = state[0]
    if left <= 0 or depth < 0:
        return value
    size = len(value)
    max_items = state[1]
    out: set[Any]
    if size > max_items:
        out = cut = _CutSet(islice(value, max_items))
        cut.omitted = size - max_items
        size = max_items
    else:
        out = set(value)
    state[0] = left - size
    memo[key] = out
    return out


def _copy_namedtuple(value: Any, depth: int, memo: dict[int, Any], state: list[int]) -> Any:
    """A named tuple stays one (a mapper may read its fields), with its containers copied."""
    key = id(value)
    if key in memo:
        return memo[key]
    left = state[0]
    if left <= 0 or depth < 0 or len(value) > state[1]:
        return value
    state[0] = left - len(value)
    memo[key] = value  # a cycle back to it keeps the original
    fields = [v if type(v) in _LEAVES else _copy_any(v, depth - 1, memo, state) for v in value]
    try:
        memo[key] = out = tuple.__new__(type(value), fields)
    except Exception:  # a tuple subclass with its own __new__ rules
        memo[key] = out = fields
    return out


def _copy_bytes(value: Any, depth: int, memo: dict[int, Any], state: list[int]) -> Any:
    """Bytearrays and memoryviews as bytes: a leaf, copied whole (a memcpy)."""
    try:
        return value.tobytes() if type(value) is memoryview else bytes(memoryview(value))
    except ValueError:  # a released memoryview
        return value


def _copy_any(value: Any, depth: int, memo: dict[int, Any], state: list[int]) -> Any:
    cls = type(value)
    try:
        copier = _COPIERS[cls]
    except KeyError:
        copier = _copier(cls)
    return copier(value, depth, memo, state)


_COPIERS: dict[type, _Copier] = {
    dict: _copy_dict, list: _copy_list, tuple: _copy_list, set: _copy_set, deque: _copy_list,
    OrderedDict: _copy_dict, defaultdict: _copy_dict, Counter: _copy_dict,
    bytearray: _copy_bytes, memoryview: _copy_bytes,
}
_COPIERS_CACHED = 1024  # classified types remembered (bounds what dynamic classes can fill)


def _copier(cls: type) -> _Copier:
    """How snapshot copies a type not seen yet: containers whose reading methods are builtin."""
    copier: _Copier = _keep
    if issubclass(cls, dict):
        builtin = OrderedDict.items if issubclass(cls, OrderedDict) else dict.items
        if cls.items is builtin:
            copier = _copy_dict
    elif issubclass(cls, tuple):
        if cls.__iter__ is tuple.__iter__:
            named = isinstance(getattr(cls, "_fields", None), tuple)
            copier = _copy_namedtuple if named else _copy_list
    elif issubclass(cls, (list, deque, set)):
        base = next(b for b in (list, deque, set) if issubclass(cls, b))
        if cls.__iter__ is base.__iter__:
            copier = _copy_set if base is set else _copy_list
    elif issubclass(cls, (bytearray, memoryview)):
        copier = _copy_bytes
    if len(_COPIERS) < _COPIERS_CACHED:
        _COPIERS[cls] = copier
    return copier


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
            if cut or type(value) is _CutDict:
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
            if cut or type(value) in _CUT:
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
        omitted = value.omitted if type(value) in _CUT else 0
        try:
            more = len(value) + omitted - shown
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

