"""Fixtures for tests against the real local stack (`make up`).

Each test gets its own CRM database, connector, raw/canonical/DLQ topics, consumer group
and target database, so tests cannot leak into each other.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from connectors.sql import db_url
from streams.settings import Settings
from tests.sandbox import (
    REPO,  # noqa: F401 - integration tests import it from here
    Worker,
    admin_engine,
    create_sandbox,
    destroy_sandbox,
    free_port,
    group_positions,
    stack_down,
    worker_metrics,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    settings = Settings.from_env()
    down = stack_down(settings)
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
        lines = [f"now {time.strftime('%H:%M:%S')}"]
        lines += group_positions(self.settings)
        lines += worker_metrics(int(self.env["PSSYNC_WEB_PORT"]))
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
                "PSSYNC_WEB_PORT": str(free_port()),
                "PSSYNC_DATA_DIR": str(self.tmp / f"worker-data{n}"),
            }
        w = Worker(env, self.tmp / f"worker{n}.log")
        self.workers.append(w)
        return w


@pytest.fixture
def target_url(base_settings: Settings) -> Iterator[str]:
    """A fresh, empty target database of its own."""
    name = "target_t" + uuid.uuid4().hex[:10]
    admin = admin_engine(base_settings)
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
    sandbox = create_sandbox(
        base_settings,
        "t" + uuid.uuid4().hex[:10],
        tmp_path / "worker-data",
        # Deals without line items wait this long before they are judged: the slice's
        # closed-won deals (no account, no lines) must not be parked during a test, or the CRM
        # status pssync writes back would add changes the tests do not expect.
        {
            "PSSYNC_BATCH_WITHIN": "0.1",
            "PSSYNC_DEAL_LINE_WAIT": "86400",
            **getattr(request, "param", {}),
        },
    )
    env_obj = SliceEnv(sandbox.settings, sandbox.env, tmp_path)
    try:
        yield env_obj
    finally:
        for w in env_obj.workers:
            w.stop()
        destroy_sandbox(sandbox)
