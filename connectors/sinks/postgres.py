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
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.exc import DBAPIError, IntegrityError
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

DATA_COLUMNS = [
    c.name
    for c in opportunity.columns
    if c.name
    not in {
        "opportunity_id",
        "is_deleted",
        "deleted_at",
        "entity_version",
        "source_position",
        "correlation_id",
        "last_event_id",
        "applied_at",
    }
]


ALL_COLUMNS = [c.name for c in opportunity.columns if c.name != "opportunity_id"]
DELETE_COLUMNS = [
    "is_deleted",
    "deleted_at",
    "entity_version",
    "source_position",
    "correlation_id",
    "last_event_id",
    "applied_at",
]


def latest_per_key(events: Sequence[dict[str, Any]], key_field: str) -> list[dict[str, Any]]:
    """Keep the newest event per key: one statement cannot touch a row twice."""
    best: dict[str, dict[str, Any]] = {}
    for ev in events:
        key = ev["key"]
        cur = best.get(key)
        if cur is None or ev["envelope"]["entity_version"] >= cur["envelope"]["entity_version"]:
            best[key] = ev
    return list(best.values())


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
        row.update({c: None for c in DATA_COLUMNS})
        row.update({"is_deleted": True, "deleted_at": now})
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
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def close(self) -> None:
        await self.engine.dispose()

    async def apply(self, events: Sequence[dict[str, Any]]) -> int:
        """Apply decoded events ({"key", "envelope", "data"}); returns rows changed."""
        if not events:
            return 0
        latest = latest_per_key(events, "opportunity_id")
        now = datetime.now(UTC)
        upserts = [to_row(e, now) for e in latest if e["envelope"]["entity_version"] >= 0]
        # Tombstones with no known version delete without moving the version.
        blind = [e["key"] for e in latest if e["envelope"]["entity_version"] < 0]
        changed = 0
        live = [r for r in upserts if not r["is_deleted"]]
        deletes = [r for r in upserts if r["is_deleted"]]
        async with self.engine.begin() as conn:
            # A delete keeps the row's last data: only the bookkeeping columns move.
            for rows, columns in ((live, ALL_COLUMNS), (deletes, DELETE_COLUMNS)):
                for chunk in _chunks(rows, 1000):
                    base = insert(opportunity).values(chunk)
                    excluded = base.excluded
                    stmt = base.on_conflict_do_update(
                        index_elements=[opportunity.c.opportunity_id],
                        set_={c: excluded[c] for c in columns},
                        where=opportunity.c.entity_version < excluded.entity_version,
                    ).returning(opportunity.c.opportunity_id)
                    # RETURNING counts rows actually written (skipped stale ones return none).
                    result = await conn.execute(stmt)
                    changed += len(result.fetchall())
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
            except IntegrityError:
                return await self._apply_one_by_one(events)
            except DBAPIError as exc:
                if not exc.connection_invalidated and _is_data_error(exc):
                    return await self._apply_one_by_one(events)
                if attempt == attempts:
                    raise SinkError(
                        f"target {self.engine.url.render_as_string(hide_password=True)} keeps "
                        f"failing: {exc.orig!r}; fix the target, the batch is retried on restart"
                    ) from exc
                log.warning(
                    "sink: transient error (attempt %d/%d): %s", attempt, attempts, exc.orig
                )
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
            except (IntegrityError, DBAPIError) as exc:
                if (
                    isinstance(exc, DBAPIError)
                    and not isinstance(exc, IntegrityError)
                    and not _is_data_error(exc)
                ):
                    raise
                rejected.append((ev, exc))
        return changed, rejected


def _is_data_error(exc: DBAPIError) -> bool:
    # SQLSTATE class 22 (data exception) and 23 (integrity) are the row's fault, not the target's.
    code = getattr(exc.orig, "sqlstate", None) or ""
    return code[:2] in {"22", "23"}


def _chunks(rows: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]
