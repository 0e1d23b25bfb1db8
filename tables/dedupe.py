"""Dedupe state: source key -> last applied source position.

Replays (at-least-once delivery, connector restarts, offset resets) and stale updates are
dropped here, before they cost a canonical event.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from enum import Enum
from typing import Any

import faust
from faust.streams import _current_event
from faust.types import EventT, TableT


class Verdict(Enum):
    EMIT = "emit"
    DUPLICATE = "duplicate"
    STALE = "stale"


@dataclass(frozen=True)
class Position:
    sequence: int | None
    deleted: bool

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.sequence, "deleted": self.deleted}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Position | None:
        if not data:
            return None
        return cls(data.get("seq"), bool(data.get("deleted")))


def decide(
    prev: Position | None, sequence: int | None, is_delete: bool
) -> tuple[Verdict, Position]:
    """What to do with a change at `sequence`, given the last one applied for its key.

    A tombstone (`sequence` None) deletes unless the key is already deleted; it keeps the
    known sequence, so a later re-insert (e.g. a CRM undelete) still wins.
    """
    if sequence is None:
        if prev is not None and prev.deleted:
            return Verdict.DUPLICATE, prev
        return Verdict.EMIT, Position(prev.sequence if prev else None, True)
    if prev is not None and prev.sequence is not None:
        if sequence == prev.sequence:
            return Verdict.DUPLICATE, prev
        if sequence < prev.sequence:
            return Verdict.STALE, prev
    return Verdict.EMIT, Position(sequence, is_delete)


NAME = "dedupe-positions"


def changelog_topic(app_id: str) -> str:
    """Faust's name for the table's changelog topic."""
    return f"{app_id}-{NAME}-changelog"


def dedupe_table(app: faust.App, partitions: int) -> TableT[str, Any]:
    return app.Table(
        NAME,
        default=None,
        partitions=partitions,
        key_type=str,
        help="source key -> last applied source position",
    )


def write(table: TableT[str, Any], event: EventT[Any], key: str, position: Position) -> None:
    """Set table[key] in the context of `event`.

    Faust routes a changelog write to the partition of the event being processed; when
    working on a batch from `take_events` there is no such event, so name it explicitly.
    """
    _current_event.set(weakref.ref(event))
    try:
        table[key] = position.to_json()
    finally:
        _current_event.set(None)
