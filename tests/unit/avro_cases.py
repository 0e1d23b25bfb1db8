"""Avro schemas and value strategies the compiled reader and writer are tested on: every
contract (with uuid as uuid and as text) and a schema using every Avro type."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastavro import parse_schema as fastavro_parse
from fastavro import schemaless_reader, schemaless_writer
from hypothesis import strategies as st

from schemas.serde import without_uuid_type

AVRO = Path(__file__).resolve().parents[2] / "schemas" / "avro"
CONTRACTS = sorted(p.relative_to(AVRO).as_posix() for p in AVRO.rglob("*.avsc"))

# Every type and logical type Avro has, nested: named types referred to again, unions of
# several branches, recursion, arrays and maps of records and unions.
EVERYTHING: dict[str, Any] = {
    "type": "record",
    "name": "Everything",
    "namespace": "test.kinds",
    "fields": [
        {"name": "n", "type": "null"},
        {"name": "flag", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "raw", "type": "bytes"},
        {"name": "text", "type": "string"},
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["R", "G", "B"]}},
        {"name": "colours", "type": {"type": "array", "items": "Colour"}},
        {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 4}},
        {"name": "point", "type": {
            "type": "record", "name": "Point",
            "fields": [{"name": "x", "type": "long"}, {"name": "y", "type": ["null", "double"]}],
        }},
        {"name": "points", "type": {"type": "array", "items": "Point"}},
        {"name": "by_name", "type": {"type": "map", "values": ["null", "Point", "string"]}},
        {"name": "choice", "type": ["null", "long", "string", "Point", "Hash"]},
        {"name": "chain", "type": ["null", {
            "type": "record", "name": "Link",
            "fields": [{"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Link"]}],
        }]},
        {"name": "amount", "type": {
            "type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 3,
        }},
        {"name": "fixed_amount", "type": {
            "type": "fixed", "name": "Money", "size": 8, "logicalType": "decimal",
            "precision": 15, "scale": 2,
        }},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "at_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "at_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "local_ms", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "local_us", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        {"name": "clock_ms", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "clock_us", "type": {"type": "long", "logicalType": "time-micros"}},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "odd", "type": {"type": "string", "logicalType": "not-a-known-type"}},
    ],
}  # fmt: skip

_MOMENTS = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1))


def values(schema: Any, named: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values fastavro writes for `schema` (parsed, named types by full name)."""
    if isinstance(schema, list):
        if depth > 6 and "null" in schema:  # recursive types end somewhere
            return st.none()
        return st.one_of(*(values(s, named, depth) for s in schema))
    if isinstance(schema, str):
        if schema in named:
            return values(named[schema], named, depth + 1)
        schema = {"type": schema}
    kind, logical = schema["type"], schema.get("logicalType")
    if isinstance(kind, (dict, list)):
        return values(kind, named, depth)
    if logical == "decimal":
        digits = schema["precision"] - schema.get("scale", 0)
        bound = Decimal(10) ** min(digits, 12) - 1
        return st.decimals(-bound, bound, places=schema.get("scale", 0), allow_nan=False)
    if logical == "date":
        return st.dates()
    if logical in ("timestamp-millis", "timestamp-micros"):
        return _MOMENTS.map(lambda d: d.replace(tzinfo=UTC))
    if logical in ("local-timestamp-millis", "local-timestamp-micros"):
        return _MOMENTS
    if logical in ("time-millis", "time-micros"):
        return st.times()
    if logical == "uuid":
        return st.uuids().map(str)
    simple: dict[str, st.SearchStrategy[Any]] = {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.integers(-(2**63), 2**63 - 1),
        "float": st.floats(width=32, allow_nan=False),
        "double": st.floats(allow_nan=False),
        "bytes": st.binary(max_size=70),
        "string": st.text(max_size=70),
    }
    if kind in simple:
        return simple[kind]
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if kind == "array":
        return st.lists(values(schema["items"], named, depth + 1), max_size=4)
    if kind == "map":
        return st.dictionaries(
            st.text(max_size=8), values(schema["values"], named, depth + 1), max_size=3
        )
    fields = {f["name"]: values(f["type"], named, depth + 1) for f in schema["fields"]}
    return st.fixed_dictionaries(fields)


def parse_schema(schema: Any, named_schemas: dict[str, Any] | None = None) -> Any:
    return fastavro_parse(schema, named_schemas=named_schemas)


def written(parsed: Any, record: Any) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def reference(parsed: Any, body: bytes) -> Any:
    return schemaless_reader(io.BytesIO(body), parsed, None)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types and forms (a Decimal's exponent, a datetime's zone)."""
    return bool(a == b and repr(a) == repr(b))


def schemas() -> list[tuple[str, Any]]:
    found = [(name, json.loads((AVRO / name).read_text())) for name in CONTRACTS]
    out: list[tuple[str, Any]] = []
    for name, schema in found:
        # Contracts refer to the shared envelope by name: inline it as the registry has it.
        try:
            parsed = parse_schema(schema, named_schemas=_shared())
        except Exception:  # noqa: BLE001 - not a standalone schema (the envelope itself)
            continue
        out.append((name, parsed))
        out.append((f"{name} (uuid as text)", parse_schema(without_uuid_type(schema), _shared())))
    out.append(("everything", parse_schema(EVERYTHING)))
    return out


def _shared() -> dict[str, Any]:
    named: dict[str, Any] = {}
    parse_schema(json.loads((AVRO / "envelope.avsc").read_text()), named_schemas=named)
    return named


SCHEMAS = schemas()
