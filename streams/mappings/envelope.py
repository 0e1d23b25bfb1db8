"""Builds the canonical envelope shared by every entity."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from streams.changes import Change
from streams.ids import name_id

# Namespace for deterministic ids: the same source change always gets the same event_id.
_NS = uuid.UUID("6f1c9a52-4d3e-5b8a-9c7e-2f4d8b1a6e30")


def event_id(change: Change, canonical_key: str) -> str:
    token = f"{canonical_key}|{change.op}|{change.position}|{change.sequence}"
    return name_id(_NS, token)


def correlation_id(root_key: str) -> str:
    """Correlation id of the flow rooted at `root_key` (the deal), derivable anywhere."""
    return name_id(_NS, f"correlation|{root_key}")


def envelope(
    change: Change,
    system: str,
    canonical_key: str,
    root_key: str,
    causation: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    return {
        "event_id": event_id(change, canonical_key),
        "correlation_id": correlation_id(root_key),
        "causation_id": causation,
        "source": {
            "system": system,
            "connector": change.connector,
            "entity": change.entity,
            "key": change.key,
            "position": change.position,
            "sequence": change.sequence if change.sequence is not None else -1,
            "committed_at": datetime.fromtimestamp(change.committed_at_ms / 1000, UTC),
        },
        "op": change.op,
        # -1: a tombstone whose position is unknown; sinks delete without moving the version.
        "entity_version": change.sequence if change.sequence is not None else -1,
        "emitted_at": now or datetime.now(UTC),
    }
