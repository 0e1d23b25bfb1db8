"""Period close: a burst of approved time entries through the ERP posting queue.

A deal is closed won and provisioned (ERP and PSA project); then N approved time entries on
one of its tasks are inserted into Redmine's database by bulk SQL, in ten transactions spread
over at most a minute (as a period-close import would), while the posting queue may make at
most `--rate` requests per second to the ERP. During the burst a second deal is closed won:
its project must still be provisioned within the saga's SLO (the saga's ERP commands share
the ERP's rate with the postings, but not their queue).

Reported: drain time (first insert -> every entry's line in the ERP), posting throughput,
peak consumer lag of the time entry inputs and of the posting queue, the second deal's
closed-won -> provisioned latency; checked: the ERP holds exactly one line per entry and
the sum of their hours equals the source's (all posted exactly once).

Usage: python bench/period_close.py [--entries 2000] [--rate 50] [--batch 100]
Needs the whole local stack (`make up`). The run deploys its own ERP and PSA connectors; the
bench's time entries are deleted from Redmine afterwards (with the worker stopped), their
ERP lines stay on the bench's own project.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from connectors.erp import TrytonErp
from connectors.sql import db_url
from streams.mappings.envelope import correlation_id
from streams.replay import Replayer
from streams.settings import Settings
from tests.integration.conftest import SliceEnv
from tests.integration.test_deal_saga import Kafka, _reference
from tests.integration.test_quote_to_cash import (
    CLOSE_WON,
    _account,
    _children_landed,
    _crm_tx,
    _new_id,
    _open_deal,
    _opportunity_row,
    _provisioned,
)
from tests.integration.test_time_entries import (
    PERSON,
    Redmine,
    _ensure_employee,
    _erp_project_id,
    capture_sandbox,
)

SLO = 300.0  # seconds from closed-won to the project (the seed's 5 minutes)
CHUNKS = 10

INSERT_ENTRIES = """
WITH made AS (
  INSERT INTO time_entries (project_id, author_id, user_id, issue_id, hours, comments,
    activity_id, spent_on, tyear, tmonth, tweek, created_on, updated_on)
  SELECT :project, :user, :user, :issue, 0.25 * (1 + (n % 8)), 'period close ' || n,
    :activity, DATE '2026-11-30', 2026, 11, 49, now(), now()
  FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS n
  RETURNING id
)
INSERT INTO custom_values (customized_type, customized_id, custom_field_id, value)
SELECT 'TimeEntry', id, :field, '1' FROM made
"""


def _psa_engine(settings: Settings) -> Any:
    return create_engine(db_url(settings.psa_db))


def _erp_lines(settings: Settings, project: int) -> tuple[int, float, int]:
    """(lines, hours, distinct entries) of pssync's timesheet lines on the project's works."""

    async def go() -> tuple[int, float, int]:
        erp = TrytonErp.from_settings(settings)
        try:
            works = await erp.rpc.model(
                "project.work",
                "search",
                ["OR", ("id", "=", project), ("parent", "=", project)],
                0,
                None,
                None,
            )
            sheets = await erp.rpc.model(
                "timesheet.work",
                "search",
                [("origin", "in", [f"project.work,{w}" for w in works])],
                0,
                None,
                None,
            )
            rows = await erp.rpc.model(
                "timesheet.line",
                "search_read",
                [("work", "in", sheets), ("description", "like", "%[pssync psa:time_entry:%")],
                0,
                None,
                None,
                ["duration", "description"],
            )
        finally:
            await erp.aclose()
        hours = sum(float(r["duration"]["seconds"]) for r in rows) / 3600
        keys = {str(r["description"]).rpartition("[pssync ")[2] for r in rows}
        return len(rows), hours, len(keys)

    return asyncio.run(go())


class LagWatch(threading.Thread):
    """Samples the group's lag on the time entry inputs and the posting queue."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        ns = settings.topic_namespace
        self.topics = [f"{ns}.time_entries.inputs", f"{ns}.postings.erp"]
        self.peak = dict.fromkeys(self.topics, 0)
        self.stop = threading.Event()

    def run(self) -> None:
        replayer = Replayer(self.settings, timeout=10)
        while not self.stop.wait(1.0):
            for topic in self.topics:
                try:
                    lag = sum(replayer.lag(self.settings.app_id, topic).values())
                except Exception:  # noqa: BLE001 - a missed sample is no result
                    continue
                self.peak[topic] = max(self.peak[topic], lag)


class DealWatch(threading.Thread):
    """Closed-won -> provisioned of one deal, polled from the CRM during the burst."""

    def __init__(self, env: SliceEnv, crm_id: str) -> None:
        super().__init__(daemon=True)
        self.env, self.crm_id = env, crm_id
        self.closed_at = time.monotonic()
        self.after: float | None = None

    def run(self) -> None:
        deadline = self.closed_at + 2 * SLO
        while time.monotonic() < deadline:
            if _opportunity_row(self.env, self.crm_id).get("sync_status__c") == "provisioned":
                self.after = time.monotonic() - self.closed_at
                return
            time.sleep(0.5)


def run(entries: int, rate: float, batch: int) -> int:
    extra = {
        "PSSYNC_PARTITIONS": "2",
        "PSSYNC_DEAL_LINE_WAIT": "120",
        "PSSYNC_ERP_RATE": str(rate),
        "PSSYNC_POSTING_BATCH_SIZE": str(batch),
        "PSSYNC_TIME_ENTRY_WAIT": "600",
    }
    tmp = Path(tempfile.mkdtemp(prefix="period-close-"))
    print(f"worker log and state in {tmp}")
    with capture_sandbox(tmp, extra) as env:
        return _bench(env, entries, rate, batch)


def _bench(env: SliceEnv, entries: int, rate: float, batch: int) -> int:
    settings = env.settings
    k = Kafka(env)
    _reference(env, k)
    _ensure_employee(settings)
    worker = env.worker()
    worker.start()
    account = _new_id("001P")
    first, second = _new_id("006P"), _new_id("006Q")
    _account(env, account)
    _crm_tx(env, _open_deal(first, account) + _open_deal(second, account))
    _children_landed(env, [first, second])
    env.crm(CLOSE_WON, {"id": first})
    code = str(_provisioned(env, first)["project_code__c"])
    erp_project = _erp_project_id(env, code)
    psa = Redmine(settings)
    project = psa.project(code)
    issue = psa.issues(int(project["id"]))["Recommendations"]
    engine = _psa_engine(settings)
    with engine.connect() as conn:
        user = int(conn.execute(text("SELECT id FROM users WHERE login = 'pssync'")).scalar_one())
    print(f"project {code} (ERP {erp_project}, PSA {project['id']}); person {PERSON}")

    try:
        return _burst(
            env,
            worker,
            engine,
            psa,
            project,
            issue,
            user,
            erp_project,
            second,
            entries,
            rate,
            batch,
        )
    finally:
        worker.stop()
        with engine.begin() as conn:  # the bench's rows leave Redmine (the worker is stopped)
            conn.execute(
                text(
                    "DELETE FROM custom_values WHERE customized_type = 'TimeEntry' AND "
                    "customized_id IN (SELECT id FROM time_entries WHERE project_id = :p)"
                ),
                {"p": project["id"]},
            )
            conn.execute(
                text("DELETE FROM time_entries WHERE project_id = :p"), {"p": project["id"]}
            )
        engine.dispose()


def _burst(
    env: SliceEnv,
    worker: Any,
    engine: Any,
    psa: Redmine,
    project: dict[str, Any],
    issue: int,
    user: int,
    erp_project: int,
    second: str,
    entries: int,
    rate: float,
    batch: int,
) -> int:
    settings = env.settings
    lag = LagWatch(settings)
    lag.start()
    per_chunk = max(1, entries // CHUNKS)
    spacing = min(60.0 / CHUNKS, 5.0)
    started = time.monotonic()
    watch: DealWatch | None = None
    made = 0
    for c in range(CHUNKS):
        n = per_chunk if c < CHUNKS - 1 else entries - made
        with engine.begin() as conn:
            conn.execute(
                text(INSERT_ENTRIES),
                {
                    "project": project["id"],
                    "user": user,
                    "issue": issue,
                    "activity": psa.activity,
                    "field": psa.approved,
                    "first": made,
                    "last": made + n - 1,
                },
            )
        made += n
        if c == 0:
            env.crm(CLOSE_WON, {"id": second})  # a deal closes while the backlog builds
            watch = DealWatch(env, second)
            watch.start()
        time.sleep(max(0.0, started + (c + 1) * spacing - time.monotonic()))
    inserted = time.monotonic() - started
    with engine.connect() as conn:
        src_count, src_hours = conn.execute(
            text(
                "SELECT count(*), coalesce(sum(hours), 0) FROM time_entries WHERE project_id = :p"
            ),
            {"p": project["id"]},
        ).one()
    print(
        f"inserted {made} approved entries in {inserted:.1f}s "
        f"(source: {src_count} entries, {float(src_hours):.2f} h)"
    )

    assert watch is not None
    deadline = time.monotonic() + max(1800.0, entries / max(rate, 1) * 10)
    drained = None
    while time.monotonic() < deadline:
        if worker.proc is None or worker.proc.poll() is not None:
            print(f"the worker stopped; see {worker.log}")
            return 1
        lines, hours, keys = _erp_lines(settings, erp_project)
        if lines >= src_count and drained is None:
            drained = time.monotonic() - started
        if drained is not None and not watch.is_alive():
            break
        time.sleep(1.0)
    drained = drained if drained is not None else time.monotonic() - started
    provisioned_after = watch.after
    lag.stop.set()
    lines, hours, keys = _erp_lines(settings, erp_project)

    exact = lines == src_count == keys and abs(hours - float(src_hours)) < 1e-6
    cid = correlation_id(f"crm:opportunity:{second}")
    print(
        f"ERP lines {lines} (distinct entries {keys}), {hours:.2f} h: "
        f"{'exactly once' if exact else 'MISMATCH'}"
    )
    print(
        f"drain time {drained:.1f}s from the first insert ({lines / drained:.1f} entries/s "
        f"at {rate:g} requests/s, batches of {batch})"
    )
    for topic, peak in lag.peak.items():
        print(f"peak lag {topic}: {peak}")
    if provisioned_after is None:
        print(f"deal {second} ({cid}) NOT provisioned during the run")
        return 1
    within = provisioned_after <= SLO
    print(
        f"deal {second} closed won during the burst: provisioned after "
        f"{provisioned_after:.1f}s ({'within' if within else 'OUTSIDE'} the {SLO:.0f}s SLO)"
    )
    return 0 if exact and within else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--entries", type=int, default=2000)
    p.add_argument("--rate", type=float, default=50.0, help="ERP requests per second")
    p.add_argument("--batch", type=int, default=100, help="postings per ERP batch operation")
    args = p.parse_args()
    return run(args.entries, args.rate, args.batch)


if __name__ == "__main__":
    sys.exit(main())
