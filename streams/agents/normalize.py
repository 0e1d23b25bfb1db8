"""Raw change events -> deduplicated canonical Avro events (or the dead-letter topic)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import faust
from faust.types import Message

from schemas import contracts
from schemas.registry import Registry
from schemas.serde import encode
from streams.agents.batching import StageRunner, batch_stage, bytes_topic
from streams.analytics import AnalyticsCopies, Emitted
from streams.changes import parse
from streams.dlq import send_to_dlq
from streams.metrics import metrics
from streams.output import Output
from streams.settings import Settings
from streams.topology import Route, Topology
from tables.dedupe import Position, Positions, Verdict, decide

log = logging.getLogger(__name__)
STAGE = "normalize"


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
                    self.topology.canonical(entity),
                    schema_id,
                    contracts.parsed(entity),
                )
        if self.analytics is not None:
            await self.analytics.prepare()

    async def process(self, messages: Sequence[Message]) -> None:
        m = metrics()
        seen: Counter[str] = Counter()
        out: Counter[str] = Counter()
        dropped: Counter[tuple[str, str]] = Counter()
        # Positions are recorded only after the batch is acknowledged by Kafka: a crash in
        # between re-emits (harmless, sinks are idempotent) instead of losing events.
        pending: dict[str, tuple[int, Position]] = {}
        emitted: list[Emitted] = []  # for the analytics copies, handed over once per batch
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
                verdict, position = decide(prev, change.sequence, change.op == "delete")
                if verdict is not Verdict.EMIT:
                    dropped[(route.entity, verdict.value)] += 1
                    continue
                key, record = route.mapper(change, f"{msg.topic}/{msg.partition}/{msg.offset}")
                topic, schema_id, parsed = self.outputs[route.entity]
                self.output.send(topic, key.encode(), encode(schema_id, parsed, record))
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
