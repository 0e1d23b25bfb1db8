"""Quote-to-cash sources on the real stack: the CRM's accounts, line items and milestones as
canonical events, children on their opportunity's partition; pssync's partitioner against
the broker's own assignment."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas.conventions import partition_for
from schemas.registry import client_config
from streams.admin import TopicSpec, delete_topics, ensure_topics
from streams.output import Output, produce_sync
from streams.settings import Settings
from streams.topology import topology
from tests.integration.conftest import SliceEnv
from tests.integration.kafka_util import read_all

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture
def keyed_topic(base_settings: Settings) -> Iterator[str]:
    name = f"it-partitioner-{uuid.uuid4().hex[:10]}"
    ensure_topics(base_settings, [TopicSpec(name, 7, 1)])
    try:
        yield name
    finally:
        delete_topics(base_settings, [name])


async def _send_all(output: Output, topic: str, keys: list[bytes]) -> None:
    for key in keys:
        output.send(topic, key, b"pssync")
    await output.flush()


def test_partition_for_is_where_the_producers_put_a_key(
    base_settings: Settings, keyed_topic: str
) -> None:
    import asyncio

    keys = [f"crm:opportunity:006{i:05d}".encode() for i in range(300)]
    # pssync's Output producer (partitioner named explicitly) ...
    asyncio.run(_send_all(Output(base_settings), keyed_topic, keys))
    # ... and a producer left at librdkafka's default partitioner agree with partition_for.
    produce_sync(base_settings, [(keyed_topic, k, b"default") for k in keys])
    messages = read_all(base_settings, keyed_topic)
    assert len(messages) == 2 * len(keys)
    wrong = [
        (m.key(), m.partition())
        for m in messages
        if m.partition() != partition_for(m.key() or b"", 7)
    ]
    assert wrong == []
    assert len({m.partition() for m in messages}) == 7  # the keys really spread


def _decoded(env: SliceEnv, entity: str) -> list[tuple[str, int, dict[str, Any]]]:
    topic = topology(env.settings).canonical(entity)
    deserializer = AvroDeserializer(SchemaRegistryClient(client_config(env.settings)))
    return [
        (
            (m.key() or b"").decode(),
            m.partition() or 0,
            deserializer(m.value(), SerializationContext(topic, MessageField.VALUE)),
        )
        for m in read_all(env.settings, topic)
    ]


def _count(env: SliceEnv, entity: str) -> int:
    try:
        return len(read_all(env.settings, topology(env.settings).canonical(entity), timeout=5))
    except (AssertionError, KeyError):
        return 0


@pytest.mark.parametrize("slice_env", [{"PSSYNC_PARTITIONS": "3"}], indirect=True)
def test_crm_deal_children_follow_their_opportunity(slice_env: SliceEnv) -> None:
    env = slice_env
    env.worker().start()
    env.crm(
        "INSERT INTO sales.account (id, name, type, billing_country, currency_iso_code) VALUES "
        "('001P', 'Acme Holding', 'Customer', 'DE', 'EUR')"
    )
    env.crm(
        "INSERT INTO sales.account (id, name, billing_country, currency_iso_code, parent_id) "
        "VALUES ('001C', 'Acme GmbH', 'DE', 'EUR', '001P')"
    )
    deals = [f"006Q{i}" for i in range(6)]
    for deal in deals:
        env.crm(
            "INSERT INTO sales.opportunity (id, account_id, name, stage_name, amount, "
            "currency_iso_code, type) VALUES (:id, '001C', :name, 'Prospecting', 90000, 'EUR', "
            "'New Business')",
            {"id": deal, "name": f"Deal {deal}"},
        )
        for n in range(2):
            env.crm(
                "INSERT INTO sales.opportunity_line_item (id, opportunity_id, service_line__c, "
                "quantity, unit_price, currency_iso_code) VALUES (:id, :opp, 'IMPL', 100, 150, "
                "'EUR')",
                {"id": f"00k{deal}{n}", "opp": deal},
            )
        env.crm(
            "INSERT INTO sales.billing_milestone (id, opportunity_id, name, due_date__c, "
            "percent__c, currency_iso_code) VALUES (:id, :opp, 'Go-live', '2027-03-01', 40, "
            "'EUR')",
            {"id": f"a0M{deal}", "opp": deal},
        )
    # A delete must land beside the opportunity too (old row: REPLICA IDENTITY FULL).
    env.crm(f"DELETE FROM sales.opportunity_line_item WHERE id = '00k{deals[0]}1'")
    env.wait_for(
        lambda: (
            _count(env, "opportunity_line_item") >= 2 * len(deals) + 1
            and _count(env, "billing_milestone") >= len(deals)
            and _count(env, "opportunity") >= len(deals)
            and _count(env, "customer") >= 2
        ),
        timeout=120,
        what="canonical customers, opportunities, line items and milestones",
    )
    where = {key: p for key, p, _ in _decoded(env, "opportunity")}
    assert len(set(where.values())) > 1, "the deals should spread over the partitions"
    items = _decoded(env, "opportunity_line_item")
    milestones = _decoded(env, "billing_milestone")
    for key, partition, event in items + milestones:
        data = event["data"]
        opportunity = (
            data["opportunity_id"]
            if data
            else "crm:opportunity:" + key.rsplit(":", 1)[1][3:-1]  # deleted 00k<deal><n>
        )
        assert partition == where[opportunity] == partition_for(opportunity.encode(), 3), key
        assert event["envelope"]["correlation_id"] is not None
    deleted = [k for k, _, e in items if e["data"] is None]
    assert deleted == [f"crm:opportunity_line_item:00k{deals[0]}1"]
    live = next(e["data"] for k, _, e in items if e["data"] is not None)
    assert live["total_price"] == Decimal("15000.00") and live["service_line"] == "IMPL"
    assert next(e["data"] for _, _, e in milestones)["percent"] == Decimal("40.00")
    customers = {k: e["data"] for k, _, e in _decoded(env, "customer")}
    assert customers["crm:account:001C"]["parent_customer_id"] == "crm:account:001P"
    assert customers["crm:account:001P"]["status"] == "active"
    assert all(e["data"]["deal_type"] == "new_business" for _, _, e in _decoded(env, "opportunity"))
