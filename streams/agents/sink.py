"""Canonical events -> target systems, applied idempotently per batch."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import faust
from faust.types import Message

from connectors.sinks.postgres import PostgresSink
from connectors.sinks.resilient import RetryPolicy, apply_isolating
from schemas.registry import Registry
from schemas.serde import Decoder
from streams.agents.batching import StageRunner, batch_stage, bytes_topic
from streams.audit import SinkAudit
from streams.dlq import send_to_dlq
from streams.errors import SerdeError
from streams.metrics import metrics
from streams.output import Output
from streams.settings import Settings
from streams.topology import Topology

log = logging.getLogger(__name__)
STAGE = "sink"


def _tombstone(key: str) -> dict[str, Any]:
    return {"key": key, "envelope": {"entity_version": -1}, "data": None}


class Sink:
    def __init__(
        self,
        topology: Topology,
        entity: str,
        target: PostgresSink,
        output: Output,
        registry: Registry,
        retry: RetryPolicy,
    ) -> None:
        self.topology = topology
        self.retry = retry
        self.audit = SinkAudit(
            output, registry, topology.audit(STAGE), target.object_name(), entity
        )
        target.before_commit = self.audit
        self.entity = entity
        self.target = target
        self.output = output
        self.decoder = Decoder(registry.schema_by_id)

    async def prepare(self) -> None:
        await self.target.ensure_schema()
        await self.audit.prepare()

    def _dlq(self, msg: Any, exc: BaseException) -> None:
        log.warning("sink: %s/%s@%s to DLQ: %s", msg.topic, msg.partition, msg.offset, exc)
        send_to_dlq(self.output, self.topology.dlq(STAGE), STAGE, msg, exc)
        metrics().dlq.labels(STAGE, type(exc).__name__).inc()

    async def process(self, messages: Sequence[Message]) -> None:
        m = metrics()
        records: list[dict[str, Any]] = []
        origin: dict[int, Any] = {}
        for msg in messages:
            try:
                if msg.key is None:
                    raise SerdeError("canonical event without a key; keys are canonical ids")
                key = msg.key.decode()
                record = _tombstone(key) if msg.value is None else self.decoder.decode(msg.value)
                record["key"] = key
                records.append(record)
                origin[id(record)] = msg
            except Exception as exc:  # noqa: BLE001 - poison must never stop the line
                self._dlq(msg, exc)
        target, entity = self.target.name, self.entity
        started = time.monotonic()
        outcome = await apply_isolating(
            self.target, records, self.retry, on_retry=m.sink_retries.labels(target, entity).inc
        )
        changed, rejected = len(outcome.writes), outcome.rejected
        m.sink_apply.labels(target, entity).observe(time.monotonic() - started)
        for record, error in rejected:
            self._dlq(origin[id(record)], error)
        await self.output.flush()
        now = time.time()
        latency = m.e2e_latency.labels(entity)
        for record in records:
            source = record["envelope"].get("source")
            if source:
                latency.observe(max(0.0, now - source["committed_at"].timestamp()))
        m.events_in.labels(STAGE, entity).inc(len(messages))
        m.sink_rows.labels(target, entity, "applied").inc(changed)
        m.sink_rows.labels(target, entity, "skipped_stale").inc(
            max(0, len(records) - len(rejected) - changed)
        )
        m.batch_size.labels(STAGE).observe(len(messages))


def register(
    app: faust.App,
    runners: dict[str, StageRunner],
    settings: Settings,
    topology: Topology,
    output: Output,
    registry: Registry,
    target: PostgresSink,
) -> Sink:
    retry = RetryPolicy(retry_for=settings.sink_retry_for)
    sink = Sink(topology, "opportunity", target, output, registry, retry)
    topic = bytes_topic(app, topology.canonical("opportunity"))
    batch_stage(app, runners, topic, "sink-postgres-opportunity", sink, settings)
    return sink
