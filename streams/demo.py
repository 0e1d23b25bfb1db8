"""`pssync demo`: the slice (CRM -> canonical -> target) and quote-to-cash on the local stack.

Quote-to-cash: a handful of deals close won in the CRM; the worker turns each into an ERP
customer and project (Tryton) and a PSA project (Redmine) and writes the result back to the
CRM; one deal is invalid on purpose and parks as a business exception. What the demo prints
about the applications it reads back through their API adapters (read only).
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
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import create_engine, text

from connectors.debezium import all_connectors
from connectors.kafka_connect import ConnectClient
from connectors.sql import apply_schema, db_url
from streams import demo_q2c as q2c
from streams.admin import ensure_topics
from streams.deals.trace import render
from streams.deals.trace_read import read_trace
from streams.errors import PssyncError
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


def _start_worker(settings: Settings) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = settings.stack_dir / "logs" / "worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker"],
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
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


def _report_parked(settings: Settings, seeded: list[q2c.Seeded]) -> None:
    from streams.deals import exceptions

    held = exceptions.load(settings)
    for s in seeded:
        if not s.deal.invalid_because:
            continue
        record = held.get(s.key)
        if record is None:
            print(f"  {s.key}: no business exception found (expected {s.deal.invalid_because})")
            continue
        print(f"  $ pssync exceptions show {s.key}")
        exceptions.cmd_show(argparse.Namespace(key=s.key, json=False), settings)


def run_demo(settings: Settings, count: int = 200) -> int:
    topo = topology(settings)
    started = time.monotonic()
    print("1/7 CRM schema, topics, reference data and the Debezium connectors (CRM, ERP, PSA)")
    apply_schema(settings.crm_db, "crm")
    ensure_topics(settings, topic_specs(settings))
    print(f"  reference load: {_load_reference(settings)}")
    client = ConnectClient(settings.connect_url)
    for connector in all_connectors(settings):
        client.put(connector["name"], connector["config"])
        client.wait_running(connector["name"])
        print(f"  {connector['name']}: RUNNING")
    worker, log_path = _start_worker(settings)
    print(f"2/7 the stream worker is starting (log: {log_path})")
    run = q2c.new_run()
    try:
        print(f"3/7 the slice: {count} opportunities into the CRM, a third lost, a tenth deleted")
        slice_started = time.monotonic()
        expected = seed(settings, run, count)
        rows, lost, deleted = wait_target(settings, run, expected, timeout=180)
        took = time.monotonic() - slice_started
        print(
            f"  CRM sales.opportunity -> target opportunity: {rows} rows this run "
            f"({lost} closed-lost, {deleted} soft-deleted) in {took:.1f}s"
        )
        print("4/7 quote-to-cash: waiting for the ERP's tax codes (captured from Tryton)")
        q2c.wait_reference(settings, {"VAT-DE-19", "VAT-FR-20"}, timeout=120)
        deals = q2c.seed(settings, run)
        print(
            f"  seeded {len(q2c.ACCOUNTS)} accounts and {len(deals)} deals (line items, milestones)"
        )
        print(f"5/7 {len(deals)} deals close won in the CRM")
        q2c.close_won(settings, deals)
        for d in deals:
            sold = "+".join(code for code, _, _ in d.deal.lines)
            print(
                f"  closed won  {d.crm_id}  {d.deal.name:<30} {d.deal.billing:<19} "
                f"{d.amount:>7,} {d.deal.currency}  {sold}"
            )
        print("  as pssync writes each one's status back to the CRM:")
        crm = q2c.wait_settled(settings, deals, timeout=150, report=_print_landed)
    finally:
        worker.terminate()
        worker.wait(30)
    print(
        "6/7 each deal in the CRM, the ERP (Tryton) and the PSA (Redmine), read back via their APIs"
    )
    _report_deals(settings, deals, crm)
    print("  the invalid deal, parked as a business exception:")
    _report_parked(settings, deals)
    shown = next(s for s in deals if s.deal.milestones)
    print(f"7/7 the trace of one deal ($ pssync trace {shown.crm_id})")
    print("\n".join(render(read_trace(settings, shown.crm_id))))
    print("what flowed where:")
    raw = topo.routes[0].raw_topic
    for topic in (raw, topo.canonical("opportunity"), topo.results, topo.exceptions):
        print(f"  {topic:<32} {topic_size(settings, topic):>8} messages")
    for stage in ("normalize", "sink", "command", "deal"):
        print(f"  {topo.dlq(stage):<32} {topic_size(settings, topo.dlq(stage)):>8} messages")
    print(
        f"done in {time.monotonic() - started:.0f}s. Metrics: run `pssync worker` and scrape "
        f"http://127.0.0.1:{settings.web_port}/metrics"
    )
    return 0
