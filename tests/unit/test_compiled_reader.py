"""Compiled readers against fastavro, the reference: the same records from the same bodies,
for every contract and for a schema using every Avro type; malformed bodies refused."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema as fastavro_parse
from fastavro import schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.compiled_reader import compile_reader
from schemas.serde import Decoder, encode_header, without_uuid_type
from streams.errors import SerdeError

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


@pytest.mark.parametrize(("name", "parsed"), SCHEMAS, ids=[n for n, _ in SCHEMAS])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_reads_what_fastavro_reads(name: str, parsed: Any, data: st.DataObject) -> None:
    named = parsed.get("__named_schemas", {})
    record = data.draw(values(parsed, named))
    body = written(parsed, record)
    read = compile_reader(parsed)
    # The body at an offset, after a header, as pssync reads it from a wire-format value.
    assert same(read(b"\x00\x00\x00\x00\x07" + body, 5), reference(parsed, body))


# Contracts only: in `everything` a null last field reads from no bytes, so a prefix of a
# body can be a whole one.
CONTRACT_SCHEMAS = [(n, p) for n, p in SCHEMAS if n.endswith(".avsc")]


@pytest.mark.parametrize(("name", "parsed"), CONTRACT_SCHEMAS, ids=[n for n, _ in CONTRACT_SCHEMAS])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_refuses_a_truncated_body(name: str, parsed: Any, data: st.DataObject) -> None:
    record = data.draw(values(parsed, parsed.get("__named_schemas", {})))
    body = written(parsed, record)
    cut = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises((EOFError, ValueError, IndexError)):
        compile_reader(parsed)(body[:cut], 0)


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=120))
def test_garbage_is_refused_or_read_as_fastavro_reads_it(garbage: bytes) -> None:
    parsed = parse_schema(EVERYTHING)
    try:
        ours = compile_reader(parsed)(garbage, 0)
    except (EOFError, ValueError, IndexError, TypeError, ArithmeticError) as exc:
        assert str(exc) or exc.args == ()  # refused, with whatever the reason
        return
    assert same(ours, reference(parsed, garbage))


def test_blocks_that_give_their_size_read_like_plain_blocks() -> None:
    schema = parse_schema({"type": "record", "name": "R", "fields": [
        {"name": "xs", "type": {"type": "array", "items": "long"}},
        {"name": "m", "type": {"type": "map", "values": "string"}},
    ]})  # fmt: skip
    # Array: a block of -2 items of 2 bytes (1, 2), then a block of 1 (3), then the end.
    # Map: a block of -1 entry of 4 bytes ("a" -> "bc"), then the end.
    body = bytes([3, 4, 2, 4, 2, 6, 0, 1, 8, 2]) + b"a" + bytes([4]) + b"bc" + bytes([0])
    assert compile_reader(schema)(body, 0) == {"xs": [1, 2, 3], "m": {"a": "bc"}}
    assert reference(schema, body) == {"xs": [1, 2, 3], "m": {"a": "bc"}}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (bytes([3]) + b"x", "negative length"),
        (bytes([0x80] * 11), "longer than 10 bytes"),
        (bytes([2, 0x61]), "past the end"),
    ],
)
def test_refusals_say_what_is_wrong(body: bytes, why: str) -> None:
    schema = parse_schema({"type": "record", "name": "S", "fields": [
        {"name": "s", "type": "string"},
        {"name": "t", "type": "string"},
    ]})  # fmt: skip
    with pytest.raises((EOFError, ValueError, IndexError), match=why):
        compile_reader(schema)(body, 0)


def test_the_decoder_turns_a_refusal_into_a_serde_error() -> None:
    schema = {"type": "record", "name": "S", "fields": [{"name": "c", "type": {
        "type": "enum", "name": "C", "symbols": ["a"]}}]}  # fmt: skip
    decoder = Decoder(lambda _id: schema)
    assert decoder.decode(encode_header(3) + bytes([0])) == {"c": "a"}
    with pytest.raises(SerdeError, match="enum index 1 is outside the 1 the schema has"):
        decoder.decode(encode_header(3) + bytes([2]))


def test_the_decoder_resolves_against_a_reader_schema_with_fastavro() -> None:
    writer = {"type": "record", "name": "S", "fields": [{"name": "a", "type": "long"}]}
    reader = {**writer, "fields": [*writer["fields"], {"name": "b", "type": "long", "default": 7}]}
    decoder = Decoder(lambda _id: writer, reader)
    assert decoder.decode(encode_header(1) + bytes([4])) == {"a": 2, "b": 7}


def test_the_decoder_compiles_when_the_reader_schema_is_the_writers() -> None:
    schema = {"type": "record", "name": "S", "fields": [{"name": "a", "type": "long"}]}
    decoder = Decoder(lambda _id: schema, schema)
    assert decoder.decode(encode_header(1) + bytes([4])) == {"a": 2}
    assert decoder._compiled[1] is not None


def test_record_names_that_differ_only_in_dots_and_underscores_stay_apart() -> None:
    schema = parse_schema({"type": "record", "name": "a.b_c", "fields": [
        {"name": "x", "type": {"type": "record", "name": "a_b.c", "fields": [
            {"name": "y", "type": "long"}]}},
        {"name": "z", "type": "string"},
    ]})  # fmt: skip
    body = written(schema, {"x": {"y": 5}, "z": "t"})
    assert compile_reader(schema)(body, 0) == {"x": {"y": 5}, "z": "t"}


def test_a_schema_nested_deeper_than_python_compiles_is_read_by_fastavro() -> None:
    kind: Any = "long"
    for _ in range(30):
        kind = {"type": "array", "items": kind}
    schema = {"type": "record", "name": "Deep", "fields": [{"name": "v", "type": kind}]}
    with pytest.raises(ValueError, match="nests too deeply"):
        compile_reader(parse_schema(schema))
    value: Any = 7
    for _ in range(30):
        value = [value]
    decoder = Decoder(lambda _id: schema)
    body = encode_header(2) + written(parse_schema(schema), {"v": value})
    assert decoder.decode(body) == {"v": value}
    assert decoder._compiled[2] is None
