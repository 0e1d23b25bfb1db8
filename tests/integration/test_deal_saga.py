"""The deal stage on the real stack: a closed-won deal in the CRM becomes saga commands.

The opportunity goes the whole real way (CRM table -> Debezium -> normalize -> canonical
topic); customers and reference data are produced to their compacted topics with their
contracts, line items with the fields the stage reads, on their deal's partition. The test
plays the command stage's part by writing results to saga.results.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka import Message, Producer

from connectors.ports import CustomerSpec, ErpCustomer, ProjectSpec, from_json, to_json
from schemas import contracts
from schemas.registry import Registry
from schemas.serde import Decoder, Encoder
from streams.deals.records import saga_schema
from streams.deals.sources import VIEWS
from streams.mappings.envelope import correlation_id
from streams.replay import Replayer
from streams.security import kafka_config
from streams.topology import topology
from tests.integration.conftest import SliceEnv
from tests.integration.kafka_util import read_all

pytestmark = pytest.mark.integration

PARAMS = {"PSSYNC_PARTITIONS": "2", "PSSYNC_DEAL_LINE_WAIT": "120"}

ACCOUNT = (
    "INSERT INTO sales.account (id, name, billing_country, currency_iso_code, tax_id__c) "
    "VALUES (:id, :name, 'DE', 'EUR', 'DE811')"
)
OPPORTUNITY = (
    "INSERT INTO sales.opportunity (id, account_id, name, stage_name, amount, currency_iso_code, "
    "close_date, billing_type__c, service_lines__c, delivery_region__c, "
    "project_manager_email__c, is_closed, is_won) VALUES (:id, :account, :name, 'Closed Won', "
    "30000, 'EUR', '2027-02-01', 'Time and Materials', 'ARCH;CONSULT', 'EMEA', :pm, true, true)"
)


def _envelope(key: str, version: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "event_id": str(uuid.uuid4()),
        "correlation_id": correlation_id(key),
        "causation_id": None,
        "source": {
            "system": "test",
            "connector": "test",
            "entity": "test",
            "key": key,
            "position": str(version),
            "sequence": version,
            "committed_at": now,
        },
        "op": "snapshot",
        "entity_version": version,
        "emitted_at": now,
    }


def _with_envelope(name: str, fields: list[dict[str, Any]]) -> str:
    """An event schema for data without a contract yet: the envelope and the fields read."""
    envelope = json.loads(contracts.schema_str("customer"))["fields"][0]
    return json.dumps(
        {
            "type": "record",
            "name": f"{name}Event",
            "namespace": "io.pssync.test",
            "fields": [
                envelope,
                {
                    "name": "data",
                    "default": None,
                    "type": ["null", {"type": "record", "name": name, "fields": fields}],
                },
            ],
        }
    )


LINE_ITEM = _with_envelope(
    "LineItem",
    [
        {"name": "opportunity_id", "type": "string"},
        {"name": "service_line", "type": "string"},
        {
            "name": "quantity",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2},
        },
        {
            "name": "unit_price",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2},
        },
    ],
)
TEMPLATE = _with_envelope(
    "ProjectTemplate",
    [
        {"name": "code", "type": "string"},
        {"name": "name", "type": "string"},
        {
            "name": "tasks",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Task",
                    "fields": [
                        {"name": "name", "type": "string"},
                        {"name": "phase", "type": "string"},
                        {"name": "effort_hours", "type": ["null", "string"], "default": None},
                    ],
                },
            },
        },
        {"name": "placeholders", "type": {"type": "array", "items": "string"}},
    ],
)


class Kafka:
    """Produces records of one sandbox with the registry's wire format."""

    def __init__(self, env: SliceEnv) -> None:
        self.settings = env.settings
        self.ns = env.settings.topic_namespace
        self.registry = Registry(env.settings)
        self.producer = Producer(kafka_config(env.settings))
        self.decoder = Decoder(self.registry.schema_by_id)

    def send(
        self,
        topic: str,
        schema: str,
        key: str,
        record: dict[str, Any],
        partition: int | None = None,
    ) -> None:
        enc = Encoder(self.registry.register, f"{topic}-value", schema)
        kwargs: dict[str, Any] = {} if partition is None else {"partition": partition}
        self.producer.produce(topic, key=key.encode(), value=enc.encode(record), **kwargs)
        assert self.producer.flush(30) == 0

    def view(self, name: str, schema: str, key: str, data: dict[str, Any]) -> None:
        self.send(
            VIEWS[name].topic(self.ns), schema, key, {"envelope": _envelope(key, 1), "data": data}
        )

    def commands(self, target: str) -> list[tuple[Message, dict[str, Any]]]:
        topic = topology(self.settings).commands(target)
        return [(m, self.decoder.decode(m.value())) for m in read_all(self.settings, topic)]


def _reference(k: Kafka, account: str) -> None:
    k.view(
        "customer",
        contracts.schema_str("customer"),
        f"crm:account:{account}",
        {
            "customer_id": f"crm:account:{account}",
            "crm_account_id": account,
            "name": "Acme",
            "legal_name": "Acme GmbH",
            "tax_id": "DE811",
            "status": "active",
            "billing_country": "DE",
            "default_currency": "EUR",
        },
    )
    k.view(
        "legal_entity",
        contracts.schema_str("legal_entity"),
        "LE-DE",
        {
            "legal_entity_id": "LE-DE",
            "erp_id": "1",
            "name": "pssync GmbH",
            "country": "DE",
            "base_currency": "EUR",
            "region": "EMEA",
        },
    )
    k.view(
        "tax_code",
        contracts.schema_str("tax_code"),
        "DE19",
        {
            "code": "DE19",
            "name": "VAT 19%",
            "jurisdiction": "DE",
            "rate_percent": Decimal("19.0000"),
        },
    )
    for code, template in (("ARCH", "TPL-ARCH"), ("CONSULT", "TPL-CONSULT")):
        k.view(
            "service_line",
            contracts.schema_str("service_line"),
            code,
            {
                "code": code,
                "name": code.title(),
                "default_billing_type": "time_and_materials",
                "revenue_rule": "time_and_materials",
                "project_template": template,
            },
        )
        k.view(
            "project_template",
            TEMPLATE,
            template,
            {
                "code": template,
                "name": code.title(),
                "tasks": [{"name": f"{code} work", "phase": "Deliver", "effort_hours": "40"}],
                "placeholders": ["Consultant"],
            },
        )
    k.view(
        "project_manager",
        contracts.schema_str("resource"),
        "pm-1",
        {
            "resource_id": "pm-1",
            "name": "Pat Manager",
            "email": "pm@example.com",
            "kind": "employee",
            "role": "Project manager",
        },
    )


def _exception(k: Kafka, key: str) -> dict[str, Any] | None:
    """The deal's latest business exception record."""
    topic = topology(k.settings).exceptions
    found = [
        k.decoder.decode(m.value()) for m in read_all(k.settings, topic) if m.key() == key.encode()
    ]
    return found[-1] if found else None


def _metrics(port: int, name: str) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return [ln for ln in r.read().decode().splitlines() if ln.startswith(name)]


def _cli(env: SliceEnv, *args: str) -> str:
    cli = [sys.executable, "-m", "streams.cli", "exceptions", *args]
    done = subprocess.run(cli, env=env.env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _wait(env: SliceEnv, check: Any, what: str, timeout: float = 120) -> Any:
    found: list[Any] = []

    def ok() -> bool:
        value = check()
        if value:
            found.append(value)
        return bool(value)

    env.wait_for(ok, timeout=timeout, what=what)
    return found[-1]


@pytest.mark.parametrize("slice_env", [PARAMS], indirect=True)
def test_closed_won_deal_issues_the_saga_steps_in_order(slice_env: SliceEnv) -> None:
    env = slice_env
    k = Kafka(env)
    account, crm_id = "001D" + uuid.uuid4().hex[:6], "006D" + uuid.uuid4().hex[:6]
    key = f"crm:opportunity:{crm_id}"
    cid = correlation_id(key)
    _reference(k, account)
    env.worker().start()
    env.crm(ACCOUNT, {"id": account, "name": "Acme"})
    env.crm(
        OPPORTUNITY,
        {"id": crm_id, "account": account, "name": "Acme platform", "pm": "pm@example.com"},
    )

    # The deal came the real way; its line items follow on its partition.
    canonical = topology(env.settings).canonical("opportunity")
    [opp] = _wait(
        env,
        lambda: [m for m in read_all(env.settings, canonical) if m.key() == key.encode()],
        "the canonical opportunity",
    )
    line_topic = topology(env.settings).canonical("opportunity_line_item")
    for n, (service, hours, price) in enumerate((("ARCH", "20", "150"), ("CONSULT", "10", "120"))):
        line_key = f"crm:opportunity_line_item:{crm_id}-{n}"
        data = {
            "opportunity_id": key,
            "service_line": service,
            "quantity": Decimal(hours).quantize(Decimal("0.01")),
            "unit_price": Decimal(price).quantize(Decimal("0.01")),
        }
        k.send(
            line_topic,
            LINE_ITEM,
            line_key,
            {"envelope": _envelope(line_key, 1), "data": data},
            opp.partition(),
        )

    # Complete and closed-won: the first step's command, long before the line wait is over.
    started = time.monotonic()
    msg, command = _wait(
        env, lambda: next(iter(k.commands("erp")), None), "the erp_customer command"
    )
    assert time.monotonic() - started < 60
    assert msg.key() == key.encode() and msg.partition() == opp.partition()
    assert command["command_id"] == f"{cid}:erp_customer" and command["step"] == "erp_customer"
    assert (command["saga_key"], command["target"], command["attempt"]) == (key, "erp", 1)
    assert str(command["correlation_id"]) == cid
    assert from_json(CustomerSpec, command["payload"]) == CustomerSpec(
        f"crm:account:{account}", "Acme GmbH", "DE811", "DE", "EUR"
    )

    # The command stage's part: the customer exists now (twice: a redelivered result).
    result = {
        "command_id": command["command_id"],
        "correlation_id": cid,
        "saga_key": key,
        "step": "erp_customer",
        "target": "erp",
        "attempt": 1,
        "status": "done",
        "output": to_json(ErpCustomer(4711, f"crm:account:{account}")),
        "error": None,
        "completed_at": datetime.now(UTC),
    }
    results = topology(env.settings).results
    k.send(results, saga_schema("result"), key, result)
    k.send(results, saga_schema("result"), key, result)

    _wait(env, lambda: len(k.commands("erp")) >= 2, "the erp_project command")
    time.sleep(3)  # a second erp_project command would be here by now
    commands = k.commands("erp")
    assert [c["step"] for _, c in commands] == ["erp_customer", "erp_project"]
    project = from_json(ProjectSpec, commands[1][1]["payload"])
    assert project.customer_id == 4711 and project.key == cid
    assert project.invoice_method == "timesheet" and project.currency == "EUR"
    assert project.list_price == Decimal("140.00")
    assert [t.name for t in project.tasks] == ["ARCH work", "CONSULT work"]
    assert commands[1][0].partition() == opp.partition()

    # The ERP refuses the project: the saga parks on that step; a retry resumes it there.
    rejected = {
        **result,
        "command_id": f"{cid}:erp_project",
        "step": "erp_project",
        "status": "rejected",
        "output": "{}",
        "error": "no fiscal year open for 2027: open one in the ERP",
    }
    k.send(results, saga_schema("result"), key, rejected)
    parked = _wait(env, lambda: _exception(k, key), "the exception of the rejected step")
    assert (parked["step"], parked["reason"], parked["attempt"]) == ("erp_project", "rejected", 1)
    assert "no fiscal year" in parked["message"]
    [(_, notice)] = _wait(env, lambda: k.commands("crm"), "the CRM status notice")
    assert '"sync_status":"exception: rejected"' in notice["payload"]

    dry = _cli(env, "retry", key)
    assert "dry run" in dry and len(k.commands("erp")) == 2
    assert "retry sent" in _cli(env, "retry", key, "--execute")
    _wait(env, lambda: len(k.commands("erp")) >= 3, "the erp_project command, attempt 2")
    retried = k.commands("erp")[2][1]
    assert (retried["command_id"], retried["attempt"]) == (f"{cid}:erp_project:2", 2)
    assert from_json(ProjectSpec, retried["payload"]) == project
    resolved = _exception(k, key)
    assert resolved is not None and resolved["status"] == "resolved"


@pytest.mark.parametrize("slice_env", [PARAMS], indirect=True)
def test_invalid_deal_is_parked_and_resumes_when_fixed_in_the_crm(slice_env: SliceEnv) -> None:
    env = slice_env
    env.env["PSSYNC_DEAL_LINE_WAIT"] = "2"  # no line items: judged on the deal's own list
    k = Kafka(env)
    account, crm_id = "001E" + uuid.uuid4().hex[:6], "006E" + uuid.uuid4().hex[:6]
    key = f"crm:opportunity:{crm_id}"
    _reference(k, account)
    env.worker().start()
    env.crm(ACCOUNT, {"id": account, "name": "Acme"})
    env.crm(
        OPPORTUNITY, {"id": crm_id, "account": account, "name": "Stray", "pm": "who@example.com"}
    )

    parked = _wait(env, lambda: _exception(k, key), "the business exception")
    assert (parked["reason"], parked["step"], parked["status"]) == (
        "project_manager_unknown",
        "validate",
        "open",
    )
    assert "who@example.com" in parked["message"] and parked["crm_id"] == crm_id
    [(_, notice)] = _wait(env, lambda: k.commands("crm"), "the CRM status notice")
    assert '"sync_status":"exception: project_manager_unknown"' in notice["payload"]
    assert k.commands("erp") == []

    listed = _cli(env, "list")
    assert key in listed and "project_manager_unknown" in listed
    shown = _cli(env, "show", key)
    assert "what to fix" in shown and "who@example.com" in shown
    port = int(env.env["PSSYNC_WEB_PORT"])
    assert any(
        'reason="project_manager_unknown"' in line and line.endswith(" 1.0")
        for line in _metrics(port, "pssync_business_exceptions_total")
    )
    _wait(
        env,
        lambda: any(
            'status="parked",step="validate"' in line and line.endswith(" 1.0")
            for line in _metrics(port, "pssync_sagas_open")
        ),
        "the open sagas gauge",
        timeout=40,
    )

    # Fixed in the CRM: the deal resumes by itself.
    env.crm(
        "UPDATE sales.opportunity SET project_manager_email__c = 'pm@example.com' WHERE id = :id",
        {"id": crm_id},
    )
    _wait(env, lambda: k.commands("erp"), "the erp_customer command after the fix")
    resolved = _exception(k, key)
    assert resolved is not None and resolved["status"] == "resolved"
    assert resolved["resolved_at"] is not None


@pytest.mark.parametrize("slice_env", [PARAMS], indirect=True)
def test_a_replay_after_restoring_the_state_fires_and_advances_nothing_again(
    slice_env: SliceEnv,
) -> None:
    env = slice_env
    k = Kafka(env)
    account, crm_id = "001R" + uuid.uuid4().hex[:6], "006R" + uuid.uuid4().hex[:6]
    key = f"crm:opportunity:{crm_id}"
    cid = correlation_id(key)
    _reference(k, account)
    worker = env.worker()
    worker.start()
    env.crm(ACCOUNT, {"id": account, "name": "Acme"})
    env.crm(
        OPPORTUNITY, {"id": crm_id, "account": account, "name": "Replayed", "pm": "pm@example.com"}
    )
    canonical = topology(env.settings).canonical("opportunity")
    [opp] = _wait(
        env,
        lambda: [m for m in read_all(env.settings, canonical) if m.key() == key.encode()],
        "the canonical opportunity",
    )
    line_topic = topology(env.settings).canonical("opportunity_line_item")
    for n, service in enumerate(("ARCH", "CONSULT")):
        line_key = f"crm:opportunity_line_item:{crm_id}-{n}"
        data = {
            "opportunity_id": key,
            "service_line": service,
            "quantity": Decimal("8.00"),
            "unit_price": Decimal("100.00"),
        }
        k.send(
            line_topic,
            LINE_ITEM,
            line_key,
            {"envelope": _envelope(line_key, 1), "data": data},
            opp.partition(),
        )
    _, command = _wait(env, lambda: next(iter(k.commands("erp")), None), "the erp_customer command")
    results = topology(env.settings).results
    result = {
        "command_id": command["command_id"],
        "correlation_id": cid,
        "saga_key": key,
        "step": "erp_customer",
        "target": "erp",
        "attempt": 1,
        "status": "done",
        "output": to_json(ErpCustomer(77, f"crm:account:{account}")),
        "error": None,
        "completed_at": datetime.now(UTC),
    }
    k.send(results, saga_schema("result"), key, result)
    _wait(env, lambda: len(k.commands("erp")) >= 2, "the erp_project command")
    worker.stop()

    # A new host (state restored from the changelogs), and every input read again.
    shutil.rmtree(env.settings.data_dir)
    for topic in (canonical, line_topic, results):
        replay = [
            sys.executable,
            "-m",
            "streams.cli",
            "replay",
            "--topic",
            topic,
            "--to",
            "earliest",
        ]
        done = subprocess.run([*replay, "--execute"], env=env.env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    worker.start()
    replayer = Replayer(env.settings, timeout=10)
    _wait(
        env,
        lambda: all(
            not any(replayer.lag(env.settings.app_id, t).values())
            for t in (canonical, line_topic, results)
        ),
        "the replay processed and committed",
    )
    assert [c["command_id"] for _, c in k.commands("erp")] == [
        f"{cid}:erp_customer",
        f"{cid}:erp_project",
    ]
