"""Closed-won -> PSA project latency of the quote-to-cash saga on the local stack.

N deals (one new account each, two line items, two billing milestones) are opened in a
sandbox CRM and land as canonical events; then they are closed-won one at a time at a steady
pace. For each deal the latency is the CRM commit of closed-won (Debezium's source commit
time, as the worker's histogram takes it; the client's clock just after the commit when that
is not known) to the PSA project provisioned in Redmine (the psa_project result's
`completed_at`). The worker's `pssync_closed_won_to_psa_project_seconds` histogram and
Redmine's own `created_on` are reported beside it as cross-checks.

Usage: python bench/saga_latency.py [--deals 100] [--interval 2.0] [--partitions 2]
Needs the whole local stack (`make up`), the ERP and the PSA included. The ERP parties and
projects and the Redmine projects it makes stay (the integration users may not delete them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from sqlalchemy import create_engine, text

from connectors.sql import db_url
from schemas import contracts
from schemas.registry import Registry
from schemas.serde import Decoder, Encoder
from streams.deals.sources import VIEWS
from streams.mappings.envelope import correlation_id
from streams.security import kafka_config
from streams.settings import Settings
from streams.topology import topology
from tests.sandbox import Sandbox, Worker, create_sandbox, destroy_sandbox

ROOT = Path(__file__).resolve().parent.parent
PM = "demo.pm@localhost.invalid"  # the PSA's project manager the local stack creates

ACCOUNT = (
    "INSERT INTO sales.account (id, name, billing_country, currency_iso_code, tax_id__c) "
    "VALUES (:id, :name, 'DE', 'EUR', 'DE811')"
)
OPPORTUNITY = (
    "INSERT INTO sales.opportunity (id, account_id, name, stage_name, amount, currency_iso_code, "
    "close_date, billing_type__c, service_lines__c, delivery_region__c, "
    "project_manager_email__c) VALUES (:id, :account, :name, 'Negotiation', 30000, 'EUR', "
    "'2027-02-01', 'Time and Materials', 'ARCH;CONSULT', 'EMEA', :pm)"
)
LINE_ITEM = (
    "INSERT INTO sales.opportunity_line_item (id, opportunity_id, service_line__c, quantity, "
    "unit_price, currency_iso_code) VALUES (:id, :opp, :s, :q, :p, 'EUR')"
)
MILESTONE = (
    "INSERT INTO sales.billing_milestone (id, opportunity_id, name, due_date__c, amount__c, "
    "currency_iso_code) VALUES (:id, :opp, :name, :due, :amount, 'EUR')"
)
CLOSE_WON = (
    "UPDATE sales.opportunity SET stage_name = 'Closed Won', is_closed = true, is_won = true, "
    "last_modified_date = now() WHERE id = :id"
)


def _tax_code(settings: Settings) -> None:
    """The ERP's German VAT on the deal stage's tax code view (the ERP's CDC is not wired
    into a sandbox)."""
    registry = Registry(settings)
    topic = VIEWS["tax_code"].topic(settings.topic_namespace)
    enc = Encoder(registry.register, f"{topic}-value", contracts.schema_str("tax_code"))
    now = datetime.now(UTC)
    key = "VAT-DE-19"
    record = {
        "envelope": {
            "event_id": str(uuid.uuid4()),
            "correlation_id": correlation_id(key),
            "causation_id": None,
            "source": {
                "system": "bench",
                "connector": "bench",
                "entity": "tax_code",
                "key": key,
                "position": "1",
                "sequence": 1,
                "committed_at": now,
            },
            "op": "snapshot",
            "entity_version": 1,
            "emitted_at": now,
        },
        "data": {
            "code": key,
            "name": "VAT 19%",
            "jurisdiction": "DE",
            "rate_percent": Decimal("19.0000"),
        },
    }
    producer = Producer(kafka_config(settings))
    producer.produce(topic, key=key.encode(), value=enc.encode(record))
    if producer.flush(30):
        raise RuntimeError(f"could not produce the tax code to {topic}")


def _topic_count(settings: Settings, topic: str) -> int:
    c = Consumer(kafka_config(settings, **{"group.id": f"bench-{uuid.uuid4()}"}))
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        return sum(
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions
        )
    finally:
        c.close()


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class Results:
    """Follows saga.results; the psa_project results, by saga key."""

    def __init__(self, settings: Settings) -> None:
        self.decoder = Decoder(Registry(settings).schema_by_id)
        topic = topology(settings).results
        self.consumer = Consumer(
            kafka_config(
                settings, **{"group.id": f"bench-{uuid.uuid4()}", "enable.auto.commit": False}
            )
        )
        md = self.consumer.list_topics(topic, timeout=10).topics[topic]
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions])
        self.psa: dict[str, dict[str, Any]] = {}
        self.rejected: dict[str, str] = {}

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.1)
            value = None if msg is None or msg.error() else msg.value()
            if value is None:
                continue
            r = self.decoder.decode(value)
            if r["status"] == "rejected":
                self.rejected[r["saga_key"]] = f"{r['step']}: {r['error']}"
            elif r["step"] == "psa_project":
                self.psa.setdefault(r["saga_key"], r)


def _committed_at(settings: Settings, keys: set[str]) -> dict[str, float]:
    """Debezium's commit time of each deal's closed-won change (canonical opportunity)."""
    decoder = Decoder(Registry(settings).schema_by_id)
    topic = topology(settings).canonical("opportunity")
    c = Consumer(
        kafka_config(settings, **{"group.id": f"bench-{uuid.uuid4()}", "enable.auto.commit": False})
    )
    found: dict[str, float] = {}
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        ends = {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in md.partitions
        }
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions])
        left = {p for p, end in ends.items() if end > 0}
        while left:
            msg = c.poll(10)
            if msg is None:
                break
            if msg.error():
                continue
            if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                left.discard(msg.partition() or 0)
            key = (msg.key() or b"").decode()
            value = msg.value()
            if key in keys and value:
                event = decoder.decode(value)
                data = event.get("data") or {}
                if data.get("is_won") or data.get("stage") == "Closed Won":
                    at = event["envelope"]["source"]["committed_at"]
                    found.setdefault(key, at.timestamp())
    finally:
        c.close()
    return found


def _histogram(port: int) -> list[str]:
    name = "pssync_closed_won_to_psa_project_seconds"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return [ln for ln in r.read().decode().splitlines() if ln.startswith(name)]
    except OSError as exc:
        return [f"metrics unavailable: {exc}"]


def _pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _summary(label: str, values: list[float]) -> str:
    if not values:
        return f"{label}: no values"
    return (
        f"{label}: count {len(values)}  p50 {_pct(values, 0.50):.2f} s  "
        f"p90 {_pct(values, 0.90):.2f} s  p99 {_pct(values, 0.99):.2f} s  "
        f"max {max(values):.2f} s  mean {statistics.fmean(values):.2f} s"
    )


def _redmine_created(settings: Settings, identifiers: dict[str, str]) -> dict[str, float]:
    key = settings.psa_api_key_file.read_text().strip()
    out: dict[str, float] = {}
    with httpx.Client(
        base_url=settings.psa_url, headers={"X-Redmine-API-Key": key}, timeout=30
    ) as api:
        for saga_key, ident in identifiers.items():
            resp = api.get(f"/projects/{ident}.json")
            if resp.status_code == 200:
                created = resp.json()["project"]["created_on"]
                out[saga_key] = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    return out


def run(deals: int, interval: float, partitions: int) -> int:
    base = Settings.from_env()
    suffix = "b" + uuid.uuid4().hex[:10]
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"pssync-saga-bench-{suffix}"
    started = time.monotonic()
    sandbox: Sandbox = create_sandbox(
        base,
        suffix,
        work / "worker-data",
        {
            "PSSYNC_BATCH_WITHIN": "0.1",
            "PSSYNC_PARTITIONS": str(partitions),
            "PSSYNC_DEAL_LINE_WAIT": "120",
        },
    )
    settings, env = sandbox.settings, sandbox.env
    worker = Worker(env, work / "worker.log")
    try:
        load = [sys.executable, "-m", "streams.cli", "reference", "load"]
        done = subprocess.run(load, env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"pssync reference load failed: {done.stderr}")
        _tax_code(settings)
        worker.start()
        print(f"sandbox {suffix} and worker ready in {time.monotonic() - started:.1f} s")

        t = topology(settings)
        ids = [
            (f"001B{uuid.uuid4().hex[:10]}", f"006B{uuid.uuid4().hex[:10]}") for _ in range(deals)
        ]
        engine = create_engine(db_url(settings.crm_db))
        with engine.begin() as conn:
            for account, _ in ids:
                conn.execute(text(ACCOUNT), {"id": account, "name": f"Bench {account}"})
        _wait(lambda: _topic_count(settings, t.canonical("customer")) >= deals, 300, "customers")
        with engine.begin() as conn:
            for account, opp in ids:
                conn.execute(
                    text(OPPORTUNITY),
                    {"id": opp, "account": account, "name": f"Bench {opp}", "pm": PM},
                )
                for n, (s, q, p) in enumerate((("ARCH", 20, 150), ("CONSULT", 10, 120))):
                    line = {"id": f"{opp[:14]}L{n}", "opp": opp, "s": s, "q": q, "p": p}
                    conn.execute(text(LINE_ITEM), line)
                for n, (name, day, amount) in enumerate(
                    (("Design signed off", "2027-01-29", 10000), ("Go-live", "2027-03-31", 20000))
                ):
                    row = {"id": f"{opp[:14]}M{n}", "opp": opp, "name": name, "due": day}
                    conn.execute(text(MILESTONE), {**row, "amount": amount})
        for entity in ("opportunity_line_item", "billing_milestone"):
            _wait(
                lambda e=entity: _topic_count(settings, t.canonical(e)) >= 2 * deals,
                300,
                entity,
            )
        print(f"{deals} open deals landed; closing one every {interval:.2f} s")

        results = Results(settings)
        closed: dict[str, float] = {}
        keys = {f"crm:opportunity:{opp}": opp for _, opp in ids}
        first_close = time.time()
        for n, (_, opp) in enumerate(ids):
            due = first_close + n * interval
            while (clock := time.time()) < due:
                results.drain(min(0.1, due - clock))
            with engine.begin() as conn:
                conn.execute(text(CLOSE_WON), {"id": opp})
            closed[f"crm:opportunity:{opp}"] = time.time()
        engine.dispose()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and len(results.psa) + len(results.rejected) < deals:
            results.drain(1.0)
        wall = time.time() - first_close
        results.consumer.close()

        committed = _committed_at(settings, set(keys))
        latency: list[float] = []
        for key, result in results.psa.items():
            start = committed.get(key, closed[key])
            latency.append(result["completed_at"].timestamp() - start)
        idents = {
            k: json.loads(r["output"])["identifier"]
            for k, r in results.psa.items()
            if r["status"] == "done"
        }
        created = _redmine_created(settings, idents)
        redmine = [created[k] - committed.get(k, closed[k]) for k in created]

        print()
        print(
            f"setup: {platform.node()}, {os.cpu_count()} CPUs (shared with the whole local "
            f"stack: PostgreSQL, Kafka, Connect, registry, Tryton, Redmine), load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; one pssync worker, "
            f"{partitions} partitions per topic; {deals} deals, one new account each "
            f"(2 line items, 2 milestones: 1 party, 1 project + 6 tasks in Tryton, 1 project "
            f"+ 9 issues + 2 versions + 4 memberships in Redmine), closed every {interval:.2f} s "
            f"({wall:.0f} s from first close to last project)"
        )
        print(f"commit times from Debezium for {len(committed)} of {deals} deals")
        print(_summary("closed-won commit -> psa_project result", latency))
        print(_summary("closed-won commit -> Redmine created_on (1 s resolution)", redmine))
        print("worker histogram:")
        for metric in _histogram(int(env["PSSYNC_WEB_PORT"])):
            print(f"  {metric}")
        missing = deals - len(results.psa) - len(results.rejected)
        for key, why in results.rejected.items():
            print(f"rejected {key}: {why}")
        if missing or results.rejected:
            print(f"{missing} deal(s) without a PSA project, {len(results.rejected)} rejected")
            print(f"worker log: {worker.log}")
            return 1
        return 0
    finally:
        worker.stop()
        destroy_sandbox(sandbox)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--deals", type=int, default=100)
    p.add_argument("--interval", type=float, default=2.0, help="seconds between two closes")
    p.add_argument("--partitions", type=int, default=2)
    args = p.parse_args()
    return run(args.deals, args.interval, args.partitions)


if __name__ == "__main__":
    sys.exit(main())
