"""A CRM change reaches the analytics topic masked and the canonical topic unmasked."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from schemas.registry import Registry, client_config
from streams.topology import topology
from tests.integration.conftest import SliceEnv
from tests.integration.kafka_util import read_all

pytestmark = pytest.mark.integration

POLICY = Path(__file__).resolve().parents[2] / "schemas" / "masking.json"
KEY = "analytics-test-key-0123456789abcdef"


@pytest.mark.parametrize(
    "slice_env",
    [{"PSSYNC_ANALYTICS_POLICY": str(POLICY), "PSSYNC_MASKING_KEY": KEY}],
    indirect=True,
)
def test_project_manager_is_hashed_on_the_analytics_topic_only(slice_env: SliceEnv) -> None:
    env = slice_env
    topo = topology(env.settings)
    canonical, analytics = topo.canonical("opportunity"), topo.analytics("opportunity")
    assert analytics == f"{env.settings.topic_namespace}.analytics.opportunity"
    try:
        env.worker().start()
        env.crm(
            "INSERT INTO sales.opportunity (id, name, stage_name, amount, currency_iso_code, "
            "project_manager_email__c) VALUES ('006M1', 'Masked deal', 'Prospecting', 500, "
            "'EUR', 'grace.hopper@example.com')"
        )
        env.crm("DELETE FROM sales.opportunity WHERE id = '006M1'")
        env.wait_for(
            lambda: (
                (env.target_rows("opportunity_id = 'crm:opportunity:006M1'") or [{}])[0].get(
                    "is_deleted"
                )
                is True
            ),
            what="create and delete applied to the target",
        )
        deserializer = AvroDeserializer(SchemaRegistryClient(client_config(env.settings)))

        def decoded(topic: str) -> list[dict[str, object]]:
            ctx = SerializationContext(topic, MessageField.VALUE)
            return [deserializer(m.value(), ctx) for m in read_all(env.settings, topic)]

        env.wait_for(lambda: len(read_all(env.settings, analytics)) == 2, what="2 analytics events")
        plain, masked = decoded(canonical), decoded(analytics)
        assert [m.key() for m in read_all(env.settings, analytics)] == [
            b"crm:opportunity:006M1"
        ] * 2
        assert plain[0]["data"]["project_manager"] == "grace.hopper@example.com"  # type: ignore[index]
        digest = hmac.new(KEY.encode(), b"grace.hopper@example.com", hashlib.sha256).hexdigest()
        assert masked[0]["data"]["project_manager"] == digest  # type: ignore[index]
        # Everything else is the canonical event, envelope and delete included.
        rest = {k: v for k, v in masked[0]["data"].items() if k != "project_manager"}  # type: ignore[attr-defined]
        assert rest == {k: v for k, v in plain[0]["data"].items() if k != "project_manager"}  # type: ignore[attr-defined]
        assert [e["envelope"] for e in masked] == [e["envelope"] for e in plain]
        assert masked[1]["data"] is None
        # No byte of the e-mail address reached the analytics topic.
        for m in read_all(env.settings, analytics):
            assert b"grace.hopper" not in (m.value() or b"")
    finally:
        registry = Registry(env.settings)
        if f"{analytics}-value" in registry.subjects():
            registry.delete_subject(f"{analytics}-value")
