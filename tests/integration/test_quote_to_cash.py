"""Quote-to-cash end to end: deals closed in the CRM, checked in Tryton, Redmine and the CRM.

Nothing is played by the test: the CRM's rows go through Debezium, normalize, the deal stage
and the command stages to the real applications. Outcomes are read back from the
applications themselves, as their integration users (Tryton's RPC, Redmine's REST API) and
from the CRM's tables; the worker is SIGKILLed while commands are in flight.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from sqlalchemy import create_engine, text

from connectors.erp import TrytonErp
from connectors.erp.tryton import KEY_MARKER
from connectors.psa import psa_identifier
from connectors.psa.redmine import CODE_FIELD
from connectors.sql import db_url
from schemas.conventions import raw_topic
from streams.mappings.envelope import correlation_id
from streams.security import kafka_config
from streams.settings import Settings
from streams.topology import topology
from tests.integration.conftest import SliceEnv
from tests.integration.kafka_util import read_all
from tests.integration.test_deal_saga import (
    ACCOUNT,
    LINE_ITEM,
    PM,
    Kafka,
    _opportunity_row,
    _reference,
    _wait,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PARAMS = {"PSSYNC_PARTITIONS": "2", "PSSYNC_DEAL_LINE_WAIT": "120"}

# Opened first (with its line items and milestones), closed-won by a later update: the deal
# is complete when it closes, as in the CRM's own flow.
OPEN_OPPORTUNITY = (
    "INSERT INTO sales.opportunity (id, account_id, name, stage_name, amount, currency_iso_code, "
    "close_date, billing_type__c, service_lines__c, delivery_region__c, "
    "project_manager_email__c) VALUES (:id, :account, :name, 'Negotiation', 30000, 'EUR', "
    "'2027-02-01', 'Time and Materials', 'ARCH;CONSULT', 'EMEA', :pm)"
)
MILESTONE = (
    "INSERT INTO sales.billing_milestone (id, opportunity_id, name, due_date__c, amount__c, "
    "currency_iso_code) VALUES (:id, :opp, :name, :due, :amount, 'EUR')"
)
CLOSE_WON = (
    "UPDATE sales.opportunity SET stage_name = 'Closed Won', is_closed = true, is_won = true, "
    "last_modified_date = now() WHERE id = :id"
)
MILESTONES = (("Design signed off", "2027-01-29", 10000), ("Go-live", "2027-03-31", 20000))
# The template tasks of ARCH and CONSULT (schemas/reference/default.json), by phase.
WBS = {
    "Review": {"Architecture interviews", "Review report"},
    "Discovery": {"Kick-off workshop", "Current-state assessment"},
    "Delivery": {"Recommendations", "Executive read-out"},
}
TASKS = {t for tasks in WBS.values() for t in tasks}
STEPS = ("erp_customer", "erp_project", "psa_project", "crm_writeback")


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:10]


def _crm_tx(env: SliceEnv, statements: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Several CRM statements in one transaction (one commit, as one CRM save)."""
    engine = create_engine(db_url(env.settings.crm_db))
    try:
        with engine.begin() as conn:
            for sql, params in statements:
                conn.execute(text(sql), params)
    finally:
        engine.dispose()


def _account(env: SliceEnv, account: str) -> None:
    """A CRM account, waited for on the canonical customer topic (the deal stage's view)."""
    env.crm(ACCOUNT, {"id": account, "name": f"Acme {account}"})
    customers = topology(env.settings).canonical("customer")
    key = f"crm:account:{account}".encode()
    env.wait_for(
        lambda: any(m.key() == key for m in read_all(env.settings, customers)),
        what="the canonical customer",
    )


def _open_deal(crm_id: str, account: str) -> list[tuple[str, dict[str, Any]]]:
    """An open opportunity with its line items and billing milestones."""
    rows: list[tuple[str, dict[str, Any]]] = [
        (
            OPEN_OPPORTUNITY,
            {"id": crm_id, "account": account, "name": f"Rollout {crm_id}", "pm": PM},
        )
    ]
    for n, (service, hours, price) in enumerate((("ARCH", 20, 150), ("CONSULT", 10, 120))):
        line = {"id": f"{crm_id[:14]}L{n}", "opp": crm_id, "s": service, "q": hours, "p": price}
        rows.append((LINE_ITEM, {**line, "c": "EUR"}))
    for n, (name, due, amount) in enumerate(MILESTONES):
        row = {"id": f"{crm_id[:14]}M{n}", "opp": crm_id, "name": name, "due": due}
        rows.append((MILESTONE, {**row, "amount": amount}))
    return rows


def _children_landed(env: SliceEnv, crm_ids: Sequence[str]) -> None:
    """Wait until every deal's line items and milestones are canonical events."""
    t = topology(env.settings)
    want = {f"{c[:14]}{s}" for c in crm_ids for s in ("L0", "L1", "M0", "M1")}

    def landed() -> bool:
        seen = set()
        for entity in ("opportunity_line_item", "billing_milestone"):
            for m in read_all(env.settings, t.canonical(entity)):
                seen.add(m.key().decode().rsplit(":", 1)[-1])
        return want <= seen

    env.wait_for(landed, timeout=120, what="the deals' line items and milestones")


def _provisioned(env: SliceEnv, crm_id: str, timeout: float = 180) -> dict[str, Any]:
    row: dict[str, Any] = _wait(
        env,
        lambda: (r := _opportunity_row(env, crm_id))["sync_status__c"] == "provisioned" and r,
        f"deal {crm_id} provisioned",
        timeout=timeout,
    )
    return row


def _account_row(env: SliceEnv, account: str) -> dict[str, Any]:
    engine = create_engine(db_url(env.settings.crm_db))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT * FROM sales.account WHERE id = :id"), {"id": account}
            ).mappings()
            return dict(next(iter(rows)))
    finally:
        engine.dispose()


# -- the applications, as their integration users ------------------------------------------


@dataclass
class ErpFacts:
    parties: list[int]
    projects: list[dict[str, Any]]  # project works carrying the deal's key
    tasks: set[str]  # task names of the (first) project


def _erp_facts(account: str, cid: str) -> ErpFacts:
    async def go() -> ErpFacts:
        erp = TrytonErp.from_settings(Settings.from_env())
        try:
            parties = await erp.rpc.model(
                "party.party", "search", [("code", "=", f"crm:account:{account}")], 0, None, None
            )
            projects = await erp.rpc.model(
                "project.work",
                "search_read",
                [("type", "=", "project"), ("comment", "like", f"%{KEY_MARKER}{cid}%")],
                0,
                None,
                [("id", "ASC")],
                ["id", "number", "party"],
            )
            tasks: set[str] = set()
            if projects:
                children = await erp.rpc.model(
                    "project.work",
                    "search_read",
                    [("parent", "=", projects[0]["id"])],
                    0,
                    None,
                    None,
                    ["name"],
                )
                tasks = {str(c["name"]) for c in children}
            return ErpFacts([int(p) for p in parties], list(projects), tasks)
        finally:
            await erp.aclose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def psa_api() -> Iterator[httpx.Client]:
    s = Settings.from_env()
    key = s.psa_api_key_file.read_text().strip()
    with httpx.Client(base_url=s.psa_url, headers={"X-Redmine-API-Key": key}, timeout=30) as c:
        yield c


def _psa_projects(api: httpx.Client, code: str) -> list[dict[str, Any]]:
    """Every Redmine project carrying an ERP project code (a duplicate would too)."""
    s = Settings.from_env()
    directory = api.get(f"/projects/{s.psa_directory_project}.json").json()["project"]
    [field] = [f["id"] for f in directory["custom_fields"] if f["name"] == CODE_FIELD]
    listed = api.get("/projects.json", params={f"cf_{field}": code, "limit": 100}).json()
    return list(listed["projects"])


def _assert_psa_project(api: httpx.Client, code: str) -> dict[str, Any]:
    [project] = _psa_projects(api, code)
    assert project["identifier"] == psa_identifier(code)
    pid = project["id"]
    issues = api.get(
        "/issues.json", params={"project_id": pid, "status_id": "*", "limit": 100}
    ).json()["issues"]
    parents = {i["subject"]: i["id"] for i in issues if "parent" not in i}
    assert set(parents) == set(WBS)
    children = {(i["parent"]["id"], i["subject"]) for i in issues if "parent" in i}
    assert children == {(parents[phase], t) for phase, tasks in WBS.items() for t in tasks}
    versions = api.get(f"/projects/{pid}/versions.json").json()["versions"]
    assert sorted((v["name"], v["due_date"]) for v in versions) == [
        (name, due) for name, due, _ in MILESTONES
    ]
    members = api.get(f"/projects/{pid}/memberships.json", params={"limit": 100}).json()
    roles = {
        (m.get("user") or m.get("group"))["name"]: {r["name"] for r in m["roles"]}
        for m in members["memberships"]
    }
    assert "Manager" in roles["Demo Project Manager"]
    return project


def _writebacks(env: SliceEnv, crm_id: str) -> int:
    """How many CRM changes of the opportunity turned it to provisioned (its CDC)."""
    topic = raw_topic(env.settings.crm_topic_prefix, "sales", "opportunity")
    count = 0
    for m in read_all(env.settings, topic):
        if m.value() is None:
            continue
        change = json.loads(m.value())  # Debezium's JSON change event
        before, after = change.get("before") or {}, change.get("after") or {}
        if after.get("id") == crm_id and after.get("sync_status__c") == "provisioned":
            count += before.get("sync_status__c") != "provisioned"
    return count


def _assert_provisioned_once(
    env: SliceEnv, api: httpx.Client, account: str, crm_id: str
) -> tuple[ErpFacts, dict[str, Any]]:
    """The deal's outcome in all three applications, each thing exactly once."""
    cid = correlation_id(f"crm:opportunity:{crm_id}")
    row = _provisioned(env, crm_id)
    erp = _erp_facts(account, cid)
    assert len(erp.parties) == 1, erp.parties
    [project] = erp.projects
    assert project["party"] == erp.parties[0]
    assert erp.tasks == TASKS
    number = str(project["number"])
    assert row["project_code__c"] == number
    psa = _assert_psa_project(api, number)
    assert row["psa_project_url__c"].endswith(f"/projects/{psa['identifier']}")
    assert _account_row(env, account)["erp_customer_id__c"] == str(erp.parties[0])
    # The write-back's own change data, once it is captured: one change, not two.
    env.wait_for(lambda: _writebacks(env, crm_id) > 0, timeout=60, what="the write-back's CDC")
    assert _writebacks(env, crm_id) == 1
    return erp, psa


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("slice_env", [PARAMS], indirect=True)
def test_deal_is_provisioned_and_a_second_deal_reuses_the_customer(
    slice_env: SliceEnv, psa_api: httpx.Client
) -> None:
    env = slice_env
    k = Kafka(env)
    _reference(env, k)
    env.worker().start()
    account, first, second = _new_id("001H"), _new_id("006H"), _new_id("006I")
    _account(env, account)
    _crm_tx(env, _open_deal(first, account) + _open_deal(second, account))
    _children_landed(env, [first, second])

    env.crm(CLOSE_WON, {"id": first})
    erp, _ = _assert_provisioned_once(env, psa_api, account, first)

    # The same account's next deal: the party is found by its code, not made again.
    env.crm(CLOSE_WON, {"id": second})
    erp2, _ = _assert_provisioned_once(env, psa_api, account, second)
    assert erp2.parties == erp.parties
    assert erp2.projects[0]["number"] != erp.projects[0]["number"]


@pytest.mark.parametrize("slice_env", [PARAMS], indirect=True)
def test_two_deals_of_a_new_account_closed_together_make_one_party(
    slice_env: SliceEnv, psa_api: httpx.Client
) -> None:
    env = slice_env
    k = Kafka(env)
    _reference(env, k)
    env.worker().start()
    account = _new_id("001T")
    deals = [_new_id("006T"), _new_id("006U")]
    _account(env, account)
    _crm_tx(env, _open_deal(deals[0], account) + _open_deal(deals[1], account))
    _children_landed(env, deals)

    _crm_tx(env, [(CLOSE_WON, {"id": d}) for d in deals])  # one commit closes both
    facts = [_assert_provisioned_once(env, psa_api, account, d)[0] for d in deals]
    assert facts[0].parties == facts[1].parties
    erp_commands = [c for _, c in k.commands("erp") if c["step"] == "erp_customer"]
    assert len({c["command_id"] for c in erp_commands}) == 2  # both deals asked for it


class CommandWatch:
    """Follows the command topics from their start, polling fast."""

    def __init__(self, env: SliceEnv) -> None:
        self.k = Kafka(env)
        t = topology(env.settings)
        self.consumer = Consumer(
            kafka_config(
                env.settings,
                **{"group.id": f"watch-{uuid.uuid4()}", "enable.auto.commit": False},
            )
        )
        parts = []
        for target in ("erp", "psa", "crm"):
            topic = t.commands(target)
            md = self.consumer.list_topics(topic, timeout=10).topics[topic]
            parts += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions]
        self.consumer.assign(parts)

    def wait(self, command_id: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.02)
            if msg is None or msg.error():
                continue
            if self.k.decoder.decode(msg.value())["command_id"] == command_id:
                return
        raise AssertionError(f"no command {command_id} within {timeout}s")

    def close(self) -> None:
        self.consumer.close()


@pytest.mark.parametrize("slice_env", [PARAMS], indirect=True)
def test_worker_killed_at_each_saga_step_leaves_one_of_everything(
    slice_env: SliceEnv, psa_api: httpx.Client
) -> None:
    env = slice_env
    k = Kafka(env)
    _reference(env, k)
    worker = env.worker()
    worker.start()
    # A new account per deal: the customer step really creates a party each time.
    deals = {step: (_new_id("001K"), _new_id("006K")) for step in STEPS}
    for account, _ in deals.values():
        _account(env, account)
    _crm_tx(env, [row for account, crm_id in deals.values() for row in _open_deal(crm_id, account)])
    _children_landed(env, [crm_id for _, crm_id in deals.values()])

    watch = CommandWatch(env)
    try:
        for step, (account, crm_id) in deals.items():
            cid = correlation_id(f"crm:opportunity:{crm_id}")
            env.crm(CLOSE_WON, {"id": crm_id})
            watch.wait(f"{cid}:{step}")
            worker.kill()  # the command is on its topic; applied or not, nobody knows
            worker.start()
            _assert_provisioned_once(env, psa_api, account, crm_id)
    finally:
        watch.close()
