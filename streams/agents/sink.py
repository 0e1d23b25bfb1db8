"""Canonical events -> target systems, applied idempotently per batch.

One stage reads the topics of every entity the topology emits and of the reference sets
pssync publishes; each has a lane: its table in the target (derived from its contract), its
audit and its metrics. A batch is split by topic and each lane applies its part in one
transaction, bisecting bad records out and retrying target faults
(connectors/sinks/resilient.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import faust
from faust.types import Message

from connectors.sinks.postgres import PostgresSink, PostgresTarget
from connectors.sinks.resilient import RetryPolicy, apply_isolating, retry_target
from connectors.sinks.tablespec import TableSpec, compile_spec
from schemas.registry import Registry
from schemas.serde import split
from streams.agents.batching import StageRunner, batch_stage, bytes_topic
from streams.agents.shared_decode import SharedDecoder
from streams.audit import SinkAudit
from streams.dlq import send_to_dlq
from streams.errors import SchemaError, SerdeError
from streams.metrics import metrics
from streams.output import Output
from streams.reference.model import SECTIONS
from streams.settings import Settings
from streams.topology import Topology

log = logging.getLogger(__name__)
STAGE = "sink"


def _tombstone(key: str) -> dict[str, Any]:
    return {"key": key, "envelope": {"entity_version": -1}, "data": None}


def sink_entities(topology: Topology) -> list[str]:
    """What lands in the target: every entity the routes emit and every reference set
    `pssync reference load` publishes (streams/reference/model.py)."""
    return sorted({*topology.emitted, *SECTIONS.values()})


@dataclass
class Lane:
    """One entity through the stage: its table, its audit, the writer versions met."""

    entity: str
    table: PostgresSink
    audit: SinkAudit
    # Writer schema id -> its table spec, or why records of that schema cannot be applied.
    specs: dict[int, TableSpec | SchemaError] = field(default_factory=dict)


class Sink:
    def __init__(
        self,
        topology: Topology,
        entities: Sequence[str],
        target: PostgresTarget,
        output: Output,
        registry: Registry,
        retry: RetryPolicy,
        decoder: SharedDecoder | None = None,
    ) -> None:
        self.topology = topology
        self.retry = retry
        self.output = output
        self.registry = registry
        self.decoder = decoder or SharedDecoder.of(registry)
        self.lanes: dict[str, Lane] = {}
        for entity in entities:
            table = target.table(entity)
            audit = SinkAudit(output, registry, topology.audit(STAGE), table.object_name(), entity)
            table.before_commit = audit
            self.lanes[topology.output(entity)] = Lane(entity, table, audit)

    @property
    def topics(self) -> list[str]:
        return list(self.lanes)

    async def prepare(self) -> None:
        for lane in self.lanes.values():
            await lane.table.ensure_schema()
            await lane.audit.prepare()

    def _dlq(self, msg: Any, exc: BaseException) -> None:
        log.warning("sink: %s/%s@%s to DLQ: %s", msg.topic, msg.partition, msg.offset, exc)
        send_to_dlq(self.output, self.topology.dlq(STAGE), STAGE, msg, exc)
        metrics().dlq.labels(STAGE, type(exc).__name__).inc()

    async def process(self, messages: Sequence[Message]) -> None:
        by_topic: dict[str, list[Message]] = {}
        for msg in messages:
            by_topic.setdefault(msg.topic, []).append(msg)
        for topic, lane_messages in by_topic.items():
            await self._apply(self.lanes[topic], lane_messages)
        await self.output.flush()
        metrics().batch_size.labels(STAGE).observe(len(messages))

    def _spec(self, lane: Lane, schema_id: int) -> TableSpec:
        """The table spec of a writer schema, compiled once per schema id."""
        found = lane.specs.get(schema_id)
        if found is None:
            # Decoding fetched the schema already: this is the registry client's cache.
            schema = self.registry.schema_by_id(schema_id)
            try:
                found = compile_spec(
                    lane.entity, schema, lane.table.reference, key=lane.table.spec.key
                )
            except SchemaError as exc:  # not this entity's contract: its records are poison
                found = exc
            lane.specs[schema_id] = found
        if isinstance(found, SchemaError):
            raise found
        return found

    async def _apply(self, lane: Lane, messages: Sequence[Message]) -> None:
        m = metrics()
        target, entity = lane.table.name, lane.entity
        on_retry = m.sink_retries.labels(target, entity).inc
        records: list[dict[str, Any]] = []
        origin: dict[int, Any] = {}
        versions: dict[str, TableSpec] = {}  # contract versions in this batch
        for msg in messages:
            try:
                if msg.key is None:
                    raise SerdeError("canonical event without a key; keys are canonical ids")
                key = msg.key.decode()
                if msg.value is None:
                    record = _tombstone(key)
                else:
                    # A copy: the decoded record is shared with other stages of the batch.
                    record = dict(self.decoder.decode(msg))
                    spec = self._spec(lane, split(msg.value)[0])
                    versions.setdefault(spec.fingerprint, spec)
                record["key"] = key
                records.append(record)
                origin[id(record)] = msg
            except Exception as exc:  # noqa: BLE001 - poison must never stop the line
                self._dlq(msg, exc)
        for spec in versions.values():
            # A version the table has not met yet gets its columns first (add-only); one
            # the target cannot take (SchemaError) stops the worker with what to do.
            await retry_target(lane.table, partial(lane.table.evolve, spec), self.retry, on_retry)
        started = time.monotonic()
        outcome = await apply_isolating(lane.table, records, self.retry, on_retry=on_retry)
        changed, rejected = len(outcome.writes), outcome.rejected
        m.sink_apply.labels(target, entity).observe(time.monotonic() - started)
        for record, error in rejected:
            self._dlq(origin[id(record)], error)
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


def register(
    app: faust.App,
    runners: dict[str, StageRunner],
    settings: Settings,
    topology: Topology,
    output: Output,
    registry: Registry,
    target: PostgresTarget,
    decoder: SharedDecoder | None = None,
) -> Sink:
    """One batch stage for every entity and reference set, into one table each; `decoder`
    shares decoded records with stages registered later on the same runner."""
    retry = RetryPolicy(retry_for=settings.sink_retry_for)
    decoder = decoder or SharedDecoder.of(registry)
    sink = Sink(topology, sink_entities(topology), target, output, registry, retry, decoder)
    topic = bytes_topic(app, *sink.topics)
    runner = batch_stage(app, runners, topic, f"sink-{PostgresSink.name}", sink, settings)
    decoder.attach(runner)
    return sink
