"""Invoice posted in the ERP -> CRM opportunity updated: latency of the invoice write-back.

D deals are closed won in a sandbox CRM and provisioned by the saga (Tryton project with six
tasks, fixed fee: invoiced on effort). Then, N times, finance (tests/erp_finance.py, Tryton's
RPC as its admin) finishes one task of a deal and invoices the project (not timed), and
posts the invoice at a steady pace. For each invoice the latency is from the post's
transaction in Tryton (the invoice's `write_date`, read back over RPC; Tryton stamps it when
the transaction starts, so the figure includes the post itself) to the CRM's write on the
opportunity (`last_synced_at__c`, the CRM server's clock at the write; same machine). The
worker's `pssync_writeback_latency_seconds` histogram (ERP commit time from Debezium -> CRM
write applied) is printed beside it.

Usage: python bench/invoice_latency.py [--invoices 20] [--interval 1.0] [--partitions 2]
Needs the whole local stack (`make up`). Its sandbox deploys its own Debezium connector on
the ERP's database (own slot and topics, removed after); the ERP parties, projects and
invoices and the Redmine projects it makes stay (the integration users may not delete them).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient
from sqlalchemy import create_engine, text

from connectors.debezium import erp_connector, slot_name
from connectors.kafka_connect import ConnectClient
from connectors.sql import db_url
from streams.admin import delete_topics
from streams.security import kafka_config
from streams.settings import Settings
from streams.topology import topology
from tests.erp_finance import Finance
from tests.sandbox import Sandbox, Worker, admin_engine, create_sandbox, destroy_sandbox

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from saga_latency import (  # noqa: E402 - the saga benchmark's CRM rows and helpers
    ACCOUNT,
    CLOSE_WON,
    LINE_ITEM,
    MILESTONE,
    OPPORTUNITY,
    PM,
    _tax_code,
    _topic_count,
    _wait,
)

TASKS_PER_DEAL = 6  # the ARCH and CONSULT templates' tasks (schemas/reference/default.json)


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


def _histogram(port: int) -> list[str]:
    name = "pssync_writeback_latency_seconds"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return [
                ln
                for ln in r.read().decode().splitlines()
                if ln.startswith(name) and "crm_invoice_status" in ln
            ]
    except OSError as exc:
        return [f"metrics unavailable: {exc}"]


def _crm_rows(engine: Any, ids: list[str]) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, project_code__c, sync_status__c, last_invoice_number__c, "
                "last_synced_at__c FROM sales.opportunity WHERE id = ANY(:ids)"
            ),
            {"ids": ids},
        ).mappings()
        return {str(r["id"]): dict(r) for r in rows}


def _drop_erp_capture(settings: Settings, name: str) -> None:
    ConnectClient(settings.connect_url).delete(name)
    time.sleep(1)
    slot = slot_name(settings.erp_topic_prefix)
    admin = admin_engine(settings)
    try:
        with admin.connect() as conn:
            for _ in range(30):
                try:
                    conn.execute(
                        text(
                            "SELECT pg_drop_replication_slot(slot_name) FROM "
                            "pg_replication_slots WHERE slot_name = :s"
                        ),
                        {"s": slot},
                    )
                    break
                except Exception:  # noqa: BLE001 - slot still in use, retried
                    time.sleep(1)
    finally:
        admin.dispose()
    engine = create_engine(db_url(settings.erp_db))
    try:
        with engine.begin() as conn:
            conn.execute(text(f'DROP PUBLICATION IF EXISTS "{slot}"'))
    finally:
        engine.dispose()
    topics = AdminClient(kafka_config(settings)).list_topics(timeout=10).topics
    mine = [t for t in topics if t.startswith(f"{settings.erp_topic_prefix}.")]
    if mine:
        delete_topics(settings, mine)


def run(invoices: int, interval: float, partitions: int) -> int:
    base = Settings.from_env()
    deals = max(1, math.ceil(invoices / TASKS_PER_DEAL))
    suffix = "i" + uuid.uuid4().hex[:10]
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"pssync-invoice-bench-{suffix}"
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
    capture = erp_connector(settings)
    worker = Worker(env, work / "worker.log")
    try:
        connect = ConnectClient(settings.connect_url)
        connect.put(capture["name"], capture["config"])
        connect.wait_running(capture["name"], timeout=120)
        load = [sys.executable, "-m", "streams.cli", "reference", "load"]
        done = subprocess.run(load, env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"pssync reference load failed: {done.stderr}")
        _tax_code(settings)
        worker.start()
        print(
            f"sandbox {suffix}, ERP capture and worker ready in {time.monotonic() - started:.1f} s"
        )

        t = topology(settings)
        ids = [
            (f"001N{uuid.uuid4().hex[:10]}", f"006N{uuid.uuid4().hex[:10]}") for _ in range(deals)
        ]
        engine = create_engine(db_url(settings.crm_db))
        with engine.begin() as conn:
            for account, _ in ids:
                conn.execute(text(ACCOUNT), {"id": account, "name": f"Bench {account}"})
        _wait(lambda: _topic_count(settings, t.canonical("customer")) >= deals, 300, "customers")
        with engine.begin() as conn:
            for account, opp in ids:
                conn.execute(
                    text(OPPORTUNITY.replace("'Time and Materials'", "'Fixed Fee'")),
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
        with engine.begin() as conn:
            for _, opp in ids:
                conn.execute(text(CLOSE_WON), {"id": opp})
        crm_ids = [opp for _, opp in ids]
        _wait(
            lambda: all(
                r["sync_status__c"] == "provisioned" for r in _crm_rows(engine, crm_ids).values()
            ),
            600,
            "the deals provisioned",
        )
        codes = {opp: str(r["project_code__c"]) for opp, r in _crm_rows(engine, crm_ids).items()}
        print(f"{deals} deals provisioned; posting {invoices} invoices, one every {interval:.2f} s")

        finance = Finance(settings)
        latency: list[float] = []
        upper: list[float] = []  # from the moment the post was requested
        first = time.time()
        for n in range(invoices):
            opp = crm_ids[n % deals]
            finance.finish_one(codes[opp])
            invoice = finance.invoice_project(codes[opp])
            due = first + n * interval
            while time.time() < due:
                time.sleep(0.01)
            clicked = time.time()
            posted = finance.post(invoice)
            number, posted_at = posted["number"], posted["posted_at"]
            _wait(
                lambda o=opp, x=number: _crm_rows(engine, [o])[o]["last_invoice_number__c"] == x,
                120,
                f"invoice {number} on {opp}",
            )
            written: datetime = _crm_rows(engine, [opp])[opp]["last_synced_at__c"]
            latency.append(written.timestamp() - posted_at)
            upper.append(written.timestamp() - clicked)
        wall = time.time() - first
        engine.dispose()

        print()
        print(
            f"setup: {platform.node()}, {os.cpu_count()} CPUs (shared with the whole local "
            f"stack and other work), load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; one pssync worker, "
            f"{partitions} partitions per topic; {deals} deals, {invoices} invoices posted "
            f"one after the other, at most one every {interval:.2f} s ({wall:.0f} s in all)"
        )
        print(_summary("invoice posted in Tryton -> CRM opportunity updated", latency))
        print(_summary("post requested (RPC sent) -> CRM opportunity updated", upper))
        print("worker histogram (ERP commit -> CRM write applied):")
        for metric in _histogram(int(env["PSSYNC_WEB_PORT"])):
            print(f"  {metric}")
        return 0
    finally:
        worker.stop()
        _drop_erp_capture(settings, capture["name"])
        destroy_sandbox(sandbox)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--invoices", type=int, default=20)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between two posts")
    p.add_argument("--partitions", type=int, default=2)
    args = p.parse_args()
    return run(args.invoices, args.interval, args.partitions)


if __name__ == "__main__":
    sys.exit(main())
