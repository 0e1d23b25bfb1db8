"""The sink stage in a worker: contract versions met on a topic, and schemas that are not."""

from __future__ import annotations

import json

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas import contracts
from schemas.registry import Registry, client_config
from schemas.samples import Sampler
from schemas.serde import Encoder
from streams.dlq import read_context
from streams.output import produce_sync
from streams.topology import topology
from tests.integration.conftest import SliceEnv
from tests.integration.kafka_util import read_all
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
