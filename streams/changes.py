"""Parses raw change events (Debezium JSON envelope; pollers emit the same shape)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from streams.errors import BadEventError

OPS = {"c": "create", "u": "update", "d": "delete", "r": "snapshot"}
# Truncates and logical-decoding messages carry no row; they are counted, not mapped.
IGNORED_OPS = {"t", "m"}


@dataclass(frozen=True)
class Change:
    """One row change in source terms."""

    op: str  # create | update | delete | snapshot
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    connector: str  # topic prefix of the capturing connector, e.g. "crm"
    entity: str  # "<schema>.<table>"
    key: str  # source primary key as text (composite keys joined by "|")
    position: str  # native position, e.g. PostgreSQL LSN "0/16B3748"
    sequence: int | None  # comparable position; None for a tombstone
    committed_at_ms: int

    @property
    def tombstone(self) -> bool:
        return self.sequence is None


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _json(data: bytes | None, what: str) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadEventError(
            f"{what} is not valid JSON ({exc}); the connector must use JsonConverter"
        ) from exc


def key_text(raw_key: bytes | None) -> str:
    key = _json(raw_key, "message key")
    if isinstance(key, dict) and "payload" in key and "schema" in key:
        key = key["payload"]  # JsonConverter with schemas.enable=true
    if isinstance(key, dict) and key:
        return "|".join(str(v) for v in key.values())
    if isinstance(key, str | int):
        return str(key)
    raise BadEventError(
        f"message key {raw_key!r} holds no primary key; Debezium keys are JSON objects"
    )


def parse(raw_key: bytes | None, raw_value: bytes | None, topic: str) -> Change | None:
    """A Change, or None for events that carry no row (truncate, message)."""
    key = key_text(raw_key)
    if raw_value is None:
        prefix, _, entity = topic.partition(".")
        return Change("delete", None, None, prefix, entity, key, "tombstone", None, 0)
    value = _json(raw_value, "message value")
    if isinstance(value, dict) and "payload" in value and "schema" in value:
        value = value["payload"]
    if not isinstance(value, dict):
        raise BadEventError("message value is not a JSON object with a change envelope")
    op = value.get("op")
    if op in IGNORED_OPS:
        return None
    if op not in OPS:
        raise BadEventError(f"unknown op {op!r}; expected one of c, u, d, r (Debezium envelope)")
    source = value.get("source")
    if not isinstance(source, dict):
        raise BadEventError("change event has no 'source' block; is the connector's unwrap SMT on?")
    before, after = value.get("before"), value.get("after")
    if op != "d" and not isinstance(after, dict):
        raise BadEventError(f"op {op!r} without an 'after' image")
    lsn = source.get("lsn")
    cursor = source.get("cursor")  # pollers put their cursor here
    if isinstance(lsn, int):
        position, sequence = format_lsn(lsn), lsn
    elif isinstance(cursor, int):
        position, sequence = str(cursor), cursor
    else:
        raise BadEventError(
            "source has neither an integer 'lsn' nor a 'cursor'; cannot order the change"
        )
    ts = source.get("ts_ms", value.get("ts_ms"))
    if not isinstance(ts, int):
        raise BadEventError("source.ts_ms (commit time) is missing")
    entity = f"{source.get('schema')}.{source.get('table')}"
    connector = str(source.get("name") or topic.partition(".")[0])
    return Change(OPS[op], before, after, connector, entity, key, position, sequence, ts)
