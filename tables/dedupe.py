"""Dedupe state: source key -> last applied source position.

Replays (at-least-once delivery, connector restarts, offset resets) and stale updates are
dropped here, before they cost a canonical event.

The positions live in a Faust table, which gives them a changelog topic, recovery on start
and on rebalance, and a store (memory or RocksDB). Writes bypass the table's per-key
changelog send: a batch's positions go to the local store at once and to the changelog
through pssync's producer, encoded exactly as Faust encodes them, on the source record's
partition, so Faust's recovery reads them back unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import faust
from faust.types import TableT

from streams.output import Output
from tables.json_table import JsonTable


class Verdict(Enum):
    EMIT = "emit"
    DUPLICATE = "duplicate"
    STALE = "stale"


@dataclass(frozen=True)
class Position:
    sequence: int | None
    deleted: bool
    # Offset of the raw record that set this position (its key always lands on one
    # partition), to tell a tombstone seen again in a replay from a new one.
    offset: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.sequence, "deleted": self.deleted, "off": self.offset}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Position | None:
        if not data:
            return None
        return cls(data.get("seq"), bool(data.get("deleted")), data.get("off"))


def decide(
    prev: Position | None, sequence: int | None, is_delete: bool, offset: int | None = None
) -> tuple[Verdict, Position]:
    """What to do with a change at `sequence` (raw record at `offset`), given the last one
    applied for its key.

    A tombstone (`sequence` None) deletes unless the key is already deleted, or unless the
    key's live position came from a later raw record: then it is an old tombstone replayed
    (a restart or an offset reset re-reads it after the row was re-inserted), and deleting
    would undo the re-insert. It keeps the known sequence, so a later re-insert (e.g. a CRM
    undelete) still wins.
    """
    if sequence is None:
        if prev is not None and prev.deleted:
            return Verdict.DUPLICATE, prev
        if (
            prev is not None
            and offset is not None
            and prev.offset is not None
            and offset <= prev.offset
        ):
            return Verdict.STALE, prev
        return Verdict.EMIT, Position(prev.sequence if prev else None, True, offset)
    if prev is not None and prev.sequence is not None:
        if sequence == prev.sequence:
            return Verdict.DUPLICATE, prev
        if sequence < prev.sequence:
            return Verdict.STALE, prev
    return Verdict.EMIT, Position(sequence, is_delete, offset)


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


class Positions:
    """Reads and batch-writes the dedupe table (a JsonTable of Position values)."""

    def __init__(self, table: TableT[str, Any], output: Output) -> None:
        self.store = JsonTable(table, output)
        self.table: Any = table
        self.changelog = self.store.changelog

    def get(self, key: str) -> Position | None:
        return Position.from_json(self.store.get(key))

    def write(self, positions: Iterable[tuple[int, str, Position]]) -> None:
        """Record (source partition, key, position) triples after their output is acked.

        The changelog records are flushed with the next batch, and always before the source
        offsets are committed (see streams/app.py): the state is never behind the commits.
        """
        self.store.write((partition, key, pos.to_json()) for partition, key, pos in positions)
