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
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import faust
from faust.types import TableT

from streams.output import Output
from tables.json_table import JsonTable

# Most offsets from a delete to its tombstone: Debezium writes the tombstone right after the
# delete, and a transaction marker may sit between.
TOMBSTONE_GAP = 2


class Verdict(Enum):
    EMIT = "emit"
    DUPLICATE = "duplicate"
    STALE = "stale"


@dataclass(frozen=True)
class Position:
    sequence: int | None
    deleted: bool
    # Offset of the newest raw record that set this position (its key always lands on one
    # partition), to tell a tombstone seen again in a replay from a new one.
    offset: int | None = None
    # The key is live, and its newest raw record is a delete the connector wrote again (a
    # replay after its restart) after a newer change: the tombstone that follows belongs to
    # that old delete, not to a new one.
    after_delete: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"seq": self.sequence, "deleted": self.deleted, "off": self.offset}
        if self.after_delete:
            data["ad"] = True
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Position | None:
        if not data:
            return None
        return cls(
            data.get("seq"), bool(data.get("deleted")), data.get("off"), bool(data.get("ad"))
        )


def decide(
    prev: Position | None, sequence: int | None, is_delete: bool, offset: int | None = None
) -> tuple[Verdict, Position]:
    """What to do with a change at `sequence` (raw record at `offset`), given the last one
    applied for its key. A position other than `prev` is to be recorded, also when the
    change itself is dropped.

    A tombstone (`sequence` None) deletes unless its delete was seen: the key is already
    deleted, or the delete right before it was a connector's replay of an old change. It is
    also dropped when the key's position came from a later raw record: then it is an old
    tombstone re-read (a worker restart or an offset reset) after the row was re-inserted,
    and deleting would undo the re-insert. It keeps the known sequence, so a later re-insert
    (e.g. a CRM undelete) still wins. A tombstone alone deletes: a compacted raw topic keeps
    a delete's tombstone but not the delete.
    """
    ahead = _ahead(prev, offset)
    if sequence is None:
        if prev is not None and prev.deleted:
            return Verdict.DUPLICATE, prev
        if (
            prev is not None
            and prev.after_delete
            and ahead is not None
            and 0 < ahead <= TOMBSTONE_GAP
        ):
            # The tombstone of the replayed delete noted; one further on follows records
            # that compaction removed: it is a newer delete's.
            return Verdict.DUPLICATE, prev
        if prev is not None and ahead is not None and ahead <= 0:
            return Verdict.STALE, prev
        return Verdict.EMIT, Position(prev.sequence if prev else None, True, offset)
    if prev is not None and prev.sequence is not None and sequence <= prev.sequence:
        verdict = Verdict.DUPLICATE if sequence == prev.sequence else Verdict.STALE
        if not prev.deleted and is_delete != prev.after_delete and ahead is not None and ahead > 0:
            # A connector replaying what it wrote before (old changes in new raw records):
            # note whether the newest one is a delete, whose tombstone comes next.
            return verdict, replace(prev, offset=offset, after_delete=is_delete)
        return verdict, prev
    return Verdict.EMIT, Position(sequence, is_delete, offset)


def _ahead(prev: Position | None, offset: int | None) -> int | None:
    """How many offsets the raw record at `offset` is past the one that set `prev`."""
    if prev is None or prev.offset is None or offset is None:
        return None
    return offset - prev.offset


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
