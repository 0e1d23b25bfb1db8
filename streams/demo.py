"""`pssync demo`: the slice (CRM -> canonical -> target) and quote-to-cash on the local stack.

Quote-to-cash: a handful of deals close won in the CRM; the worker turns each into an ERP
customer and project (Tryton) and a PSA project (Redmine) and writes the result back to the
CRM; one deal is invalid on purpose and parks as a business exception. Then the second half
(streams/demo_cash.py): time logged in Redmine, an invoice posted in Tryton, a change order
in the CRM, and approved time on a project no deal made. What the demo prints about the
applications it reads back through their APIs (read only).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import create_engine, text

from connectors.debezium import all_connectors
from connectors.kafka_connect import ConnectClient
from connectors.sql import apply_schema, db_url
from streams import demo_cash as cash
from streams import demo_q2c as q2c
from streams.admin import ensure_topics
from streams.deals.trace import render
from streams.deals.trace_read import read_trace
from streams.errors import PssyncError
from streams.monitor.model import Finding
from streams.security import kafka_config
from streams.settings import Settings
from streams.topology import topic_specs, topology

STAGES = ["Prospecting", "Qualification", "Proposal/Price Quote", "Negotiation/Review"]
BILLING = ["Fixed Fee", "Time and Materials", "Milestone", "Retainer"]
REGIONS = ["EMEA", "NA", "APAC"]


def topic_size(settings: Settings, topic: str) -> int:
    consumer = Consumer(kafka_config(settings, **{"group.id": "pssync-demo-sizer"}))
    try:
        md = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            return 0
        total = 0
        for p in md.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def seed(settings: Settings, run: str, count: int) -> tuple[int, int, int]:
    """Insert `count` opportunities, lose a third, delete a tenth.

    Returns (inserted, lost, deleted). They are lost, not won: closed-won deals are the
    quote-to-cash part's, and these have no account nor line items to provision."""
    rnd = random.Random(run)
    engine = create_engine(db_url(settings.crm_db))
    accounts = [(f"001{run}{i:04d}", f"Client {run}-{i}") for i in range(max(1, count // 10))]
    opps = []
    for i in range(count):
        account = rnd.choice(accounts)[0]
        opps.append(
            {
                "id": f"006{run}{i:05d}",
                "account_id": account,
                "name": f"Engagement {run}-{i}",
                "stage_name": rnd.choice(STAGES),
                "amount": round(rnd.uniform(10_000, 900_000), 2),
                "currency": rnd.choice(["USD", "EUR", "GBP"]),
                "close_date": "2027-03-31",
                "probability": rnd.choice([10, 25, 50, 75]),
                "billing": rnd.choice(BILLING),
                "region": rnd.choice(REGIONS),
                "pm": f"pm{i % 7}@example.com",
                "lines": "CONSULT;PM" if i % 2 else "ARCH",
            }
        )
    lost = opps[: count // 3]
    deleted = opps[-(count // 10) :] if count >= 10 else []
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO sales.account (id, name) VALUES (:id, :name)"),
            [{"id": a, "name": n} for a, n in accounts],
        )
        conn.execute(
            text(
                "INSERT INTO sales.opportunity (id, account_id, name, stage_name, amount, "
                "currency_iso_code, close_date, probability, billing_type__c, delivery_region__c, "
                "project_manager_email__c, service_lines__c) VALUES (:id, :account_id, :name, "
                ":stage_name, :amount, :currency, :close_date, :probability, :billing, :region, "
                ":pm, :lines)"
            ),
            opps,
        )
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE sales.opportunity SET stage_name = 'Closed Lost', is_closed = true, "
                "is_won = false, probability = 0, last_modified_date = now() WHERE id = :id"
            ),
            lost,
        )
    if deleted:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM sales.opportunity WHERE id = :id"), deleted)
    engine.dispose()
    return len(opps), len(lost), len(deleted)


def wait_target(
    settings: Settings, run: str, expected: tuple[int, int, int], timeout: float
) -> tuple[int, int, int]:
    engine = create_engine(settings.target_url)
    deadline = time.monotonic() + timeout
    found = (0, 0, 0)
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(text("SELECT to_regclass('opportunity')")).scalar() is None:
                    time.sleep(0.5)  # the sink creates its table when it starts
                    continue
                row = conn.execute(
                    text(
                        "SELECT count(*), count(*) FILTER (WHERE stage = 'closed_lost' AND NOT "
                        "is_deleted), count(*) FILTER (WHERE is_deleted) FROM opportunity "
                        "WHERE opportunity_id LIKE :p"
                    ),
                    {"p": f"crm:opportunity:006{run}%"},
                ).one()
            found = (int(row[0]), int(row[1]), int(row[2]))
            if found == expected:
                return found
            time.sleep(0.5)
    finally:
        engine.dispose()
    raise PssyncError(
        f"target holds {found} (rows, lost, deleted), expected {expected} after "
        f"{timeout:.0f}s; see {settings.stack_dir / 'logs' / 'worker.log'}"
    )


def _load_reference(settings: Settings) -> str:
    """`pssync reference load`, its output summed up in its last line."""
    from streams.reference.cli import cmd_load

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cmd_load(argparse.Namespace(file=None, dry_run=False), settings)
    return out.getvalue().strip().splitlines()[-1]


# The demo's worker waits briefly for what a time entry or a change order names, so the
# planted failures show within the demo (the product's defaults are minutes).
WORKER_ENV = {"PSSYNC_TIME_ENTRY_WAIT": "8", "PSSYNC_CHANGE_ORDER_WAIT": "30"}


def _start_worker(settings: Settings) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = settings.stack_dir / "logs" / "worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker"],
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        env={**WORKER_ENV, **os.environ},
        cwd=Path(__file__).resolve().parent.parent,
    )
    return worker, log_path


def _print_landed(s: q2c.Seeded, row: dict[str, Any], took: float) -> None:
    status = str(row["sync_status__c"])
    detail = f" project {row['project_code__c']}" if status == "provisioned" else ""
    print(f"  +{took:5.1f}s  {s.crm_id}  {s.deal.name:<30} CRM status: {status}{detail}")


def _report_deals(
    settings: Settings, seeded: list[q2c.Seeded], rows: dict[str, dict[str, Any]]
) -> None:
    found = q2c.look_up(settings, seeded)
    for s in seeded:
        row, p = rows[s.crm_id], found[s.crm_id]
        print(f"  {s.crm_id}  {s.deal.name} ({s.deal.billing}, {s.amount:,} {s.deal.currency})")
        print(f"    CRM        account {s.account_id}, write-back: {row['sync_status__c']}")
        if p.party_id is None:
            print("    ERP        no customer, no project (nothing created)")
        else:
            print(f"    ERP        customer party {p.party_id} (code {p.party_code})")
            print(f"               project {p.project_number or '-'}")
        print(f"    PSA        {p.psa_url or 'no project'}")


def _report_parked(settings: Settings, keys: dict[str, str]) -> None:
    """`pssync exceptions show` of each key expected to be held, with the reason expected."""
    from streams.deals import exceptions

    held = exceptions.load(settings)
    for key, reason in keys.items():
        if held.get(key) is None:
            print(f"  {key}: no business exception found (expected {reason})")
            continue
        print(f"  $ pssync exceptions show {key}")
        exceptions.cmd_show(argparse.Namespace(key=key, json=False), settings)


def _monitor(settings: Settings, ours: set[str]) -> None:
    """`pssync monitor`'s table, with the findings about this run's objects (any of `ours`
    in a finding's key, summary or ids); a shared stack's monitors also list what earlier
    runs and other users left, only counted here."""
    from streams.monitor.report import build, collect, print_table
    from tables.views import ViewReader

    monitors = build(settings)
    for m in monitors:
        ViewReader(settings, m.views()).load(15.0)
    now = datetime.now(UTC)
    found = collect(monitors, now)

    def mine(f: Finding) -> bool:
        text = " ".join([f.key, f.summary, *f.ids.values()])
        return f.key in ours or any(o in text for o in ours)

    shown = {name: [f for f in fs if mine(f)] for name, fs in found.items()}
    print_table(monitors, shown, now)
    others = sum(len(fs) for fs in found.values()) - sum(len(fs) for fs in shown.values())
    if others:
        print(
            f"  (and {others} findings about earlier runs or other data on this stack, "
            "left out here: `pssync monitor` lists them all)"
        )


def run_demo(settings: Settings, count: int = 200) -> int:
    topo = topology(settings)
    started = time.monotonic()
    print("1/9 CRM schema, topics, reference data and the Debezium connectors (CRM, ERP, PSA)")
    apply_schema(settings.crm_db, "crm")
    ensure_topics(settings, topic_specs(settings))
    print(f"  reference load: {_load_reference(settings)}")
    # Before the connectors: the ERP connector's snapshot or stream carries the employee.
    cash.prepare(settings)
    print(f"  ERP: the consultant who logs time in Redmine is employee {cash.TIME_USER}")
    client = ConnectClient(settings.connect_url)
    for connector in all_connectors(settings):
        client.put(connector["name"], connector["config"])
        client.wait_running(connector["name"])
        print(f"  {connector['name']}: RUNNING")
    worker, log_path = _start_worker(settings)
    print(f"2/9 the stream worker is starting (log: {log_path})")
    run = q2c.new_run()
    try:
        print(f"3/9 the slice: {count} opportunities into the CRM, a third lost, a tenth deleted")
        slice_started = time.monotonic()
        expected = seed(settings, run, count)
        rows, lost, deleted = wait_target(settings, run, expected, timeout=180)
        took = time.monotonic() - slice_started
        print(
            f"  CRM sales.opportunity -> target opportunity: {rows} rows this run "
            f"({lost} closed-lost, {deleted} soft-deleted) in {took:.1f}s"
        )
        print("4/9 quote-to-cash: waiting for the ERP's tax codes (captured from Tryton)")
        q2c.wait_reference(settings, {"VAT-DE-19", "VAT-FR-20"}, timeout=120)
        deals = q2c.seed(settings, run)
        print(
            f"  seeded {len(q2c.ACCOUNTS)} accounts and {len(deals)} deals (line items, milestones)"
        )
        print(f"5/9 {len(deals)} deals close won in the CRM")
        q2c.close_won(settings, deals)
        for d in deals:
            sold = "+".join(code for code, _, _ in d.deal.lines)
            print(
                f"  closed won  {d.crm_id}  {d.deal.name:<30} {d.deal.billing:<19} "
                f"{d.amount:>7,} {d.deal.currency}  {sold}"
            )
        print("  as pssync writes each one's status back to the CRM:")
        crm = q2c.wait_settled(settings, deals, timeout=150, report=_print_landed)
        print(
            "6/9 each deal in the CRM, the ERP (Tryton) and the PSA (Redmine), read back via "
            "their APIs"
        )
        _report_deals(settings, deals, crm)
        print("7/9 the second half: time in Redmine, a change order in the CRM")
        played = cash.play(settings, run, deals, crm)
        second = time.monotonic()
        print("  approved time reaches Tryton as timesheet lines, unapproved time does not:")
        cash.show_time(settings, played, second)
        print("  the approved expense reaches Tryton as a line to re-bill the customer:")
        cash.show_expense(settings, played, second)
        print("  finance invoices the project's time in Tryton and posts the invoice:")
        cash.invoice(settings, played, second)
        print("  the change order amends the won deal's project in Tryton and Redmine:")
        cash.show_change(settings, played, second)
        print("  the internal project's approved time waits for a project, then is parked:")
        cash.show_stray(settings, played, second)
    finally:
        worker.terminate()
        worker.wait(30)
    invalid = next(s for s in deals if s.deal.invalid_because)
    print("8/9 what pssync parked as business exceptions, and why")
    _report_parked(
        settings,
        {
            invalid.key: invalid.deal.invalid_because,
            f"psa:time_entry:{played.stray}": "time_entry.unknown_project",
        },
    )
    shown = played.time_deal
    print(f"9/9 the trace of one deal ($ pssync trace {shown.crm_id})")
    print("\n".join(render(read_trace(settings, shown.crm_id))))
    print("  $ pssync monitor (this run's findings)")
    codes = {str(r["project_code__c"]) for r in crm.values() if r.get("project_code__c")}
    _monitor(settings, {run, f"psa:time_entry:{played.stray}", *codes})
    number = played.invoice["number"] if played.invoice else "-"
    deal = shown.deal.name
    print("what you see, in plain words:")
    for line in (
        f"- {deal} closed won in the CRM and, within seconds, had its customer and project "
        f"{played.project_code} in Tryton, its project in Redmine, and its status in the CRM.",
        "- Of the time logged on it in Redmine, only the approved hours became Tryton "
        "timesheet lines (on the task, for the consultant's employee); the rest stays in "
        "Redmine until someone approves it. The approved expense became a line Tryton "
        "re-bills to the customer.",
        f"- Finance posted invoice {number} in Tryton; the CRM opportunity shows it (invoiced "
        "to date, last invoice and its status, payment status), and so does the Redmine "
        "project (invoiced to date, recognized revenue).",
        f"- The change order {played.change_order} amended {played.changed.deal.name}'s "
        "project in Tryton and Redmine; the monitor lists it under baseline changes.",
        "- The JPY deal and the time booked on a Redmine project no deal made are parked as "
        "business exceptions, each with its reason and what to fix, and listed by the monitor.",
        "- The trace follows the deal across all three systems by its correlation id, from "
        "the CRM event to the invoice's updates in the CRM and Redmine.",
    ):
        print(f"  {line}")
    print("what flowed where:")
    raw = topo.routes[0].raw_topic
    for topic in (raw, topo.canonical("opportunity"), topo.results, topo.exceptions):
        print(f"  {topic:<32} {topic_size(settings, topic):>8} messages")
    for entity in ("time_entry", "invoice", "contract"):
        topic = topo.canonical(entity)
        print(f"  {topic:<32} {topic_size(settings, topic):>8} messages")
    for stage in ("normalize", "sink", "command", "deal"):
        print(f"  {topo.dlq(stage):<32} {topic_size(settings, topo.dlq(stage)):>8} messages")
    print(
        f"done in {time.monotonic() - started:.0f}s. Metrics: run `pssync worker` and scrape "
        f"http://127.0.0.1:{settings.web_port}/metrics"
    )
    return 0
