"""Confluent wire format on fastavro: magic byte 0, 4-byte big-endian schema id, Avro body."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from streams.errors import SerdeError

MAGIC = 0
HEADER = struct.Struct(">bI")


def encode(schema_id: int, parsed_schema: Any, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(HEADER.pack(MAGIC, schema_id))
    try:
        schemaless_writer(buf, parsed_schema, record)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SerdeError(f"record does not fit schema id {schema_id}: {exc}") from exc
    return buf.getvalue()


def split(data: bytes) -> tuple[int, memoryview]:
    """Schema id and Avro body of a wire-format payload."""
    if data is None or len(data) < HEADER.size:
        raise SerdeError(
            f"payload of {0 if data is None else len(data)} bytes is too short for the "
            "Confluent wire format (5-byte header); the producer did not use a registry serializer"
        )
    magic, schema_id = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SerdeError(
            f"unknown magic byte {magic} (expected 0): not Confluent wire-format Avro"
        )
    return schema_id, memoryview(data)[HEADER.size:]


class Decoder:
    """Decodes wire-format bytes, resolving writer schemas by id (cached) against a reader schema."""

    def __init__(self, fetch_schema: Callable[[int], dict[str, Any]],
                 reader_schema: dict[str, Any] | None = None) -> None:
        self._fetch = fetch_schema
        self._reader = parse_schema(reader_schema) if reader_schema else None
        self._writers: dict[int, Any] = {}

    def decode(self, data: bytes) -> dict[str, Any]:
        schema_id, body = split(data)
        writer = self._writers.get(schema_id)
        if writer is None:
            writer = self._writers[schema_id] = parse_schema(self._fetch(schema_id))
        try:
            record: dict[str, Any] = schemaless_reader(
                io.BytesIO(body), writer, self._reader
            )
        except (EOFError, ValueError, IndexError, StopIteration) as exc:
            raise SerdeError(
                f"Avro body does not decode with schema id {schema_id}: {exc!r} (truncated payload?)"
            ) from exc
        return record
