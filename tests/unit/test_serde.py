"""Confluent wire format: header layout, round trips, schema resolution and error cases."""

from __future__ import annotations

import copy
import io
import struct
import uuid
from typing import Any

import pytest
from fastavro import schemaless_writer

from schemas import contracts
from schemas.codec import AvroCodec, register_codec
from schemas.samples import Sampler
from schemas.serde import Decoder, Encoder, encode, parse, split
from streams.errors import SchemaError, SerdeError

NAME = "time_entry"


def fetcher(schemas: dict[int, dict[str, Any]]) -> Any:
    def fetch(schema_id: int) -> dict[str, Any]:
        if schema_id not in schemas:
            raise SerdeError(f"schema id {schema_id} is unknown")
        calls.append(schema_id)
        return schemas[schema_id]

    calls: list[int] = []
    fetch.calls = calls  # type: ignore[attr-defined]
    return fetch


@pytest.fixture
def record() -> dict[str, Any]:
    return Sampler(contracts.schema(NAME), seed=7, optional=1.0).record()


def test_header_is_magic_zero_and_big_endian_id(record: dict[str, Any]) -> None:
    data = encode(0x01020304, contracts.parsed(NAME), record)
    assert data[:5] == b"\x00\x01\x02\x03\x04"
    schema_id, body = split(data)
    assert schema_id == 0x01020304 and bytes(body) == data[5:]


@pytest.mark.parametrize("name", contracts.entities())
def test_round_trip_every_contract(name: str) -> None:
    fetch = fetcher({42: contracts.schema(name)})
    decoder = Decoder(fetch)
    for seed in range(3):
        rec = Sampler(contracts.schema(name), seed=seed).record()
        assert decoder.decode(encode(42, contracts.parsed(name), rec)) == rec
    assert fetch.calls == [42]  # writer schema fetched once, then cached


def _uuids_as_text(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _uuids_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_uuids_as_text(v) for v in value]
    return str(value) if isinstance(value, uuid.UUID) else value


@pytest.mark.parametrize("name", contracts.entities())
def test_uuid_text_reads_uuid_fields_as_their_text_and_the_rest_alike(name: str) -> None:
    schema = contracts.schema(name)
    plain, text = Decoder(fetcher({7: schema})), Decoder(fetcher({7: schema}), schema, True)
    for seed in range(3):
        data = encode(7, contracts.parsed(name), Sampler(schema, seed=seed).record())
        assert text.decode(data) == _uuids_as_text(plain.decode(data))


def test_reader_schema_resolution_fills_new_field_defaults(record: dict[str, Any]) -> None:
    old = contracts.schema(NAME)
    new = contracts.schema(NAME)
    new["fields"][1]["type"][1]["fields"].append(
        {"name": "overtime_code", "type": ["null", "string"], "default": None, "doc": "x"}
    )
    data = encode(1, parse(old), record)
    decoded = Decoder(fetcher({1: old}), reader_schema=new).decode(data)
    assert decoded["data"]["overtime_code"] is None
    assert decoded["data"]["hours"] == record["data"]["hours"]


def test_unknown_schema_id(record: dict[str, Any]) -> None:
    data = encode(9, contracts.parsed(NAME), record)
    with pytest.raises(SerdeError, match="schema id 9 is unknown"):
        Decoder(fetcher({})).decode(data)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00\x00\x01"])
def test_too_short_for_header(data: bytes) -> None:
    with pytest.raises(SerdeError, match="too short"):
        Decoder(fetcher({})).decode(data)


def test_wrong_magic_byte(record: dict[str, Any]) -> None:
    data = bytearray(encode(1, contracts.parsed(NAME), record))
    data[0] = 1
    with pytest.raises(SerdeError, match="magic byte 1"):
        Decoder(fetcher({1: contracts.schema(NAME)})).decode(bytes(data))
    with pytest.raises(SerdeError, match="magic byte"):
        split(b'{"json": true}')


def test_truncated_body(record: dict[str, Any]) -> None:
    data = encode(1, contracts.parsed(NAME), record)
    decoder = Decoder(fetcher({1: contracts.schema(NAME)}))
    for cut in (6, len(data) // 2, len(data) - 1):
        with pytest.raises(SerdeError, match="truncated"):
            decoder.decode(data[:cut])


def test_record_that_does_not_fit(record: dict[str, Any]) -> None:
    record["data"]["hours"] = "eight"
    with pytest.raises(SerdeError, match="does not fit schema id 3"):
        encode(3, contracts.parsed(NAME), record)


def test_schema_id_out_of_range(record: dict[str, Any]) -> None:
    with pytest.raises(SerdeError, match="4-byte"):
        encode(2**32, contracts.parsed(NAME), record)


def test_invalid_schema_is_a_schema_error() -> None:
    with pytest.raises(SchemaError):
        parse({"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]})


def test_encoder_registers_once(record: dict[str, Any]) -> None:
    calls: list[tuple[str, str]] = []

    def register(subject: str, schema_str: str) -> int:
        calls.append((subject, schema_str))
        return 77

    enc = Encoder(register, "canonical.time_entry-value", contracts.schema_str(NAME))
    first, second = enc.encode(record), enc.encode(record)
    assert first == second and struct.unpack(">bI", first[:5]) == (0, 77)
    assert len(calls) == 1


def test_faust_codec(record: dict[str, Any]) -> None:
    from faust.serializers import codecs

    enc = Encoder(lambda s, x: 5, "canonical.time_entry-value", contracts.schema_str(NAME))
    codec = AvroCodec(encoder=enc, decoder=Decoder(fetcher({5: contracts.schema(NAME)})))
    name = "pssync-avro-test"
    assert name not in codecs.codecs  # nothing registers at import time
    register_codec(name, codec)
    try:
        assert codecs.dumps(name, record)[:5] == b"\x00\x00\x00\x00\x05"
        assert codecs.loads(name, codecs.dumps(name, record)) == record
    finally:
        del codecs.codecs[name]
    with pytest.raises(SerdeError, match="no decoder"):
        AvroCodec(encoder=enc).loads(b"\x00\x00\x00\x00\x05")


def test_payload_of_another_contract_is_a_serde_error() -> None:
    other = {"type": "record", "name": "Other", "fields": [{"name": "n", "type": "int"}]}
    mine = {"type": "record", "name": "Mine", "fields": [{"name": "s", "type": "string"}]}
    data = encode(1, parse(other), {"n": 1})
    with pytest.raises(SerdeError, match="schema id 1 cannot be read"):
        Decoder(lambda _id: other, mine).decode(data)


@pytest.mark.parametrize("name", contracts.entities())
def test_encoding_hints_the_record_branch_of_unions_and_writes_the_same_bytes(name: str) -> None:
    """encode hands the record branch of ["null", record] unions to fastavro by name: the
    bytes are fastavro's own for the plain record, and the record is not changed."""
    parsed = contracts.parsed(name)
    for seed in range(4):
        for optional in (0.0, 1.0):
            rec = Sampler(contracts.schema(name), seed=seed, optional=optional).record()
            before = copy.deepcopy(rec)
            plain = io.BytesIO()
            plain.write(b"\x00\x00\x00\x00\x07")
            schemaless_writer(plain, parsed, rec)
            assert encode(7, parsed, rec) == plain.getvalue()
            assert rec == before


def test_a_record_that_does_not_fit_the_hinted_branch_is_a_serde_error(
    record: dict[str, Any],
) -> None:
    bad = {**record, "data": {k: v for k, v in record["data"].items() if k != "hours"}}
    with pytest.raises(SerdeError, match="does not fit schema id 3"):
        encode(3, contracts.parsed(NAME), bad)
    wrong = {**record, "data": {**record["data"], "hours": "eight"}}
    with pytest.raises(SerdeError, match="does not fit schema id 3"):
        encode(3, contracts.parsed(NAME), wrong)
