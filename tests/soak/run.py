"""Runs one soak: sandbox, workers, workload, faults, convergence, checks, the table.

    python -m tests.soak [--profile short|long] [--seed N] [--keep]

Needs the local stack of this clone (`make up`); it kills and restarts that stack's Kafka and
Connect, so never point it at a shared stack.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
import uuid
from pathlib import Path

from streams.settings import Settings
from tests.sandbox import (
    create_sandbox,
    destroy_sandbox,
    group_positions,
    stack_down,
    worker_metrics,
)
from tests.soak.events import EventLog
from tests.soak.faults import Injector
from tests.soak.profiles import PROFILES, Profile
from tests.soak.report import Outcome, table
from tests.soak.verify import Findings, Verifier
from tests.soak.workers import READY_TIMEOUT, Pool
from tests.soak.workload import Workload

CHECK_EVERY = 5.0


def client_logger(path: Path) -> logging.Logger:
    """Kafka client chatter (the broker is down on purpose) goes to a file, not the table."""
    logger = logging.getLogger(f"soak.kafka.{path.parent.name}")
    logger.propagate = False
    logger.addHandler(logging.FileHandler(path))
    return logger


def _converge(verifier: Verifier, deadline: float, events: EventLog) -> tuple[Findings, bool]:
    """Check until everything matches or the deadline passes; the last findings."""
    findings: Findings | None = None
    while True:
        try:
            findings = verifier.check()
            if findings.ok:
                return findings, True
            events.note(f"not converged: lost {findings.lost} wrong {findings.wrong} doubled "
                        f"{findings.doubled} dlq exact {findings.dlq_exact}")
        except Exception as exc:  # noqa: BLE001 - a check during recovery may time out; retry
            events.note(f"check failed, retrying: {exc!r}")
        if time.monotonic() >= deadline:
            return findings or Findings(), False
        time.sleep(CHECK_EVERY)


def soak(profile: Profile, seed: int, keep: bool) -> int:
    wall0 = time.monotonic()
    base = Settings.from_env()
    down = stack_down(base)
    if down:
        print(f"soak: local stack not running ({', '.join(down)} down): run `make up` first",
              file=sys.stderr)
        return 2
    run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{profile.name}-seed{seed}"
    log_dir = base.stack_dir / "logs" / "soak" / run_id
    events = EventLog(log_dir / "soak.log")
    events.step(f"profile {profile.name}, seed {seed}; logs in {log_dir}")
    for fault in profile.faults:
        events.note(f"planned: {fault.kind.value} at {fault.at:.0f}s")
    suffix = "soak" + uuid.uuid4().hex[:8]
    # Two partitions, so a second worker really takes work over in the rebalance fault.
    # The workload's closed-won deals have no account or line items: they wait (a day) instead
    # of being parked, whose CRM status write-back would be changes the soak did not make.
    sandbox = create_sandbox(
        base,
        suffix,
        log_dir / "data",
        {"PSSYNC_PARTITIONS": "2", "PSSYNC_DEAL_LINE_WAIT": "86400"},
    )
    events.step(f"sandbox {suffix}: databases {sandbox.crm_db}, {sandbox.target_db}; "
                f"connector {sandbox.connector} RUNNING")
    pool = Pool(sandbox.env, log_dir, events)
    workload = Workload(sandbox.settings, random.Random(f"{seed}/workload"),
                        profile.ops_per_second, profile.poison_ratio, events,
                        client_logger(log_dir / "kafka-client.log"))
    injector = Injector(sandbox, pool, events, log_dir / "stack.log",
                        random.Random(f"{seed}/faults"))
    problems: list[str] = []
    converge_seconds: float | None = None
    findings = Findings()
    finished = False
    try:
        workload.setup()
        pool.add()
        if not pool.wait_ready(READY_TIMEOUT):
            problems.append("first worker not Ready")
        workload.start()
        t0 = time.monotonic()
        events.step(f"workload running at {profile.ops_per_second:.0f} ops/s")
        for fault in profile.faults:
            time.sleep(max(0.0, t0 + fault.at - time.monotonic()))
            if fault.kind.needs_steady_group and not pool.wait_ready(READY_TIMEOUT):
                problems.append(f"workers not Ready before {fault.kind.value}")
            injector.inject(fault)
        last_fault = time.monotonic()
        events.step(f"last fault over; workload goes on for {profile.tail:.0f}s")
        time.sleep(profile.tail)
        workload.finish()
        tally = workload.tally
        events.step(f"workload stopped: {tally.changes} source changes, "
                    f"{len(tally.poison_acked)} poison events, ops {dict(tally.ops)}")
        findings, converged = _converge(
            Verifier(sandbox.settings, tally), time.monotonic() + profile.converge_timeout, events
        )
        if converged:
            converge_seconds = time.monotonic() - last_fault
            events.step(f"converged {converge_seconds:.1f}s after the last fault")
        else:
            events.step(f"NOT converged within {profile.converge_timeout:.0f}s")
        for line in group_positions(sandbox.settings):
            events.note(line)
        for w in pool.active:
            for line in worker_metrics(int(w.worker.env["PSSYNC_WEB_PORT"])):
                events.note(f"{w.name} {line}")
        problems += [f"workload: {e}" for e in tally.errors]
        problems += [f"poison not delivered: {e}" for e in tally.poison_failed]
        finished = True
    finally:
        pool.stop()
        if not finished:
            injector.restore()
        if keep:
            events.step(f"kept sandbox {suffix} (--keep)")
        else:
            destroy_sandbox(sandbox)
    problems += injector.problems
    outcome = Outcome(profile, seed, run_id, injector.injected, findings, pool.crashes(),
                      problems, converge_seconds, time.monotonic() - wall0)
    for line in findings.details + [f"crash: {c}" for c in outcome.crashes] + problems:
        events.note(line)
    text = table(outcome)
    (log_dir / "report.txt").write_text(text + "\n")
    print(text, flush=True)
    # After the table too: a CI log is often read from its end, and the details name the
    # keys and events behind a failed row.
    for line in findings.details + [f"crash: {c}" for c in outcome.crashes] + problems:
        print(line, flush=True)
    return 1 if outcome.failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES),
                        default=os.environ.get("SOAK_PROFILE") or "short")
    parser.add_argument("--seed", type=int, help="makes workload and fault schedule repeatable")
    parser.add_argument("--keep", action="store_true",
                        help="keep the soak's databases, topics and connector for inspection")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    profile = PROFILES[args.profile](random.Random(f"{seed}/schedule"))
    return soak(profile, seed, args.keep)
