"""Approved time end to end on the real stack: a deal closed won in the CRM is provisioned in
Tryton and Redmine by the saga; time logged in Redmine (REST, as the integration user) goes
through Debezium, the time entry stage and the posting queue to Tryton timesheet lines.

Only approved entries post; an approval withdrawn after posting removes the line; an entry
edited after finance invoiced it (the administrator, through the project's Invoice button)
leaves the line alone and opens `time_entry.invoiced` on exceptions.business.

The run deploys its own ERP and PSA connectors (names, slots, publications, topic prefixes)
and its own connector secrets file, as test_erp_psa_capture does.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from connectors.debezium import erp_connector, psa_connector
from connectors.erp import TrytonErp
from connectors.kafka_connect import ConnectClient
from schemas.registry import Registry
from schemas.serde import Decoder
from streams.admin import delete_topics
from streams.demo_apps import (
    Redmine,
    cost_price,
    ensure_employee,
    invoice_project,
    timesheet_lines,
)
from streams.demo_apps import run_erp as _erp
from streams.mappings.envelope import correlation_id
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
)
from tests.sandbox import Worker, create_sandbox, destroy_sandbox

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PERSON = "psa:user:pssync"  # the PSA integration user books the time in this test


@contextmanager
def capture_sandbox(tmp: Path, extra: dict[str, str]) -> Iterator[SliceEnv]:
    """A sandbox (own CRM database, topics, namespace, group, connector secrets file) whose
    own ERP and PSA connectors capture the stack's `erp` and `psa` databases."""
    base = Settings.from_env()
    sfx = "t" + uuid.uuid4().hex[:10]
    secrets = Path(base.connect_secrets_file).parent / f"it-{sfx}.properties"
    sandbox = create_sandbox(
        base,
        sfx,
        tmp / "worker-data",
        {"PSSYNC_CONNECT_SECRETS_FILE": str(secrets), "PSSYNC_BATCH_WITHIN": "0.1", **extra},
    )
    settings = sandbox.settings
    client = ConnectClient(settings.connect_url)
    connectors = [erp_connector(settings), psa_connector(settings)]
    slice_env = SliceEnv(settings, sandbox.env, tmp)
    try:
        for c in connectors:
            client.put(c["name"], c["config"])
        for c in connectors:
            client.wait_running(c["name"], timeout=120)
        yield slice_env
    finally:
        for w in slice_env.workers:
            w.stop()
        for c in connectors:
            client.delete(c["name"])
        time.sleep(1)
        _drop_slot_and_publication(settings, settings.erp_db, settings.erp_topic_prefix)
        _drop_slot_and_publication(settings, settings.psa_db, settings.psa_topic_prefix)
        destroy_sandbox(sandbox)
        topics = AdminClient(kafka_config(settings)).list_topics(timeout=10).topics
        mine = [t for t in topics if t.startswith((f"erp_{sfx}.", f"psa_{sfx}.", f"{sfx}."))]
        mine += [t for t in topics if t.startswith(f"pssync-{sfx}-")]
        if mine:
            delete_topics(settings, mine)
        registry = Registry(settings)
        for subject in registry.subjects():
            if subject.startswith(f"{sfx}."):
                registry.delete_subject(subject)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[SliceEnv]:
    extra = {
        "PSSYNC_PARTITIONS": "2",
        "PSSYNC_DEAL_LINE_WAIT": "120",
        "PSSYNC_TIME_ENTRY_WAIT": "5",
    }
    with capture_sandbox(tmp_path, extra) as slice_env:
        yield slice_env


# -- the applications, as their users see them ----------------------------------------------


def _ensure_employee(settings: Settings) -> None:
    """The integration user's person is an employee in the ERP (made once by the ERP's
    people, as the administrator) whose party carries its canonical resource id, with an
    hourly cost price."""
    _erp(settings, lambda _erp_, admin: ensure_employee(admin, PERSON))


def _lines(settings: Settings, psa_id: int) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = _erp(settings, lambda erp, _a: timesheet_lines(erp, psa_id))
    return result


def _exception(k: Kafka, key: str) -> dict[str, Any] | None:
    found = [
        k.decoder.decode(m.value())
        for m in read_all(k.settings, topology(k.settings).exceptions)
        if m.key() == key.encode()
    ]
    return found[-1] if found else None


def _canonical(settings: Settings, key: str) -> list[dict[str, Any]]:
    decoder = Decoder(Registry(settings).schema_by_id)
    topic = f"{settings.topic_namespace}.canonical.time_entry"
    return [decoder.decode(m.value()) for m in read_all(settings, topic) if m.key() == key.encode()]


def _hours(line: dict[str, Any]) -> float:
    return float(line["duration"]["seconds"]) / 3600


# -- the test --------------------------------------------------------------------------------


def test_approved_time_posts_reverses_and_an_invoiced_edit_is_an_exception(
    env: SliceEnv,
) -> None:
    k = Kafka(env)
    _reference(env, k)
    _ensure_employee(env.settings)
    worker: Worker = env.worker()
    worker.start()
    account, crm_id = _new_id("001W"), _new_id("006W")
    _account(env, account)
    _crm_tx(env, _open_deal(crm_id, account))
    _children_landed(env, [crm_id])
    env.crm(CLOSE_WON, {"id": crm_id})
    code = str(_provisioned(env, crm_id)["project_code__c"])
    cid = correlation_id(f"crm:opportunity:{crm_id}")

    psa = Redmine(env.settings)
    project = psa.project(code)
    task = psa.issues(int(project["id"]))["Recommendations"]
    approved = psa.log(project["id"], task, 2.5, approved=True)
    unapproved = psa.log(project["id"], task, 1.0, approved=False)

    # Approved time on a project no deal provisioned: it waits, then is an exception.
    stray = psa.log(psa.new_project()[0], None, 1.0, approved=True)
    stray_key = f"psa:time_entry:{stray}"

    def stray_raised() -> bool:
        found = _exception(k, stray_key)
        return found is not None and found["reason"] == "time_entry.unknown_project"

    # Approved: one line, on the task, for the employee; unapproved: none.
    env.wait_for(lambda: len(_lines(env.settings, approved)) == 1, 120, "the approved line")
    (line,) = _lines(env.settings, approved)
    assert _hours(line) == 2.5
    assert line["employee."]["party."]["code"] == PERSON
    assert _lines(env.settings, unapproved) == []
    # The canonical event carries the deal's correlation id and, once posted, the line.
    key = f"psa:time_entry:{approved}"
    env.wait_for(
        lambda: any(e["data"]["erp_posting_ref"] for e in _canonical(env.settings, key)),
        60,
        "the posted canonical time entry",
    )
    events = _canonical(env.settings, key)
    assert {str(e["envelope"]["correlation_id"]) for e in events} == {cid}
    assert events[-1]["data"]["project_code"] == code
    assert events[-1]["data"]["erp_posting_ref"] == str(line["id"])
    assert events[-1]["data"]["bill_rate"] is not None  # the ERP task's price
    assert str(events[-1]["data"]["task_id"]).startswith(f"{code}:")  # the saga's task
    # The consultant's cost rate: the employee's cost price in Tryton on the day worked.
    worked = events[-1]["data"]["work_date"]
    erp_cost = _erp(env.settings, lambda _e, admin: cost_price(admin, PERSON, worked))
    assert erp_cost > 0 and events[-1]["data"]["cost_rate"] == erp_cost

    # Approval withdrawn after posting: the line goes.
    psa.update(approved, approved=False)
    env.wait_for(lambda: _lines(env.settings, approved) == [], 120, "the reversal")
    assert _lines(env.settings, unapproved) == []

    # Approved again, then invoiced by finance, then edited: the line stays as invoiced and
    # the entry is a business exception until the edit is undone.
    psa.update(approved, approved=True)
    env.wait_for(lambda: len(_lines(env.settings, approved)) == 1, 120, "the line again")
    erp_project = _erp_project_id(env, code)
    _erp(env.settings, lambda _e, admin: invoice_project(admin, erp_project))
    assert _lines(env.settings, approved)[0]["invoice_line"]
    psa.update(approved, hours=4.0)
    exc = None

    def raised() -> bool:
        nonlocal exc
        exc = _exception(k, key)
        return exc is not None and exc["status"] == "open"

    env.wait_for(raised, 120, "the invoiced exception")
    assert exc is not None and exc["reason"] == "time_entry.invoiced"
    assert str(exc["correlation_id"]) == cid
    assert _hours(_lines(env.settings, approved)[0]) == 2.5
    psa.update(approved, hours=2.5)

    def resolved() -> bool:
        found = _exception(k, key)
        return found is not None and found["status"] == "resolved"

    env.wait_for(resolved, 120, "the exception resolved by the undone edit")
    env.wait_for(stray_raised, 60, "the unknown project exception")
    assert _lines(env.settings, stray) == []


def _cli(env: SliceEnv, *args: str) -> subprocess.CompletedProcess[str]:
    cli = [sys.executable, "-m", "streams.cli", "exceptions", *args]
    return subprocess.run(cli, env=env.env, capture_output=True, text=True)


def _rename_task(env: SliceEnv, project: int, name: str, new: str) -> None:
    """What the ERP's people do to a project's task (the administrator over RPC)."""

    async def body(_erp: TrytonErp, admin: Any) -> None:
        (work,) = await admin.model(
            "project.work", "search", [("parent", "=", project), ("name", "=", name)], 0, 1, None
        )
        await admin.model("project.work", "write", [work], {"name": new})

    _erp(env.settings, body)


def test_a_time_entry_the_erp_refused_posts_on_retry_once_the_cause_is_fixed(
    env: SliceEnv,
) -> None:
    k = Kafka(env)
    _reference(env, k)
    _ensure_employee(env.settings)
    worker: Worker = env.worker()
    worker.start()
    account, crm_id = _new_id("001R"), _new_id("006R")
    _account(env, account)
    _crm_tx(env, _open_deal(crm_id, account))
    _children_landed(env, [crm_id])
    env.crm(CLOSE_WON, {"id": crm_id})
    code = str(_provisioned(env, crm_id)["project_code__c"])
    erp_project = _erp_project_id(env, code)

    # The ERP's people renamed the task the consultant books on: the ERP refuses the line.
    _rename_task(env, erp_project, "Recommendations", "Recommendations (on hold)")
    psa = Redmine(env.settings)
    project = psa.project(code)
    entry = psa.log(project["id"], psa.issues(int(project["id"]))["Recommendations"], 1.5, True)
    key = f"psa:time_entry:{entry}"

    def refused() -> dict[str, Any] | None:
        found = _exception(k, key)
        return found if found is not None and found["status"] == "open" else None

    env.wait_for(lambda: refused() is not None, 120, "the refused posting's exception")
    exc = refused()
    assert exc is not None and exc["reason"] == "time_entry.unknown_task"
    assert exc["step"] == "time_entry" and _lines(env.settings, entry) == []

    # A dry run sends nothing; the task named again, the retry posts the entry.
    dry = _cli(env, "retry", key)
    assert dry.returncode == 0 and "dry run" in dry.stdout, dry.stderr
    _rename_task(env, erp_project, "Recommendations (on hold)", "Recommendations")
    sent = _cli(env, "retry", key, "--execute")
    assert sent.returncode == 0 and "retry sent" in sent.stdout, sent.stderr
    env.wait_for(lambda: len(_lines(env.settings, entry)) == 1, 120, "the retried line")
    assert _hours(_lines(env.settings, entry)[0]) == 1.5

    def resolved() -> bool:
        found = _exception(k, key)
        return found is not None and found["status"] == "resolved"

    env.wait_for(resolved, 60, "the exception resolved by the retried posting")
    # Nothing open: a retry says so, and sends nothing.
    again = _cli(env, "retry", key, "--execute")
    assert again.returncode != 0 and "not open: nothing to retry" in again.stderr
    assert len(_lines(env.settings, entry)) == 1


def _erp_project_id(env: SliceEnv, code: str) -> int:
    async def body(erp: TrytonErp, _admin: Any) -> int:
        (found,) = await erp.rpc.model(
            "project.work", "search", [("number", "=", code), ("type", "=", "project")], 0, 1, None
        )
        return int(found)

    result: int = _erp(env.settings, body)
    return result
