"""Expenses end to end: Redmine issues of the Expense tracker reach Tryton once approved.

A deal is provisioned the way the saga's tests do it (CRM -> ERP project -> PSA project);
expenses are then entered in its Redmine project through Redmine's REST API, captured by a
PSA connector of the test's own, joined, decided and posted by the real worker, and read
back from Tryton over RPC as the ERP's integration user.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors.debezium import psa_connector
from connectors.erp import TrytonErp
from connectors.erp.tryton import EXPENSE_MARKER
from connectors.kafka_connect import ConnectClient
from schemas.conventions import canonical_id
from streams.admin import delete_topics
from streams.security import kafka_config
from streams.settings import Settings
from streams.topology import topology
from tests.integration.conftest import SliceEnv
from tests.integration.kafka_util import read_all
from tests.integration.test_deal_saga import Kafka, _reference
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

PARAMS = {"PSSYNC_PARTITIONS": "2", "PSSYNC_DEAL_LINE_WAIT": "120", "PSSYNC_EXPENSE_WAIT": "5"}


@pytest.fixture
def psa_api() -> Iterator[httpx.Client]:
    s = Settings.from_env()
    key = s.psa_api_key_file.read_text().strip()
    with httpx.Client(base_url=s.psa_url, headers={"X-Redmine-API-Key": key}, timeout=30) as c:
        yield c


@pytest.fixture
def psa_capture(slice_env: SliceEnv) -> Iterator[SliceEnv]:
    """The sandbox with a PSA connector of its own on Redmine's real database."""
    settings = slice_env.settings
    connector = psa_connector(settings)
    client = ConnectClient(settings.connect_url)
    client.put(connector["name"], connector["config"])
    try:
        client.wait_running(connector["name"], timeout=120)
        yield slice_env
    finally:
        client.delete(connector["name"])
        time.sleep(1)
        _drop_slot_and_publication(settings, settings.psa_db, settings.psa_topic_prefix)
        from confluent_kafka.admin import AdminClient

        prefix = f"{settings.psa_topic_prefix}."
        topics = AdminClient(kafka_config(settings)).list_topics(timeout=10).topics
        delete_topics(settings, [t for t in topics if t.startswith(prefix)])


def _expense_tracker(api: httpx.Client) -> int:
    trackers = api.get("/trackers.json").json()["trackers"]
    return int(next(t["id"] for t in trackers if t["name"] == "Expense"))


def _expense(api: httpx.Client, project_id: int, subject: str, amount: str, approved: bool) -> int:
    """An expense entered in Redmine: the issue, then its fields (found by name on it)."""
    created = api.post(
        "/issues.json",
        json={
            "issue": {
                "project_id": project_id,
                "tracker_id": _expense_tracker(api),
                "subject": subject,
                "start_date": "2026-11-20",
            }
        },
    )
    assert created.status_code == 201, created.text
    issue_id = int(created.json()["issue"]["id"])
    _set_fields(
        api,
        issue_id,
        {
            "Expense amount": amount,
            "Expense currency": "EUR",
            "Expense category": "travel",
            "Billable": "1",
            "Expense approved": "1" if approved else "0",
        },
    )
    return issue_id


def _set_fields(api: httpx.Client, issue_id: int, values: dict[str, str]) -> None:
    issue = api.get(f"/issues/{issue_id}.json").json()["issue"]
    ids = {f["name"]: f["id"] for f in issue.get("custom_fields", [])}
    missing = set(values) - set(ids)
    assert not missing, f"the Expense tracker lacks {missing}: run psa_setup.rb"
    body = {"issue": {"custom_fields": [{"id": ids[n], "value": v} for n, v in values.items()]}}
    answer = api.put(f"/issues/{issue_id}.json", json=body)
    assert answer.status_code == 204, answer.text


def _erp_lines(issue_id: int) -> list[dict[str, Any]]:
    """The ERP's invoice lines of one expense, as the ERP's integration user reads them."""
    key = canonical_id("psa", "issue", str(issue_id))

    async def go() -> list[dict[str, Any]]:
        erp = TrytonErp.from_settings(Settings.from_env())
        try:
            rows = await erp.rpc.model(
                "account.invoice.line",
                "search_read",
                [("note", "like", f"{EXPENSE_MARKER}{key}@%")],
                0,
                None,
                [("id", "ASC")],
                ["note", "quantity", "unit_price", "party", "invoice", "invoice_type"],
            )
            return list(rows)
        finally:
            await erp.aclose()

    return asyncio.run(go())


def _price(line: dict[str, Any]) -> Decimal:
    return Decimal(str(line["unit_price"]["decimal"]))


def _canonical(env: SliceEnv, k: Kafka, entity: str, key: str) -> list[dict[str, Any]]:
    topic = topology(env.settings).canonical(entity)
    return [
        k.decoder.decode(m.value())
        for m in read_all(env.settings, topic)
        if m.key() == key.encode() and m.value() is not None
    ]


def _exceptions(env: SliceEnv, k: Kafka, key: str) -> list[dict[str, Any]]:
    topic = topology(env.settings).exceptions
    return [
        k.decoder.decode(m.value())
        for m in read_all(env.settings, topic)
        if m.key() == key.encode() and m.value() is not None
    ]


@pytest.mark.parametrize("slice_env", [PARAMS], indirect=True)
def test_an_approved_expense_reaches_the_erp_once_and_an_unapproved_one_never(
    psa_capture: SliceEnv, psa_api: httpx.Client
) -> None:
    env = psa_capture
    k = Kafka(env)
    _reference(env, k)
    env.worker().start()
    account, crm_id = _new_id("001E"), _new_id("006E")
    _account(env, account)
    _crm_tx(env, _open_deal(crm_id, account))
    _children_landed(env, [crm_id])
    env.crm(CLOSE_WON, {"id": crm_id})
    code = str(_provisioned(env, crm_id)["project_code__c"])
    [project] = _psa_projects(psa_api, code)
    trackers = psa_api.get(f"/projects/{project['id']}.json", params={"include": "trackers"})
    assert "Expense" in {t["name"] for t in trackers.json()["project"]["trackers"]}

    approved = _expense(psa_api, project["id"], "Flight to the kick-off", "412.30", True)
    unapproved = _expense(psa_api, project["id"], "Taxi, not approved yet", "35.00", False)

    lines = _wait_lines(env, approved, 1)
    [line] = lines
    assert line["quantity"] == 1.0 and _price(line) == Decimal("412.30")
    assert line["invoice_type"] == "out" and line["invoice"] is None
    # The customer re-billed is the project's.
    [published] = [e for e in _canonical(env, k, "project", code) if e["data"]["psa_project_id"]][
        -1:
    ]
    assert published["data"]["customer_id"] == f"crm:account:{account}"
    expense_key = canonical_id("psa", "issue", str(approved))
    events = _canonical(env, k, "expense", expense_key)
    assert events and events[-1]["data"]["approval_state"] == "approved"
    assert events[-1]["data"]["project_id"] == code
    assert events[-1]["data"]["amount"] == Decimal("412.30")
    assert events[-1]["data"]["resource_id"] == "psa:user:pssync"  # who entered it
    assert events[-1]["data"]["customer_id"] == f"crm:account:{account}"
    assert events[-1]["data"]["opportunity_id"] == f"crm:opportunity:{crm_id}"
    cid = published["envelope"]["correlation_id"]
    assert events[-1]["envelope"]["correlation_id"] == cid

    # Exactly once: a restarted worker re-reads nothing into a second line.
    env.workers[0].kill()
    env.workers[0].start()
    time.sleep(15)
    assert len(_erp_lines(approved)) == 1
    assert _erp_lines(unapproved) == []
    assert _canonical(env, k, "expense", canonical_id("psa", "issue", str(unapproved))) == []

    # Approved later: posted then; un-approved after posting: reversed in the ERP.
    _set_fields(psa_api, unapproved, {"Expense approved": "1"})
    assert len(_wait_lines(env, unapproved, 1)) == 1
    _set_fields(psa_api, approved, {"Expense approved": "0"})
    after = _wait_lines(env, approved, 2)
    assert sum(line["quantity"] * float(_price(line)) for line in after) == 0.0
    events = _canonical(env, k, "expense", expense_key)
    assert events[-1]["data"]["approval_state"] == "withdrawn"


@pytest.mark.parametrize("slice_env", [PARAMS], indirect=True)
def test_an_expense_of_an_unknown_project_waits_then_is_an_exception(
    psa_capture: SliceEnv, psa_api: httpx.Client
) -> None:
    env = psa_capture
    k = Kafka(env)
    env.worker().start()
    identifier = f"exp-{uuid.uuid4().hex[:10]}"
    made = psa_api.post(
        "/projects.json",
        json={"project": {"name": f"No deal {identifier}", "identifier": identifier}},
    )
    assert made.status_code == 201, made.text
    project_id = int(made.json()["project"]["id"])
    issue = _expense(psa_api, project_id, "Hotel for a project nobody sold", "99.00", True)
    key = canonical_id("psa", "issue", str(issue))

    def raised() -> bool:
        found = _exceptions(env, k, key)
        return bool(found) and found[-1]["reason"] == "expense.unknown_project"

    env.wait_for(raised, timeout=120, what="the expense.unknown_project exception")
    [exc] = _exceptions(env, k, key)[-1:]
    assert exc["status"] == "open" and exc["saga_key"] == key and exc["step"] == "expense"
    assert _erp_lines(issue) == []


def _wait_lines(env: SliceEnv, issue_id: int, n: int) -> list[dict[str, Any]]:
    found: list[list[dict[str, Any]]] = []

    def enough() -> bool:
        found.append(_erp_lines(issue_id))
        return len(found[-1]) >= n

    env.wait_for(enough, timeout=180, what=f"{n} ERP line(s) of expense {issue_id}")
    return found[-1]
