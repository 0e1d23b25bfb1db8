"""PostgreSQL target: batched upserts guarded by versions.

A row's data moves only with a newer live image and its delete mark only with a newer
delete, so duplicates, replays and any batch split converge to the same state. Deletes are
soft (is_deleted + deleted_at): the row keeps its last data and versions, so a stale
replayed create can never resurrect it, while a real re-insert with a newer position does.
"""

from __future__ import annotations

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
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from connectors.sinks.base import BeforeCommit, Write, write_op
from connectors.sinks.plan import KeyImage, plan_batch, version
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
    # Version of the live image the data came from, and of the newest delete seen: the row is
    # deleted while deleted_version >= data_version (see connectors/sinks/plan.py).
    Column("data_version", BigInteger),
    Column("deleted_version", BigInteger),
    Column("source_position", Text),
    Column("correlation_id", Text),
    Column("last_event_id", Text),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

# Bookkeeping that makes writes idempotent and traceable; everything else is the entity's data.
BOOKKEEPING = [
    "is_deleted",
    "deleted_at",
    "entity_version",
    "data_version",
    "deleted_version",
    "source_position",
    "correlation_id",
    "last_event_id",
    "applied_at",
]
KEY = "opportunity_id"
COLUMNS = [c.name for c in opportunity.columns]
DATA_COLUMNS = [c for c in COLUMNS if c != KEY and c not in BOOKKEEPING]


def to_row(image: KeyImage, now: datetime) -> dict[str, Any]:
    """The staging row of one key's image: newest live data and newest delete, with versions."""
    newest = image.newest
    env = newest["envelope"]
    data = image.live["data"] if image.live is not None else {}
    row: dict[str, Any] = {c: data.get(c) for c in DATA_COLUMNS}
    deleted_at = None
    if image.deleted:
        # The source's commit time, not ours: a replay must write the same row.
        assert image.dead is not None
        deleted_at = image.dead["envelope"].get("source", {}).get("committed_at") or now
    row.update(
        {
            KEY: image.key,
            "is_deleted": image.deleted,
            "deleted_at": deleted_at,
            "entity_version": version(newest),
            "data_version": image.live_version,
            "deleted_version": image.dead_version,
            "source_position": env["source"]["position"],
            "correlation_id": str(env["correlation_id"]),
            "last_event_id": str(env["event_id"]),
            "applied_at": now,
        }
    )
    return row


def _upsert_sql() -> str:
    """One guarded upsert from the staging table; each key appears once (see plan.py).

    Data moves only with a newer live image, the delete mark only with a newer delete; the
    row is deleted while its newest delete is at least as new as its newest live image.
    SET expressions see the row as it was, so `t.` below is always the old row.
    """
    names = ", ".join(COLUMNS)
    newer_data = "EXCLUDED.data_version > COALESCE(t.data_version, -1)"
    newer_delete = "EXCLUDED.deleted_version > COALESCE(t.deleted_version, -1)"
    newer = "EXCLUDED.entity_version > t.entity_version"
    deleted = (
        "COALESCE(GREATEST(t.deleted_version, EXCLUDED.deleted_version), -2) "
        ">= COALESCE(GREATEST(t.data_version, EXCLUDED.data_version), -1)"
    )
    sets = [f"{c} = CASE WHEN {newer_data} THEN EXCLUDED.{c} ELSE t.{c} END" for c in DATA_COLUMNS]
    sets += [
        "data_version = GREATEST(t.data_version, EXCLUDED.data_version)",
        "deleted_version = GREATEST(t.deleted_version, EXCLUDED.deleted_version)",
        f"is_deleted = {deleted}",
        f"deleted_at = CASE WHEN {deleted} THEN "
        f"CASE WHEN {newer_delete} THEN EXCLUDED.deleted_at ELSE t.deleted_at END END",
        "entity_version = GREATEST(t.entity_version, EXCLUDED.entity_version)",
        *(
            f"{c} = CASE WHEN {newer} THEN EXCLUDED.{c} ELSE t.{c} END"
            for c in ("source_position", "correlation_id", "last_event_id")
        ),
        "applied_at = EXCLUDED.applied_at",
    ]
    # Every sub-statement sees the rows as they were, so `old` holds the versions before;
    # RETURNING lists rows actually written: stale and duplicate images return none.
    return (
        f"WITH old AS (SELECT t.{KEY}, t.entity_version, t.is_deleted "
        f"FROM {opportunity.name} t JOIN {STAGE_TABLE} s USING ({KEY})), "
        f"up AS (INSERT INTO {opportunity.name} AS t ({names}) SELECT {names} FROM {STAGE_TABLE} "
        f"ON CONFLICT ({KEY}) DO UPDATE SET {', '.join(sets)} "
        f"WHERE {newer_data} OR {newer_delete} "
        f"RETURNING {KEY}, entity_version, is_deleted, last_event_id, correlation_id) "
        f"SELECT up.{KEY}, old.entity_version, old.is_deleted, up.entity_version, up.is_deleted, "
        f"up.last_event_id, up.correlation_id FROM up LEFT JOIN old USING ({KEY})"
    )


# A tombstone of unknown version deletes what the row holds now, at the row's version.
BLIND_DELETE_SQL = (
    f"UPDATE {opportunity.name} SET is_deleted = true, deleted_version = entity_version, "
    f"deleted_at = %s, applied_at = %s WHERE {KEY} = ANY(%s) AND NOT is_deleted "
    f"RETURNING {KEY}, entity_version, false, entity_version, true, last_event_id, "
    "correlation_id"
)
# Columns added after the first release; an existing target gets them (add-only evolution).
EVOLVE_SQL = [
    f"ALTER TABLE {opportunity.name} ADD COLUMN IF NOT EXISTS data_version bigint, "
    "ADD COLUMN IF NOT EXISTS deleted_version bigint",
    # Rows written before: their one version is their live or their delete version.
    f"UPDATE {opportunity.name} SET "
    "data_version = CASE WHEN is_deleted THEN NULL ELSE entity_version END, "
    "deleted_version = CASE WHEN is_deleted THEN entity_version END "
    "WHERE data_version IS NULL AND deleted_version IS NULL",
]
STAGE_TABLE = "pssync_stage_opportunity"
UPSERT_SQL = _upsert_sql()


class PostgresSink:
    name = "postgres"
    entity = "opportunity"

    def __init__(
        self,
        url: str,
        engine: AsyncEngine | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> None:
        self.url = url
        self.engine = engine or create_async_engine(url, pool_size=2, pool_pre_ping=True)
        self.before_commit = before_commit

    def describe(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def object_name(self) -> str:
        """Where writes land, for audit records: no credentials."""
        u = self.engine.url
        return f"postgres://{u.host}:{u.port or 5432}/{u.database}/{opportunity.name}"

    async def ensure_schema(self) -> None:
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
                for sql in EVOLVE_SQL:
                    await conn.exec_driver_sql(sql)
        except (DBAPIError, OSError) as exc:
            raise SinkError(
                f"cannot prepare the target {self.describe()}: {getattr(exc, 'orig', exc)}; "
                "check PSSYNC_TARGET_URL and that the database exists and accepts connections"
            ) from exc

    async def close(self) -> None:
        await self.engine.dispose()

    async def apply(
        self, events: Sequence[dict[str, Any]], now: datetime | None = None
    ) -> list[Write]:
        """Apply decoded events ({"key", "envelope", "data"}) in one transaction.

        Returns the rows written. `now` stamps applied_at (and blind deletes); tests fix it.
        """
        if not events:
            return []
        now = now or datetime.now(UTC)
        returned: list[tuple[Any, ...]] = []
        async with self.engine.begin() as conn:
            raw = await conn.get_raw_connection()
            pg: psycopg.AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
            async with pg.cursor() as cur:
                for wave in plan_batch(events):
                    if wave.images:
                        rows = [to_row(image, now) for image in wave.images.values()]
                        returned += await _copy_upsert(cur, rows)
                    if wave.blind:
                        await cur.execute(BLIND_DELETE_SQL, (now, now, wave.blind))
                        returned += await cur.fetchall()
            writes = [
                Write(key, write_op(before, was_deleted, deleted), before, after, eid, cid, now)
                for key, before, was_deleted, after, deleted, eid, cid in returned
            ]
            if writes and self.before_commit is not None:
                await self.before_commit(writes)
        return writes

    def is_target_fault(self, exc: BaseException) -> bool:
        """True when the target, not one record, is at fault: retry, never dead-letter."""
        if isinstance(exc, TARGET_FAULT_TYPES):
            return True
        if isinstance(exc, DBAPIError) and (
            exc.connection_invalidated or isinstance(exc.orig, psycopg.OperationalError)
        ):
            return True
        state = _sqlstate(exc)
        return state[:2] in TARGET_FAULT_CLASSES or state in TARGET_FAULT_STATES

    def is_data_fault(self, exc: BaseException) -> bool:
        """True when the record itself is bad data (never a target problem)."""
        return _sqlstate(exc)[:2] in {"22", "23"}


# Exceptions that say the target is unreachable or gone, whatever the SQLSTATE.
TARGET_FAULT_TYPES = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    OSError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
)
# SQLSTATE classes that describe the target's state, not a record: connection (08), auth
# (28), missing database (3D), transaction rollback (40), resources (53), object state (55),
# operator intervention (57), system (58), internal (XX).
TARGET_FAULT_CLASSES = {"08", "28", "3D", "40", "53", "55", "57", "58", "XX"}
# Insufficient privilege, undefined table/column: a DBA's fix, not a record's.
TARGET_FAULT_STATES = {"42501", "42P01", "42703"}


async def _copy_upsert(
    cur: psycopg.AsyncCursor[Any], rows: list[dict[str, Any]]
) -> list[tuple[Any, ...]]:
    """COPY the rows into a session-local staging table, then one guarded upsert.

    Measured here ~35x faster than a multi-row INSERT .. VALUES built by SQLAlchemy and
    ~8x faster than executemany: the batch crosses the wire once, in COPY's compact form.
    """
    await cur.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGE_TABLE} "
        f"(LIKE {opportunity.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    # A batch may hold several waves: each starts from an empty staging table.
    await cur.execute(f"TRUNCATE {STAGE_TABLE}")
    async with cur.copy(f"COPY {STAGE_TABLE} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            await copy.write_row([row[c] for c in COLUMNS])
    await cur.execute(UPSERT_SQL)
    return await cur.fetchall()


def _sqlstate(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(getattr(orig, "sqlstate", None) or "")
