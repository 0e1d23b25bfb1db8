"""Sample records for any Avro schema: deterministic, valid, and equal after a round trip.

Used by tests (every contract round-trips) and the serde benchmark. Values carry the Python
types fastavro returns when reading (Decimal, date, aware datetime, UUID), so
``decode(encode(r)) == r``.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from schemas.compat import TypeIndex

_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
_WORDS = ("alpha", "delivery", "EMEA", "fixed", "north", "phase", "review", "sprint", "EUR")


class Sampler:
    """Builds records for one schema; `optional` is the chance a nullable field gets a value."""

    def __init__(self, schema: Any, seed: int = 0, optional: float = 0.8,
                 max_items: int = 3) -> None:
        self.schema = schema
        self.index = TypeIndex(schema)
        self.rng = random.Random(seed)
        self.optional = optional
        self.max_items = max_items

    def record(self) -> dict[str, Any]:
        value = self._value(self.schema, "", 0)
        if not isinstance(value, dict):
            raise TypeError("the schema's top level is not a record")
        return value

    def records(self, n: int) -> list[dict[str, Any]]:
        return [self.record() for _ in range(n)]

    def _logical(self, node: dict[str, Any], kind: str) -> Any:
        rng, logical = self.rng, node["logicalType"]
        if logical == "decimal":
            scale = int(node.get("scale", 0))
            digits = min(int(node.get("precision", 10)), 12)
            unscaled = rng.randrange(-(10 ** (digits - 1)), 10 ** (digits - 1))
            return Decimal(unscaled).scaleb(-scale)
        if logical == "date":
            return (_EPOCH + timedelta(days=rng.randrange(3650))).date()
        if logical == "timestamp-millis":
            return _EPOCH + timedelta(milliseconds=rng.randrange(10**11))
        if logical == "timestamp-micros":
            return _EPOCH + timedelta(microseconds=rng.randrange(10**14))
        if logical == "uuid":
            return uuid.UUID(int=rng.getrandbits(128), version=4)
        return None

    def _value(self, node: Any, ns: str, depth: int) -> Any:
        t = self.index.resolve(node, ns)
        n, rng = t.node, self.rng
        if isinstance(n, dict) and n.get("logicalType") and t.kind in (
                "bytes", "int", "long", "string"):
            value = self._logical(n, t.kind)
            if value is not None:
                return value
        if t.kind == "union":
            branches = [b for b in n if b != "null"]
            if not branches or (len(branches) < len(n) and rng.random() >= self.optional):
                return None
            return self._value(rng.choice(branches), t.ns, depth)
        if t.kind == "record":
            return {f["name"]: self._value(f["type"], t.ns, depth + 1) for f in n["fields"]}
        if t.kind == "enum":
            return rng.choice(n["symbols"])
        if t.kind == "array":
            count = 0 if depth > 6 else rng.randrange(self.max_items + 1)
            return [self._value(n["items"], t.ns, depth + 1) for _ in range(count)]
        if t.kind == "map":
            count = 0 if depth > 6 else rng.randrange(self.max_items + 1)
            return {f"k{i}": self._value(n["values"], t.ns, depth + 1) for i in range(count)}
        if t.kind == "fixed":
            return rng.randbytes(int(n["size"]))
        return self._primitive(t.kind)

    def _primitive(self, kind: str) -> Any:
        rng = self.rng
        if kind == "null":
            return None
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "int":
            return rng.randrange(-(2**31), 2**31)
        if kind == "long":
            return rng.randrange(-(2**63), 2**63)
        if kind in ("float", "double"):
            # Halves survive float32 exactly, so float fields round-trip equal too.
            return rng.randrange(0, 4000) / 2
        if kind == "bytes":
            return rng.randbytes(rng.randrange(16))
        return f"{rng.choice(_WORDS)}-{rng.randrange(10**6)}"
