"""Worker restart time against the size of the dedupe table (`make bench-restart`).

Fills the `dedupe-positions` changelog of a fresh app id with N keys, then starts and stops
`pssync worker` (the real command, as a subprocess) in three ways:

  memory        PSSYNC_STORE=memory: every start reads the whole changelog into memory
  rocksdb cold  PSSYNC_STORE=rocksdb with an empty PSSYNC_DATA_DIR: the first start on a
                new host or volume reads the whole changelog into RocksDB
  rocksdb warm  PSSYNC_STORE=rocksdb with the files of the previous run kept: the start
                reads only the changelog written since (here: nothing)

and reports, as medians of --runs starts each:

  ready         process start -> "[^Worker]: Ready" in its log
  first event   process start -> a raw change event waiting in the input topic has been
                processed (seen in the worker's metrics)
  stop          SIGTERM -> process exit
  peak RSS      the worker's VmHWM from /proc at the end of each run
  data dir      bytes under the app's state directory after the runs

The changelog is written directly, not by driving the worker over N raw events: that would
take far longer than the restarts being measured, and the worker's own writes are no
different. The records are exactly what Faust writes for this table (its `json` key and
value serializers: key `"crm_<tag>/sales.opportunity/<id>"`, value `{"seq":..,"deleted":..}`,
uncompressed like Faust's producer); the script checks its bytes against Faust's serializers
before writing. Faithfulness is checked end to end too: before each start one raw change
event for a key already in the table, at the same source position, is put in the input
topic; the worker must drop it as a duplicate, which it can only do if it restored the key.
One partition (PSSYNC_PARTITIONS=1), so the changelog needs no partitioner.

Usage: python bench/restart_bench.py [--keys 1000000] [--runs 3] [--keep]
Every topic, consumer group, schema subject and database it creates is removed afterwards,
and the data dirs too unless --keep. About 2.5 minutes per full changelog read at 1M keys on
2 cores, so about 15 minutes in all; --keys 200000 --runs 1 takes about 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from connectors.sql import server_execute
from schemas.registry import Registry
from streams.admin import delete_topics, ensure_topics
from streams.errors import RegistryError
from streams.security import kafka_config
from streams.settings import Settings
from streams.state import changelog_specs
from streams.topology import topic_specs, topology
from tables.dedupe import Position, changelog_topic, dedupe_table

ROOT = Path(__file__).resolve().parent.parent
READY = b"[^Worker]: Ready"
SEQUENCE_BASE = 1_000_000  # source positions of the prefilled keys: SEQUENCE_BASE + i


def admin_exec(settings: Settings, sql: str) -> None:
    server_execute(settings.crm_db, sql)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def source_id(i: int) -> str:
    return f"006R{i:011d}"


def state_key(settings: Settings, i: int) -> str:
    # What Normalizer writes: "<connector>/<schema>.<table>/<primary key>".
    return f"{settings.crm_topic_prefix}/sales.opportunity/{source_id(i)}"


def encode_key(key: str) -> bytes:
    return json.dumps(key, separators=(",", ":")).encode()


def encode_value(sequence: int) -> bytes:
    return json.dumps(Position(sequence, False).to_json(), separators=(",", ":")).encode()


def check_encoding(settings: Settings) -> None:
    """Our bytes must be Faust's bytes for this table, or the benchmark measures nothing."""
    app = faust.App(settings.app_id, broker="kafka://127.0.0.1:1", autodiscover=False)
    # The Table's serializer attributes are not in Faust's TableT interface.
    table: Any = dedupe_table(app, 1)
    topic = table.changelog_topic
    key, value = state_key(settings, 7), Position(SEQUENCE_BASE + 7, False).to_json()
    faust_key = app.serializers.dumps_key(topic.key_type, key, serializer=table.key_serializer)
    faust_value = app.serializers.dumps_value(
        topic.value_type, value, serializer=table.value_serializer
    )
    if (faust_key, faust_value) != (encode_key(key), encode_value(SEQUENCE_BASE + 7)):
        raise SystemExit(f"changelog encoding differs from Faust's: {faust_key!r} {faust_value!r}")
    if topic.get_topic_name() != changelog_topic(settings.app_id):
        raise SystemExit(f"changelog topic is {topic.get_topic_name()}, not ours")


def fill_changelog(settings: Settings, keys: int) -> float:
    producer = Producer(
        kafka_config(
            settings,
            **{
                "linger.ms": 50,
                "batch.num.messages": 10000,
                "queue.buffering.max.messages": 200000,
                "acks": "all",
            },
        )
    )
    topic = changelog_topic(settings.app_id)
    started = time.monotonic()
    for i in range(keys):
        record = (encode_key(state_key(settings, i)), encode_value(SEQUENCE_BASE + i))
        while True:
            try:
                producer.produce(topic, key=record[0], value=record[1], partition=0)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10000 == 0:
            producer.poll(0)
    if producer.flush(120) != 0:
        raise SystemExit("changelog fill: records still unacknowledged after 120 s")
    return time.monotonic() - started


def put_probe(settings: Settings, i: int) -> None:
    """A raw change event the worker has already applied: same key, same source position."""
    raw = topology(settings).routes[0].raw_topic
    now = int(time.time() * 1000)
    value = {
        "before": None,
        "after": {"id": source_id(i), "name": f"Deal {i}"},
        "source": {
            "name": settings.crm_topic_prefix,
            "schema": "sales",
            "table": "opportunity",
            "lsn": SEQUENCE_BASE + i,
            "ts_ms": now,
        },
        "op": "u",
        "ts_ms": now,
    }
    producer = Producer(kafka_config(settings, acks="all"))
    producer.produce(
        raw, key=json.dumps({"id": source_id(i)}).encode(), value=json.dumps(value).encode()
    )
    if producer.flush(30) != 0:
        raise SystemExit("probe event not acknowledged")


def metric_sum(port: int, name: str, label: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            lines = r.read().decode().splitlines()
    except OSError:
        return 0.0
    return sum(
        float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith(name + "{") and label in ln
    )


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


@dataclass
class Run:
    ready: float
    first_event: float
    stop: float
    rss: int


@dataclass
class Mode:
    name: str
    store: str
    wipe: bool  # empty the data dir before each start
    runs: list[Run] = field(default_factory=list)
    data_bytes: int = 0


def wait_for(check: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f} s")


def start_once(env: dict[str, str], log: Path, probe: int, settings: Settings) -> Run:
    put_probe(settings, probe)
    port = int(env["PSSYNC_WEB_PORT"])
    seen = log.stat().st_size if log.exists() else 0

    def ready() -> bool:
        with log.open("rb") as f:
            f.seek(seen)
            return READY in f.read()

    def processed() -> bool:
        emitted = metric_sum(port, "pssync_events_out_total", 'stage="normalize"')
        failed = metric_sum(port, "pssync_dlq_total", 'stage="normalize"')
        if emitted or failed:
            raise RuntimeError(
                f"probe {probe} was not dropped as a duplicate (emitted {emitted:g}, "
                f"dead-lettered {failed:g}): the table was not restored"
            )
        return metric_sum(port, "pssync_events_dropped_total", 'reason="duplicate"') >= 1

    with log.open("ab") as out:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        ready_at = wait_for(ready, proc, 900)
        first_at = wait_for(processed, proc, 120)
        rss = peak_rss(proc.pid)
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        stopped = time.monotonic()
    except BaseException as exc:
        proc.kill()
        proc.wait(30)
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{exc}; worker log {log}:\n{tail}") from exc
    return Run(ready_at - started, first_at - started, stopped - stopping, rss)


def delete_group(settings: Settings) -> None:
    admin = AdminClient(kafka_config(settings))
    for fut in admin.delete_consumer_groups([settings.app_id], request_timeout=30).values():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND:
                continue
            print(f"consumer group {settings.app_id} not deleted: {exc}")


def delete_subjects(settings: Settings, prefix: str) -> None:
    """The worker registers its canonical schemas under the bench's topic namespace."""
    registry = Registry(settings)
    try:
        for subject in registry.subjects():
            if subject.startswith(prefix):
                registry.delete_subject(subject)
    except RegistryError as exc:
        print(f"schema subjects {prefix}* not deleted: {exc}")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(modes: list[Mode], keys: int, fill_s: float) -> str:
    head = (
        f"{'store':<14} {'ready s':>8} {'1st event s':>12} {'stop s':>7} "
        f"{'peak RSS MiB':>13} {'data dir MiB':>13}  runs (ready s)"
    )
    lines = [
        f"dedupe table: {keys:,} keys in the changelog (written in {fill_s:.1f} s); "
        "medians of each store's runs",
        head,
        "-" * len(head),
    ]
    for m in modes:
        r = m.runs
        lines.append(
            f"{m.name:<14} {median([x.ready for x in r]):>8.1f} "
            f"{median([x.first_event for x in r]):>12.1f} {median([x.stop for x in r]):>7.1f} "
            f"{median([x.rss / 2**20 for x in r]):>13.0f} {m.data_bytes / 2**20:>13.1f}  "
            + ", ".join(f"{x.ready:.1f}" for x in r)
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the data dirs")
    args = parser.parse_args()

    tag = "rb" + uuid.uuid4().hex[:8]
    scratch = Path(f"/tmp/pssync-restart-bench-{tag}")
    scratch.mkdir(parents=True)
    base = {
        **os.environ,
        "PSSYNC_APP_ID": f"bench-{tag}",
        "PSSYNC_TOPIC_NAMESPACE": tag,
        "PSSYNC_CRM_TOPIC_PREFIX": f"crm_{tag}",
        "PSSYNC_ERP_TOPIC_PREFIX": f"erp_{tag}",
        "PSSYNC_PSA_TOPIC_PREFIX": f"psa_{tag}",
        "PSSYNC_PARTITIONS": "1",
        "PSSYNC_WEB_PORT": str(free_port()),
    }
    settings = Settings.from_env(base)
    base["PSSYNC_TARGET_URL"] = settings.target_url.rsplit("/", 1)[0] + f"/target_{tag}"
    check_encoding(settings)
    admin_exec(settings, f'CREATE DATABASE "target_{tag}"')
    # The dedupe table's changelog comes first; the other tables' are created empty.
    changelog, *others = changelog_specs(settings)
    ensure_topics(settings, [*topic_specs(settings), changelog, *others])
    modes = [
        Mode("memory", "memory", wipe=True),
        Mode("rocksdb cold", "rocksdb", wipe=True),
        Mode("rocksdb warm", "rocksdb", wipe=False),
    ]
    try:
        print(f"filling {changelog.name} with {args.keys:,} keys ...", flush=True)
        fill_s = fill_changelog(settings, args.keys)
        probe = 0
        for mode in modes:
            data_dir = scratch / mode.store
            env = {**base, "PSSYNC_STORE": mode.store, "PSSYNC_DATA_DIR": str(data_dir)}
            for run in range(args.runs):
                if mode.wipe:
                    shutil.rmtree(data_dir, ignore_errors=True)
                probe += 1
                result = start_once(env, scratch / f"worker-{mode.store}.log", probe, settings)
                mode.runs.append(result)
                print(
                    f"  {mode.name} run {run + 1}: ready {result.ready:.1f} s, first event "
                    f"{result.first_event:.1f} s, stop {result.stop:.1f} s, "
                    f"peak RSS {result.rss / 2**20:.0f} MiB",
                    flush=True,
                )
            mode.data_bytes = dir_size(Settings.from_env(env).state_dir)
        print()
        print(report(modes, args.keys, fill_s))
    finally:
        names = [t.name for t in topic_specs(settings)]
        names += [changelog.name, f"{settings.app_id}-__assignor-__leader"]
        delete_topics(settings, names)
        delete_group(settings)
        delete_subjects(settings, f"{tag}.")
        admin_exec(settings, f'DROP DATABASE IF EXISTS "target_{tag}" WITH (FORCE)')
        if args.keep:
            print(f"data dirs and logs kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
