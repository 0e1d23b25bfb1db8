"""One isolated copy of the slice on the local stack, for integration tests and the soak.

A sandbox has its own CRM database, Debezium connector (name, slot and topic prefix), raw,
canonical and DLQ topics, consumer group and target database, so runs cannot leak into each
other or into the demo's data. Workers are `pssync worker` subprocesses with that environment.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text

from connectors.debezium import crm_connector, slot_name, write_secrets_file
from connectors.kafka_connect import ConnectClient
from connectors.sql import apply_schema, server_engine
from streams.admin import delete_topics, ensure_topics
from streams.replay import Replayer
from streams.settings import Settings
from streams.state import changelog_specs
from streams.topology import topic_specs

REPO = Path(__file__).resolve().parents[1]
READY = b"[^Worker]: Ready"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Sockets held for the whole test run by refusing_port.
_HELD: list[socket.socket] = []


def refusing_port() -> int:
    """A local port that refuses every connection for the rest of the run: bound and never
    listening, so no other process can take it (a port merely free at collection time may be
    serving something else, or be handed out as a client's own port, by the time it is used)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _HELD.append(s)
    return int(s.getsockname()[1])


def stack_down(settings: Settings) -> list[str]:
    """The local stack's components that do not answer on their port."""
    p = settings.ports
    down = []
    for name, port in (
        ("postgres", p.postgres),
        ("kafka", p.kafka),
        ("registry", p.registry),
        ("connect", p.connect),
    ):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        except OSError:
            down.append(name)
    return down


def admin_engine(settings: Settings) -> Any:
    """AUTOCOMMIT engine on the server's `postgres` database (CREATE/DROP/ALTER DATABASE)."""
    return server_engine(settings.crm_db)


class WorkerNotReady(AssertionError):
    """A worker did not log Ready in time (or exited first); the message has its log tail."""


@dataclass
class Worker:
    """A `pssync worker` subprocess appending to `log`."""

    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, ready_timeout: float = 120) -> None:
        """Start the worker and wait until it has joined its group and recovered its tables."""
        seen = self.spawn()
        if not self.wait_ready(seen, ready_timeout):
            tail = self.log.read_text(errors="replace")[-4000:]
            raise WorkerNotReady(f"worker not ready (exit code {self.exit_code()}):\n{tail}")

    def spawn(self) -> int:
        """Start the process without waiting; returns where its output starts in the log."""
        self.starts += 1
        self.log.parent.mkdir(parents=True, exist_ok=True)
        seen = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return seen

    def wait_ready(self, seen: int, timeout: float) -> bool:
        """True once the log shows Ready after offset `seen`; False on exit or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log.open("rb") as f:
                f.seek(seen)
                if READY in f.read():
                    return True
            if not self.alive():
                return False
            time.sleep(0.2)
        return False

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye."""
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


@dataclass(frozen=True)
class Sandbox:
    settings: Settings
    env: dict[str, str]
    crm_db: str
    target_db: str
    connector: str
    own_secrets: bool = False  # its own connector secrets file (PSSYNC_CONNECT_SECRETS_FILE)


def create_sandbox(
    base: Settings, suffix: str, data_dir: Path, extra_env: Mapping[str, str] | None = None
) -> Sandbox:
    """Databases, topics and a RUNNING connector named after `suffix` (unique per run)."""
    crm_db, target_db = f"crm_{suffix}", f"target_{suffix}"
    admin = admin_engine(base)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{crm_db}"'))
            conn.execute(text(f'CREATE DATABASE "{target_db}"'))
    finally:
        admin.dispose()
    env = {
        **os.environ,
        "PSSYNC_CRM_DB_NAME": crm_db,
        "PSSYNC_CRM_TOPIC_PREFIX": f"crm_{suffix}",
        # Raw topics of every source are the sandbox's own: it creates and deletes them.
        "PSSYNC_ERP_TOPIC_PREFIX": f"erp_{suffix}",
        "PSSYNC_PSA_TOPIC_PREFIX": f"psa_{suffix}",
        "PSSYNC_TOPIC_NAMESPACE": suffix,
        "PSSYNC_APP_ID": f"pssync-{suffix}",
        "PSSYNC_TARGET_URL": (
            f"postgresql+psycopg://postgres:postgres@127.0.0.1:{base.ports.postgres}/{target_db}"
        ),
        "PSSYNC_WEB_PORT": str(free_port()),
        "PSSYNC_DATA_DIR": str(data_dir),
        **(extra_env or {}),
    }
    settings = Settings.from_env(env)
    connector = crm_connector(settings)
    own_secrets = "PSSYNC_CONNECT_SECRETS_FILE" in (extra_env or {})
    sandbox = Sandbox(settings, env, crm_db, target_db, connector["name"], own_secrets)
    try:
        if own_secrets:
            write_secrets_file(settings)
        apply_schema(settings.crm_db, "crm")
        ensure_topics(settings, topic_specs(settings))
        connect = ConnectClient(settings.connect_url)
        connect.put(connector["name"], connector["config"])
        connect.wait_running(connector["name"], timeout=120)
    except BaseException:
        destroy_sandbox(sandbox)  # a failed set-up still drops what it created
        raise
    return sandbox


def destroy_sandbox(sandbox: Sandbox) -> None:
    """Connector, replication slot, databases and every topic of the sandbox (workers stopped)."""
    settings = sandbox.settings
    ConnectClient(settings.connect_url).delete(sandbox.connector)
    time.sleep(1)
    admin = admin_engine(settings)
    try:
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
            for db in (sandbox.crm_db, sandbox.target_db):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
    finally:
        admin.dispose()
    if sandbox.own_secrets:
        Path(settings.connect_secrets_file).unlink(missing_ok=True)
    names = [t.name for t in topic_specs(settings)]
    names += [s.name for s in changelog_specs(settings)]
    names += [f"{settings.app_id}-__assignor-__leader"]
    delete_topics(settings, names)


def group_positions(settings: Settings) -> list[str]:
    """Where the group is: committed offset against the end of every topic it reads."""
    lines = [f"group {settings.app_id}"]
    replayer = Replayer(settings, timeout=10)
    for spec in topic_specs(settings):
        try:
            plan = replayer.plan(settings.app_id, spec.name, "latest")
            lines += [
                f"  {spec.name}[{m.partition}] committed {m.current} end {m.end}" for m in plan
            ]
        except Exception as exc:  # noqa: BLE001 - diagnostics must not hide the failure
            lines.append(f"  {spec.name}: {exc}")
    return lines


def worker_metrics(port: int) -> list[str]:
    """A worker's event, sink-row and DLQ counters from its /metrics page."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return [
                ln
                for ln in r.read().decode().splitlines()
                if ln.startswith(("pssync_events", "pssync_sink_rows", "pssync_dlq"))
            ]
    except OSError as exc:
        return [f"  metrics of :{port}: {exc}"]
