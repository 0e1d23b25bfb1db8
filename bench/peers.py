"""pssync beside its peers, the same job on the same input, same machine (`make bench`).

Input: N Debezium change events of sales.opportunity (bench/peer_input.py): creates and
updates over N/5 keys, ~1% exact duplicates. The job: parse, dedupe by LSN, map to the
canonical opportunity, Avro encode (Confluent wire format, registered schema id), produce to
a canonical topic, decode and upsert into a PostgreSQL table guarded by version.

  ceiling     bench/peer_ceiling.py: one hand-written confluent-kafka loop, per batch
  pssync      `python -m streams.cli worker`, a black box configured by its environment:
              PSSYNC_STAGES=normalize,sink (the job), then all stages (the deal saga too)
  quix        bench/peer_quix.py: Quix Streams, RocksDB state, its Avro serializer
and, the sink half only (the input already normalized):
  jdbc        Debezium JDBC sink connector: raw topic (JSON with schemas) -> table
  pssync sink the pssync worker (PSSYNC_STAGES=sink) consuming a canonical topic filled
              beforehand

Each peer has its own consumer group or input topic, output topic and target database. The
measured window runs from the peer's ready mark (the worker's `[^Worker]: Ready`, READY from
the scripts, the connector's creation) until its target holds every key at its final
version; "steady" runs from the first target row. CPU and peak RSS are the peer process's
own (/proc); Kafka and PostgreSQL are not counted; for the JDBC sink it is the whole Connect
JVM. A peer whose rows, checksum or canonical records differ from the expected result is
marked ✗ (wrong, not fast). Then commit -> target latency of the worker at a fixed rate and
at half its measured capacity.

Usage: python bench/peers.py [--events 100000] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from confluent_kafka.admin import AdminClient
from peer_input import Change, Expected, generate, live_change, produce, producer
from peer_jdbc import deploy, failure, remove
from peer_measure import (
    JDBC_TABLE,
    PSSYNC_TABLE,
    Target,
    Window,
    distinct_canonical,
    watch,
)

from schemas.conventions import canonical_topic, raw_topic
from schemas.registry import Registry
from schemas.serde import Decoder
from streams.admin import TopicSpec, delete_topics, ensure_topics
from streams.errors import PssyncError
from streams.security import kafka_config
from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
QUIX_PYTHON = ROOT / ".venv-quix" / "bin" / "python"
WORKER_READY = "[^Worker]: Ready"
# The stages doing the peers' job; with all of them the worker also runs the deal saga on
# every closed-won opportunity of the input (each key's last version is closed-won).
JOB_STAGES = "normalize,sink"


@dataclass
class Result:
    window: Window
    events: int
    rows: int = 0
    checksum: str = ""
    canonical: int | None = None
    error: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.window.seconds if self.window.done else float("nan")

    @property
    def steady(self) -> float:
        # A peer that lands everything in one poll has no steady state to speak of.
        if not self.window.done or self.window.steady_seconds < 0.5:
            return float("nan")
        return self.events / self.window.steady_seconds

    @property
    def cpu_per_k(self) -> float:
        return self.window.cpu / self.events * 1000

    @property
    def busy_cores(self) -> float:
        # How much of the machine the run used, the peer and the stack it shares it with.
        return self.window.busy / self.window.seconds if self.window.seconds else float("nan")


@dataclass
class Peer:
    name: str
    results: list[Result] = field(default_factory=list)


class Bench:
    def __init__(self, base: Settings, tag: str, changes: list[Change], exp: Expected,
                 keep_logs: Path) -> None:
        self.base, self.tag, self.changes, self.exp = base, tag, changes, exp
        self.logs = keep_logs
        self.raw = raw_topic(tag, "sales", "opportunity")
        self.jdbc_raw = raw_topic(f"{tag}j", "sales", "opportunity")
        self.registry = Registry(base)
        self.decoder = Decoder(self.registry.schema_by_id)
        self.dbs: list[str] = []
        self.connectors: list[str] = []
        self.ports = iter(range(base.web_port + 10, base.web_port + 200))

    # ------------------------------------------------------------------ plumbing
    def admin(self, sql: str) -> None:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql)

    def dsn(self, db: str) -> str:
        p = self.base.ports.postgres
        return f"postgresql://postgres:postgres@127.0.0.1:{p}/{db}"

    def database(self, name: str) -> tuple[str, str]:
        """A fresh target database: (SQLAlchemy URL for sinks, libpq DSN for checks)."""
        self.admin(f'CREATE DATABASE "{name}"')
        self.dbs.append(name)
        return self.base.target_url.rsplit("/", 1)[0] + f"/{name}", self.dsn(name)

    def drop(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def timeout(self) -> float:
        return 60 + len(self.changes) / 400

    def check(self, target: Target, window: Window, canonical: str | None,
              error: str = "") -> Result:
        rows, _ = target.progress()
        res = Result(window, len(self.changes), rows, target.checksum() if rows else "",
                     error=error)
        if canonical is not None:
            res.canonical, _ = distinct_canonical(self.base, canonical,
                                                  self.decoder)
        target.close()
        return res

    def ok(self, r: Result) -> bool:
        return (r.window.done and r.rows == self.exp.rows and r.checksum == self.exp.checksum
                and (r.canonical is None or r.canonical == self.exp.canonical))

    def process(self, name: str, cmd: list[str], env: dict[str, str], ready: str,
                target: Target) -> tuple[Window, str]:
        """Run a peer process, measure from its ready mark until the target is complete."""
        log_path = self.logs / f"bench-peers-{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while ready not in log_path.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-800:]
                    return Window(False, 0, 0, 0, 0), f"never ready; see {log_path}: {tail}"
                time.sleep(0.05)
            window = watch(target, self.exp.rows, self.exp.version_sum, proc.pid,
                           self.timeout(), alive=lambda: proc.poll() is None)
            error = "" if window.done else f"incomplete after {window.seconds:.0f}s; {log_path}"
            return window, error
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def worker_env(self, run: str, prefix: str, target_url: str,
                   stages: str = "all") -> dict[str, str]:
        return {
            **os.environ,
            "PSSYNC_STAGES": stages,
            "PSSYNC_APP_ID": f"{run}-app",
            "PSSYNC_TOPIC_NAMESPACE": run,
            "PSSYNC_CRM_TOPIC_PREFIX": prefix,
            "PSSYNC_ERP_TOPIC_PREFIX": f"erp_{run}",
            "PSSYNC_PSA_TOPIC_PREFIX": f"psa_{run}",
            "PSSYNC_TARGET_URL": target_url,
            "PSSYNC_WEB_PORT": str(next(self.ports)),
            "PSSYNC_DATA_DIR": tempfile.mkdtemp(prefix=f"pssync-{run}-"),
        }

    # ------------------------------------------------------------------ peers
    def ceiling(self, run: str) -> tuple[Result, str]:
        url, dsn = self.database(f"{run}_ceiling")
        canonical = f"{run}c.canonical.opportunity"
        ensure_topics(self.base, [TopicSpec(canonical, 1, 1)])
        target = Target(dsn, PSSYNC_TABLE)
        cmd = [sys.executable, str(ROOT / "bench" / "peer_ceiling.py"), self.raw, canonical,
               f"{run}-ceiling", url]
        window, error = self.process(f"{run}-ceiling", cmd, dict(os.environ), "READY", target)
        return self.check(target, window, canonical, error), canonical

    def worker(self, run: str, stages: str = JOB_STAGES) -> Result:
        """The worker running `stages`: the job's own (normalize, sink), or all of them."""
        tag = "w" if stages == JOB_STAGES else "a"
        url, dsn = self.database(f"{run}_worker{tag}")
        env = self.worker_env(f"{run}{tag}", self.tag, url, stages)
        target = Target(dsn, PSSYNC_TABLE)
        cmd = [sys.executable, "-m", "streams.cli", "worker"]
        window, error = self.process(f"{run}-worker{tag}", cmd, env, WORKER_READY, target)
        shutil.rmtree(env["PSSYNC_DATA_DIR"], ignore_errors=True)
        return self.check(target, window, canonical_topic("opportunity", f"{run}{tag}"), error)

    def worker_all(self, run: str) -> Result:
        return self.worker(run, "all")

    def quix(self, run: str) -> Result:
        if not QUIX_PYTHON.exists():
            return Result(Window(False, 0, 0, 0, 0), len(self.changes),
                          error=f"{QUIX_PYTHON} missing: `make bench` installs it")
        url, dsn = self.database(f"{run}_quix")
        canonical = f"{run}q.canonical.opportunity"
        state = tempfile.mkdtemp(prefix=f"quix-{run}-")
        target = Target(dsn, PSSYNC_TABLE)
        cmd = [str(QUIX_PYTHON), str(ROOT / "bench" / "peer_quix.py"), self.raw, canonical,
               f"{run}-quix", url, state]
        window, error = self.process(f"{run}-quix", cmd, dict(os.environ), "READY", target)
        shutil.rmtree(state, ignore_errors=True)
        return self.check(target, window, canonical, error)

    def jdbc(self, run: str) -> Result:
        _, dsn = self.database(f"{run}_jdbc")
        name = f"{run}-jdbc"
        target = Target(dsn, JDBC_TABLE)
        pid = int((self.base.stack_dir / "run" / "connect.pid").read_text().split()[0])
        deploy(self.base, name, self.jdbc_raw, f"{run}_jdbc")
        self.connectors.append(name)
        window = watch(target, self.exp.rows, self.exp.version_sum, pid, self.timeout(),
                       alive=lambda: failure(self.base, name) is None)
        error = "" if window.done else (failure(self.base, name) or "incomplete")
        result = self.check(target, window, None, error)
        remove(self.base, name)
        return result

    def pssync_sink(self, run: str, records: list[tuple[bytes, bytes]]) -> Result:
        """The worker with an empty raw topic and a canonical topic filled beforehand."""
        canonical = canonical_topic("opportunity", f"{run}s")
        ensure_topics(self.base,
                      [TopicSpec(canonical, 1, 1, {"cleanup.policy": "compact"})])
        p = producer(self.base)
        for key, value in records:
            while True:
                try:
                    p.produce(canonical, key=key, value=value)
                    break
                except BufferError:
                    p.poll(0.05)
        p.flush(60)
        url, dsn = self.database(f"{run}_sink")
        env = self.worker_env(f"{run}s", f"{run}s", url, "sink")
        target = Target(dsn, PSSYNC_TABLE)
        cmd = [sys.executable, "-m", "streams.cli", "worker"]
        window, error = self.process(f"{run}-sink", cmd, env, WORKER_READY, target)
        shutil.rmtree(env["PSSYNC_DATA_DIR"], ignore_errors=True)
        res = self.check(target, window, None, error)
        res.events = len(records)
        return res

    # ------------------------------------------------------------------ latency
    def latency(self, phases: list[tuple[float, float]]) -> list[tuple[float, float, int, str]]:
        """p50/p99 of source commit -> applied in the target, per (rate, seconds) phase."""
        run = f"{self.tag}lat"
        url, dsn = self.database(f"{run}_worker")
        prefix = f"{run}x"
        ensure_topics(self.base,
                      [TopicSpec(raw_topic(prefix, "sales", "opportunity"), 1, 1)])
        env = self.worker_env(run, prefix, url)
        log_path = self.logs / f"bench-peers-{run}.log"
        out: list[tuple[float, float, int, str]] = []
        with log_path.open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while WORKER_READY not in log_path.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    return [(float("nan"), float("nan"), 0, f"worker never ready: {log_path}")]
                time.sleep(0.1)
            target = Target(dsn, PSSYNC_TABLE)
            first = 0
            for rate, seconds in phases:
                sent = self._paced(raw_topic(prefix, "sales", "opportunity"), rate, seconds,
                                   first)
                first += len(sent)
                want = set(sent)
                end = time.monotonic() + 60
                applied: dict[str, float] = {}
                while time.monotonic() < end:
                    applied = target.applied_at()
                    if want <= applied.keys():
                        break
                    time.sleep(0.2)
                lat = sorted(applied[k] - sent[k] / 1000 for k in want if k in applied)
                missing = len(want) - len(lat)
                note = f"{missing} not applied within 60 s" if missing else ""
                if not lat:
                    out.append((float("nan"), float("nan"), len(sent), note))
                    continue
                out.append((lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))],
                            len(sent), note))
            target.close()
        finally:
            proc.terminate()
            proc.wait(30)
            shutil.rmtree(env["PSSYNC_DATA_DIR"], ignore_errors=True)
        return out

    def _paced(self, topic: str, rate: float, seconds: float, first: int) -> dict[str, int]:
        """Produce creates at a steady `rate`, each stamped with its commit time: id -> ts_ms."""
        p = producer(self.base)
        total = int(rate * seconds)
        sent: dict[str, int] = {}
        start = time.monotonic()
        for i in range(total):
            due = start + i / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            ts = int(time.time() * 1000)
            c = live_change(10_000_000 + first + i, 90_000_000_000 + (first + i) * 344, ts)
            p.produce(topic, key=c.key, value=c.value)
            p.poll(0)
            sent[c.source_id] = ts
        p.flush(30)
        return sent

    # ------------------------------------------------------------------ cleanup
    def cleanup(self) -> None:
        for name in self.connectors:
            with contextlib.suppress(PssyncError):  # best effort: already removed
                remove(self.base, name)
        for db in self.dbs:
            try:
                self.drop(db)
            except psycopg.Error as exc:
                print(f"note: database {db} not dropped ({exc})")
        admin = AdminClient(kafka_config(self.base))
        names = [t for t in admin.list_topics(timeout=10).topics if self.tag in t]
        if names:
            delete_topics(self.base, names)


def load() -> str:
    """The machine's load: other work on the same cores skews every figure, not the ratios."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) {five:.1f} (5 min)"


def med(values: list[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")


def report(bench: Bench, full: list[Peer], sink: list[Peer],
           latency: list[tuple[str, tuple[float, float, int, str]]]) -> None:
    exp = bench.exp
    ceiling = med([r.rate for r in full[0].results])
    print()
    print(f"expected: {exp.rows:,} rows (one per key at its last LSN), checksum "
          f"{exp.checksum[:8]}, {exp.canonical:,} distinct canonical records "
          f"({exp.duplicates:,} duplicates dropped)")
    head = (f"{'peer':<44} {'ev/s':>8} {'steady':>8} {'CPU s/1k':>9} {'RSS MB':>7} "
            f"{'÷ceiling':>8} {'busy':>5}  {'ok':<2} {'runs ev/s':<24}")

    def line(label: str, peer: Peer) -> None:
        rs = peer.results
        ok = all(bench.ok(r) for r in rs)
        ratio = med([r.rate for r in rs]) / ceiling if ceiling == ceiling else float("nan")
        runs = " ".join(f"{r.rate:,.0f}" for r in rs)
        rate, steady = med([r.rate for r in rs]), med([r.steady for r in rs])
        cpu, rss = med([r.cpu_per_k for r in rs]), med([r.window.rss_mb for r in rs])
        busy = med([r.busy_cores for r in rs])
        steady_text = f"{steady:>8,.0f}" if steady == steady else f"{'-':>8}"
        print(f"{label:<44} {rate:>8,.0f} {steady_text} {cpu:>9.3f} {rss:>7.0f} "
              f"{ratio:>8.2f} {busy:>5.2f}  {'✓' if ok else '✗':<2} {runs:<24}")
        for r in rs:
            if not bench.ok(r):
                print(f"    ✗ rows {r.rows:,}, checksum {r.checksum[:8] or '-'}, canonical "
                      f"{r.canonical if r.canonical is not None else 'n/a'}"
                      f"{'; ' + r.error if r.error else ''}")

    print(f"\nthe whole job: {len(bench.changes):,} raw events -> canonical topic -> target")
    print(head)
    labels = ["ceiling: hand-written confluent-kafka loop",
              f"pssync worker ({JOB_STAGES})",
              "pssync worker, all stages (+ deal saga)",
              "Quix Streams 3 (RocksDB state, Avro serdes)"]
    for label, peer in zip(labels, full, strict=True):
        line(label, peer)
    print(f"(busy: cores of the machine's {os.cpu_count()} busy during the run, the peer and "
          "the stack it shares them with)")
    print("(the worker also writes one audit.sink record per target write before each commit; "
          "the ceiling and Quix peers call the same PostgresSink.apply without audit. With all "
          "stages it also runs the deal saga on each closed-won opportunity: a business "
          "exception and a CRM notice command each, as their accounts are unknown)")
    print("\nsink half: normalized input -> target (÷ceiling against the whole job's ceiling)")
    print(head)
    line("Debezium JDBC sink 3.5 (raw JSON+schema)", sink[0])
    line("pssync worker, PSSYNC_STAGES=sink", sink[1])
    j, s = med([r.rate for r in sink[0].results]), med([r.rate for r in sink[1].results])
    print(f"pssync sink-only worker / JDBC sink: {s / j:.2f}x (events/s of each one's input: "
          f"the JDBC sink reads the {len(bench.changes):,} raw events with duplicates, the "
          f"worker the {bench.exp.canonical:,} canonical ones; JDBC CPU and RSS are the whole "
          "Connect JVM)")
    print("\npssync worker: source commit -> applied in the target")
    print(f"{'offered load':<34} {'events':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for label, (p50, p99, count, note) in latency:
        print(f"{label:<34} {count:>7,} {p50 * 1000:>8.0f} {p99 * 1000:>8.0f}  {note}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=None, help="raw events (default 100000)")
    ap.add_argument("--runs", type=int, default=None, help="runs per peer (default 3)")
    ap.add_argument("--quick", action="store_true",
                    help="10,000 events, 1 run, short latency phases: a 1-2 minute run")
    ap.add_argument("--latency-rate", type=float, default=200.0)
    args = ap.parse_args()
    events = args.events or (10_000 if args.quick else 100_000)
    runs = args.runs or (1 if args.quick else 3)
    seconds = 8.0 if args.quick else 20.0
    base = Settings.from_env()
    tag = "bp" + uuid.uuid4().hex[:6]
    changes, exp = generate(events, max(1, events // 5))
    print(f"peer benchmark: {events:,} events over {exp.rows:,} keys, {runs} run(s), "
          f"{os.cpu_count()} cores, Kafka {base.kafka_bootstrap}, {load()}")
    bench = Bench(base, tag, changes, exp, base.stack_dir / "logs")
    full = [Peer("ceiling"), Peer("pssync"), Peer("pssync-all"), Peer("quix")]
    sink = [Peer("jdbc"), Peer("pssync-sink")]
    try:
        started = time.monotonic()
        produce(base, bench.raw, changes)
        produce(base, bench.jdbc_raw, changes, with_schema=True)
        print(f"input written in {time.monotonic() - started:.1f}s")
        steps: list[tuple[str, Callable[[str], Result]]] = [
            ("pssync", bench.worker), ("pssync all stages", bench.worker_all),
            ("quix", bench.quix), ("jdbc", bench.jdbc)]
        into = {"pssync": full[1], "pssync all stages": full[2], "quix": full[3],
                "jdbc": sink[0]}
        for run in range(runs):
            rid = f"{tag}r{run}"
            res, canonical = bench.ceiling(rid)
            full[0].results.append(res)
            print(f"run {run + 1}: ceiling {res.rate:,.0f} ev/s", end="", flush=True)
            for name, step in steps:
                r = step(rid)
                into[name].results.append(r)
                print(f", {name} {r.rate:,.0f}", end="", flush=True)
            _, records = distinct_canonical(base, canonical, bench.decoder)
            r = bench.pssync_sink(rid, records)
            sink[1].results.append(r)
            print(f", pssync sink stage {r.rate:,.0f} ev/s "
                  f"({time.monotonic() - started:.0f}s so far)", flush=True)
            for db in [d for d in bench.dbs if d.startswith(rid)]:
                bench.drop(db)
        # The latency run is the worker with all its stages, as deployed: so is its capacity.
        capacity = med([r.rate for r in full[2].results])
        half = capacity / 2 if capacity == capacity else args.latency_rate
        lat = bench.latency([(args.latency_rate, seconds), (half, seconds)])
        labels = [f"{args.latency_rate:,.0f} ev/s for {seconds:.0f}s",
                  f"{half:,.0f} ev/s (half capacity) for {seconds:.0f}s"]
        report(bench, full, sink, list(zip(labels, lat, strict=False)))
        print(f"\ntotal {time.monotonic() - started:.0f}s, {load()}; logs in "
              f"{bench.logs}/bench-peers-*")
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
