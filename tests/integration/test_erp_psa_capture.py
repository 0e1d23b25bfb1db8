"""Change capture of the ERP (Tryton) and PSA (Redmine) databases: objects made through the
applications' APIs, as the integration users, arrive as Debezium change events on raw topics.

Each run deploys its own connectors (names, slots, publications, topic prefixes) with its own
connector secrets file, so it never touches the shared stack's connectors.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from sqlalchemy import create_engine, text

from connectors.debezium import (
    captured_tables,
    ensure_replica_identity,
    erp_connector,
    psa_connector,
    slot_name,
)
from connectors.kafka_connect import ConnectClient
from connectors.sql import db_url, server_execute
from schemas.conventions import raw_topic
from schemas.registry import Registry, client_config
from streams.admin import delete_topics
from streams.security import kafka_config
from streams.settings import Settings, SourceDb
from streams.topology import topology
from tests.integration.kafka_util import read_all
from tests.sandbox import Sandbox, Worker, admin_engine, create_sandbox, destroy_sandbox

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]


@dataclass
class Capture:
    sandbox: Sandbox

    @property
    def settings(self) -> Settings:
        return self.sandbox.settings


def _drop_slot_and_publication(settings: Settings, db: SourceDb, prefix: str) -> None:
    name = slot_name(prefix)
    admin = admin_engine(settings)
    try:
        with admin.connect() as conn:
            for _ in range(30):
                try:  # the slot stays active until the connector's task has stopped
                    conn.execute(
                        text(
                            "SELECT pg_drop_replication_slot(slot_name) FROM "
                            "pg_replication_slots WHERE slot_name = :s"
                        ),
                        {"s": name},
                    )
                    break
                except Exception:  # noqa: BLE001 - retried
                    time.sleep(1)
    finally:
        admin.dispose()
    engine = create_engine(db_url(db))
    try:
        with engine.begin() as conn:
            conn.execute(text(f'DROP PUBLICATION IF EXISTS "{name}"'))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    """A sandbox (own CRM database, topics, namespace, group, connector secrets file) whose
    ERP and PSA connectors capture the stack's real `erp` and `psa` databases."""
    base = Settings.from_env()
    sfx = "c" + uuid.uuid4().hex[:10]
    secrets = Path(base.connect_secrets_file).parent / f"it-{sfx}.properties"
    tmp = tmp_path_factory.mktemp("capture")
    sandbox = create_sandbox(
        base,
        sfx,
        tmp / "worker-data",
        {"PSSYNC_CONNECT_SECRETS_FILE": str(secrets), "PSSYNC_BATCH_WITHIN": "0.1"},
    )
    settings = sandbox.settings
    client = ConnectClient(settings.connect_url)
    connectors = [erp_connector(settings), psa_connector(settings)]
    try:
        for c in connectors:
            client.put(c["name"], c["config"])
        for c in connectors:
            client.wait_running(c["name"], timeout=120)
        yield Capture(sandbox)
    finally:
        for c in connectors:
            client.delete(c["name"])
        time.sleep(1)
        _drop_slot_and_publication(settings, settings.erp_db, settings.erp_topic_prefix)
        _drop_slot_and_publication(settings, settings.psa_db, settings.psa_topic_prefix)
        destroy_sandbox(sandbox)
        from confluent_kafka.admin import AdminClient

        topics = AdminClient(kafka_config(settings)).list_topics(timeout=10).topics
        mine = [t for t in topics if t.startswith((f"erp_{sfx}.", f"psa_{sfx}.", f"{sfx}."))]
        if mine:
            delete_topics(settings, mine)
        registry = Registry(settings)
        for subject in registry.subjects():
            if subject.startswith(f"{sfx}."):
                registry.delete_subject(subject)


def _wait_event(
    settings: Settings, topic: str, match: Callable[[dict[str, Any]], bool], timeout: float = 180
) -> dict[str, Any]:
    """The first change event on `topic` whose `after` row satisfies `match`."""
    consumer = Consumer(
        kafka_config(
            settings,
            **{
                "group.id": f"assert-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
        )
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() or msg.value() is None:
                continue
            event: dict[str, Any] = json.loads(msg.value() or b"{}")
            if isinstance(event.get("after"), dict) and match(event["after"]):
                return event
    finally:
        consumer.close()
    raise AssertionError(f"no matching change event on {topic} within {timeout:.0f}s")


def _erp_session(s: Settings) -> tuple[httpx.Client, dict[str, str], dict[str, Any]]:
    http = httpx.Client(base_url=s.erp_url, timeout=30)
    password = s.erp_password_file.read_text().strip()

    def call(method: str, params: list[Any], headers: dict[str, str]) -> Any:
        resp = http.post(
            f"/{s.erp_database}/rpc/",
            json={"id": 1, "method": method, "params": params},
            headers=headers,
        )
        resp.raise_for_status()
        answer = resp.json()
        assert not answer.get("error"), answer["error"]
        return answer["result"]

    uid, token = call("common.db.login", [s.erp_user, {"password": password}, "en"], {})[:2]
    raw = base64.b64encode(f"{s.erp_user}:{uid}:{token}".encode()).decode()
    headers = {"Authorization": f"Session {raw}"}
    context = call("model.res.user.get_preferences", [True, {}], headers)
    return http, headers, context


def test_a_party_made_in_the_erp_arrives_as_a_change_event(capture: Capture) -> None:
    s = capture.settings
    http, headers, context = _erp_session(s)
    code = f"IT-{uuid.uuid4().hex[:10]}"
    try:
        resp = http.post(
            f"/{s.erp_database}/rpc/",
            json={
                "id": 1,
                "method": "model.party.party.create",
                "params": [[{"name": f"Customer {code}", "code": code}], context],
            },
            headers=headers,
        )
        resp.raise_for_status()
        assert not resp.json().get("error"), resp.json()
        (party_id,) = resp.json()["result"]
    finally:
        http.close()
    topic = raw_topic(s.erp_topic_prefix, "public", "party_party")
    event = _wait_event(s, topic, lambda row: row.get("code") == code)
    assert event["after"]["id"] == party_id and event["after"]["name"] == f"Customer {code}"
    assert event["op"] in ("c", "r") and isinstance(event["source"]["lsn"], int)


def test_a_project_made_in_the_psa_arrives_as_a_change_event(capture: Capture) -> None:
    s = capture.settings
    key = s.psa_api_key_file.read_text().strip()
    ident = f"it-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=s.psa_url, headers={"X-Redmine-API-Key": key}, timeout=30) as psa:
        resp = psa.post("/projects.json", json={"project": {"name": ident, "identifier": ident}})
        assert resp.status_code == 201, resp.text
        project_id = resp.json()["project"]["id"]
    topic = raw_topic(s.psa_topic_prefix, "public", "projects")
    event = _wait_event(s, topic, lambda row: row.get("identifier") == ident)
    assert event["after"]["id"] == project_id and event["after"]["name"] == ident
    # The user rows come without credentials (column.exclude.list).
    users = _wait_event(s, raw_topic(s.psa_topic_prefix, "public", "users"), lambda r: True)
    assert "hashed_password" not in users["after"] and "salt" not in users["after"]
    assert "login" in users["after"]
    # Tables read whole as views are compacted, never expired by time.
    from confluent_kafka.admin import AdminClient, ConfigResource

    viewed = [
        raw_topic(s.psa_topic_prefix, "public", "users"),
        raw_topic(s.psa_topic_prefix, "public", "custom_fields"),
        raw_topic(s.erp_topic_prefix, "public", "project_work"),
        raw_topic(s.erp_topic_prefix, "public", "party_party"),
        raw_topic(s.erp_topic_prefix, "public", "company_employee"),
        raw_topic(s.erp_topic_prefix, "public", "company_employee_cost_price"),
    ]
    # The ERP's employees (the time entries' cost rates are theirs) are captured.
    employee = _wait_event(s, viewed[-2], lambda r: True)
    assert {"id", "party", "company"} <= set(employee["after"])
    admin = AdminClient(kafka_config(s))
    found = admin.describe_configs([ConfigResource("topic", t) for t in viewed])
    policies = {r.name: f.result()["cleanup.policy"].value for r, f in found.items()}
    assert policies == dict.fromkeys(viewed, "compact")


def test_every_captured_table_keeps_old_rows_for_updates_and_deletes(capture: Capture) -> None:
    s = capture.settings
    # The shared stack's ERP and PSA tables all have primary keys: nothing to change there.
    assert ensure_replica_identity(s.erp_db, captured_tables(erp_connector(s))) == []
    assert ensure_replica_identity(s.psa_db, captured_tables(psa_connector(s))) == []
    # A captured table without one gets REPLICA IDENTITY FULL, once; columns stay as they are.
    name = f"ri_{uuid.uuid4().hex[:10]}"
    server_execute(s.erp_db, f'CREATE DATABASE "{name}"')
    db = SourceDb(s.erp_db.host, s.erp_db.port, s.erp_db.user, s.erp_db.password, name)
    try:
        engine = create_engine(db_url(db))
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE public.links (a int, b int)"))
            conn.execute(text("CREATE TABLE public.keyed (id int PRIMARY KEY)"))
        tables = [("public", "links"), ("public", "keyed"), ("public", "absent")]
        assert ensure_replica_identity(db, tables) == ["public.links"]
        assert ensure_replica_identity(db, tables) == []
        with engine.connect() as conn:
            ident: dict[str, str] = dict(
                conn.execute(
                    text(
                        "SELECT relname, relreplident FROM pg_class WHERE relname IN "
                        "('links', 'keyed')"
                    )
                ).all()
            )
        engine.dispose()
        assert ident == {"links": "f", "keyed": "d"}
    finally:
        server_execute(s.erp_db, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_erp_company_and_currency_become_canonical_and_reference_events(
    capture: Capture, tmp_path: Path
) -> None:
    s = capture.settings
    worker = Worker(capture.sandbox.env, tmp_path / "worker.log")
    worker.start()
    try:
        topo = topology(s)
        deserializer = AvroDeserializer(SchemaRegistryClient(client_config(s)))

        def newest(entity: str, key: str) -> dict[str, Any] | None:
            topic = topo.output(entity)
            found = None
            try:
                messages = read_all(s, topic, timeout=5)
            except (AssertionError, KeyError):
                return None
            for m in messages:
                if (m.key() or b"").decode() == key:
                    found = deserializer(m.value(), SerializationContext(topic, MessageField.VALUE))
            return found

        deadline = time.monotonic() + 120
        entity = currency = None
        while time.monotonic() < deadline and (entity is None or currency is None):
            entity = entity or newest("legal_entity", "LC-DE")
            currency = currency or newest("currency", "EUR")
            time.sleep(1)
        assert entity is not None and currency is not None, worker.log.read_text()[-4000:]
    finally:
        worker.stop()
    # Tryton's company 1 is the default reference file's LC-DE.
    assert topo.output("legal_entity") == f"{s.topic_namespace}.canonical.legal_entity"
    assert entity["data"]["erp_id"] == "1" and entity["data"]["base_currency"] == "EUR"
    assert entity["envelope"]["source"]["entity"] == "public.company_company"
    assert entity["data"]["last_modified_at"] is not None
    assert topo.output("currency") == f"{s.topic_namespace}.reference.currency"
    assert currency["data"]["name"] == "Euro" and currency["data"]["minor_units"] == 2
