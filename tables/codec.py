"""Frozen dataclasses <-> JSON-able dicts, for table state read and written per event.

The same JSON form as `connectors.ports.to_json` (decimals and dates as strings, tuples as
lists), but each class's field converters are worked out once: a deal's state is decoded
and encoded for every event of the deal, so this sits on the stage's hot path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")
Convert = Callable[[Any], Any]


def _identity(value: Any) -> Any:
    return value


def _decoder(hint: Any) -> Convert:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            return _identity
        one = _decoder(inner[0])
        return lambda v: None if v is None else one(v)
    if origin is tuple:
        item = _decoder(args[0])
        return lambda v: tuple(item(x) for x in v)
    if origin is dict:
        value = _decoder(args[1])
        return lambda v: {k: value(x) for k, x in v.items()}
    if hint is Decimal:
        return lambda v: Decimal(str(v))
    if hint is date:
        return date.fromisoformat
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _class_decoder(hint)
    return _identity


@cache
def _class_decoder(kind: type) -> Convert:
    hints = typing.get_type_hints(kind)
    fields = [(f.name, _decoder(hints[f.name])) for f in dataclasses.fields(kind)]

    def decode(raw: dict[str, Any]) -> Any:
        return kind(**{name: conv(raw[name]) for name, conv in fields if name in raw})

    return decode


def decode(kind: type[T], raw: dict[str, Any]) -> T:
    """The instance of `kind` a dict made by `encode` describes."""
    convert = _class_decoder(typing.cast(type, kind))
    value: T = convert(raw)
    return value


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Decimal | date):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: _plain(getattr(value, name)) for name in _names(type(value))}
    return value


@cache
def _names(kind: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(kind))


def encode(value: object) -> dict[str, Any]:
    """A dataclass instance as a JSON-able dict."""
    plain: dict[str, Any] = _plain(value)
    return plain
