"""Raw change events -> deduplicated canonical Avro events (or the dead-letter topic)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import faust
from faust.types import Message

from schemas import contracts
from schemas.conventions import partition_for
from schemas.registry import Registry
from schemas.serde import encode
from streams.agents.batching import StageRunner, batch_stage, bytes_topic
from streams.analytics import AnalyticsCopies, Emitted
from streams.changes import Change, parse
from streams.dlq import send_to_dlq
from streams.errors import BadEventError
from streams.metrics import metrics
from streams.output import Output
from streams.settings import Settings
from streams.topology import Route, Topology
from tables.dedupe import Position, Positions, Verdict, decide

log = logging.getLogger(__name__)
STAGE = "normalize"
# Seconds a co-partitioned topic's partition count is trusted before it is read again.
PARTITIONS_TTL = 30.0


class Normalizer:
    def __init__(
        self,
        topology: Topology,
        output: Output,
        registry: Registry,
        positions: Positions,
        analytics: AnalyticsCopies | None = None,
    ) -> None:
        self.topology = topology
        self.routes: dict[str, Route] = {r.raw_topic: r for r in topology.routes}
        self.output = output
        self.registry = registry
        self.positions = positions
        self.dlq_topic = topology.dlq(STAGE)
        # entity -> (canonical topic, schema id, parsed schema), resolved once in prepare().
        self.outputs: dict[str, tuple[str, int, Any]] = {}
        self.analytics = analytics
        self._partitions: dict[str, tuple[int, float]] = {}  # entity -> (count, read at)

    async def prepare(self) -> None:
        """Register the canonical schemas once, before the first batch."""
        for entity in self.topology.entities:
            if entity not in self.outputs:
                schema_id = await asyncio.to_thread(
                    self.registry.register,
                    self.topology.subject(entity),
                    contracts.schema_str(entity),
                )
                self.outputs[entity] = (
                    self.topology.output(entity),
                    schema_id,
                    contracts.parsed(entity),
                )
        if self.analytics is not None:
            await self.analytics.prepare()

    async def _partition_counts(self, messages: Sequence[Message]) -> dict[str, int]:
        """Partition count of each co-partitioned output this batch writes to, from the
        cluster's metadata at most every PARTITIONS_TTL seconds (a broker round trip)."""
        entities = {
            route.entity
            for route in (self.routes[m.topic] for m in messages)
            if route.partition_by is not None
        }
        now = time.monotonic()
        for entity in sorted(entities):
            known = self._partitions.get(entity)
            if known is None or now - known[1] > PARTITIONS_TTL:
                count = await asyncio.to_thread(self.output.partitions, self.outputs[entity][0])
                self._partitions[entity] = (count, now)
        return {entity: self._partitions[entity][0] for entity in entities}

    async def process(self, messages: Sequence[Message]) -> None:
        m = metrics()
        seen: Counter[str] = Counter()
        out: Counter[str] = Counter()
        dropped: Counter[tuple[str, str]] = Counter()
        # Positions are recorded only after the batch is acknowledged by Kafka: a crash in
        # between re-emits (harmless, sinks are idempotent) instead of losing events.
        pending: dict[str, tuple[int, Position]] = {}
        emitted: list[Emitted] = []  # for the analytics copies, handed over once per batch
        partitions = await self._partition_counts(messages)
        for msg in messages:
            route = self.routes[msg.topic]
            seen[route.entity] += 1
            try:
                change = parse(msg.key, msg.value, msg.topic)
                if change is None:
                    dropped[(route.entity, "no_row")] += 1
                    continue
                state_key = f"{change.connector}/{change.entity}/{change.key}"
                prev = (
                    pending[state_key][1] if state_key in pending else self.positions.get(state_key)
                )
                verdict, position = decide(
                    prev, change.sequence, change.op == "delete", msg.offset
                )
                if verdict is not Verdict.EMIT:
                    if position is not prev:  # a replayed delete, noted for its tombstone
                        pending[state_key] = (msg.partition, position)
                    dropped[(route.entity, verdict.value)] += 1
                    continue
                mapped = route.mapper(change, f"{msg.topic}/{msg.partition}/{msg.offset}")
                if mapped is None:
                    dropped[(route.entity, "not_routed")] += 1
                    continue
                key, record = mapped
                topic, schema_id, parsed = self.outputs[route.entity]
                partition = None
                if route.partition_by is not None:
                    parent = parent_key(route, change, record)
                    partition = partition_for(parent.encode(), partitions[route.entity])
                value = encode(schema_id, parsed, record)
                self.output.send(topic, key.encode(), value, partition=partition)
                pending[state_key] = (msg.partition, position)
                if self.analytics is not None:
                    emitted.append((route.entity, key, record))
                out[route.entity] += 1
            except Exception as exc:  # noqa: BLE001 - poison must never stop the line
                log.warning(
                    "normalize: %s/%s@%s to DLQ: %s", msg.topic, msg.partition, msg.offset, exc
                )
                send_to_dlq(self.output, self.dlq_topic, STAGE, msg, exc)
                m.dlq.labels(STAGE, type(exc).__name__).inc()
        if emitted and self.analytics is not None:
            self.analytics.emit(emitted)
        await self.output.flush()
        self.positions.write((p, key, pos) for key, (p, pos) in pending.items())
        for entity, n in seen.items():
            m.events_in.labels(STAGE, entity).inc(n)
        for entity, n in out.items():
            m.events_out.labels(STAGE, entity).inc(n)
        for (entity, reason), n in dropped.items():
            m.dropped.labels(STAGE, entity, reason).inc(n)
        m.batch_size.labels(STAGE).observe(len(messages))


def parent_key(route: Route, change: Change, record: dict[str, Any]) -> str:
    """The parent's canonical id a co-partitioned record is sent beside (`partition_by`).

    A delete has no data; its old row (REPLICA IDENTITY FULL) is mapped to find the parent,
    so the delete lands on the same partition as the record's earlier events.
    """
    field = route.partition_by or ""
    data = record.get("data")
    if data is None:
        if not change.before:
            raise BadEventError(
                f"{change.entity} {change.key}: a delete without its old row cannot be sent to "
                f"its parent's partition ({field}); give the table REPLICA IDENTITY FULL"
            )
        try:
            mapped = route.mapper(replace(change, op="update", after=change.before), "")
            data = mapped[1]["data"] if mapped is not None else None
        except BadEventError as exc:
            raise BadEventError(
                f"{change.entity} {change.key}: the old row of this delete does not name its "
                f"parent ({exc}); give the table REPLICA IDENTITY FULL"
            ) from exc
    parent = (data or {}).get(field)
    if not isinstance(parent, str) or not parent:
        raise BadEventError(
            f"{route.entity} {change.key} has no {field}; it cannot join its parent's partition"
        )
    return parent


def register(
    app: faust.App,
    runners: dict[str, StageRunner],
    settings: Settings,
    topology: Topology,
    output: Output,
    registry: Registry,
    positions: Positions,
    analytics: AnalyticsCopies | None = None,
) -> Normalizer:
    normalizer = Normalizer(topology, output, registry, positions, analytics)
    raw = bytes_topic(app, *[r.raw_topic for r in topology.routes])
    batch_stage(app, runners, raw, "normalize", normalizer, settings)
    return normalizer
