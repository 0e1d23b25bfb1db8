"""The sink stage: every entity of a batch to its own table; contract versions met on a
topic, and schemas that are not."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections import Counter
from itertools import zip_longest
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from faust.types import Message
from sqlalchemy import create_engine, text

from connectors.sinks.postgres import PostgresTarget
from connectors.sinks.resilient import RetryPolicy
from schemas import contracts
from schemas.conventions import value_subject
from schemas.registry import Registry, client_config
from schemas.samples import Sampler
from schemas.serde import Decoder, Encoder
from streams.admin import TopicSpec, delete_topics, ensure_topics
from streams.agents.sink import Sink
from streams.dlq import read_context
from streams.output import Output, produce_sync
from streams.settings import Settings
from streams.topology import Route, Topology, topology
from tests.integration.conftest import SliceEnv
from tests.integration.kafka_util import read_all
from tests.integration.test_sink_contracts import samples
from tests.integration.test_slice import INSERT, _row
from tests.unit.test_tablespec import with_fields

pytestmark = pytest.mark.integration

WIN_REASON = {
    "name": "win_reason",
    "type": ["null", "string"],
    "default": None,
    "doc": "Why the deal was won.",
}


def test_a_newer_contract_version_on_the_topic_adds_its_column(slice_env: SliceEnv) -> None:
    env = slice_env
    env.worker().start()
    env.crm(INSERT, {"id": "006V1", "name": "First", "amount": "1.00"})
    env.wait_for(lambda: _row(env, "006V1") is not None, what="first row")
    assert "win_reason" not in (_row(env, "006V1") or {})

    # A producer already on the next version of the contract (an optional field more).
    topo = topology(env.settings)
    canonical = topo.canonical("opportunity")
    client = SchemaRegistryClient(client_config(env.settings))
    context = SerializationContext(canonical, MessageField.VALUE)
    record = AvroDeserializer(client)(read_all(env.settings, canonical)[0].value(), context)
    record["data"].update(opportunity_id="crm:opportunity:006V2", win_reason="price")
    v2 = json.dumps(with_fields(contracts.schema("opportunity"), WIN_REASON))
    serializer = AvroSerializer(client, v2, conf={"auto.register.schemas": True})
    registry, scratch = Registry(env.settings), f"{canonical}.scratch-value"
    try:
        produce_sync(
            env.settings, [(canonical, b"crm:opportunity:006V2", serializer(record, context))]
        )
        env.wait_for(lambda: _row(env, "006V2") is not None, what="the version-2 record")
        assert (_row(env, "006V2") or {})["win_reason"] == "price"

        # The CRM's events (version 1) go on landing; the new column reads its default.
        env.crm("UPDATE sales.opportunity SET name = 'Again' WHERE id = '006V1'")
        env.wait_for(lambda: (_row(env, "006V1") or {}).get("name") == "Again", what="update")
        assert (_row(env, "006V1") or {})["win_reason"] is None
        assert read_all(env.settings, topo.dlq("sink"), timeout=2) == []

        # Another entity's record on this topic (a registered schema, but not a version of
        # this contract): dead-lettered, and the line goes on.
        foreign = Encoder(registry.register, scratch, contracts.schema_str("customer"))
        customer = Sampler(contracts.schema("customer"), seed=2).record()
        produce_sync(env.settings, [(canonical, b"crm:account:001X", foreign.encode(customer))])
        env.crm(INSERT, {"id": "006V3", "name": "After", "amount": "3.00"})
        env.wait_for(lambda: _row(env, "006V3") is not None, what="row after the foreign one")
        (letter,) = read_all(env.settings, topo.dlq("sink"))
        assert read_context(letter.headers())["error.class"] == "SchemaError"
        assert (
            "no required string field 'opportunity_id'"
            in (read_context(letter.headers())["error.message"])
        )
    finally:
        for subject in (topo.subject("opportunity"), scratch):
            if subject in registry.subjects():
                registry.delete_subject(subject)


def _unused(*args: Any) -> Any:
    raise AssertionError("not called")


def _as_faust(m: Any) -> Message:
    """A record read from Kafka as the worker's fetch loop hands it to a stage."""
    kind, ts = m.timestamp()
    return Message(
        m.topic(), m.partition(), m.offset(), ts / 1000, kind, m.headers() or [],
        m.key(), m.value(), None,
    )  # fmt: skip


def test_one_stage_applies_each_entity_of_a_batch_to_its_own_table(
    base_settings: Settings, target_url: str
) -> None:
    ns = "s" + uuid.uuid4().hex[:10]
    settings = Settings.from_env(
        {**os.environ, "PSSYNC_TOPIC_NAMESPACE": ns, "PSSYNC_TARGET_URL": target_url}
    )
    routes = [Route(f"{ns}.raw.{e}", e, _unused) for e in ("opportunity", "customer", "currency")]
    topo = Topology(routes=routes, namespace=ns)
    topics = {e: topo.output(e) for e in topo.entities}
    assert topics["currency"] == f"{ns}.reference.currency"
    created = [*topics.values(), topo.audit("sink"), topo.dlq("sink")]
    ensure_topics(settings, [TopicSpec(t, 1, 1) for t in created])
    registry = Registry(settings)
    target = PostgresTarget(target_url)
    stage = Sink(topo, topo.entities, target, Output(settings), registry, RetryPolicy(10))
    try:
        for entity, topic in topics.items():
            encoder = Encoder(registry.register, value_subject(topic), contracts.schema_str(entity))
            records = samples(entity, 5)
            for r in records:
                r["envelope"]["entity_version"] = 1
            produce_sync(
                settings, [(topic, r.pop("key").encode(), encoder.encode(r)) for r in records]
            )
        produce_sync(settings, [(topics["customer"], b"crm:account:junk", b"\x00\x00")])
        # One fetch holding every topic's records, interleaved.
        fetched = [[_as_faust(m) for m in read_all(settings, t)] for t in topics.values()]
        batch = [m for group in zip_longest(*fetched) for m in group if m is not None]

        async def run() -> None:
            await stage.prepare()
            await stage.process(batch)
            await target.close()

        asyncio.run(run())
        engine = create_engine(target_url)
        with engine.connect() as conn:
            counts = {
                e: conn.execute(text(f'SELECT count(*) FROM "{e}" WHERE NOT is_deleted')).scalar()
                for e in topics
            }
        engine.dispose()
        assert counts == {"opportunity": 5, "customer": 5, "currency": 5}
        decoder = Decoder(registry.schema_by_id)
        audits = [decoder.decode(m.value()) for m in read_all(settings, topo.audit("sink"))]
        assert Counter(a["entity"] for a in audits) == {
            "opportunity": 5,
            "customer": 5,
            "currency": 5,
        }
        assert {a["target"].rsplit("/", 1)[1] for a in audits} == set(topics)
        (letter,) = read_all(settings, topo.dlq("sink"))
        assert letter.key() == b"crm:account:junk"
        assert read_context(letter.headers())["error.class"] == "SerdeError"
    finally:
        delete_topics(settings, created)
        subjects = registry.subjects()
        for topic in [*topics.values(), topo.audit("sink")]:
            if value_subject(topic) in subjects:
                registry.delete_subject(value_subject(topic))
