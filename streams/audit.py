"""The audit trail of what pssync writes: target writes on `audit.sink`, applied saga commands
on `audit.command`; one Avro record each."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from connectors.sinks.base import Write
from schemas.conventions import value_subject
from schemas.registry import Registry
from schemas.serde import encode, encode_header, parse
from streams.ids import name_id
from streams.output import Output

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schemas/avro/audit/sink_write.avsc"
_NS = uuid.UUID("0b5e2f3c-8d41-5a7e-b6c2-91d4e7a3f058")


@cache
def schema_str() -> str:
    return SCHEMA_FILE.read_text()


def _audit_id(target: str, write: Write) -> str:
    return name_id(_NS, f"{target}|{write.key}|{write.event_id}|{write.op}|{write.version_after}")


def audit_record(target: str, entity: str, write: Write) -> dict[str, Any]:
    return {
        "audit_id": _audit_id(target, write),
        "target": target,
        "entity": entity,
        "key": write.key,
        "op": write.op,
        "version_before": write.version_before,
        "version_after": write.version_after,
        "event_id": write.event_id,
        "correlation_id": write.correlation_id,
        "applied_at": write.applied_at,
    }


# The SinkWrite fields and types SinkWriteEncoder writes, in order (enums by kind only: their
# symbols are read from the schema).
FIELDS: tuple[tuple[str, Any], ...] = (
    ("audit_id", "string"),
    ("target", "string"),
    ("entity", "string"),
    ("key", "string"),
    ("op", "enum"),
    ("version_before", ["null", "long"]),
    ("version_after", "long"),
    ("event_id", "string"),
    ("correlation_id", "string"),
    ("applied_at", {"type": "long", "logicalType": "timestamp-millis"}),
)


def _shape(field: dict[str, Any]) -> tuple[str, Any]:
    kind = field["type"]
    if isinstance(kind, dict) and kind.get("type") == "enum":
        kind = "enum"
    return field["name"], kind


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SMALL = [bytes([n << 1]) for n in range(64)]  # zigzag varints of 0..63: one byte each


def _long(n: int) -> bytes:
    """Avro long: zigzag, then a little-endian base-128 varint."""
    if 0 <= n < 64:
        return _SMALL[n]
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _text(value: str) -> bytes:
    raw = value.encode()
    return _long(len(raw)) + raw


class SinkWriteEncoder:
    """SinkWrite records straight from Writes, the bytes fastavro writes for audit_record(), at
    a fraction of its cost: one is written per target write. Anything else than the shape it
    knows (a changed schema, an op it has no symbol for, a naive time) takes fastavro's way."""

    def __init__(self, schema_id: int, schema: str, target: str, entity: str) -> None:
        self.schema_id, self.target, self.entity = schema_id, target, entity
        self._parsed = parse(schema)
        fields = json.loads(schema).get("fields", [])
        op: dict[str, Any] = next((f["type"] for f in fields if f["name"] == "op"), {})
        self._ops = {sym: _long(i) for i, sym in enumerate(op.get("symbols", []))}
        self._known = tuple(_shape(f) for f in fields) == FIELDS
        self._head = encode_header(schema_id)
        self._fixed = _text(target) + _text(entity)
        self._at: tuple[datetime, bytes] | None = None

    def _millis(self, at: datetime) -> bytes:
        held = self._at
        if held is not None and held[0] is at:
            return held[1]
        delta = at - _EPOCH  # fastavro's arithmetic for timestamp-millis
        ms = (delta.days * 86400 + delta.seconds) * 1000 + int(delta.microseconds / 1000)
        self._at = (at, _long(ms))
        return self._at[1]

    def encode(self, w: Write) -> bytes:
        op = self._ops.get(w.op)
        if not self._known or op is None or w.applied_at.tzinfo is None:
            return encode(self.schema_id, self._parsed, audit_record(self.target, self.entity, w))
        before = b"\x00" if w.version_before is None else b"\x02" + _long(w.version_before)
        return b"".join(
            (
                self._head,
                _text(_audit_id(self.target, w)),
                self._fixed,
                _text(w.key),
                op,
                before,
                _long(w.version_after),
                _text(w.event_id),
                _text(w.correlation_id),
                self._millis(w.applied_at),
            )
        )


class SinkAudit:
    """Produces a target's writes to the audit topic; acknowledged before the target commits."""

    def __init__(
        self, output: Output, registry: Registry, topic: str, target: str, entity: str
    ) -> None:
        self.output = output
        self.registry = registry
        self.topic = topic
        self.target = target
        self.entity = entity
        self.encoder: SinkWriteEncoder | None = None

    async def prepare(self) -> None:
        schema_id = await asyncio.to_thread(
            self.registry.register, value_subject(self.topic), schema_str()
        )
        self.encoder = SinkWriteEncoder(schema_id, schema_str(), self.target, self.entity)

    async def __call__(self, writes: list[Write]) -> None:
        assert self.encoder is not None, "prepare() first"
        encode_write, send, topic = self.encoder.encode, self.output.send, self.topic
        for w in writes:
            send(topic, w.key.encode(), encode_write(w))
        await self.output.flush()


# -- saga commands applied to applications (`audit.command`) ------------------------------

COMMAND_SCHEMA_FILE = SCHEMA_FILE.parent / "command.avsc"


@cache
def command_schema_str() -> str:
    return COMMAND_SCHEMA_FILE.read_text()


def command_audit_record(
    command: dict[str, Any],
    status: str,
    output: str,
    error: str | None,
    duration_ms: int,
    applied_at: datetime,
) -> dict[str, Any]:
    token = "|".join(
        (
            command["target"],
            command["command_id"],
            str(command["attempt"]),
            status,
            output,
            error or "",
        )
    )
    return {
        "audit_id": name_id(_NS, token),
        "target": command["target"],
        "step": command["step"],
        "command_id": command["command_id"],
        "correlation_id": command["correlation_id"],
        "saga_key": command["saga_key"],
        "attempt": command["attempt"],
        "status": status,
        "output": output,
        "error": error,
        "duration_ms": duration_ms,
        "applied_at": applied_at,
    }


class CommandAudit:
    """Produces one record per applied command; flushed with the results of its batch."""

    def __init__(self, output: Output, registry: Registry, topic: str) -> None:
        self.output = output
        self.registry = registry
        self.topic = topic
        self.schema_id: int | None = None

    async def prepare(self) -> None:
        self.schema_id = await asyncio.to_thread(
            self.registry.register, value_subject(self.topic), command_schema_str()
        )

    def send(self, key: bytes, record: dict[str, Any]) -> None:
        assert self.schema_id is not None, "prepare() first"
        value = encode(self.schema_id, parse(command_schema_str()), record)
        self.output.send(self.topic, key, value)
