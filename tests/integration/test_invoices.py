"""Invoices and revenue back: a deal provisioned by the saga is invoiced in Tryton, and its
invoices reach the CRM opportunity and the Redmine project.

Everything is real: the deal closes in the CRM and is provisioned through the saga; finance
invoices the project in Tryton through its RPC as the admin (tests/erp_finance.py); the
ERP's invoice tables reach pssync through the sandbox's own Debezium connector on the ERP's
database; the results are read from the CRM's table and Redmine's REST API.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from connectors.debezium import erp_connector
from connectors.kafka_connect import ConnectClient
from connectors.psa.redmine import INVOICED_FIELD, REVENUE_FIELD
from schemas.conventions import raw_topic
from streams.admin import delete_topics
from streams.mappings.envelope import correlation_id
from streams.security import kafka_config
from streams.settings import Settings
from streams.topology import topology
from tests.erp_finance import Finance
from tests.integration.conftest import SliceEnv
from tests.integration.kafka_util import read_all
from tests.integration.test_deal_saga import Kafka, _opportunity_row, _reference, _wait
from tests.integration.test_erp_psa_capture import _drop_slot_and_publication
from tests.integration.test_quote_to_cash import (
    CLOSE_WON,
    _account,
    _children_landed,
    _crm_tx,
    _new_id,
    _open_deal,
    _provisioned,
    _psa_projects,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PARAMS = {"PSSYNC_PARTITIONS": "2", "PSSYNC_DEAL_LINE_WAIT": "120"}
FIXED_FEE = "UPDATE sales.opportunity SET billing_type__c = 'Fixed Fee' WHERE id = :id"
MILESTONE_BILLED = "UPDATE sales.opportunity SET billing_type__c = 'Milestone' WHERE id = :id"


@pytest.fixture
def erp_capture(slice_env: SliceEnv) -> Iterator[SliceEnv]:
    """The sandbox's own Debezium connector on the ERP's database (its own slot, topics)."""
    settings = slice_env.settings
    connector = erp_connector(settings)
    client = ConnectClient(settings.connect_url)
    client.put(connector["name"], connector["config"])
    try:
        client.wait_running(connector["name"], timeout=120)
        yield slice_env
    finally:
        for w in slice_env.workers:
            w.stop()
        client.delete(connector["name"])
        time.sleep(1)
        _drop_slot_and_publication(settings, settings.erp_db, settings.erp_topic_prefix)
        topics = AdminClient(kafka_config(settings)).list_topics(timeout=10).topics
        mine = [t for t in topics if t.startswith(f"{settings.erp_topic_prefix}.")]
        if mine:
            delete_topics(settings, mine)


@pytest.fixture(scope="module")
def psa_api() -> Iterator[httpx.Client]:
    s = Settings.from_env()
    key = s.psa_api_key_file.read_text().strip()
    with httpx.Client(base_url=s.psa_url, headers={"X-Redmine-API-Key": key}, timeout=30) as c:
        yield c


def _psa_financials(api: httpx.Client, code: str) -> dict[str, Decimal | None]:
    [listed] = _psa_projects(api, code)
    project = api.get(f"/projects/{listed['id']}.json").json()["project"]
    values = {f["name"]: f.get("value") for f in project.get("custom_fields", [])}
    return {
        name: Decimal(str(values[name])) if values.get(name) not in (None, "") else None
        for name in (INVOICED_FIELD, REVENUE_FIELD)
    }


def _crm_invoicing(env: SliceEnv, crm_id: str) -> tuple[Any, ...]:
    row = _opportunity_row(env, crm_id)
    return (
        row["invoiced_to_date__c"],
        row["last_invoice_number__c"],
        row["last_invoice_status__c"],
        row["payment_status__c"],
    )


def _invoice_writes(env: SliceEnv, crm_id: str) -> list[tuple[Any, ...]]:
    """The CRM's change data of the opportunity's invoicing fields: one per write."""
    topic = raw_topic(env.settings.crm_topic_prefix, "sales", "opportunity")
    fields = (
        "invoiced_to_date__c",
        "last_invoice_number__c",
        "last_invoice_status__c",
        "payment_status__c",
    )
    out = []
    for m in read_all(env.settings, topic):
        if m.value() is None:
            continue
        change = json.loads(m.value())
        before, after = change.get("before") or {}, change.get("after") or {}
        if after.get("id") != crm_id:
            continue
        now = tuple(after.get(f) for f in fields)
        if now != tuple(before.get(f) for f in fields):
            out.append(now)
    return out


def _commands(k: Kafka, step: str) -> list[dict[str, Any]]:
    return [
        c for _, c in k.commands("crm" if step.startswith("crm") else "psa") if c["step"] == step
    ]


@pytest.mark.parametrize("slice_env", [PARAMS], indirect=True)
def test_invoices_posted_paid_and_credited_reach_the_crm_and_the_psa(
    erp_capture: SliceEnv, psa_api: httpx.Client
) -> None:
    env = erp_capture
    k = Kafka(env)
    _reference(env, k)
    worker = env.worker()
    worker.start()
    account, crm_id = _new_id("001V"), _new_id("006V")
    _account(env, account)
    _crm_tx(env, [*_open_deal(crm_id, account), (FIXED_FEE, {"id": crm_id})])
    _children_landed(env, [crm_id])
    env.crm(CLOSE_WON, {"id": crm_id})
    code = str(_provisioned(env, crm_id)["project_code__c"])
    cid = correlation_id(f"crm:opportunity:{crm_id}")
    finance = Finance(env.settings)

    def crm_shows(want: tuple[Any, ...], what: str) -> None:
        _wait(env, lambda: _crm_invoicing(env, crm_id) == want, what, timeout=90)

    def psa_shows(amount: Decimal, what: str) -> None:
        want = {INVOICED_FIELD: amount, REVENUE_FIELD: amount}
        _wait(env, lambda: _psa_financials(psa_api, code) == want, what, timeout=90)

    # 1. The first phase's work is invoiced and posted: the CRM and the PSA hear of it.
    finance.finish_tasks(code, {"Architecture interviews", "Review report"})
    first = finance.invoice_project(code)
    a = finance.post(first)
    assert a["state"] == "posted"
    crm_shows((a["untaxed"], a["number"], "posted", "unpaid"), "invoice A posted in the CRM")
    psa_shows(a["untaxed"], "invoice A in the PSA")

    # 2. It is paid.
    assert finance.pay(first) == "paid"
    crm_shows((a["untaxed"], a["number"], "paid", "paid"), "invoice A paid in the CRM")

    # 3. A second invoice is posted: invoiced to date grows, one of two is paid.
    finance.finish_tasks(code, {"Kick-off workshop"})
    second = finance.invoice_project(code)
    b = finance.post(second)
    total = a["untaxed"] + b["untaxed"]
    crm_shows((total, b["number"], "posted", "partially_paid"), "invoice B posted in the CRM")
    psa_shows(total, "invoices A and B in the PSA")

    # 4. Finance cancels it with a refunding credit note: the invoice is cancelled, the credit
    # note is its cancellation; what A billed remains, and it is paid.
    note = finance.credit(second)
    assert finance.state(second)["state"] == "cancelled"
    crm_shows((a["untaxed"], b["number"], "cancelled", "paid"), "invoice B cancelled in the CRM")
    psa_shows(a["untaxed"], "the cancellation in the PSA")

    # Canonical events carry the deal's correlation id and the project.
    t = topology(env.settings)
    invoices = [k.decoder.decode(m.value()) for m in read_all(env.settings, t.canonical("invoice"))]
    mine = [r for r in invoices if r["data"] and r["data"]["project_id"] == code]
    assert {r["data"]["erp_id"] for r in mine} >= {str(first), str(second), str(note)}
    assert all(str(r["envelope"]["correlation_id"]) == cid for r in mine)
    revenue = [
        k.decoder.decode(m.value())
        for m in read_all(env.settings, t.canonical("revenue_schedule"))
        if m.key() == code.encode()
    ]
    assert revenue[-1]["data"]["recognized_amount"] == a["untaxed"]
    assert revenue[-1]["data"]["revenue_rule"] == "as_billed"

    # Each write-back changed something: no write repeated a value, no echo re-provisioned.
    writes = _invoice_writes(env, crm_id)
    assert all(x != y for x, y in itertools.pairwise(writes)), writes
    payloads = [c["payload"] for c in _commands(k, "crm_invoice_status")]
    assert len({c["command_id"] for c in _commands(k, "crm_invoice_status")}) == len(payloads)
    # The write-backs' own change data is an echo: the deal's saga wrote back once, and the
    # invoice writes never started it again.
    saga_writebacks = {
        c["command_id"] for c in _commands(k, "crm_writeback") if c["saga_key"].endswith(crm_id)
    }
    assert len(saga_writebacks) == 1, saga_writebacks

    # A worker killed and restarted reads uncommitted records again: nothing new is sent.
    sent = len(payloads) + len(_commands(k, "psa_financials"))
    worker.kill()
    worker.start()
    time.sleep(10)
    again = len(_commands(k, "crm_invoice_status")) + len(_commands(k, "psa_financials"))
    assert again == sent
    assert _crm_invoicing(env, crm_id)[0] == a["untaxed"]


@pytest.mark.parametrize("slice_env", [PARAMS], indirect=True)
def test_a_time_and_materials_invoice_finds_its_project_through_timesheets(
    erp_capture: SliceEnv, psa_api: httpx.Client
) -> None:
    """Invoiced on timesheets: the invoice line bills timesheet lines, whose timesheet work
    was made for a task of the deal's project."""
    env = erp_capture
    k = Kafka(env)
    _reference(env, k)
    env.worker().start()
    account, crm_id = _new_id("001W"), _new_id("006W")
    _account(env, account)
    _crm_tx(env, _open_deal(crm_id, account))  # time and materials
    _children_landed(env, [crm_id])
    env.crm(CLOSE_WON, {"id": crm_id})
    code = str(_provisioned(env, crm_id)["project_code__c"])
    finance = Finance(env.settings)

    finance.log_time(code, "Kick-off workshop", 3)
    finance.log_time(code, "Recommendations", 2)
    invoice = finance.invoice_project(code)
    posted = finance.post(invoice)
    want = (posted["untaxed"], posted["number"], "posted", "unpaid")
    _wait(env, lambda: _crm_invoicing(env, crm_id) == want, "the T&M invoice in the CRM", 90)
    amount = posted["untaxed"]
    _wait(
        env,
        lambda: _psa_financials(psa_api, code) == {INVOICED_FIELD: amount, REVENUE_FIELD: amount},
        "the T&M invoice in the PSA",
        90,
    )
    latest = {  # each line's newest event (the topic is compacted, not yet compacted)
        m.key(): k.decoder.decode(m.value())["data"]
        for m in read_all(env.settings, topology(env.settings).canonical("billing_event"))
    }
    mine = [e for e in latest.values() if e and e["invoice_id"] == f"erp:invoice:{invoice}"]
    assert {e["kind"] for e in mine} == {"time"}
    assert sum(e["amount"] for e in mine) == amount


@pytest.mark.parametrize("slice_env", [PARAMS], indirect=True)
def test_a_milestone_deal_invoiced_on_progress_reaches_the_crm_and_the_psa(
    erp_capture: SliceEnv, psa_api: httpx.Client
) -> None:
    """A milestone deal's project is invoiced on progress: the invoice line bills the progress
    invoiced on a task (Tryton's project_work_invoiced_progress), not the task itself."""
    env = erp_capture
    k = Kafka(env)
    _reference(env, k)
    env.worker().start()
    account, crm_id = _new_id("001X"), _new_id("006X")
    _account(env, account)
    _crm_tx(env, [*_open_deal(crm_id, account), (MILESTONE_BILLED, {"id": crm_id})])
    _children_landed(env, [crm_id])
    env.crm(CLOSE_WON, {"id": crm_id})
    code = str(_provisioned(env, crm_id)["project_code__c"])
    cid = correlation_id(f"crm:opportunity:{crm_id}")
    finance = Finance(env.settings)
    assert finance.invoice_method(code) == "progress"

    def shows(amount: Decimal, number: str, what: str) -> None:
        want = (amount, number, "posted", "unpaid")
        _wait(env, lambda: _crm_invoicing(env, crm_id) == want, f"{what} in the CRM", 90)
        psa = {INVOICED_FIELD: amount, REVENUE_FIELD: amount}
        _wait(env, lambda: _psa_financials(psa_api, code) == psa, f"{what} in the PSA", 90)

    # Half of a task is done: its first invoice bills that half.
    finance.advance_tasks(code, {"Architecture interviews"}, 0.5)
    first = finance.invoice_project(code)
    assert finance.invoiced_progress(first) == [("Architecture interviews", 0.5, False)]
    a = finance.post(first)
    shows(a["untaxed"], a["number"], "the first progress invoice")

    # The task is finished: the next invoice bills the other half, on the same work.
    finance.advance_tasks(code, {"Architecture interviews"}, 1.0)
    second = finance.invoice_project(code)
    assert finance.invoiced_progress(second) == [("Architecture interviews", 0.5, False)]
    b = finance.post(second)
    shows(a["untaxed"] + b["untaxed"], b["number"], "the second progress invoice")

    t = topology(env.settings)
    # Each invoice's newest event: one may first be published before the view naming its
    # line's progress row has caught up (no project yet), then again once it has.
    newest = {
        m.key(): k.decoder.decode(m.value()) for m in read_all(env.settings, t.canonical("invoice"))
    }
    mine = [
        r for r in newest.values() if r["data"] and r["data"]["erp_id"] in {str(first), str(second)}
    ]
    assert len(mine) == 2 and all(r["data"]["project_id"] == code for r in mine)
    assert all(str(r["envelope"]["correlation_id"]) == cid for r in mine)
    latest = {  # each line's newest event
        m.key(): k.decoder.decode(m.value())["data"]
        for m in read_all(env.settings, t.canonical("billing_event"))
    }
    billed = [
        e
        for e in latest.values()
        if e and e["invoice_id"] in {f"erp:invoice:{first}", f"erp:invoice:{second}"}
    ]
    assert {e["kind"] for e in billed} == {"milestone"}
    assert sum(e["amount"] for e in billed) == a["untaxed"] + b["untaxed"]
