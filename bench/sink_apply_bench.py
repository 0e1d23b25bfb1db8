"""PostgresSink.apply alone: decoded canonical events in batches of 1000 into a fresh database.

Events are contract-valid sample records (schemas/samples.py) of one entity: creates of
N/2 keys, then an update of each, so half the rows are inserts and half guarded updates.
Prints rows/s per run and the median; each run has its own target database, dropped after.
Rows go through binary COPY (the sink's choice for contract types) and, in runs alternated
with those, through text COPY, printed side by side.

Usage: python bench/sink_apply_bench.py [--entity opportunity] [--events 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from connectors.sinks.postgres import PostgresSink
from connectors.sinks.tablespec import compile_spec
from connectors.sql import server_execute
from schemas import contracts
from schemas.samples import Sampler
from streams.settings import Settings

BATCH = 1000


def events(entity: str, n: int) -> list[dict[str, Any]]:
    sampler = Sampler(contracts.schema(entity), seed=7)
    key_field = compile_spec(entity, contracts.schema(entity), contracts.is_reference(entity)).key
    out = []
    for i in range(n):
        record = sampler.record()
        while record["data"] is None:  # live images only
            record = sampler.record()
        key = f"bench:{entity}:{i % (n // 2)}"
        record["data"][key_field] = key
        record["envelope"]["entity_version"] = i
        record["key"] = key
        out.append(record)
    return out


def run_once(
    settings: Settings, entity: str, records: list[dict[str, Any]], run: int, binary: bool
) -> tuple[float, float]:
    """(rows/s, this process's CPU seconds per 1,000 rows) of one run."""
    db = f"bench_sink_{uuid.uuid4().hex[:8]}_{run}"
    server_execute(settings.crm_db, f'CREATE DATABASE "{db}"')
    url = settings.target_url.rsplit("/", 1)[0] + f"/{db}"

    async def go() -> tuple[float, float]:
        sink = PostgresSink(url, entity)
        await sink.ensure_schema()
        if not binary:
            sink.statements.copy_types = []  # text COPY
        now = datetime.now(UTC)
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(records), BATCH):
            await sink.apply(records[i : i + BATCH], now=now)
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
        await sink.close()
        return took, cpu

    try:
        took, cpu = asyncio.run(go())
    finally:
        server_execute(settings.crm_db, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    return len(records) / took, cpu / len(records) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entity", default="opportunity")
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    settings = Settings.from_env()
    records = events(args.entity, args.events)
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for run in range(args.runs):
        for binary in (True, False):
            results[binary].append(run_once(settings, args.entity, records, run, binary))
    medians = {}
    for binary, got in results.items():
        rates = [rate for rate, _ in got]
        runs = " ".join(f"{r:,.0f}" for r in rates)
        cpu = statistics.median(c for _, c in got)
        medians[binary] = (statistics.median(rates), cpu)
        print(
            f"PostgresSink.apply {args.entity}, batches of {BATCH}, "
            f"{'binary' if binary else 'text'} COPY: "
            f"median {medians[binary][0]:,.0f} rows/s (runs: {runs}), "
            f"client CPU {cpu:.3f} s per 1,000 rows"
        )
    print(
        f"binary / text COPY: {medians[True][0] / medians[False][0]:.2f}x rows/s, "
        f"{medians[True][1] / medians[False][1]:.2f}x client CPU per row"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
