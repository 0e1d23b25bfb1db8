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

import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import faust
from confluent_kafka import Message as KafkaMessage
from faust.streams import _current_event
from faust.types import TP, TableT

from streams.output import Output


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


def dedupe_table(app: faust.App, partitions: int) -> TableT[str, Any]:
    return app.Table(
        "dedupe-positions",
        default=None,
        partitions=partitions,
        key_type=str,
        help="source key -> last applied source position",
    )


@dataclass(frozen=True)
class _Origin:
    """Stands in for the event a store write belongs to: stores read its partition."""

    message: Any


@dataclass(frozen=True)
class _Partition:
    partition: int


class Positions:
    """Reads and batch-writes the dedupe table."""

    def __init__(self, table: TableT[str, Any], output: Output) -> None:
        self.table: Any = table  # its serializers and store are not in Faust's TableT
        self.output = output
        self.changelog = table.changelog_topic.get_topic_name()
        # Newest changelog offset acknowledged per partition, noted from the producer's
        # delivery thread and handed to the store on the event loop.
        self._acked: dict[int, int] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Position | None:
        return Position.from_json(self.table.data.get(key))

    def write(self, positions: Iterable[tuple[int, str, Position]]) -> None:
        """Record (source partition, key, position) triples after their output is acked.

        The changelog records are flushed with the next batch; if the worker dies before,
        the changes are emitted again after restart (deterministic ids, idempotent sinks).
        """
        self._persist_acked_offsets()
        topic = self.table.changelog_topic
        by_partition: dict[int, list[tuple[str, dict[str, Any]]]] = {}
        for partition, key, position in positions:
            value = position.to_json()
            by_partition.setdefault(partition, []).append((key, value))
            raw_key, _ = topic.prepare_key(key, self.table.key_serializer)
            raw_value, _ = topic.prepare_value(value, self.table.value_serializer)
            self.output.send(
                self.changelog, raw_key, raw_value, partition=partition, on_delivery=self._noted
            )
        store = self.table.data
        for partition, items in by_partition.items():
            origin = _Origin(_Partition(partition))
            _current_event.set(weakref.ref(origin))  # type: ignore[arg-type]
            try:
                for key, value in items:
                    store[key] = value
            finally:
                _current_event.set(None)

    def _noted(self, msg: KafkaMessage) -> None:
        partition, offset = msg.partition(), msg.offset()
        if partition is None or offset is None:
            return
        with self._lock:
            if offset > self._acked.get(partition, -1):
                self._acked[partition] = offset

    def _persist_acked_offsets(self) -> None:
        # What a Faust table does per changelog send: a RocksDB store then knows, after a
        # restart, from where the changelog still has to be read.
        with self._lock:
            acked, self._acked = self._acked, {}
        for partition, offset in acked.items():
            self.table.data.set_persisted_offset(TP(self.changelog, partition), offset)
