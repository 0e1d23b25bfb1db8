"""The deal stage on the real stack: a closed-won deal in the CRM becomes saga commands.

Account, opportunity and line items go the whole real way (CRM tables -> Debezium ->
normalize -> canonical topics, line items on their deal's partition); reference data comes
from `pssync reference load`; the ERP's tax codes, captured from the ERP elsewhere, are
produced with their contract. The test plays the command stage's part by writing results to
saga.results.
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
from sqlalchemy import create_engine, text

from connectors.ports import CustomerSpec, ProjectSpec, from_json
from connectors.sql import db_url
from schemas import contracts
from schemas.registry import Registry
from schemas.serde import Decoder, Encoder
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
    "30000, :currency, '2027-02-01', 'Time and Materials', 'ARCH;CONSULT', 'EMEA', :pm, true, true)"
)


# The PSA's project manager the local stack creates (docker/local/components/psa_setup.rb).
PM = "demo.pm@localhost.invalid"
LINE_ITEM = (
    "INSERT INTO sales.opportunity_line_item (id, opportunity_id, service_line__c, quantity, "
    "unit_price, currency_iso_code) VALUES (:id, :opp, :s, :q, :p, :c)"
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


def _reference(env: SliceEnv, k: Kafka) -> None:
    """The reference file's sets, and the tax the ERP holds for Germany."""
    cli = [sys.executable, "-m", "streams.cli", "reference", "load"]
    done = subprocess.run(cli, env=env.env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    k.view(
        "tax_code",
        contracts.schema_str("tax_code"),
        "VAT-DE-19",
        {
            "code": "VAT-DE-19",
            "name": "VAT 19%",
            "jurisdiction": "DE",
            "rate_percent": Decimal("19.0000"),
        },
    )


def _deal(env: SliceEnv, account: str, crm_id: str, currency: str = "EUR", pm: str = PM) -> None:
    """An account, then its closed-won opportunity with a line item per service line."""
    env.crm(ACCOUNT, {"id": account, "name": "Acme"})
    customers = topology(env.settings).canonical("customer")
    key = f"crm:account:{account}".encode()
    env.wait_for(
        lambda: any(m.key() == key for m in read_all(env.settings, customers)),
        what="the canonical customer",
    )
    deal = {"id": crm_id, "account": account, "name": "Acme platform", "pm": pm}
    env.crm(OPPORTUNITY, {**deal, "currency": currency})
    for n, (service, hours, price) in enumerate((("ARCH", 20, 150), ("CONSULT", 10, 120))):
        line = {"id": f"{crm_id[:14]}L{n}", "opp": crm_id, "s": service, "q": hours, "p": price}
        env.crm(LINE_ITEM, {**line, "c": currency})


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


def _results(k: Kafka) -> list[dict[str, Any]]:
    topic = topology(k.settings).results
    return [k.decoder.decode(m.value()) for m in read_all(k.settings, topic)]


def _opportunity_row(env: SliceEnv, crm_id: str) -> dict[str, Any]:
    engine = create_engine(db_url(env.settings.crm_db))
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT * FROM sales.opportunity WHERE id = :id"), {"id": crm_id}
            ).mappings()
            return dict(next(iter(row)))
    finally:
        engine.dispose()


@pytest.mark.parametrize("slice_env", [PARAMS], indirect=True)
def test_closed_won_deal_is_provisioned_in_the_real_erp_psa_and_crm(slice_env: SliceEnv) -> None:
    """The whole saga on the real Tryton, Redmine and CRM, with the command stages: a step the
    PSA rejects parks the deal naming it; a retry runs it again; the fix in the CRM resumes it
    and the deal completes; the write-back's echo starts nothing."""
    env = slice_env
    k = Kafka(env)
    account, crm_id = "001D" + uuid.uuid4().hex[:6], "006D" + uuid.uuid4().hex[:6]
    key = f"crm:opportunity:{crm_id}"
    cid = correlation_id(key)
    _reference(env, k)
    env.worker().start()
    _deal(env, account, crm_id, pm="nobody@localhost.invalid")

    # The ERP steps pass on Tryton; Redmine refuses a project manager it does not know.
    parked = _wait(
        env,
        lambda: (e := _exception(k, key)) and e["step"] == "psa_project" and e,
        "the PSA step rejected",
        timeout=180,
    )
    assert (parked["reason"], parked["attempt"], parked["status"]) == ("rejected", 1, "open")
    assert "nobody@localhost.invalid" in parked["message"]
    erp = k.commands("erp")
    assert [c["command_id"] for _, c in erp] == [f"{cid}:erp_customer", f"{cid}:erp_project"]
    assert all(m.partition() == erp[0][0].partition() for m, _ in erp)
    assert from_json(CustomerSpec, erp[0][1]["payload"]) == CustomerSpec(
        f"crm:account:{account}", "Acme", "DE811", "DE", "EUR"
    )
    project = from_json(ProjectSpec, erp[1][1]["payload"])
    assert project.key == cid and project.invoice_method == "timesheet"
    assert project.list_price == Decimal("140.00")
    assert [(t.phase, t.name, t.unit_price) for t in project.tasks] == [
        ("Review", "Architecture interviews", Decimal("150.00")),
        ("Review", "Review report", Decimal("150.00")),
        ("Discovery", "Kick-off workshop", Decimal("120.00")),
        ("Discovery", "Current-state assessment", Decimal("120.00")),
        ("Delivery", "Recommendations", Decimal("120.00")),
        ("Delivery", "Executive read-out", Decimal("120.00")),
    ]
    by_step = {r["step"]: r for r in _results(k) if r["status"] == "done"}
    number = json.loads(by_step["erp_project"]["output"])["number"]
    [(_, psa)] = k.commands("psa")
    assert json.loads(psa["payload"])["erp_project_code"] == number
    _wait(
        env,
        lambda: _opportunity_row(env, crm_id)["sync_status__c"] == "exception: rejected",
        "the CRM showing the exception",
    )

    # A retry runs the step again (still refused: the manager is still unknown).
    assert "dry run" in _cli(env, "retry", key)
    assert "retry sent" in _cli(env, "retry", key, "--execute")
    again = _wait(
        env,
        lambda: (e := _exception(k, key)) and e["attempt"] == 2 and e["status"] == "open" and e,
        "the second attempt rejected",
    )
    assert again["step"] == "psa_project"

    # Fixed in the CRM: the PSA step resumes by itself and the deal completes.
    env.crm(
        "UPDATE sales.opportunity SET project_manager_email__c = :pm WHERE id = :id",
        {"pm": PM, "id": crm_id},
    )
    row = _wait(
        env,
        lambda: (r := _opportunity_row(env, crm_id))["sync_status__c"] == "provisioned" and r,
        "the CRM written back",
        timeout=120,
    )
    assert row["project_code__c"] == number and row["psa_project_url__c"]
    assert _exception(k, key)["status"] == "resolved"  # type: ignore[index]
    time.sleep(5)  # the write-back's echo comes back through CDC: it must start nothing
    steps = [(c["step"], c["attempt"]) for t in ("erp", "psa", "crm") for _, c in k.commands(t)]
    assert steps.count(("erp_customer", 1)) == 1 and steps.count(("erp_project", 1)) == 1
    assert [s for s in steps if s[0] == "psa_project"] == [
        ("psa_project", 1),
        ("psa_project", 2),
        ("psa_project", 3),
    ]
    crm = [c["command_id"] for _, c in k.commands("crm")]
    # The status notices of the two exceptions, then the write-back, once.
    assert crm == [
        f"{cid}:crm_writeback:exception:1",
        f"{cid}:crm_writeback:exception:2",
        f"{cid}:crm_writeback",
    ]
    port = int(env.env["PSSYNC_WEB_PORT"])
    assert _metrics(port, "pssync_closed_won_to_psa_project_seconds_count")[0].endswith(" 1.0")


@pytest.mark.parametrize("slice_env", [PARAMS], indirect=True)
def test_invalid_deal_is_parked_and_resumes_when_fixed_in_the_crm(slice_env: SliceEnv) -> None:
    env = slice_env
    k = Kafka(env)
    account, crm_id = "001E" + uuid.uuid4().hex[:6], "006E" + uuid.uuid4().hex[:6]
    key = f"crm:opportunity:{crm_id}"
    _reference(env, k)
    env.worker().start()
    _deal(env, account, crm_id, currency="JPY")

    parked = _wait(env, lambda: _exception(k, key), "the business exception")
    assert (parked["reason"], parked["step"], parked["status"]) == (
        "currency_not_allowed",
        "validate",
        "open",
    )
    assert "JPY" in parked["message"] and "EUR" in parked["message"] and parked["crm_id"] == crm_id
    assert len(parked["line_item_ids"]) == 2
    [(_, notice)] = _wait(env, lambda: k.commands("crm"), "the CRM status notice")
    assert '"sync_status":"exception: currency_not_allowed"' in notice["payload"]
    assert k.commands("erp") == []

    listed = _cli(env, "list")
    assert key in listed and "currency_not_allowed" in listed
    shown = _cli(env, "show", key)
    assert "what to fix" in shown and "JPY" in shown
    port = int(env.env["PSSYNC_WEB_PORT"])
    assert any(
        'reason="currency_not_allowed"' in line and line.endswith(" 1.0")
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
    env.crm("UPDATE sales.opportunity SET currency_iso_code = 'EUR' WHERE id = :id", {"id": crm_id})
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
    _reference(env, k)
    worker = env.worker()
    worker.start()
    _deal(env, account, crm_id)
    # The command stage applies the steps on the real applications; the deal completes.
    _wait(
        env,
        lambda: _opportunity_row(env, crm_id)["sync_status__c"] == "provisioned",
        "the deal provisioned",
        timeout=120,
    )
    results = topology(env.settings).results
    before = {t: [c for _, c in k.commands(t)] for t in ("erp", "psa", "crm")}
    worker.stop()

    # A new host (state restored from the changelogs), and every input read again.
    shutil.rmtree(env.settings.data_dir)
    canonical = topology(env.settings).canonical("opportunity")
    line_topic = topology(env.settings).canonical("opportunity_line_item")
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
    # Nothing at all was issued again.
    assert {t: [c for _, c in k.commands(t)] for t in ("erp", "psa", "crm")} == before
