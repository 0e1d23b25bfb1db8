"""The sink stage: every entity of a batch to its own table; contract versions met on a
topic, and schemas that are not."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
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
from streams.reference.model import SECTIONS
from streams.settings import Settings
from streams.topology import Route, Topology, topology
from tests.integration.conftest import REPO, SliceEnv
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


def _target_count(env: SliceEnv, table: str, where: str = "true") -> int:
    engine = create_engine(env.settings.target_url)
    try:
        with engine.connect() as conn:
            if conn.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is None:
                return 0
            return int(
                conn.execute(text(f'SELECT count(*) FROM "{table}" WHERE {where}')).scalar() or 0
            )
    finally:
        engine.dispose()


def test_a_worker_lands_every_entity_and_reference_set_in_its_table(slice_env: SliceEnv) -> None:
    env = slice_env
    env.worker().start()
    env.crm(
        "INSERT INTO sales.account (id, name, billing_country, currency_iso_code) "
        "VALUES ('001L', 'Acme GmbH', 'DE', 'EUR')"
    )
    env.crm(
        "INSERT INTO sales.opportunity (id, account_id, name, stage_name, amount, "
        "currency_iso_code) VALUES ('006L', '001L', 'Deal', 'Prospecting', 90000, 'EUR')"
    )
    env.crm(
        "INSERT INTO sales.opportunity_line_item (id, opportunity_id, service_line__c, quantity, "
        "unit_price, currency_iso_code) VALUES ('00kL1', '006L', 'IMPL', 100, 150, 'EUR'), "
        "('00kL2', '006L', 'IMPL', 10, 150, 'EUR')"
    )
    env.crm(
        "INSERT INTO sales.billing_milestone (id, opportunity_id, name, due_date__c, percent__c, "
        "currency_iso_code) VALUES ('a0ML', '006L', 'Go-live', '2027-03-01', 40, 'EUR')"
    )
    env.crm("DELETE FROM sales.opportunity_line_item WHERE id = '00kL2'")
    load = subprocess.run(
        [sys.executable, "-m", "streams.cli", "reference", "load"],
        env=env.env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert load.returncode == 0, load.stderr
    expected = {
        "customer": 1,
        "opportunity": 1,
        "opportunity_line_item": 2,
        "billing_milestone": 1,
        **{name: 1 for name in SECTIONS.values()},  # at least one entry each
    }
    env.wait_for(
        lambda: (
            all(_target_count(env, t) >= n for t, n in expected.items())
            and _target_count(env, "opportunity_line_item", "is_deleted") == 1
        ),
        what=f"rows in {sorted(expected)}",
    )
    engine = create_engine(env.settings.target_url)
    with engine.connect() as conn:
        item = conn.execute(
            text("SELECT * FROM opportunity_line_item WHERE NOT is_deleted")
        ).mappings().one()  # fmt: skip
    engine.dispose()
    assert item["line_item_id"] == "crm:opportunity_line_item:00kL1"
    assert item["opportunity_id"] == "crm:opportunity:006L"
    assert read_all(env.settings, topology(env.settings).dlq("sink"), timeout=2) == []
