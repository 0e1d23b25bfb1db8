"""`pssync demo`: drive the CRM -> canonical -> target slice on the local stack and report."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import create_engine, text

from connectors.debezium import all_connectors
from connectors.kafka_connect import ConnectClient
from connectors.sql import apply_schema, db_url
from streams.admin import ensure_topics
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
    """Insert `count` deals, win a third, delete a tenth. Returns (inserted, won, deleted)."""
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
    won = opps[: count // 3]
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
                "UPDATE sales.opportunity SET stage_name = 'Closed Won', is_closed = true, "
                "is_won = true, probability = 100, last_modified_date = now() WHERE id = :id"
            ),
            won,
        )
    if deleted:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM sales.opportunity WHERE id = :id"), deleted)
    engine.dispose()
    return len(opps), len(won), len(deleted)


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
                        "SELECT count(*), count(*) FILTER (WHERE stage = 'closed_won' AND NOT "
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
        f"target holds {found} (rows, won, deleted), expected {expected} after "
        f"{timeout:.0f}s; see {settings.stack_dir / 'logs' / 'worker.log'}"
    )


def run_demo(settings: Settings, count: int = 200) -> int:
    topo = topology(settings)
    print("1/5 preparing CRM schema, topics and the Debezium connectors (CRM, ERP, PSA)")
    apply_schema(settings.crm_db, "crm")
    ensure_topics(settings, topic_specs(settings))
    client = ConnectClient(settings.connect_url)
    for connector in all_connectors(settings):
        client.put(connector["name"], connector["config"])
        client.wait_running(connector["name"])
    log_path = settings.stack_dir / "logs" / "worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"2/5 starting the stream worker (log: {log_path})")
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker"],
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        run = time.strftime("%H%M%S")
        print(f"3/5 seeding the CRM: {count} opportunities, then wins and deletes")
        started = time.monotonic()
        expected = seed(settings, run, count)
        print("4/5 waiting for the target to converge")
        rows, won, deleted = wait_target(settings, run, expected, timeout=180)
        took = time.monotonic() - started
    finally:
        worker.terminate()
        worker.wait(30)
    print("5/5 what flowed where")
    raw = topo.routes[0].raw_topic
    for topic in (raw, topo.canonical("opportunity"), topo.dlq("normalize"), topo.dlq("sink")):
        print(f"  {topic:<32} {topic_size(settings, topic):>8} messages")
    print(
        f"  CRM sales.opportunity -> target opportunity: {rows} rows this run "
        f"({won} closed-won, {deleted} soft-deleted) in {took:.1f}s"
    )
    engine = create_engine(settings.target_url)
    with engine.connect() as conn:
        sample = conn.execute(
            text(
                "SELECT opportunity_id, stage, amount, currency, billing_type, entity_version "
                "FROM opportunity WHERE opportunity_id LIKE :p ORDER BY opportunity_id LIMIT 5"
            ),
            {"p": f"crm:opportunity:006{run}%"},
        ).all()
    engine.dispose()
    print("  sample target rows:")
    for r in sample:
        print(f"    {r[0]:<32} {r[1]:<14} {r[2]:>12} {r[3]} {r[4]:<20} v{r[5]}")
    print(f"Metrics: run `pssync worker` and scrape http://127.0.0.1:{settings.web_port}/metrics")
    return 0
