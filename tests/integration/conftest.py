"""Fixtures for tests against the real local stack (`make up`).

Each test gets its own CRM database, connector, raw/canonical/DLQ topics, consumer group
and target database, so tests cannot leak into each other.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from connectors.debezium import crm_connector, slot_name, write_secrets_file
from connectors.kafka_connect import ConnectClient
from connectors.sql import apply_schema, db_url
from streams.admin import delete_topics, ensure_topics
from streams.replay import Replayer
from streams.settings import Settings
from streams.topology import topic_specs

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    settings = Settings.from_env()
    p = settings.ports
    down = [
        n
        for n, port in (
            ("postgres", p.postgres),
            ("kafka", p.kafka),
            ("registry", p.registry),
            ("connect", p.connect),
        )
        if not _reachable(port)
    ]
    if down:
        pytest.fail(f"local stack not running ({', '.join(down)} down): run `make up` first")
    secrets = Path(settings.connect_secrets_file)
    if settings.connect_secrets == "file" and not secrets.is_file():
        pytest.fail(
            f"no connector secrets file at {secrets}: `make up` writes it; when the stack runs "
            "from another folder, set PSSYNC_CONNECT_SECRETS_FILE to that folder's "
            ".stack/secrets/connect.properties"
        )
    return settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _admin_engine(settings: Settings) -> Any:
    db = settings.crm_db
    return create_engine(
        f"postgresql+psycopg://{db.user}:{db.password}@{db.host}:{db.port}/postgres",
        isolation_level="AUTOCOMMIT",
    )


@dataclass
class Worker:
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, ready_timeout: float = 120) -> None:
        """Start the worker and wait until it has joined its group and recovered its tables."""
        self.starts += 1
        seen = self.log.stat().st_size if self.log.exists() else 0
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=self.env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            with self.log.open("rb") as f:
                f.seek(seen)
                if b"[^Worker]: Ready" in f.read():
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        tail = self.log.read_text(errors="replace")[-4000:]
        raise AssertionError(f"worker not ready (exit code {self.proc.poll()}):\n{tail}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


@dataclass
class SliceEnv:
    """One isolated copy of the slice: CRM db -> connector -> topics -> worker -> target db."""

    settings: Settings
    env: dict[str, str]
    tmp: Path
    workers: list[Worker] = field(default_factory=list)

    def crm(self, sql: str, params: Any = None) -> None:
        engine = create_engine(db_url(self.settings.crm_db))
        with engine.begin() as conn:
            conn.execute(text(sql), params or {})
        engine.dispose()

    def crm_target(self, sql: str) -> None:
        engine = create_engine(self.settings.target_url)
        with engine.begin() as conn:
            conn.execute(text(sql))
        engine.dispose()

    def target_rows(self, where: str = "true", params: Any = None) -> list[Any]:
        engine = create_engine(self.settings.target_url)
        try:
            with engine.connect() as conn:
                exists = conn.execute(text("SELECT to_regclass('opportunity')")).scalar()
                if exists is None:
                    return []
                return list(
                    conn.execute(
                        text(f"SELECT * FROM opportunity WHERE {where} ORDER BY opportunity_id"),
                        params or {},
                    ).mappings()
                )
        finally:
            engine.dispose()

    def wait_for(self, check: Callable[[], bool], timeout: float = 90, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.3)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.diagnose()}")

    def diagnose(self) -> str:
        """Where the events are: group offsets against topic ends, worker counters, log tails."""
        lines = [f"now {time.strftime('%H:%M:%S')}; group {self.settings.app_id}"]
        replayer = Replayer(self.settings, timeout=10)
        for spec in topic_specs(self.settings):
            try:
                plan = replayer.plan(self.settings.app_id, spec.name, "latest")
                lines += [
                    f"  {spec.name}[{m.partition}] committed {m.current} end {m.end}" for m in plan
                ]
            except Exception as exc:  # noqa: BLE001 - diagnostics must not hide the failure
                lines.append(f"  {spec.name}: {exc}")
        try:
            port = self.env["PSSYNC_WEB_PORT"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                lines += [
                    ln
                    for ln in r.read().decode().splitlines()
                    if ln.startswith(("pssync_events", "pssync_sink_rows", "pssync_dlq"))
                ]
        except OSError as exc:
            lines.append(f"  metrics: {exc}")
        for w in self.workers:
            lines.append(f"--- {w.log.name} (last 6000 chars)")
            lines.append(w.log.read_text(errors="replace")[-6000:])
        return "\n".join(lines)

    def worker(self) -> Worker:
        """A worker process of the group; each has its own web port and state directory."""
        n = len(self.workers)
        env = self.env
        if n:
            env = {
                **env,
                "PSSYNC_WEB_PORT": str(_free_port()),
                "PSSYNC_DATA_DIR": str(self.tmp / f"worker-data{n}"),
            }
        w = Worker(env, self.tmp / f"worker{n}.log")
        self.workers.append(w)
        return w


@pytest.fixture
def target_url(base_settings: Settings) -> Iterator[str]:
    """A fresh, empty target database of its own."""
    name = "target_t" + uuid.uuid4().hex[:10]
    admin = _admin_engine(base_settings)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            f"postgresql+psycopg://postgres:postgres@127.0.0.1:"
            f"{base_settings.ports.postgres}/{name}"
        )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def slice_env(
    base_settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[SliceEnv]:
    """Parametrize indirectly with a dict of extra settings, e.g. {"PSSYNC_PARTITIONS": "2"}."""
    extra: dict[str, str] = dict(getattr(request, "param", {}))
    sfx = "t" + uuid.uuid4().hex[:10]
    crm_db, target_db = f"crm_{sfx}", f"target_{sfx}"
    admin = _admin_engine(base_settings)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{crm_db}"'))
        conn.execute(text(f'CREATE DATABASE "{target_db}"'))
    s = base_settings
    env = {
        **os.environ,
        "PSSYNC_CRM_DB_NAME": crm_db,
        "PSSYNC_CRM_TOPIC_PREFIX": f"crm_{sfx}",
        "PSSYNC_TOPIC_NAMESPACE": sfx,
        "PSSYNC_APP_ID": f"pssync-{sfx}",
        "PSSYNC_TARGET_URL": f"postgresql+psycopg://postgres:postgres@127.0.0.1:{s.ports.postgres}/{target_db}",
        "PSSYNC_WEB_PORT": str(_free_port()),
        "PSSYNC_DATA_DIR": str(tmp_path / "worker-data"),
        "PSSYNC_BATCH_WITHIN": "0.1",
        **extra,
    }
    settings = Settings.from_env(env)
    own_secrets = "PSSYNC_CONNECT_SECRETS_FILE" in extra
    connector = crm_connector(settings)
    connect = ConnectClient(settings.connect_url)
    env_obj = SliceEnv(settings, env, tmp_path)
    try:
        # Inside the try: a failed set-up still drops what it created.
        if own_secrets:
            write_secrets_file(settings)
        apply_schema(settings.crm_db, "crm")
        ensure_topics(settings, topic_specs(settings))
        connect.put(connector["name"], connector["config"])
        connect.wait_running(connector["name"], timeout=120)
        yield env_obj
    finally:
        for w in env_obj.workers:
            w.stop()
        connect.delete(connector["name"])
        time.sleep(1)
        with admin.connect() as conn:
            for _ in range(30):
                # The slot stays active until the connector task has really stopped.
                try:
                    conn.execute(
                        text(
                            "SELECT pg_drop_replication_slot(slot_name) FROM "
                            "pg_replication_slots WHERE slot_name = :s"
                        ),
                        {"s": slot_name(settings.crm_topic_prefix)},
                    )
                    break
                except Exception:  # noqa: BLE001 - slot still in use, retry
                    time.sleep(1)
            for db in (crm_db, target_db):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()
        if own_secrets:
            Path(settings.connect_secrets_file).unlink(missing_ok=True)
        names = [t.name for t in topic_specs(settings)]
        names += [
            f"{settings.app_id}-dedupe-positions-changelog",
            f"{settings.app_id}-__assignor-__leader",
        ]
        delete_topics(settings, names)
