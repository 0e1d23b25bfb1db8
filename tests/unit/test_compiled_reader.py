"""Compiled readers against fastavro, the reference: the same records from the same bodies,
for every contract and for a schema using every Avro type; malformed bodies refused."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.compiled_reader import compile_reader
from schemas.serde import Decoder, encode_header
from streams.errors import SerdeError
from tests.unit.avro_cases import (
    EVERYTHING,
    SCHEMAS,
    parse_schema,
    reference,
    same,
    values,
    written,
)


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
