"""The audit trail of what pssync writes: target writes on `audit.sink`, applied saga commands
on `audit.command`; one Avro record each."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from connectors.sinks.base import Write
from schemas.conventions import value_subject
from schemas.registry import Registry
from schemas.serde import encode, parse
from streams.ids import name_id
from streams.output import Output

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schemas/avro/audit/sink_write.avsc"
_NS = uuid.UUID("0b5e2f3c-8d41-5a7e-b6c2-91d4e7a3f058")


@cache
def schema_str() -> str:
    return SCHEMA_FILE.read_text()


def audit_record(target: str, entity: str, write: Write) -> dict[str, Any]:
    token = f"{target}|{write.key}|{write.event_id}|{write.op}|{write.version_after}"
    return {
        "audit_id": name_id(_NS, token),
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
        self.schema_id: int | None = None

    async def prepare(self) -> None:
        self.schema_id = await asyncio.to_thread(
            self.registry.register, value_subject(self.topic), schema_str()
        )

    async def __call__(self, writes: list[Write]) -> None:
        assert self.schema_id is not None, "prepare() first"
        parsed = parse(schema_str())
        for w in writes:
            value = encode(self.schema_id, parsed, audit_record(self.target, self.entity, w))
            self.output.send(self.topic, w.key.encode(), value)
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
