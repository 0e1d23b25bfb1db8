"""pssync end to end against a Kafka that accepts only SASL_SSL (SCRAM-SHA-512 over TLS):
topic admin, the worker's Faust consumers and producers, its canonical and dead-letter
producer, the dead-letter tools, replay and plain consumers all connect with the
PSSYNC_KAFKA_* settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from sqlalchemy import text

from schemas.registry import client_config
from streams.output import produce_sync
from streams.settings import Settings
from streams.topology import topology
from tests.integration.conftest import SliceEnv
from tests.integration.kafka_util import read_all
from tests.integration.secure_kafka import SecureBroker, secure_broker
from tests.sandbox import REPO, Worker, free_port
from tests.sandbox import admin_engine as _admin_engine

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    lib = Settings.from_env().stack_dir / "lib"
    with secure_broker(lib, tmp_path_factory.mktemp("secure-kafka")) as b:
        yield b


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _change(crm_id: str, lsn: int, prefix: str) -> tuple[bytes, bytes]:
    after = {
        "id": crm_id, "account_id": None, "name": "Over TLS", "stage_name": "Prospecting",
        "amount": "42.00", "currency_iso_code": "EUR", "close_date": 20500,
        "project_manager_email__c": "pm@example.com",
    }  # fmt: skip
    value = {
        "before": None,
        "after": after,
        "source": {"name": prefix, "schema": "sales", "table": "opportunity", "lsn": lsn,
                   "ts_ms": 1_790_000_000_000},
        "op": "c",
        "ts_ms": 1_790_000_000_100,
    }  # fmt: skip
    return json.dumps({"id": crm_id}).encode(), json.dumps(value).encode()


def test_worker_and_tools_over_sasl_ssl(
    broker: SecureBroker, base_settings: Settings, tmp_path: Path
) -> None:
    sfx = "k" + uuid.uuid4().hex[:10]
    target_db = f"target_{sfx}"
    admin = _admin_engine(base_settings)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{target_db}"'))
    pg = base_settings.ports.postgres
    env = {
        **os.environ,
        **broker.env(),
        "PSSYNC_CRM_TOPIC_PREFIX": f"crm_{sfx}",
        "PSSYNC_ERP_TOPIC_PREFIX": f"erp_{sfx}",
        "PSSYNC_PSA_TOPIC_PREFIX": f"psa_{sfx}",
        "PSSYNC_TOPIC_NAMESPACE": sfx,
        "PSSYNC_APP_ID": f"pssync-{sfx}",
        "PSSYNC_TARGET_URL": f"postgresql+psycopg://postgres:postgres@127.0.0.1:{pg}/{target_db}",
        "PSSYNC_WEB_PORT": str(free_port()),
        "PSSYNC_DATA_DIR": str(tmp_path / "worker-data"),
        "PSSYNC_BATCH_WITHIN": "0.1",
    }
    settings = Settings.from_env(env)
    slice_env = SliceEnv(settings, env, tmp_path)
    try:
        # Topic administration (AdminClient).
        topics = _cli(env, "topics")
        assert topics.returncode == 0, topics.stderr
        assert f"{sfx}.canonical.opportunity" in topics.stdout and "created" in topics.stdout

        # A raw change (Producer), the worker (Faust/aiokafka in, confluent-kafka out), the sink.
        raw = topology(settings).routes[0].raw_topic
        poison = (raw, b'{"id": "006K2"}', b"not json")
        produce_sync(settings, [(raw, *_change("006K1", 9_000_001, f"crm_{sfx}")), poison])
        slice_env.workers.append(Worker(env, tmp_path / "worker.log"))
        slice_env.workers[0].start()
        slice_env.wait_for(
            lambda: len(slice_env.target_rows("opportunity_id = 'crm:opportunity:006K1'")) == 1,
            what="the change applied to the target through the SASL_SSL broker",
        )

        # Canonical event read back (Consumer) and decoded through the registry.
        canonical = topology(settings).canonical("opportunity")
        msgs = read_all(settings, canonical)
        decode = AvroDeserializer(SchemaRegistryClient(client_config(settings)))
        event = decode(msgs[0].value(), SerializationContext(canonical, MessageField.VALUE))
        assert [m.key() for m in msgs] == [b"crm:opportunity:006K1"]
        assert event["data"]["name"] == "Over TLS"

        # The poison was dead-lettered by the worker and the DLQ tools read it back.
        def dead_letters() -> list[dict[str, object]]:
            listed = _cli(env, "dlq", "list", "--json")
            assert listed.returncode == 0, listed.stderr
            return list(json.loads(listed.stdout)["groups"])

        slice_env.wait_for(lambda: bool(dead_letters()), what="the poison in dlq.normalize")
        assert [(g["stage"], g["count"]) for g in dead_letters()] == [("normalize", 1)]

        # Replay planning (AdminClient offsets) sees the worker's committed offset.
        slice_env.workers[0].stop()
        plan = _cli(env, "replay", "--topic", canonical, "--to", "earliest")
        assert plan.returncode == 0, plan.stderr
        assert "dry run" in plan.stdout

        # A wrong password is refused: the clients really authenticate.
        wrong = {**env, "PSSYNC_KAFKA_SASL_PASSWORD": "not-the-password"}
        refused = subprocess.run(
            [sys.executable, "-c",
             "from streams.admin import ensure_topics; from streams.settings import Settings; "
             "ensure_topics(Settings.from_env(), [], timeout=5)"],
            env=wrong, cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode != 0
        assert "PSSYNC_KAFKA_SECURITY_PROTOCOL" in refused.stderr
        assert "not-the-password" not in refused.stderr
    finally:
        for w in slice_env.workers:
            w.stop()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{target_db}" WITH (FORCE)'))
        admin.dispose()
