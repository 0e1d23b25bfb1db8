"""PSA (Redmine) rows -> source-shaped PSA events that stages join by the object they describe.

An issue and its custom values commit together in Redmine but arrive as rows of two tables.
Each becomes an event keyed by its own canonical id; a custom value is produced beside its
owner (`partition_by="owner_id"` on its route), so a stage keyed by the owner sees both.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.conventions import canonical_id
from streams.changes import Change
from streams.errors import BadEventError
from streams.mappings.envelope import envelope
from streams.mappings.values import day

SYSTEM = "psa"
# Owners whose custom values are routed on (as canonical.psa_custom_value): issues, for the
# expense stage. Time entries' values are joined by the time entry stage from the raw rows.
ROUTED_OWNERS = ("Issue",)
# Redmine's customized_type -> the canonical entity name of the owner.
OWNER_ENTITIES = {"Issue": "issue", "TimeEntry": "time_entry", "Project": "project"}


def issue_key(psa_id: str) -> str:
    return canonical_id(SYSTEM, "issue", psa_id)


def owner_key(customized_type: str, psa_id: str) -> str:
    entity = OWNER_ENTITIES.get(customized_type, customized_type.lower())
    return canonical_id(SYSTEM, entity, psa_id)


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _required(row: dict[str, Any], field: str, table: str) -> Any:
    value = row.get(field)
    if value is None or value == "":
        raise BadEventError(f"PSA {table} row lacks required field {field!r}")
    return value


def _timestamp(value: Any, field: str) -> datetime | None:
    """Rails' `timestamp without time zone` columns hold UTC; Debezium sends microseconds."""
    if value is None:
        return None
    if isinstance(value, int):
        return datetime.fromtimestamp(value / 1_000_000, UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadEventError(f"{field}={value!r} is not a timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def map_issue(change: Change, causation: str) -> tuple[str, dict[str, Any]]:
    """(psa:issue:<id>, PsaIssueEvent record) for a change of Redmine's issues."""
    key = issue_key(change.key)
    env = envelope(change, SYSTEM, key, key, causation)
    if change.op == "delete":
        return key, {"envelope": env, "data": None}
    row = change.after or {}
    table = "issues"
    data = {
        "issue_id": key,
        "psa_id": str(_required(row, "id", table)),
        "psa_project_id": str(_required(row, "project_id", table)),
        "tracker_id": str(_required(row, "tracker_id", table)),
        "author_id": _text(row.get("author_id")),
        "assigned_to_id": _text(row.get("assigned_to_id")),
        "subject": str(row.get("subject") or ""),
        "start_date": day(row.get("start_date"), "start_date"),
        "created_at": _timestamp(row.get("created_on"), "created_on"),
        "last_modified_at": _timestamp(row.get("updated_on"), "updated_on"),
    }
    return key, {"envelope": env, "data": data}


def map_custom_value(change: Change, causation: str) -> tuple[str, dict[str, Any]] | None:
    """(psa:custom_value:<id>, PsaCustomValueEvent record) for a change of custom_values of
    an owner in ROUTED_OWNERS; None for other owners' values, and for deletes that do not say
    whose value they were (Redmine deletes an issue's values with the issue, whose own delete
    tells the story).

    The correlation id is the owner's flow (derived from the owner's key), like the owner's.
    """
    key = canonical_id(SYSTEM, "custom_value", change.key)
    row = (change.before if change.op == "delete" else change.after) or {}
    table = "custom_values"
    owner_type = _text(row.get("customized_type"))
    if owner_type not in ROUTED_OWNERS and (owner_type is not None or change.op == "delete"):
        return None
    owner_psa = _text(row.get("customized_id"))
    root = owner_key(owner_type, owner_psa) if owner_type and owner_psa else key
    env = envelope(change, SYSTEM, key, root, causation)
    if change.op == "delete":
        return key, {"envelope": env, "data": None}
    data = {
        "custom_value_id": key,
        "owner_id": owner_key(
            str(_required(row, "customized_type", table)),
            str(_required(row, "customized_id", table)),
        ),
        "owner_type": str(row["customized_type"]),
        "owner_psa_id": str(row["customized_id"]),
        "field_id": str(_required(row, "custom_field_id", table)),
        "value": row.get("value"),
    }
    return key, {"envelope": env, "data": data}
