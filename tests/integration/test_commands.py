"""Saga commands through a real worker to the real ERP (Tryton), PSA (Redmine) and CRM
write-back, results back on Kafka."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from sqlalchemy import create_engine, text

from connectors.erp import TrytonErp
from connectors.ports import (
    CrmWriteBack,
    CustomerSpec,
    Member,
    MilestoneSpec,
    ProjectSpec,
    PsaProjectSpec,
    TaskSpec,
    to_json,
)
from connectors.psa import psa_identifier
from connectors.sql import db_url
from schemas import saga
from schemas.conventions import value_subject
from schemas.registry import Registry, client_config
from schemas.serde import encode
from streams.dlq import read_context
from streams.output import produce_sync
from streams.topology import topology
from tests.integration.conftest import SliceEnv
from tests.integration.kafka_util import read_all
from tests.sandbox import refusing_port

pytestmark = pytest.mark.integration


def _command(
    env: SliceEnv, key: str, step: str, payload: str, target: str = "erp"
) -> tuple[str, bytes, bytes]:
    topic = topology(env.settings).commands(target)
    schema_id = Registry(env.settings).register(value_subject(topic), saga.schema_str("command"))
    correlation = str(uuid.uuid5(uuid.NAMESPACE_URL, key))
    record = {
        "command_id": f"{correlation}:{step}",
        "correlation_id": correlation,
        "saga_key": key,
        "step": step,
        "target": target,
        "attempt": 1,
        "payload": payload,
        "issued_at": datetime.now(UTC),
    }
    return topic, key.encode(), encode(schema_id, saga.parsed("command"), record)


def _decoded(env: SliceEnv, topic: str) -> list[dict[str, Any]]:
    deserializer = AvroDeserializer(SchemaRegistryClient(client_config(env.settings)))
    ctx = SerializationContext(topic, MessageField.VALUE)
    return [deserializer(m.value(), ctx) for m in read_all(env.settings, topic)]


def _count(env: SliceEnv, topic: str) -> int:
    try:
        return len(read_all(env.settings, topic, timeout=5))
    except AssertionError:
        return 0


def _parties(env: SliceEnv, code: str) -> list[dict[str, Any]]:
    async def search() -> list[dict[str, Any]]:
        erp = TrytonErp.from_settings(env.settings)
        try:
            found: list[dict[str, Any]] = await erp.rpc.model(
                "party.party", "search_read", [("code", "=", code)], 0, 10, None, ["id", "code"]
            )
            return found
        finally:
            await erp.aclose()

    return asyncio.run(search())


def test_one_deal_through_erp_psa_and_crm_with_results_audit_and_dead_letters(
    slice_env: SliceEnv,
) -> None:
    env = slice_env
    topo = topology(env.settings)
    worker = env.worker()
    worker.start()
    suffix = uuid.uuid4().hex[:8]
    key, code = f"crm:opportunity:IT{suffix}", f"IT-{suffix}"
    customer = _command(env, key, "erp_customer", to_json(CustomerSpec(code, f"Acme {suffix}")))
    # The same command twice (a redelivery), a poison record and a step the ERP does not apply.
    produce_sync(
        env.settings,
        [
            customer,
            (topo.commands("erp"), b"poison", b"\x00\x00\x00\x00\x01not avro"),
            _command(env, "crm:opportunity:other", "psa_project", "{}"),
            customer,
        ],
    )
    env.wait_for(lambda: _count(env, topo.results) >= 2, timeout=90, what="two customer results")
    first, second = _decoded(env, topo.results)[:2]
    assert first["status"] == second["status"] == "done", first["error"]
    assert first["output"] == second["output"]  # the duplicate found what the first created
    answer = json.loads(first["output"])
    assert answer["code"] == code
    assert [p["id"] for p in _parties(env, code)] == [answer["id"]]  # one party in Tryton

    # The next step with what the first one learned: a project numbered by the ERP.
    spec = ProjectSpec(
        key=str(first["correlation_id"]),
        name=f"Rollout {suffix}",
        customer_id=answer["id"],
        invoice_method="timesheet",
        currency="EUR",
        list_price=Decimal("120.00"),
        tasks=(TaskSpec("Design", "Plan", Decimal("8")), TaskSpec("Build", "Deliver")),
    )
    produce_sync(env.settings, [_command(env, key, "erp_project", to_json(spec))])
    env.wait_for(lambda: _count(env, topo.results) >= 3, timeout=90, what="project result")
    project = _decoded(env, topo.results)[2]
    assert (project["step"], project["status"], project["saga_key"]) == ("erp_project", "done", key)
    built = json.loads(project["output"])
    assert built["number"] and set(built["task_ids"]) == {"Design", "Build"}

    # The PSA project named by the ERP's project code, then the CRM written back.
    psa_spec = PsaProjectSpec(
        identifier=psa_identifier(built["number"]),
        name=f"Rollout {suffix}",
        erp_project_code=built["number"],
        tasks=(TaskSpec("Design", "Plan", Decimal("8")), TaskSpec("Build", "Deliver")),
        milestones=(MilestoneSpec("Go-live", date(2027, 3, 31), Decimal("30000")),),
        members=(Member("demo.pm@localhost.invalid", "Manager"),),
        placeholders=("Solution architect",),
    )
    psa_command = _command(env, key, "psa_project", to_json(psa_spec), "psa")
    produce_sync(env.settings, [psa_command])
    env.wait_for(lambda: _count(env, topo.results) >= 4, timeout=120, what="PSA result")
    psa = _decoded(env, topo.results)[3]
    assert (psa["step"], psa["status"], psa["target"]) == ("psa_project", "done", "psa"), psa
    psa_project = json.loads(psa["output"])
    assert psa_project["identifier"] == psa_spec.identifier and psa_project["url"]
    api_key = env.settings.psa_api_key_file.read_text().strip()
    found = httpx.get(
        f"{env.settings.psa_url}/projects/{psa_spec.identifier}.json",
        headers={"X-Redmine-API-Key": api_key},
        timeout=30,
    )
    assert found.status_code == 200 and found.json()["project"]["id"] == psa_project["id"]

    opportunity = f"006IT{suffix}"
    env.crm(
        "INSERT INTO sales.opportunity (id, name, stage_name, amount, currency_iso_code, "
        "close_date) VALUES (:id, 'IT deal', 'Closed Won', 1000, 'EUR', '2027-01-31')",
        {"id": opportunity},
    )
    change = CrmWriteBack(
        opportunity_id=opportunity,
        project_code=built["number"],
        psa_project_url=psa_project["url"],
        sync_status="provisioned",
    )
    produce_sync(env.settings, [_command(env, key, "crm_writeback", to_json(change), "crm")])
    env.wait_for(lambda: _count(env, topo.results) >= 5, timeout=90, what="CRM result")
    crm = _decoded(env, topo.results)[4]
    assert (crm["step"], crm["status"], crm["output"]) == ("crm_writeback", "done", "{}"), crm
    engine = create_engine(db_url(env.settings.crm_db))
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT project_code__c, psa_project_url__c, sync_status__c "
                "FROM sales.opportunity WHERE id = :id"
            ),
            {"id": opportunity},
        ).one()
    engine.dispose()
    assert tuple(row) == (built["number"], psa_project["url"], "provisioned")

    audits = _decoded(env, topo.audit("command"))
    assert [(a["step"], a["status"]) for a in audits] == [
        ("erp_customer", "done"),
        ("erp_customer", "done"),
        ("erp_project", "done"),
        ("psa_project", "done"),
        ("crm_writeback", "done"),
    ]
    assert audits[0]["audit_id"] == audits[1]["audit_id"]  # same command, same answer
    assert [a["target"] for a in audits] == ["erp", "erp", "erp", "psa", "crm"]
    assert all(a["duration_ms"] >= 0 for a in audits)

    dead = read_all(env.settings, topo.dlq("command"))
    assert [m.key() for m in dead] == [b"poison", b"crm:opportunity:other"]
    contexts = [read_context(m.headers()) for m in dead]
    assert [c["error.class"] for c in contexts] == ["SerdeError", "BadCommandError"]
    assert all(c["stage"] == "command" for c in contexts)
    assert dead[0].value() == b"\x00\x00\x00\x00\x01not avro"


@pytest.mark.parametrize(
    "slice_env",
    [{"PSSYNC_ERP_URL": f"http://127.0.0.1:{refusing_port()}", "PSSYNC_COMMAND_RETRY_FOR": "3"}],
    indirect=True,
)
def test_an_unreachable_erp_stops_the_worker_without_acknowledging(slice_env: SliceEnv) -> None:
    env = slice_env
    topo = topology(env.settings)
    worker = env.worker()
    worker.start()
    payload = to_json(CustomerSpec(f"IT-{uuid.uuid4().hex[:8]}", "Nobody"))
    produce_sync(env.settings, [_command(env, "crm:opportunity:down", "erp_customer", payload)])
    deadline = time.monotonic() + 90
    while worker.alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert worker.exit_code() == 3, env.diagnose()
    log = worker.log.read_text(errors="replace")
    stopped = "pssync worker stopped: ApplicationUnavailableError: erp: unavailable for 3s"
    assert stopped in log and "last: ERP: cannot reach" in log
    assert _count(env, topo.results) == 0 and _count(env, topo.dlq("command")) == 0
