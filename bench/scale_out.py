"""Scale-out: the same job with one worker, then two (or more) workers in one consumer group.

The peer benchmark's job (bench/peers.py: raw Debezium events -> dedupe -> canonical Avro ->
PostgreSQL) on a raw topic and pssync topics of PARTITIONS partitions. For each worker count
the workers start on an empty input, wait until every one of them is ready and the group has
settled, then the input is written and the clock runs until the target holds every key at its
final version. CPU is the workers' own (/proc), summed; Kafka and PostgreSQL share the same
cores and are not counted, so on a small machine the speed-up is bounded by what they leave.

Usage: python bench/scale_out.py [--events 40000] [--partitions 4] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from peer_input import generate, produce
from peer_measure import (
    PSSYNC_TABLE,
    Target,
    cpu_seconds,
    machine_busy_seconds,
    peak_rss_mb,
    watch,
)
from peers import WORKER_READY, Bench, load, med

from schemas.conventions import raw_topic
from streams.admin import TopicSpec, ensure_topics
from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# After the last worker is ready, the group rebalances once more; give it time to settle.
SETTLE = 8.0


@dataclass
class Outcome:
    workers: int
    seconds: float
    cpu: float
    rss_mb: float
    busy: float  # CPU seconds the whole machine was busy (workers, Kafka, PostgreSQL, ...)
    done: bool
    error: str = ""


def run(bench: Bench, tag: str, workers: int, partitions: int) -> Outcome:
    prefix = f"{tag}x{workers}"
    raw = raw_topic(prefix, "sales", "opportunity")
    ensure_topics(bench.base, [TopicSpec(raw, partitions, 1, {"cleanup.policy": "compact,delete"})])
    url, dsn = bench.database(f"{tag}_w{workers}")
    env = bench.worker_env(f"{tag}w{workers}", prefix, url)
    env["PSSYNC_PARTITIONS"] = str(partitions)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    dirs: list[str] = []
    try:
        for n in range(workers):
            own = {**env, "PSSYNC_WEB_PORT": str(next(bench.ports))}
            own["PSSYNC_DATA_DIR"] = env["PSSYNC_DATA_DIR"] + f"-{n}"
            dirs.append(own["PSSYNC_DATA_DIR"])
            log_path = bench.logs / f"bench-scale-{tag}-{workers}-{n}.log"
            logs.append(log_path)
            with log_path.open("wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "streams.cli", "worker"], env=own, cwd=ROOT,
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + 180
        while not all(WORKER_READY in p.read_text(errors="replace") for p in logs):
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                return Outcome(workers, 0, 0, 0, 0, False, f"a worker never got ready: {logs}")
            time.sleep(0.2)
        time.sleep(SETTLE if workers > 1 else 1.0)
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        busy0 = machine_busy_seconds()
        started = time.monotonic()
        produce(bench.base, raw, bench.changes)
        target = Target(dsn, PSSYNC_TABLE)
        window = watch(target, bench.exp.rows, bench.exp.version_sum, None, bench.timeout(),
                       alive=lambda: all(p.poll() is None for p in procs))
        seconds = time.monotonic() - started
        busy = machine_busy_seconds() - busy0
        cpu = sum(cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0, strict=True))
        rss = max(peak_rss_mb(p.pid) for p in procs)
        target.close()
        error = "" if window.done else f"incomplete after {seconds:.0f}s; logs {logs}"
        return Outcome(workers, seconds, cpu, rss, busy, window.done, error)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(env["PSSYNC_DATA_DIR"], ignore_errors=True)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    base = Settings.from_env()
    tag = "bs" + uuid.uuid4().hex[:6]
    changes, exp = generate(args.events, max(1, args.events // 5))
    bench = Bench(base, tag, changes, exp, base.stack_dir / "logs")
    print(f"scale-out: {args.events:,} events over {exp.rows:,} keys, {args.partitions} "
          f"partitions, workers {args.workers}, {args.runs} run(s), {os.cpu_count()} cores, "
          f"{load()}")
    results: dict[int, list[Outcome]] = {w: [] for w in args.workers}
    try:
        for r in range(args.runs):
            for w in args.workers:
                out = run(bench, f"{tag}r{r}", w, args.partitions)
                results[w].append(out)
                note = "" if out.done else f"  ✗ {out.error}"
                print(f"run {r + 1}, {w} worker(s): {args.events / out.seconds:,.0f} ev/s"
                      f"{note}", flush=True)
    finally:
        bench.cleanup()
    one = med([args.events / o.seconds for o in results[args.workers[0]] if o.done])
    print(f"\n{'workers':>7} {'ev/s':>8} {'speed-up':>9} {'CPU s/1k':>9} {'RSS MB':>7} "
          f"{'busy cores':>10} {'others s/1k':>11}  ok")
    for w, outs in results.items():
        rate = med([args.events / o.seconds for o in outs if o.done])
        cpu = med([o.cpu / args.events * 1000 for o in outs if o.done])
        rss = med([o.rss_mb for o in outs if o.done])
        busy = med([o.busy / o.seconds for o in outs if o.done])
        # What the rest of the machine (Kafka, PostgreSQL, ...) spent per 1,000 events.
        others = med([(o.busy - o.cpu) / args.events * 1000 for o in outs if o.done])
        ok = "✓" if all(o.done for o in outs) else "✗"
        print(f"{w:>7} {rate:>8,.0f} {rate / one:>9.2f} {cpu:>9.3f} {rss:>7.0f} "
              f"{busy:>10.2f} {others:>11.3f}  {ok}")
    cores = os.cpu_count() or 1
    print(f"\n{load()}; Kafka, PostgreSQL and Connect share these {cores} cores. With the "
          f"machine busy B cores of {cores} for one worker, more workers can add at most "
          f"{cores}/B of its speed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
