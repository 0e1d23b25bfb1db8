"""Change orders on the real stack: a provisioned deal amended in Tryton, Redmine and the CRM.

A deal goes the whole way (CRM -> Debezium -> the deal stage -> the command stages -> Tryton,
Redmine, the CRM) and is provisioned; then a change order naming it is closed won in the CRM.
The amended baseline is read back from the applications through their APIs, as their
integration users, and the canonical contract amendment is decoded through the registry. A
change order naming a deal nobody knows waits, then becomes a business exception.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors.erp import TrytonErp
from connectors.erp.tryton import AMENDMENT_MARKER, KEY_MARKER
from streams.mappings.envelope import correlation_id
from streams.settings import Settings
from streams.topology import topology
from tests.integration.conftest import SliceEnv
from tests.integration.kafka_util import read_all
from tests.integration.test_deal_saga import (
    LINE_ITEM,
    Kafka,
    _exception,
    _metrics,
    _reference,
    _wait,
)
from tests.integration.test_quote_to_cash import (
    CLOSE_WON,
    MILESTONE,
    _account,
    _children_landed,
    _crm_tx,
    _new_id,
    _open_deal,
    _opportunity_row,
    _provisioned,
    _psa_projects,
    psa_api,  # noqa: F401 - the fixture
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PARAMS = {
    "PSSYNC_PARTITIONS": "2",
    "PSSYNC_DEAL_LINE_WAIT": "120",
    "PSSYNC_CHANGE_ORDER_WAIT": "5",
}

CHANGE_ORDER = (
    "INSERT INTO sales.opportunity (id, account_id, name, stage_name, amount, currency_iso_code, "
    "close_date, billing_type__c, service_lines__c, delivery_region__c, type, "
    "parent_opportunity_id, is_closed, is_won) VALUES (:id, :account, :name, 'Closed Won', "
    ":amount, 'EUR', '2027-04-01', 'Time and Materials', 'CONSULT;PM', 'EMEA', 'Change Order', "
    ":parent, true, true)"
)
# The change order sells 39 more CONSULT hours (spread over its template's four tasks by
# their template hours 8:24:40:6) and 10 PM hours (a service line new to the project: its
# template's tasks are new tasks), and adds a milestone.
CO_LINES = (("CONSULT", 39, 130), ("PM", 10, 100))
CO_MILESTONE = ("Phase 2 sign-off", "2027-05-31", 6070)
# Hours of the provisioned deal (ARCH 16+16, CONSULT 8+24+40+6) and what the change order adds.
HOURS_BEFORE = Decimal(110)
HOURS_AFTER = HOURS_BEFORE + 39 + 10
CONSULT_AFTER = {
    "Kick-off workshop": Decimal("12.00"),
    "Current-state assessment": Decimal("36.00"),
    "Recommendations": Decimal("60.00"),
    "Executive read-out": Decimal("9.00"),
}
PM_TASKS = {"Steering committees": Decimal("4.00"), "Status reporting": Decimal("6.00")}


def _change_order(crm_id: str, account: str, parent: str) -> list[tuple[str, dict[str, Any]]]:
    rows: list[tuple[str, dict[str, Any]]] = [
        (
            CHANGE_ORDER,
            {
                "id": crm_id,
                "account": account,
                "name": f"Phase 2 {crm_id}",
                "amount": 6070,
                "parent": parent,
            },
        )
    ]
    for n, (service, hours, price) in enumerate(CO_LINES):
        line = {"id": f"{crm_id[:14]}L{n}", "opp": crm_id, "s": service, "q": hours, "p": price}
        rows.append((LINE_ITEM, {**line, "c": "EUR"}))
    name, due, amount = CO_MILESTONE
    row = {"id": f"{crm_id[:14]}M0", "opp": crm_id, "name": name, "due": due}
    rows.append((MILESTONE, {**row, "amount": amount}))
    return rows


@dataclass
class ErpProjectNow:
    number: str
    list_price: Decimal
    comment: str
    efforts: dict[str, Decimal]  # task name -> effort hours


def _hours(value: Any) -> Decimal:
    if isinstance(value, dict):  # {"__class__": "timedelta", "seconds": ...}
        seconds = float(value.get("seconds", 0))
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    else:
        seconds = float(value or 0)
    return (Decimal(str(seconds)) / 3600).quantize(Decimal("0.01"))


def _erp_project(cid: str) -> ErpProjectNow:
    async def go() -> ErpProjectNow:
        erp = TrytonErp.from_settings(Settings.from_env())
        try:
            [project] = await erp.rpc.model(
                "project.work",
                "search_read",
                [("type", "=", "project"), ("comment", "like", f"%{KEY_MARKER}{cid}%")],
                0,
                None,
                None,
                ["id", "number", "list_price", "comment"],
            )
            tasks = await erp.rpc.model(
                "project.work",
                "search_read",
                [("parent", "=", project["id"])],
                0,
                None,
                None,
                ["name", "effort_duration"],
            )
            price = project["list_price"]
            return ErpProjectNow(
                number=str(project["number"]),
                list_price=Decimal(str(price.get("decimal") if isinstance(price, dict) else price)),
                comment=str(project["comment"] or ""),
                efforts={str(t["name"]): _hours(t["effort_duration"]) for t in tasks},
            )
        finally:
            await erp.aclose()

    return asyncio.run(go())


def _contract_events(k: Kafka, key: str) -> list[dict[str, Any]]:
    topic = topology(k.settings).canonical("contract")
    return [
        k.decoder.decode(m.value())
        for m in read_all(k.settings, topic)
        if m.key() == key.encode() and m.value() is not None
    ]


@pytest.mark.parametrize("slice_env", [PARAMS], indirect=True)
def test_change_order_amends_the_erp_and_psa_baseline(
    slice_env: SliceEnv,
    psa_api: httpx.Client,  # noqa: F811 - the fixture
) -> None:
    env = slice_env
    k = Kafka(env)
    _reference(env, k)
    env.worker().start()
    account, deal = _new_id("001C"), _new_id("006C")
    parent_key = f"crm:opportunity:{deal}"
    cid = correlation_id(parent_key)
    _account(env, account)
    _crm_tx(env, _open_deal(deal, account))
    _children_landed(env, [deal])
    env.crm(CLOSE_WON, {"id": deal})
    row = _provisioned(env, deal)
    code = str(row["project_code__c"])
    before = _erp_project(cid)
    assert sum(before.efforts.values()) == HOURS_BEFORE
    assert AMENDMENT_MARKER not in before.comment

    # The change order, closed won in one CRM save with its line items and milestone.
    change = _new_id("006O")
    _crm_tx(env, _change_order(change, account, deal))
    status = _wait(
        env,
        lambda: (
            (s := _opportunity_row(env, change)["sync_status__c"] or "").startswith("amendment")
            and s
        ),
        "the change order's CRM status",
        timeout=180,
    )
    assert status == f"amendment 1 of {code} applied"
    assert _opportunity_row(env, change)["project_code__c"] == code
    assert _opportunity_row(env, deal)["sync_status__c"] == "provisioned"  # not a new deal

    # Tryton: the same project, with the amended efforts, new tasks and list price.
    after = _erp_project(cid)
    assert after.number == code
    assert f"{AMENDMENT_MARKER}1 crm:opportunity:{change}" in after.comment
    assert sum(after.efforts.values()) == HOURS_AFTER
    for name, hours in {**CONSULT_AFTER, **PM_TASKS}.items():
        assert after.efforts[name] == hours, name
    # (20 h x 150 + 10 h x 120 + 39 h x 130 + 10 h x 100) / 79 h
    assert after.list_price == Decimal("130.00")

    # Redmine: the one project, new WBS issues and estimates, the new milestone's version.
    [project] = _psa_projects(psa_api, code)
    issues = psa_api.get(
        "/issues.json", params={"project_id": project["id"], "status_id": "*", "limit": 100}
    ).json()["issues"]
    estimates = {
        i["subject"]: Decimal(str(i["estimated_hours"])).quantize(Decimal("0.01"))
        for i in issues
        if "parent" in i
    }
    for name, hours in {**CONSULT_AFTER, **PM_TASKS}.items():
        assert estimates[name] == hours, name
    assert "Governance" in {i["subject"] for i in issues if "parent" not in i}
    versions = psa_api.get(f"/projects/{project['id']}/versions.json").json()["versions"]
    assert (CO_MILESTONE[0], CO_MILESTONE[1]) in {(v["name"], v["due_date"]) for v in versions}

    # The canonical contract amendment, decoded through the registry.
    events = _contract_events(k, f"crm:contract:{deal}")
    [amended] = [e for e in events if e["data"].get("amendment")]
    data, a = amended["data"], amended["data"]["amendment"]
    assert str(amended["envelope"]["correlation_id"]) == cid
    assert data["total_value"] == Decimal("36070.00")
    assert (a["number"], a["change_order_id"], a["project_code"]) == (
        1,
        f"crm:opportunity:{change}",
        code,
    )
    assert a["previous_baseline"]["total_value"] == Decimal("30000.00")
    assert a["new_baseline"]["total_value"] == Decimal("36070.00")
    assert (a["previous_baseline"]["hours"], a["new_baseline"]["hours"]) == (
        HOURS_BEFORE,
        HOURS_AFTER,
    )
    assert CO_MILESTONE[0] in {m["name"] for m in a["new_baseline"]["milestones"]}
    assert set(a["changed"]) == {"amount", "list_price", "hours", "tasks", "milestones"}
    assert a["applied_at"] >= a["requested_at"]

    # The project again, with its amended budget and billing schedule.
    projects = [
        k.decoder.decode(m.value())["data"]
        for m in read_all(k.settings, topology(k.settings).canonical("project"))
        if m.key() == code.encode()
    ]
    assert projects[-1]["budget_amount"] == Decimal("36070.00")
    assert CO_MILESTONE[0] in {b["description"] for b in projects[-1]["billing_schedule"]}

    applied = _metrics(int(env.env["PSSYNC_WEB_PORT"]), "pssync_change_orders_applied_total")
    assert 'pssync_change_orders_applied_total{baseline_changed="yes",kind="change_order"} 1.0' in (
        applied
    )

    # The won deal itself edited in the CRM (value, a milestone's date): an amendment too.
    _crm_tx(
        env,
        [
            (
                "UPDATE sales.opportunity SET amount = 40000, last_modified_date = now() "
                "WHERE id = :id",
                {"id": deal},
            ),
            (
                "UPDATE sales.billing_milestone SET due_date__c = '2027-04-30', "
                "last_modified_date = now() WHERE id = :id",
                {"id": f"{deal[:14]}M1"},
            ),
        ],
    )

    def edited() -> dict[str, Any] | None:
        amended = [e for e in _contract_events(k, f"crm:contract:{deal}") if e["data"]["amendment"]]
        last = max(amended, key=lambda e: int(e["data"]["amendment"]["number"]))
        new = last["data"]["amendment"]["new_baseline"]
        moved = ("Go-live", date(2027, 4, 30)) in {
            (m["name"], m["due_date"]) for m in new["milestones"]
        }
        return last if new["total_value"] == Decimal("46070.00") and moved else None

    last = _wait(env, edited, "the amendment of the edited deal", timeout=120)["data"]["amendment"]
    assert last["number"] >= 2 and last["change_order_id"] is None
    assert last["change_order_crm_id"] == deal
    versions = psa_api.get(f"/projects/{project['id']}/versions.json").json()["versions"]
    assert ("Go-live", "2027-04-30") in {(v["name"], v["due_date"]) for v in versions}
    _wait(
        env,
        lambda: (_opportunity_row(env, deal)["sync_status__c"] or "").startswith(
            "provisioned, amendment"
        ),
        "the deal's CRM status after its amendment",
    )

    # The trace of the deal shows the amendments' commands and answers.
    trace = subprocess.run(
        [sys.executable, "-m", "streams.cli", "trace", deal],
        env=env.env,
        capture_output=True,
        text=True,
    )
    assert trace.returncode == 0, trace.stderr
    for hop in ("erp amendment", "psa amendment", "crm change order"):
        assert hop in trace.stdout, trace.stdout

    # The monitor reports the change order that moved the project's baseline, and does not
    # take the change order for a closed-won deal without a project.
    monitor = subprocess.run(
        [sys.executable, "-m", "streams.cli", "monitor", "--json"],
        env=env.env,
        capture_output=True,
        text=True,
    )
    assert monitor.returncode == 0, monitor.stderr
    report = {m["name"]: m for m in json.loads(monitor.stdout)["monitors"]}
    changes = {f["key"]: f for f in report["baseline_changes"]["findings"]}
    assert changes[f"{code}#1"]["ids"]["crm_opportunity"] == change
    assert "30000.00 -> 36070.00 EUR" in changes[f"{code}#1"]["summary"]
    assert f"{code}#{last['number']}" in changes
    without = report["deals_without_project"]["findings"]
    assert change not in {f["ids"]["crm_opportunity"] for f in without}

    # A change order naming a deal nobody knows waits, then is an exception on its own key.
    orphan = _new_id("006X")
    _crm_tx(env, _change_order(orphan, account, _new_id("006Z")))
    raised = _wait(
        env,
        lambda: _exception(k, f"crm:opportunity:{orphan}"),
        "the orphan change order's exception",
        timeout=120,
    )
    assert (raised["reason"], raised["status"]) == ("change_order.unknown_parent", "open")
    assert raised["crm_id"] == orphan
    _wait(
        env,
        lambda: (
            _opportunity_row(env, orphan)["sync_status__c"]
            == "exception: change_order.unknown_parent"
        ),
        "the orphan change order's CRM status",
    )
