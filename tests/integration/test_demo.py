"""`pssync demo` and `pssync trace` on the real stack, in a sandbox of their own.

The demo deploys every connector its settings name; in the sandbox those are its own CRM,
ERP and PSA connectors (own topic prefixes, slots and publications on the shared ERP and
PSA databases), removed again afterwards with everything else the sandbox made.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from sqlalchemy import create_engine, text

from connectors.debezium import erp_connector, psa_connector, slot_name
from connectors.erp import TrytonErp
from connectors.kafka_connect import ConnectClient
from connectors.sql import db_url, server_engine
from streams.admin import delete_topics
from streams.demo_apps import (
    TIME_USER,
    expense_lines,
    hours,
    money,
    run_erp,
    timesheet_lines,
)
from streams.security import kafka_config
from streams.settings import Settings
from tests.integration.conftest import SliceEnv
from tests.sandbox import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _drop_source(settings: Settings, name: str, prefix: str, database: str) -> None:
    """A connector the demo deployed: the connector, its slot, its publication, its topics."""
    ConnectClient(settings.connect_url).delete(name)
    slot = slot_name(prefix)
    admin = server_engine(settings.crm_db)
    try:
        with admin.connect() as conn:
            for _ in range(30):
                try:  # the slot stays active until the task has really stopped
                    conn.execute(
                        text(
                            "SELECT pg_drop_replication_slot(slot_name) FROM "
                            "pg_replication_slots WHERE slot_name = :s"
                        ),
                        {"s": slot},
                    )
                    break
                except Exception:  # noqa: BLE001 - slot still in use, retry
                    time.sleep(1)
    finally:
        admin.dispose()
    db = settings.erp_db if database == "erp" else settings.psa_db
    engine = create_engine(db_url(db), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP PUBLICATION IF EXISTS "{slot}"'))
    finally:
        engine.dispose()
    _drop_topics(settings, prefix)


def _drop_topics(settings: Settings, prefix: str) -> None:
    """The raw topics Connect created for a topic prefix, and its heartbeat topic."""
    topics = AdminClient(kafka_config(settings)).list_topics(timeout=10).topics
    mine = [t for t in topics if t.startswith(f"{prefix}.") or t.endswith(f".{prefix}")]
    if mine:
        delete_topics(settings, mine)


@pytest.fixture
def demo_env(slice_env: SliceEnv) -> Iterator[SliceEnv]:
    """The sandbox, plus removal of the ERP and PSA connectors the demo deploys in it."""
    settings = slice_env.settings
    try:
        yield slice_env
    finally:
        for connector, prefix, db in (
            (erp_connector(settings), settings.erp_topic_prefix, "erp"),
            (psa_connector(settings), settings.psa_topic_prefix, "psa"),
        ):
            _drop_source(settings, connector["name"], prefix, db)


# The demo's own wait for line items is irrelevant (they commit before the deals close).
@pytest.mark.parametrize("slice_env", [{"PSSYNC_DEAL_LINE_WAIT": "30"}], indirect=True)
def test_demo_provisions_its_deals_and_traces_one(demo_env: SliceEnv, tmp_path: Path) -> None:
    env = {
        **demo_env.env,
        "PSSYNC_STACK_DIR": str(tmp_path / "stack"),
        # Secrets stay where the running stack keeps them: its Connect reads credentials
        # only from its own secrets folder, the ERP and PSA know only their users' secrets.
        "PSSYNC_CONNECT_SECRETS_FILE": str(demo_env.settings.connect_secrets_file),
        "PSSYNC_ERP_PASSWORD_FILE": str(demo_env.settings.erp_password_file),
        "PSSYNC_PSA_API_KEY_FILE": str(demo_env.settings.psa_api_key_file),
    }

    def demo() -> str:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "streams.cli", "demo", "--count", "30"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=420,
        )
        took = time.monotonic() - started
        log = tmp_path / "stack" / "logs" / "worker.log"
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n--- worker log\n{tail}"
        print(done.stdout)  # shown with -s: what a user sees
        assert took < 180, f"demo took {took:.0f}s"
        return done.stdout

    # Run twice: the second run has deals of its own and finds everything else in place.
    first, out = demo(), demo()
    assert "the reference topics already hold this file" in out

    # Every valid deal provisioned: an ERP party, an ERP project number, a Redmine project.
    crm = create_engine(db_url(demo_env.settings.crm_db))
    with crm.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, currency_iso_code, sync_status__c, project_code__c, "
                "psa_project_url__c FROM sales.opportunity WHERE id LIKE '006Q%' "
                "AND type IS DISTINCT FROM 'Change Order' ORDER BY id"
            )
        ).all()
        invoicing = conn.execute(
            text(
                "SELECT id, invoiced_to_date__c, last_invoice_number__c, "
                "last_invoice_status__c, payment_status__c, sync_status__c, type "
                "FROM sales.opportunity WHERE id LIKE '006Q%'"
            )
        ).all()
    crm.dispose()
    assert len(rows) == 12
    closed = set(re.findall(r"closed won  (006Q\w+)", out))
    rows = [r for r in rows if r[0] in closed]
    assert len(rows) == 6 and not any(r[0] in first for r in rows)
    for crm_id, currency, status, code, url in rows:
        if currency == "JPY":
            assert status == "exception: currency_not_allowed"
            assert f"pssync exceptions show crm:opportunity:{crm_id}" in out
            continue
        assert status == "provisioned" and code and url
        assert f"project {code}" in out and url in out
    assert "what to fix" in out and "JPY" in out
    assert re.search(r"ERP +customer party \d+ \(code crm:account:001Q", out)

    # The trace names every step with its system and ids, in order.
    milestone_deal = next(r[0] for r in rows if r[0].endswith("2"))
    traced = subprocess.run(
        [sys.executable, "-m", "streams.cli", "trace", milestone_deal, "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert traced.returncode == 0, traced.stderr
    entries = json.loads(traced.stdout)["entries"]
    done_steps = [(e["system"], e["what"]) for e in entries if e["status"] == "done"]
    assert done_steps == [
        ("erp", "erp customer"),
        ("erp", "erp project"),
        ("psa", "psa project"),
        ("crm", "crm writeback"),
    ]
    assert [e["what"] for e in entries if e["system"] == "crm" and e["status"] == "captured"] == [
        "opportunity negotiation",
        "opportunity closed won",
    ]
    psa = next(e for e in entries if e["what"] == "psa project" and e["status"] == "done")
    assert psa["ids"]["url"].endswith(psa["ids"]["identifier"])
    writeback = next(e for e in entries if e["what"].startswith("crm writeback ->"))
    assert writeback["ids"]["sync status"] == "provisioned"
    stamps = [e["at"] for e in entries]
    assert None not in stamps and stamps == sorted(stamps)

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "streams.cli", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    # The same deal found by its ERP project code and by its correlation id.
    code = next(r[3] for r in rows if r[0] == milestone_deal)
    by_code = json.loads(cli("trace", code, "--json"))
    assert by_code["saga_key"] == f"crm:opportunity:{milestone_deal}"
    by_correlation = json.loads(cli("trace", by_code["correlation_id"], "--json"))
    assert by_correlation["saga_key"] == by_code["saga_key"]
    assert by_correlation["entries"] == entries

    # The parked JPY deals are closed-won without a project: the monitor lists them, with why.
    report = json.loads(cli("monitor", "--json", "--only", "deals_without_project"))
    findings = {f["ids"]["crm_opportunity"]: f for f in report["monitors"][0]["findings"]}
    parked = [r[0] for r in rows if r[1] == "JPY"]
    assert parked and all("currency_not_allowed" in findings[p]["summary"] for p in parked)
    assert not any(r[0] in findings for r in rows if r[1] != "JPY")

    _assert_second_half(env, out, rows, invoicing, cli)


def _assert_second_half(
    env: dict[str, str],
    out: str,
    rows: list[Any],
    invoicing: list[Any],
    cli: Callable[..., str],
) -> None:
    """Time, the invoice, the change order and the planted failures of the last run."""
    settings = Settings.from_env(env)
    time_deal = next(r[0] for r in rows if r[0].endswith("1"))  # Operating model advisory
    changed = next(r[0] for r in rows if r[0].endswith("3"))  # Warehouse advisory
    code = next(r[3] for r in rows if r[0] == time_deal)

    # Tryton: one timesheet line per approved entry, with its hours; none for the other.
    approved = [int(n) for n in re.findall(r"\(Redmine time entry (\d+)\)", out)]
    unapproved = [int(n) for n in re.findall(r"Redmine time entry (\d+) \(not approved\)", out)]
    assert len(approved) == 1 and len(unapproved) == 1, out

    async def lines(erp: TrytonErp, _admin: Any) -> dict[int, list[dict[str, Any]]]:
        return {e: await timesheet_lines(erp, e) for e in approved + unapproved}

    found = run_erp(settings, lines)
    ((line,),) = (found[e] for e in approved)
    assert hours(line) == 6.0 and line["employee."]["party."]["code"] == TIME_USER
    assert all(found[e] == [] for e in unapproved)

    # The approved expense: one line in Tryton, re-billable to the deal's customer.
    [expense] = [int(n) for n in re.findall(r"\(Redmine expense (\d+)\)", out)]
    (rebill,) = run_erp(settings, lambda erp, _a: expense_lines(erp, expense))
    assert money(rebill["unit_price"]) == Decimal("240.00")

    # The CRM opportunity shows the posted invoice; the change order was applied.
    by_id = {r[0]: r for r in invoicing}
    _, invoiced, number, status, payment, _, _ = by_id[time_deal]
    assert invoiced and invoiced > 0 and number and (status, payment) == ("posted", "unpaid")
    assert f"invoice {number} posted for {code}" in out
    run = time_deal[:-1]  # the run's CRM ids differ in their last character
    [change] = [r for r in invoicing if r[6] == "Change Order" and r[0].startswith(run)]
    changed_code = next(r[3] for r in rows if r[0] == changed)
    assert re.fullmatch(rf"amendment \d of {changed_code} applied", change[5]), change[5]

    # The trace of the deal has every hop, from the opportunity to the invoice's write-backs.
    entries = json.loads(cli("trace", time_deal, "--json"))["entries"]
    hops = {(e["system"], e["what"].split(" ->")[0], e["status"]) for e in entries}
    for hop in (
        ("crm", "opportunity closed won", "captured"),
        ("erp", "erp customer", "done"),
        ("erp", "erp project", "done"),
        ("psa", "psa project", "done"),
        ("crm", "crm writeback", "done"),
        ("erp", "approved time posted", "done"),
        ("erp", "approved expenses posted", "done"),
        ("erp", "invoices issued", "done"),
        ("erp", "revenue recognized", "done"),
        ("crm", "crm invoice status", "done"),
        ("psa", "psa financials", "done"),
    ):
        assert hop in hops, (hop, sorted(hops))
    posted = next(e for e in entries if e["what"] == "approved time posted")
    assert posted["ids"]["total"] == "6 h"
    assert "the trace of one deal ($ pssync trace " + time_deal in out
    assert "approved time posted" in out and "invoices issued" in out

    # The monitor lists the planted failures, each with its reason.
    report = json.loads(cli("monitor", "--json"))
    monitors = {m["name"]: m["findings"] for m in report["monitors"]}
    stray = re.search(r"(psa:time_entry:\d+) on internal-", out)
    assert stray, out
    [failed] = [f for f in monitors["failed_postings"] if f["key"] == stray.group(1)]
    assert "time_entry.unknown_project" in json.dumps(failed)
    jpy = [r[0] for r in rows if r[1] == "JPY"]
    parked = {f["ids"]["crm_opportunity"]: f for f in monitors["deals_without_project"]}
    assert jpy and "currency_not_allowed" in parked[jpy[0]]["summary"]
    assert any(change[0] in json.dumps(f) for f in monitors["baseline_changes"])
    # The printed report: the monitor table with these findings.
    assert "(failed_postings)" in out and stray.group(1) in out
    assert "(baseline_changes)" in out
