"""Advisories to JSON and back, exactly: the form the advisory store keeps.

The codec walks the dataclasses of :mod:`alicorn.advisories.model` by their type hints, so a
field added to a model (with a default, as the contract asks) is stored and restored without a
change here.  Dates are ISO 8601 strings (with their UTC offset when they have one), tuples are
JSON lists.  :func:`from_json` checks every type on the way back: a stored body that does not
fit the model is an error, never a half-filled advisory.

Exact for every value a feed reader can produce.  The one exception is text holding a high
and a low surrogate side by side as two code points (no JSON, YAML or XML parser produces
that): JSON cannot tell it from the escaped character, so it comes back as that character.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any

from alicorn.advisories.model import Advisory
from alicorn.errors import BadInput

#: bumped when the JSON form changes in a way old readers cannot take
CODEC_VERSION = 1

# The fields left out of the content digest: where an advisory was read from is provenance,
# not content.  The same advisory imported from another copy of the feed is unchanged.
_NOT_CONTENT = frozenset({"source"})


class CodecError(BadInput):
    """A value is not an advisory (to_json) or a JSON body does not fit the model (from_json)."""


def to_json(advisory: Advisory) -> dict[str, Any]:
    """``advisory`` as a JSON-ready dict holding every field; :func:`from_json` inverts it."""
    try:
        value = _encoder(Advisory)(advisory)
    except _Mismatch:
        # The fast path says only that something is off; the checking walk says what, where.
        _encode(advisory, Advisory, "advisory")
        raise CodecError("not an advisory") from None
    assert isinstance(value, dict)
    return value


def from_json(data: Any) -> Advisory:
    """The :class:`Advisory` that :func:`to_json` turned into ``data``."""
    try:
        value = _decoder(Advisory)(data)
    except (_Mismatch, TypeError, ValueError):
        _decode(data, Advisory, "advisory")
        raise CodecError("not an advisory") from None
    assert isinstance(value, Advisory)
    return value


def dumps(advisory: Advisory) -> str:
    """The canonical JSON text of ``advisory``: sorted keys, no spaces, ASCII only.

    ASCII (``\\u`` escapes) rather than UTF-8 because feeds are untrusted JSON, which may carry
    lone surrogates that no UTF-8 encoder (nor a database) accepts.
    """
    return _canonical(to_json(advisory))


def dumps_with_digest(advisory: Advisory) -> tuple[str, str]:
    """:func:`dumps` and :func:`content_digest` of ``advisory``, encoding it once."""
    data = to_json(advisory)
    body = _canonical(data)
    for name in _NOT_CONTENT:
        data.pop(name, None)
    return body, "sha256:" + hashlib.sha256(_canonical(data).encode("ascii")).hexdigest()


def loads(text: str | bytes) -> Advisory:
    """The advisory of the JSON text ``text`` (as written by :func:`dumps`)."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise CodecError(f"not JSON: {e}") from e
    return from_json(data)


def content_digest(advisory: Advisory) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``advisory`` without its ``source``."""
    return dumps_with_digest(advisory)[1]


def _canonical(data: dict[str, Any]) -> str:
    try:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False)
    except ValueError as e:
        raise CodecError(f"cannot be written as JSON: {e}") from e


# -- the fast path: an encoder and a decoder compiled once per type ---------------------------
# 100k advisories must import in seconds: walking the type hints for every value is too slow,
# so each type gets a closure.  They only detect a mismatch (_Mismatch); the checking walk
# below (_encode/_decode) is then run to say what is wrong and where.


class _Mismatch(Exception):
    pass


Coder = Callable[[Any], Any]


@cache
def _encoder(hint: Any) -> Coder:
    inner = _optional(hint)
    if inner is not None:
        enc = _encoder(inner)
        return lambda v: None if v is None else enc(v)
    if hint is str:
        def text(v: Any) -> Any:
            if not isinstance(v, str):
                raise _Mismatch
            return v
        return text
    if hint is datetime:
        def date(v: Any) -> Any:
            if not isinstance(v, datetime):
                raise _Mismatch
            return v.isoformat()
        return date
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _encoder(args[0])

            def many(v: Any) -> Any:
                if not isinstance(v, tuple):
                    raise _Mismatch
                return [item(x) for x in v]
            return many
        items = [_encoder(a) for a in args]

        def fixed(v: Any) -> Any:
            if not isinstance(v, tuple) or len(v) != len(items):
                raise _Mismatch
            return [e(x) for e, x in zip(items, v, strict=True)]
        return fixed
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        cls = hint
        fields = [(name, _encoder(h)) for name, h in _hints(cls)]

        def record(v: Any) -> Any:
            if not isinstance(v, cls):
                raise _Mismatch
            return {name: enc(getattr(v, name)) for name, enc in fields}
        return record
    raise CodecError(f"the codec does not know the type {hint!r}")  # a model change


@cache
def _decoder(hint: Any) -> Coder:
    inner = _optional(hint)
    if inner is not None:
        dec = _decoder(inner)
        return lambda v: None if v is None else dec(v)
    if hint is str:
        def text(v: Any) -> Any:
            if not isinstance(v, str):
                raise _Mismatch
            return v
        return text
    if hint is datetime:
        def date(v: Any) -> Any:
            if not isinstance(v, str):
                raise _Mismatch
            return datetime.fromisoformat(v)
        return date
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _decoder(args[0])

            def many(v: Any) -> Any:
                if not isinstance(v, list):
                    raise _Mismatch
                return tuple([item(x) for x in v])
            return many
        items = [_decoder(a) for a in args]

        def fixed(v: Any) -> Any:
            if not isinstance(v, list) or len(v) != len(items):
                raise _Mismatch
            return tuple([d(x) for d, x in zip(items, v, strict=True)])
        return fixed
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        cls = hint
        fields = [(name, _decoder(h)) for name, h in _hints(cls)]
        names = frozenset(name for name, _ in fields)

        def record(v: Any) -> Any:
            if not isinstance(v, dict) or not v.keys() <= names:
                raise _Mismatch
            return cls(**{name: dec(v[name]) for name, dec in fields if name in v})
        return record
    raise CodecError(f"the codec does not know the type {hint!r}")


# -- the checking walk over the type hints ----------------------------------------------------


@cache
def _hints(cls: type) -> tuple[tuple[str, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))


def _optional(hint: Any) -> Any | None:
    """``X`` when ``hint`` is ``X | None``, else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
    return None


def _encode(value: Any, hint: Any, where: str) -> Any:
    inner = _optional(hint)
    if inner is not None:
        return None if value is None else _encode(value, inner, where)
    if hint is str:
        if not isinstance(value, str):
            raise CodecError(f"{where}: expected text, got {type(value).__name__}")
        return value
    if hint is datetime:
        if not isinstance(value, datetime):
            raise CodecError(f"{where}: expected a date, got {type(value).__name__}")
        return value.isoformat()
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, tuple):
            raise CodecError(f"{where}: expected a tuple, got {type(value).__name__}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return [_encode(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        if len(value) != len(args):
            raise CodecError(f"{where}: expected {len(args)} items, got {len(value)}")
        pairs = enumerate(zip(value, args, strict=True))
        return [_encode(v, a, f"{where}[{i}]") for i, (v, a) in pairs]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, hint):
            raise CodecError(f"{where}: expected {hint.__name__}, got {type(value).__name__}")
        return {name: _encode(getattr(value, name), h, f"{where}.{name}")
                for name, h in _hints(hint)}
    raise CodecError(f"{where}: the codec does not know the type {hint!r}")  # a model change


def _decode(data: Any, hint: Any, where: str) -> Any:
    inner = _optional(hint)
    if inner is not None:
        return None if data is None else _decode(data, inner, where)
    if hint is str:
        if not isinstance(data, str):
            raise CodecError(f"{where}: expected a string, got {type(data).__name__}")
        return data
    if hint is datetime:
        if not isinstance(data, str):
            raise CodecError(f"{where}: expected a date string, got {type(data).__name__}")
        try:
            return datetime.fromisoformat(data)
        except ValueError as e:
            raise CodecError(f"{where}: not an ISO 8601 date: {data!r}") from e
    if typing.get_origin(hint) is tuple:
        if not isinstance(data, list):
            raise CodecError(f"{where}: expected a list, got {type(data).__name__}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(v, args[0], f"{where}[{i}]") for i, v in enumerate(data))
        if len(data) != len(args):
            raise CodecError(f"{where}: expected {len(args)} items, got {len(data)}")
        pairs = enumerate(zip(data, args, strict=True))
        return tuple(_decode(v, a, f"{where}[{i}]") for i, (v, a) in pairs)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(data, dict):
            raise CodecError(f"{where}: expected an object, got {type(data).__name__}")
        fields = _hints(hint)
        unknown = set(data) - {name for name, _ in fields}
        if unknown:
            raise CodecError(f"{where}: unknown fields {sorted(unknown)}",
                             hint="written by a newer Alicorn? upgrade, or import the feed "
                                  "again")
        kwargs = {name: _decode(data[name], h, f"{where}.{name}")
                  for name, h in fields if name in data}
        try:
            return hint(**kwargs)
        except TypeError as e:  # a required field is missing
            raise CodecError(f"{where}: {e}") from e
    raise CodecError(f"{where}: the codec does not know the type {hint!r}")
