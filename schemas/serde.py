"""Confluent wire format on fastavro: magic byte 0, 4-byte big-endian schema id, Avro body.

Byte-for-byte what confluent-kafka's AvroSerializer writes and AvroDeserializer reads, so
any Confluent-compatible consumer can decode pssync topics and vice versa.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from schemas.compiled_reader import Reader, compile_reader
from schemas.compiled_writer import Writer, compile_writer
from streams.errors import SchemaError, SerdeError

MAGIC = 0
HEADER = struct.Struct(">bI")
MAX_SCHEMA_ID = 2**32 - 1
# What a compiled reader raises for a body that is not what its schema says.
_MALFORMED = (EOFError, ValueError, IndexError, TypeError, ArithmeticError)


@lru_cache(maxsize=256)
def _parse_json(schema_json: str) -> Any:
    try:
        return parse_schema(json.loads(schema_json))
    except Exception as exc:  # fastavro raises several types for a bad schema
        raise SchemaError(f"not a valid Avro schema: {exc}") from exc


def parse(schema: dict[str, Any] | str) -> Any:
    """fastavro's parsed form of a schema (JSON object or string), cached by its text."""
    text = schema if isinstance(schema, str) else json.dumps(schema, sort_keys=True)
    return _parse_json(text)


@lru_cache(maxsize=1024)
def encode_header(schema_id: int) -> bytes:
    """The 5-byte Confluent wire-format header of `schema_id`."""
    return _header(schema_id)


def _header(schema_id: int) -> bytes:
    if not 0 <= schema_id <= MAX_SCHEMA_ID:
        raise SerdeError(f"schema id {schema_id} does not fit the 4-byte wire-format header")
    return HEADER.pack(MAGIC, schema_id)


# A record field's plan: the full name of its ["null", record] union's record branch (None
# if the field is no such union), and the plans of that record's own fields.
Plan = dict[str, tuple[str | None, "Plan"]]


def _record_of(schema: Any, named: dict[str, Any]) -> dict[str, Any] | None:
    if isinstance(schema, str):
        schema = named.get(schema)
    return schema if isinstance(schema, dict) and schema.get("type") == "record" else None


def _plan(record: dict[str, Any], named: dict[str, Any], seen: frozenset[str]) -> Plan:
    plan: Plan = {}
    for field in record.get("fields", ()):
        kind = field["type"]
        branch = None
        if isinstance(kind, list) and len(kind) == 2 and "null" in kind:
            kind = kind[1] if kind[0] == "null" else kind[0]
            inner = _record_of(kind, named)
            branch = None if inner is None else str(inner["name"])
        inner = _record_of(kind, named)
        sub: Plan = {}
        if inner is not None and inner["name"] not in seen:
            sub = _plan(inner, named, seen | {inner["name"]})
        if branch is not None or sub:
            plan[field["name"]] = (branch, sub)
    return plan


def _hinted(record: dict[str, Any], plan: Plan) -> dict[str, Any]:
    out = dict(record)
    for name, (branch, sub) in plan.items():
        value = record.get(name)
        if isinstance(value, dict):
            if sub:
                value = _hinted(value, sub)
            out[name] = value if branch is None else (branch, value)
    return out


class _Encoding:
    """How records of one parsed schema are encoded: the compiled writer (None where the
    schema does not compile), and the union plan fastavro is given for the rest."""

    def __init__(self, parsed_schema: Any) -> None:
        self.schema = parsed_schema
        self.plan: Plan = {}
        self.write: Writer | None = None
        if isinstance(parsed_schema, dict) and parsed_schema.get("type") == "record":
            named = parsed_schema.get("__named_schemas") or {}
            self.plan = _plan(parsed_schema, named, frozenset({parsed_schema["name"]}))
            try:
                self.write = compile_writer(parsed_schema)
            except (ValueError, KeyError, TypeError):  # a shape it does not know: fastavro's
                self.write = None


_encodings: dict[int, _Encoding] = {}


def _encoding(parsed_schema: Any) -> _Encoding:
    held = _encodings.get(id(parsed_schema))
    if held is None or held.schema is not parsed_schema:
        held = _encodings[id(parsed_schema)] = _Encoding(parsed_schema)
    return held


def encode(schema_id: int, parsed_schema: Any, record: dict[str, Any]) -> bytes:
    how = _encoding(parsed_schema)
    if how.write is not None:
        # None: a value the compiled writer leaves to fastavro, which writes it or says why not.
        data = how.write(record, encode_header(schema_id))
        if data is not None:
            return data
    buf = io.BytesIO()
    buf.write(_header(schema_id))
    # fastavro picks the branch of a union by validating the value against each branch, a
    # second walk over a whole nested record. A record value of a ["null", record] union is
    # handed over as (record name, value) instead: fastavro writes that branch directly,
    # the same bytes at about two thirds of the cost. `record` itself is not changed.
    if how.plan and isinstance(record, dict):
        record = _hinted(record, how.plan)
    try:
        schemaless_writer(buf, parsed_schema, record)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SerdeError(f"record does not fit schema id {schema_id}: {exc}") from exc
    return buf.getvalue()


def split(data: bytes) -> tuple[int, memoryview]:
    """Schema id and Avro body of a wire-format payload."""
    return schema_id_of(data), memoryview(data)[HEADER.size :]


def schema_id_of(data: bytes) -> int:
    """The schema id of a wire-format payload, its header checked."""
    if data is None or len(data) < HEADER.size:
        raise SerdeError(
            f"payload of {0 if data is None else len(data)} bytes is too short for the "
            "Confluent wire format (5-byte header); the producer did not use a registry serializer"
        )
    magic, schema_id = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SerdeError(f"unknown magic byte {magic} (expected 0): not Confluent wire-format Avro")
    return int(schema_id)


def without_uuid_type(schema: Any) -> Any:
    """The schema with its `uuid` logical types dropped: those strings read as text."""
    if isinstance(schema, dict):
        return {
            k: without_uuid_type(v)
            for k, v in schema.items()
            if not (k == "logicalType" and v == "uuid")
        }
    if isinstance(schema, list):
        return [without_uuid_type(v) for v in schema]
    return schema


class Decoder:
    """Decodes wire-format bytes, resolving writer schemas by id (cached) against a reader schema.

    `fetch_schema` returns the writer schema of an id (Registry.schema_by_id) and should raise
    SerdeError for an id the registry does not know. With `uuid_text`, `uuid` fields come out
    as their text instead of uuid.UUID objects: what the stages use them as, for a fifth less
    decoding time on a canonical event (two UUIDs built and turned back into text).
    """

    def __init__(
        self,
        fetch_schema: Callable[[int], dict[str, Any]],
        reader_schema: dict[str, Any] | None = None,
        uuid_text: bool = False,
    ) -> None:
        self._fetch = fetch_schema
        self._adapt: Callable[[Any], Any] = without_uuid_type if uuid_text else (lambda s: s)
        self._reader = parse(self._adapt(reader_schema)) if reader_schema else None
        self._writers: dict[int, Any] = {}
        # Writer schema id -> its compiled reader, or None where fastavro reads (a reader
        # schema to resolve against, or a writer schema that is not a record).
        self._compiled: dict[int, Reader | None] = {}

    def _writer(self, schema_id: int) -> Any:
        writer = self._writers.get(schema_id)
        if writer is None:
            writer = self._writers[schema_id] = parse(self._adapt(self._fetch(schema_id)))
        return writer

    def _compile(self, schema_id: int) -> Reader | None:
        writer = self._writer(schema_id)
        read: Reader | None = None
        # A reader schema equal to the writer's resolves nothing (fastavro skips it too).
        same = self._reader is None or writer == self._reader
        if same and isinstance(writer, dict) and writer.get("type") == "record":
            try:
                read = compile_reader(writer)
            except (ValueError, KeyError, TypeError):  # a shape it does not know: fastavro's
                read = None
        self._compiled[schema_id] = read
        return read

    def decode(self, data: bytes) -> dict[str, Any]:
        schema_id = schema_id_of(data)
        read = (
            self._compiled[schema_id] if schema_id in self._compiled else self._compile(schema_id)
        )
        if read is not None:
            try:
                return read(data if type(data) is bytes else bytes(data), HEADER.size)
            except _MALFORMED as exc:
                raise self._malformed(schema_id, data, exc) from exc
        body = memoryview(data)[HEADER.size :]
        writer = self._writer(schema_id)
        try:
            record: Any = schemaless_reader(io.BytesIO(body), writer, self._reader)
        except SchemaResolutionError as exc:
            raise SerdeError(
                f"payload written with schema id {schema_id} cannot be read as this topic's "
                f"contract: {exc}; it belongs to another topic or an incompatible schema"
            ) from exc
        except (EOFError, ValueError, IndexError, StopIteration, KeyError, TypeError) as exc:
            raise self._malformed(schema_id, data, exc) from exc
        if not isinstance(record, dict):
            raise SerdeError(
                f"schema id {schema_id} is not a record schema; pssync topics carry records"
            )
        return record

    @staticmethod
    def _malformed(schema_id: int, data: bytes, exc: Exception) -> SerdeError:
        size = len(data) - HEADER.size
        return SerdeError(
            f"Avro body of {size} bytes does not decode with schema id {schema_id}: "
            f"{exc!r}; the payload is truncated or was not written with that schema"
        )


class Encoder:
    """Encodes records of one subject, registering its schema on first use (id cached)."""

    def __init__(
        self, register: Callable[[str, str], int], subject: str, schema: dict[str, Any] | str
    ) -> None:
        self._register = register
        self.subject = subject
        self.schema_str = schema if isinstance(schema, str) else json.dumps(schema)
        self.parsed = parse(self.schema_str)
        self._id: int | None = None

    @property
    def schema_id(self) -> int:
        if self._id is None:
            self._id = self._register(self.subject, self.schema_str)
        return self._id

    def encode(self, record: dict[str, Any]) -> bytes:
        return encode(self.schema_id, self.parsed, record)
