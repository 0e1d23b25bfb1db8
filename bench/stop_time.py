"""How long a worker takes to stop on SIGTERM while it has a backlog of saga commands.

Writes N Debezium-shaped opportunity changes (a share of them closed-won, so the deal stage
issues CRM write-backs that queue behind the CRM's rate limit), runs `pssync worker` on them
for --run-for seconds, sends SIGTERM and measures until the process exits. Prints the stop
time, the exit code, the commands applied before the signal, and how many fetched records
the stop left for the next run. Needs the stack (make up); everything it creates is removed.

    .venv/bin/python bench/stop_time.py [--events 30000] [--run-for 120] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient
from peer_input import generate, produce
from restart_bench import free_port

from connectors.sql import server_execute
from schemas.conventions import raw_topic
from streams.admin import delete_topics
from streams.security import kafka_config
from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
LEFT = re.compile(r"stopping: (\d+) fetched records left unprocessed")
APPLIED = re.compile(r'^pssync_commands_total\{[^}]*target="crm"[^}]*\} ([0-9.e+]+)$', re.M)


def one_run(base: Settings, tag: str, run_for: float) -> tuple[float, int, int, int]:
    """(stop seconds, exit code, CRM commands applied, records left) of one worker."""
    server_execute(base.crm_db, f'CREATE DATABASE "{tag}"')
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix=f"pssync-{tag}-")
    env = {
        **os.environ,
        "PSSYNC_APP_ID": f"{tag}-app",
        "PSSYNC_TOPIC_NAMESPACE": tag,
        "PSSYNC_CRM_TOPIC_PREFIX": tag,
        "PSSYNC_ERP_TOPIC_PREFIX": f"erp_{tag}",
        "PSSYNC_PSA_TOPIC_PREFIX": f"psa_{tag}",
        "PSSYNC_TARGET_URL": base.target_url.rsplit("/", 1)[0] + f"/{tag}",
        "PSSYNC_WEB_PORT": str(port),
        "PSSYNC_DATA_DIR": data_dir,
    }
    log_path = base.stack_dir / "logs" / f"bench-stop-{tag}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        time.sleep(run_for)
        url = f"http://127.0.0.1:{port}/metrics"
        metrics = urllib.request.urlopen(url, timeout=10).read().decode()
        applied = int(sum(float(v) for v in APPLIED.findall(metrics)))
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(base.stop_timeout + 60)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)
        server_execute(base.crm_db, f'DROP DATABASE IF EXISTS "{tag}" WITH (FORCE)')
    found = LEFT.search(log_path.read_text(errors="replace"))
    return took, code, applied, int(found.group(1)) if found else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--run-for", type=float, default=120.0, help="seconds before SIGTERM")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    base = Settings.from_env()
    tag = "bs" + uuid.uuid4().hex[:6]
    print(f"stop time: {args.events:,} changes, SIGTERM after {args.run_for:.0f}s, "
          f"{args.runs} run(s), PSSYNC_STOP_TIMEOUT={base.stop_timeout:.0f}s")
    times: list[float] = []
    try:
        for run in range(args.runs):
            rid = f"{tag}r{run}"
            changes, _ = generate(args.events, max(1, args.events // 5))
            produce(base, raw_topic(rid, "sales", "opportunity"), changes)
            took, code, applied, left = one_run(base, rid, args.run_for)
            times.append(took)
            print(f"run {run + 1}: stop {took:.1f}s, exit {code}, {applied:,} CRM commands "
                  f"applied before the signal, {left:,} fetched records left for the next run")
    finally:
        admin = AdminClient(kafka_config(base))
        names = [t for t in admin.list_topics(timeout=10).topics if tag in t]
        if names:
            delete_topics(base, names)
    print(f"median stop {statistics.median(times):.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
