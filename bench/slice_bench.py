"""Throughput of the CRM -> canonical -> target slice on the local stack (`make bench`).

Measured in one run, side by side:
  capture   Debezium: N committed CRM rows -> N raw change events in Kafka
  worker    `pssync worker` (Faust): N raw events -> N rows in the target (normalize, dedupe,
            Avro, sink), from worker start and in steady state (first to last row)
  loop      the same per-event work (parse, dedupe, map, Avro encode, produce) in a plain
            confluent-kafka loop without Faust, as a ceiling for the normalize stage
  faust     a bare Faust agent that only batches and counts the same raw events: the
            framework's own ceiling
  sink      PostgresSink.apply alone on decoded batches of 1000

Usage: python bench/slice_bench.py [--events 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import create_engine, text

from connectors.debezium import crm_connector, slot_name
from connectors.kafka_connect import ConnectClient
from connectors.sinks.postgres import PostgresSink
from connectors.sql import apply_schema, db_url, server_execute
from schemas import contracts
from schemas.registry import Registry
from schemas.serde import Decoder, encode
from streams.admin import TopicSpec, delete_topics, ensure_topics
from streams.changes import parse
from streams.output import Output
from streams.security import kafka_config
from streams.settings import Settings
from streams.topology import topic_specs, topology
from tables.dedupe import Position, Verdict, decide

ROOT = Path(__file__).resolve().parent.parent


def admin_exec(settings: Settings, sql: str) -> None:
    server_execute(settings.crm_db, sql)


def topic_end(settings: Settings, topic: str) -> int:
    c = Consumer(kafka_config(settings, **{"group.id": "bench-sizer"}))
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        return sum(
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions
        )
    finally:
        c.close()


def count_rows(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if conn.execute(text("SELECT to_regclass('opportunity')")).scalar() is None:
                return 0
            return int(conn.execute(text("SELECT count(*) FROM opportunity")).scalar() or 0)
    finally:
        engine.dispose()


def wait(check: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic()
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def capture(base: Settings, sfx: str, n: int) -> tuple[Settings, dict[str, str], float]:
    env = {
        **os.environ,
        "PSSYNC_CRM_DB_NAME": f"crm_{sfx}",
        "PSSYNC_CRM_TOPIC_PREFIX": f"crm_{sfx}",
        "PSSYNC_ERP_TOPIC_PREFIX": f"erp_{sfx}",
        "PSSYNC_PSA_TOPIC_PREFIX": f"psa_{sfx}",
    }
    admin_exec(base, f'CREATE DATABASE "crm_{sfx}"')
    settings = Settings.from_env(env)
    apply_schema(settings.crm_db, "crm")
    ensure_topics(settings, topic_specs(settings)[:1])
    conn_conf = crm_connector(settings)
    client = ConnectClient(settings.connect_url)
    client.put(conn_conf["name"], conn_conf["config"])
    client.wait_running(conn_conf["name"], timeout=120)
    raw = topology(settings).routes[0].raw_topic
    rows = [
        {"id": f"006B{i:07d}", "name": f"Deal {i}", "amount": f"{i}.50", "pm": f"pm{i % 9}@x.io"}
        for i in range(n)
    ]
    engine = create_engine(db_url(settings.crm_db))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sales.opportunity (id, name, stage_name, amount, currency_iso_code, "
                "close_date, billing_type__c, project_manager_email__c, service_lines__c) VALUES "
                "(:id, :name, 'Qualification', :amount, 'USD', '2027-06-30', 'Fixed Fee', :pm, "
                "'CONSULT;PM')"
            ),
            rows,
        )
    engine.dispose()
    committed = time.monotonic()
    done = wait(lambda: topic_end(settings, raw) >= n, 600, "Debezium capture")
    return settings, env, n / (done - committed)


def run_worker(base_env: dict[str, str], sfx: str, run: int, n: int) -> tuple[float, float]:
    tag = f"{sfx}r{run}"
    env = {
        **base_env,
        "PSSYNC_APP_ID": f"bench-{tag}",
        "PSSYNC_TOPIC_NAMESPACE": tag,
        "PSSYNC_TARGET_URL": base_env["PSSYNC_TARGET_URL_BASE"] + f"target_{tag}",
        "PSSYNC_WEB_PORT": str(16000 + run),
        "PSSYNC_DATA_DIR": f"/tmp/pssync-bench-{tag}",
    }
    settings = Settings.from_env(env)
    admin_exec(settings, f'CREATE DATABASE "target_{tag}"')
    log = (settings.stack_dir / "logs" / f"bench-worker-{tag}.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        first = wait(lambda: count_rows(settings.target_url) > 0, 120, "first row")
        done = wait(lambda: count_rows(settings.target_url) >= n, 600, "all rows")
    finally:
        proc.terminate()
        proc.wait(30)
    admin_exec(settings, f'DROP DATABASE "target_{tag}" WITH (FORCE)')
    names = [t.name for t in topic_specs(settings)[1:]]
    names += [f"bench-{tag}-dedupe-positions-changelog", f"bench-{tag}-__assignor-__leader"]
    delete_topics(settings, names)
    return n / (done - started), n / max(done - first, 1e-9)


def read_raw(settings: Settings, n: int) -> list[Any]:
    raw = topology(settings).routes[0].raw_topic
    c = Consumer(
        kafka_config(
            settings, **{"group.id": f"bench-{uuid.uuid4()}", "auto.offset.reset": "earliest"}
        )
    )
    c.subscribe([raw])
    out: list[Any] = []
    while len(out) < n:
        out.extend(m for m in c.consume(1000, 5) if not m.error())
    c.close()
    return out


def plain_loop(settings: Settings, messages: list[Any], scratch: str) -> float:
    """The normalize stage's per-event work in a plain client loop, no Faust."""
    topo = topology(settings)
    route = topo.routes[0]
    registry = Registry(settings)
    schema_id = registry.register(f"{scratch}-value", contracts.schema_str("opportunity"))
    parsed = contracts.parsed("opportunity")
    output = Output(settings, client_id="bench-loop")
    state: dict[str, Position] = {}
    started = time.monotonic()
    for i in range(0, len(messages), 1000):
        for m in messages[i : i + 1000]:
            change = parse(m.key(), m.value(), m.topic())
            if change is None:
                continue
            sk = f"{change.connector}/{change.entity}/{change.key}"
            verdict, pos = decide(state.get(sk), change.sequence, change.op == "delete")
            if verdict is not Verdict.EMIT:
                continue
            mapped = route.mapper(change, f"{m.topic()}/{m.partition()}/{m.offset()}")
            if mapped is None:
                continue
            key, record = mapped
            output.send(scratch, key.encode(), encode(schema_id, parsed, record))
            state[sk] = pos
        asyncio.run(output.flush())
    return len(messages) / (time.monotonic() - started)


def faust_ceiling(settings: Settings, n: int) -> float:
    """A bare Faust agent (take_events, no work) on the same raw topic; NaN if it stalls."""
    raw = topology(settings).routes[0].raw_topic
    group = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "faust_ceiling.py"), raw, str(n), group],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PSSYNC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap},
        )
    except subprocess.TimeoutExpired:
        return float("nan")
    rates = [line.split("RATE ")[1] for line in done.stdout.splitlines() if "RATE " in line]
    return float(rates[0]) if rates else float("nan")


def sink_only(settings: Settings, scratch: str, sfx: str, run: int) -> float:
    registry = Registry(settings)
    decoder = Decoder(registry.schema_by_id)
    c = Consumer(
        kafka_config(
            settings, **{"group.id": f"bench-{uuid.uuid4()}", "auto.offset.reset": "earliest"}
        )
    )
    c.subscribe([scratch])
    n = topic_end(settings, scratch)
    records: list[dict[str, Any]] = []
    while len(records) < n:
        for m in c.consume(1000, 5):
            value, key = m.value(), m.key()
            if not m.error() and value is not None and key is not None:
                rec = decoder.decode(value)
                rec["key"] = key.decode()
                records.append(rec)
    c.close()
    db = f"target_{sfx}s{run}"
    admin_exec(settings, f'CREATE DATABASE "{db}"')
    url = settings.target_url.rsplit("/", 1)[0] + f"/{db}"

    async def go() -> float:
        sink = PostgresSink(url, "opportunity")
        await sink.ensure_schema()
        started = time.monotonic()
        for i in range(0, len(records), 1000):
            await sink.apply(records[i : i + 1000])
        took = time.monotonic() - started
        await sink.close()
        return took

    took = asyncio.run(go())
    admin_exec(settings, f'DROP DATABASE "{db}" WITH (FORCE)')
    return len(records) / took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    base = Settings.from_env()
    sfx = "b" + uuid.uuid4().hex[:8]
    n = args.events
    print(f"slice benchmark: {n} opportunities, {args.runs} runs, 2-core machine, local stack")
    settings, env, capture_rate = capture(base, sfx, n)
    env["PSSYNC_TARGET_URL_BASE"] = base.target_url.rsplit("/", 1)[0] + "/"
    try:
        messages = read_raw(settings, n)
        scratch = f"bench.{sfx}.loop"
        loop_rates, sink_rates, total_rates, steady_rates, faust_rates = [], [], [], [], []
        for run in range(args.runs):
            ensure_topics(settings, [TopicSpec(scratch, 1, 1)])
            loop_rates.append(plain_loop(settings, messages, scratch))
            sink_rates.append(sink_only(settings, scratch, sfx, run))
            delete_topics(settings, [scratch])
            faust_rates.append(faust_ceiling(settings, n))
            total, steady = run_worker(env, sfx, run, n)
            total_rates.append(total)
            steady_rates.append(steady)
        med = statistics.median
        print(f"{'stage':<46} {'median ev/s':>12} {'runs':>28}")
        rows = [
            ("capture: CRM commit -> raw topic (Debezium)", [capture_rate]),
            ("worker: start -> all rows in target", total_rates),
            ("worker: first -> last row (steady state)", steady_rates),
            ("loop: normalize work, plain client, no Faust", loop_rates),
            ("faust: bare take_events agent, no work", faust_rates),
            ("sink: PostgresSink.apply, batches of 1000", sink_rates),
        ]
        for name, rates in rows:
            runs = " ".join(f"{r:,.0f}" for r in rates)
            print(f"{name:<46} {med(rates):>12,.0f} {runs:>28}")
        print(
            f"ratio worker steady / plain loop: {med(steady_rates) / med(loop_rates):.2f}; "
            f"worker steady / bare Faust agent: {med(steady_rates) / med(faust_rates):.2f}; "
            f"worker steady / sink alone: {med(steady_rates) / med(sink_rates):.2f}"
        )
    finally:
        client = ConnectClient(settings.connect_url)
        client.delete(crm_connector(settings)["name"])
        time.sleep(2)
        try:
            admin_exec(
                settings,
                f"SELECT pg_drop_replication_slot('{slot_name(settings.crm_topic_prefix)}')",
            )
        except Exception as exc:  # noqa: BLE001 - best-effort cleanup
            print(f"note: slot not dropped ({exc})")
        admin_exec(settings, f'DROP DATABASE IF EXISTS "crm_{sfx}" WITH (FORCE)')
        delete_topics(settings, [topology(settings).routes[0].raw_topic])
    return 0


if __name__ == "__main__":
    sys.exit(main())
