"""What the peer benchmark reads back: a process's CPU and peak memory (/proc), the state of a
peer's target table, and the distinct canonical records on a topic."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition

from schemas.serde import Decoder
from streams.security import kafka_config
from streams.settings import Settings

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of `pid` so far (children not included)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy_seconds() -> float:
    """CPU time all cores of this machine spent busy so far (not idle, not waiting on I/O)."""
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in cpu[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / TICK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass(frozen=True)
class TableShape:
    """Where a peer's target keeps the source key and the version (LSN) of each row."""

    table: str
    key: str
    version: str


PSSYNC_TABLE = TableShape("opportunity", "crm_id", "entity_version")
JDBC_TABLE = TableShape("opportunity", "id", "__lsn")


class Target:
    """One peer's target database, polled cheaply while it fills and checked at the end."""

    def __init__(self, dsn: str, shape: TableShape) -> None:
        self.dsn, self.shape = dsn, shape
        self.conn: psycopg.Connection[Any] | None = None

    def _cursor(self) -> psycopg.Cursor[Any]:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(self.dsn, autocommit=True)
        return self.conn.cursor()

    def progress(self) -> tuple[int, int]:
        """(rows, sum of versions); (0, 0) while the table does not exist yet."""
        s = self.shape
        try:
            with self._cursor() as cur:
                cur.execute(f"SELECT to_regclass('{s.table}')")
                row = cur.fetchone()
                if row is None or row[0] is None:
                    return 0, 0
                cur.execute(f'SELECT count(*), coalesce(sum("{s.version}"), 0) FROM {s.table}')
                got = cur.fetchone()
        except psycopg.OperationalError:
            return 0, 0
        return (int(got[0]), int(got[1])) if got else (0, 0)

    def checksum(self) -> str:
        s = self.shape
        with self._cursor() as cur:
            cur.execute(
                f"""SELECT md5(coalesce(string_agg("{s.key}" || ':' || "{s.version}", ','
                    ORDER BY "{s.key}" COLLATE "C"), '')) FROM {s.table}"""
            )
            row = cur.fetchone()
        return str(row[0]) if row else ""

    def applied_at(self) -> dict[str, float]:
        """Source key -> applied_at (epoch seconds), for latency."""
        with self._cursor() as cur:
            cur.execute(f"SELECT crm_id, extract(epoch FROM applied_at) FROM {self.shape.table}")
            return {str(k): float(t) for k, t in cur.fetchall()}

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


@dataclass
class Window:
    """A peer's measured window: from its start mark to the target holding the final rows."""

    done: bool
    seconds: float
    steady_seconds: float
    cpu: float
    rss_mb: float
    busy: float = float("nan")  # CPU seconds the whole machine was busy in the window


def watch(target: Target, rows: int, version_sum: int, pid: int | None,
          timeout: float, alive: Callable[[], bool] = lambda: True) -> Window:
    """Poll the target until it holds `rows` rows at the final versions (or `timeout`)."""
    cpu0 = cpu_seconds(pid) if pid else 0.0
    busy0 = machine_busy_seconds()
    start = time.monotonic()
    first: float | None = None
    done = False
    while time.monotonic() - start < timeout:
        got_rows, got_sum = target.progress()
        now = time.monotonic()
        if got_rows and first is None:
            first = now
        if got_rows == rows and got_sum == version_sum:
            done = True
            break
        if not alive():
            break
        time.sleep(0.1)
    end = time.monotonic()
    cpu = (cpu_seconds(pid) - cpu0) if pid else float("nan")
    rss = peak_rss_mb(pid) if pid else float("nan")
    busy = machine_busy_seconds() - busy0
    return Window(done, end - start, end - (first or start), cpu, rss, busy)


def distinct_canonical(settings: Settings, topic: str, decoder: Decoder,
                       timeout: float = 120) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Distinct canonical event ids on `topic` (a replayed event counts once), and the records."""
    c = Consumer(kafka_config(settings, **{"group.id": f"bench-read-{uuid.uuid4().hex}",
                                           "enable.auto.commit": False}))
    try:
        tp = TopicPartition(topic, 0, 0)
        end = c.get_watermark_offsets(tp, timeout=10)[1]
        c.assign([tp])
        ids: set[str] = set()
        records: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        read = 0
        while read < end and time.monotonic() < deadline:
            for m in c.consume(5000, 1.0):
                if m.error():
                    continue
                read = (m.offset() or 0) + 1
                value, key = m.value(), m.key()
                if value is None or key is None:
                    continue
                ids.add(str(decoder.decode(value)["envelope"]["event_id"]))
                records.append((key, value))
        return len(ids), records
    finally:
        c.close()
