"""PostgreSQL target: one table per canonical entity, batched upserts guarded by versions.

Each table is derived from its entity's Avro contract (connectors/sinks/tablespec.py); the
DDL, the staging table and the upsert are generated once per contract version, never per
row. A row's data moves only with a newer live image and its delete mark only with a newer
delete, so duplicates, replays and any batch split converge to the same state. Deletes are
soft (is_deleted + deleted_at): the row keeps its last data and versions, so a stale
replayed create can never resurrect it, while a real re-insert with a newer position does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from connectors.sinks.base import BeforeCommit, Write, write_op
from connectors.sinks.plan import KeyImage, plan_batch, version
from connectors.sinks.tablespec import (
    BOOKKEEPING,
    NO_DEFAULT,
    Column,
    TableSpec,
    compile_spec,
    json_value,
    quote,
    required_check,
)
from schemas import contracts
from streams.errors import SchemaError, SinkError

log = logging.getLogger(__name__)

# Column types binary COPY sends (numeric(p,s) too): those whose Python values, as decoded
# from Avro, psycopg dumps in the type's binary form. About 40% less formatting than text.
BINARY_TYPES = frozenset(
    {
        "text",
        "boolean",
        "integer",
        "bigint",
        "real",
        "double precision",
        "date",
        "timestamp with time zone",
        "jsonb",
        "text[]",
        "numeric",
    }
)
BYTEA_OID = 17


class Statements:
    """What one table spec needs at run time, built once: SQL texts and the row builder."""

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.table = quote(spec.table)
        self.key = quote(spec.key)
        self.names = spec.names
        # (field, value when the writer's contract version lacks it), in column order.
        self.fields = [
            (c.name, None if c.default is NO_DEFAULT else c.default) for c in spec.columns
        ]
        self.json_at = [i for i, c in enumerate(spec.columns) if c.is_json]
        # All fields at once (C), the common case; a record of an older contract version
        # lacking some falls back to the defaults field by field.
        names = [name for name, _ in self.fields]
        self._values = (
            itemgetter(*names) if len(names) > 1 else (lambda d: tuple(d[n] for n in names))
        )
        # One staging table per spec: a session that met an older spec has a narrower one.
        self.stage = quote(f"pssync_stage_{spec.table[:32]}_{spec.fingerprint[:8]}")
        self.create_stage = (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} "
            f"(LIKE {self.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        self.empty_stage = f"TRUNCATE {self.stage}"
        self.copy = f"COPY {self.stage} ({', '.join(map(quote, self.names))}) FROM STDIN"
        self.copy_binary = f"{self.copy} (FORMAT BINARY)"
        # The type oids binary COPY sends the columns as, [] for text COPY, None until the
        # staging table's columns were read (binary_types).
        self.copy_types: list[int] | None = None
        # Columns whose values are JSON text: sent in jsonb's binary form (see binary_row).
        self.jsonb_at = [i + 1 for i in self.json_at]  # + 1: the key comes first
        # The type each column has when pssync created it, as format_type() spells it.
        self.expected = [
            "text",
            *(c.sql_type for c in spec.columns),
            *(b.type for b in BOOKKEEPING),
        ]
        self.upsert = self._upsert_sql()
        # A tombstone of unknown version deletes what the row holds now, at the row's version.
        self.blind_delete = (
            f"UPDATE {self.table} SET is_deleted = true, deleted_version = entity_version, "
            f"deleted_at = %s, applied_at = %s WHERE {self.key} = ANY(%s) AND NOT is_deleted "
            f"RETURNING {self.key}, entity_version, false, entity_version, true, last_event_id, "
            "correlation_id"
        )

    def row(self, image: KeyImage, now: datetime) -> list[Any]:
        """The staging row of one key's image (in `names` order): newest live data, newest
        delete, and their versions."""
        newest = image.newest
        env = newest["envelope"]
        data = image.live["data"] if image.live is not None else None
        if data is None:
            values: list[Any] = [None] * len(self.fields)
        else:
            try:
                values = list(self._values(data))
            except KeyError:
                values = [data.get(name, default) for name, default in self.fields]
            for i in self.json_at:
                if values[i] is not None:
                    values[i] = json_value(values[i])
        deleted_at = None
        if image.deleted:
            # The source's commit time, not ours: a replay must write the same row.
            assert image.dead is not None
            deleted_at = image.dead["envelope"].get("source", {}).get("committed_at") or now
        return [
            image.key,
            *values,
            image.deleted,
            deleted_at,
            version(newest),
            image.live_version,
            image.dead_version,
            env["source"]["position"],
            str(env["correlation_id"]),
            str(env["event_id"]),
            now,
        ]

    def binary_types(self, columns: dict[str, str]) -> list[int]:
        """The oids binary COPY sends, given the target table's columns (name -> type as
        format_type() spells it; the staging table is LIKE it); [] when text COPY must be used.

        Binary COPY is exact about types: each value must already be what the column holds.
        The decoded values are, by construction, for the types the contract gives the
        columns; a column the target has retyped (pssync keeps it as it is), or a type not
        listed here, is sent as text, which PostgreSQL converts.
        """
        oids = []
        for name, want in zip(self.names, self.expected, strict=True):
            base = "numeric" if want.startswith("numeric(") else want
            if columns.get(name) != want or base not in BINARY_TYPES:
                return []
            # jsonb goes out as bytes already in its binary form (version 1 + the text),
            # through the bytea dumper: the jsonb dumper would encode the text again.
            oids.append(BYTEA_OID if base == "jsonb" else psycopg.adapters.types.get_oid(base))
        return oids

    def binary_row(self, row: list[Any]) -> list[Any]:
        for i in self.jsonb_at:
            if row[i] is not None:
                row[i] = b"\x01" + row[i].encode()
        return row

    def row_dict(self, image: KeyImage, now: datetime) -> dict[str, Any]:
        return dict(zip(self.names, self.row(image, now), strict=True))

    def _upsert_sql(self) -> str:
        """One guarded upsert from the staging table; each key appears once (see plan.py).

        Data moves only with a newer live image, the delete mark only with a newer delete;
        the row is deleted while its newest delete is at least as new as its newest live
        image. SET expressions see the row as it was, so `t.` below is always the old row.
        """
        table, key, stage = self.table, self.key, self.stage
        names = ", ".join(map(quote, self.names))
        newer_data = "EXCLUDED.data_version > COALESCE(t.data_version, -1)"
        newer_delete = "EXCLUDED.deleted_version > COALESCE(t.deleted_version, -1)"
        newer = "EXCLUDED.entity_version > t.entity_version"
        deleted = (
            "COALESCE(GREATEST(t.deleted_version, EXCLUDED.deleted_version), -2) "
            ">= COALESCE(GREATEST(t.data_version, EXCLUDED.data_version), -1)"
        )
        data = [quote(c) for c in self.spec.data_columns]
        sets = [f"{c} = CASE WHEN {newer_data} THEN EXCLUDED.{c} ELSE t.{c} END" for c in data]
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
            f"WITH old AS (SELECT t.{key}, t.entity_version, t.is_deleted "
            f"FROM {table} t JOIN {stage} s USING ({key})), "
            f"up AS (INSERT INTO {table} AS t ({names}) SELECT {names} FROM {stage} "
            f"ON CONFLICT ({key}) DO UPDATE SET {', '.join(sets)} "
            f"WHERE {newer_data} OR {newer_delete} "
            f"RETURNING {key}, entity_version, is_deleted, last_event_id, correlation_id) "
            f"SELECT up.{key}, old.entity_version, old.is_deleted, up.entity_version, "
            "up.is_deleted, up.last_event_id, up.correlation_id "
            f"FROM up LEFT JOIN old USING ({key})"
        )


def evolution(spec: TableSpec, existing: dict[str, str]) -> list[sql.Composable]:
    """Statements that bring an existing table (column -> type) up to `spec`: add-only.

    A new field becomes a new column; a field with a default fills the rows already there
    with it (what an Avro reader of the new version reads for them). Columns are never
    dropped or retyped. A required field without a default cannot be added to a table that
    has rows written without it: that is an error saying what to do.
    """
    table = sql.Identifier(spec.table)
    out: list[sql.Composable] = []
    missing_bookkeeping = [b for b in BOOKKEEPING if b.name not in existing]
    for kept in missing_bookkeeping:
        if kept.required and kept.default is None:
            raise SchemaError(
                f"table {spec.table} has no column {kept.name}: it was not created by "
                "pssync's sink; point PSSYNC_TARGET_URL at another database or rename that table"
            )
        out.append(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                table, sql.Identifier(kept.name), sql.SQL(kept.ddl)
            )
        )
    if {"data_version", "deleted_version"} <= {b.name for b in missing_bookkeeping}:
        # Rows written before the sink kept both versions: their one version is their live
        # or their delete version.
        out.append(
            sql.SQL(
                "UPDATE {} SET "
                "data_version = CASE WHEN is_deleted THEN NULL ELSE entity_version END, "
                "deleted_version = CASE WHEN is_deleted THEN entity_version END "
                "WHERE data_version IS NULL AND deleted_version IS NULL"
            ).format(table)
        )
    for column in spec.columns:
        if column.name not in existing:
            out.append(add_column(spec, column))
        elif existing[column.name] != column.sql_type:
            log.warning(
                "sink: %s.%s is %s in the target, the %s contract says %s: kept as it is "
                "(pssync never retypes a column); values it cannot hold go to the sink DLQ",
                spec.table,
                column.name,
                existing[column.name],
                spec.entity,
                column.sql_type,
            )
    return out


def add_column(spec: TableSpec, column: Column) -> sql.Composable:
    """ALTER TABLE for one new column; SchemaError when rows already there cannot get a value."""
    table, name = sql.Identifier(spec.table), sql.Identifier(column.name)
    if not column.nullable and column.default in (NO_DEFAULT, None):
        raise SchemaError(
            f"the {spec.entity} contract (version {spec.fingerprint}) has a required field "
            f"{column.name!r} without a default, and table {spec.table} already exists without "
            "that column: its rows would have no value. Give the field a default (or make it "
            f"optional) in the contract, or add the column yourself (ALTER TABLE {spec.table} "
            f"ADD COLUMN {column.name} {column.sql_type}) and fill it, then restart the worker"
        )
    ddl = sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
        table, name, sql.SQL(column.sql_type)
    )
    if column.default not in (NO_DEFAULT, None):
        value = json_value(column.default) if column.is_json else column.default
        ddl = sql.SQL("{} DEFAULT {}::{}").format(ddl, sql.Literal(value), sql.SQL(column.sql_type))
    if not column.nullable:
        ddl = sql.SQL("{} {}").format(ddl, sql.SQL(required_check(column)))
    return ddl


class PostgresSink:
    """One entity's table in a PostgreSQL target."""

    name = "postgres"

    def __init__(
        self,
        url: str,
        entity: str,
        engine: AsyncEngine | None = None,
        before_commit: BeforeCommit | None = None,
        contract: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.entity = entity
        self.reference = contracts.is_reference(entity)
        self.engine = engine or create_async_engine(url, pool_size=2, pool_pre_ping=True)
        self.before_commit = before_commit
        # The table as this worker's own contract describes it; writer versions met on the
        # topic are merged into it (evolve) before their records are applied.
        spec = compile_spec(entity, contract or contracts.schema(entity), self.reference)
        self.statements = Statements(spec)
        self._evolved: set[str] = set()

    @property
    def spec(self) -> TableSpec:
        return self.statements.spec

    def describe(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def object_name(self) -> str:
        """Where writes land, for audit records: no credentials."""
        u = self.engine.url
        return f"postgres://{u.host}:{u.port or 5432}/{u.database}/{self.spec.table}"

    async def ensure_schema(self) -> None:
        """Create the table, or add what the contract has and the table lacks."""
        try:
            await self._converge(self.spec)
        except (DBAPIError, OSError) as exc:
            raise SinkError(
                f"cannot prepare the target {self.describe()}: {getattr(exc, 'orig', exc)}; "
                "check PSSYNC_TARGET_URL and that the database exists and accepts connections"
            ) from exc
        self._evolved.add(self.spec.fingerprint)

    async def evolve(self, spec: TableSpec) -> None:
        """Make the table hold records of another contract version (add-only), once per
        version. Target faults propagate for the caller to retry; SchemaError says what a
        person must do."""
        if spec.fingerprint in self._evolved:
            return
        merged = self.spec.merged(spec)
        if merged is not self.spec:
            await self._converge(merged)
            self.statements = Statements(merged)
            self._evolved.add(merged.fingerprint)
        self._evolved.add(spec.fingerprint)

    async def _converge(self, spec: TableSpec) -> None:
        async with self.engine.begin() as conn:
            # Workers starting together must not race to create or alter one table.
            await conn.exec_driver_sql(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"pssync.sink.{spec.table}",)
            )
            existing = await _columns(conn, spec.table)
            if not existing:
                await conn.exec_driver_sql(spec.create_sql())
                return
            raw = await conn.get_raw_connection()
            pg: psycopg.AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
            for statement in evolution(spec, existing):
                await conn.exec_driver_sql(statement.as_string(pg))

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
        try:
            return await self._apply(events, now)
        except BinaryCopyFault as fault:
            # Values binary COPY could not send (a type the check let through): this table
            # uses text COPY from now on, and the batch is applied again, whole.
            log.warning(
                "sink: %s: binary COPY failed (%r); using text COPY for this table",
                self.spec.table,
                fault.cause,
            )
            self.statements.copy_types = []
            return await self._apply(events, now)

    async def _apply(self, events: Sequence[dict[str, Any]], now: datetime) -> list[Write]:
        st = self.statements
        returned: list[tuple[Any, ...]] = []
        async with self.engine.begin() as conn:
            if st.copy_types is None:
                # The staging table is LIKE the target: the target's column types are its.
                # Decided once the table exists (until then, text COPY).
                columns = await _columns(conn, st.spec.table)
                if columns:
                    st.copy_types = st.binary_types(columns)
            raw = await conn.get_raw_connection()
            pg: psycopg.AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
            async with pg.cursor() as cur:
                # Created in every transaction (IF NOT EXISTS): a pooler may hand each one
                # another server session. ON COMMIT DELETE ROWS: it starts out empty.
                await cur.execute(st.create_stage)
                staged = False
                for wave in plan_batch(events):
                    if wave.images:
                        if staged:  # each wave starts from an empty staging table
                            await cur.execute(st.empty_stage)
                        rows = [st.row(image, now) for image in wave.images.values()]
                        returned += await _copy_upsert(cur, st, rows)
                        staged = True
                    if wave.blind:
                        await cur.execute(st.blind_delete, (now, now, wave.blind))
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


class PostgresTarget:
    """One target database: a PostgresSink per entity, all sharing one connection pool."""

    def __init__(self, url: str, engine: AsyncEngine | None = None) -> None:
        self.url = url
        self.engine = engine or create_async_engine(url, pool_size=2, pool_pre_ping=True)
        self._tables: dict[str, PostgresSink] = {}

    def table(self, entity: str) -> PostgresSink:
        if entity not in self._tables:
            self._tables[entity] = PostgresSink(self.url, entity, engine=self.engine)
        return self._tables[entity]

    async def close(self) -> None:
        await self.engine.dispose()


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


async def _columns(conn: AsyncConnection, table: str) -> dict[str, str]:
    """The table's columns and their types as format_type() spells them; {} if no table."""
    result = await conn.exec_driver_sql(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
        (quote(table),),
    )
    rows: list[Any] = list(result.all())
    return {str(name): str(kind) for name, kind in rows}


async def _copy_upsert(
    cur: psycopg.AsyncCursor[Any], st: Statements, rows: list[list[Any]]
) -> list[tuple[Any, ...]]:
    """COPY the rows into the session's (empty) staging table, then one guarded upsert.

    Measured here ~35x faster than a multi-row INSERT .. VALUES built by SQLAlchemy and
    ~8x faster than executemany: the batch crosses the wire once, in COPY's compact form.
    """
    if st.copy_types:
        try:
            async with cur.copy(st.copy_binary) as copy:
                copy.set_types(st.copy_types)
                if st.jsonb_at:
                    rows = [st.binary_row(row) for row in rows]
                for row in rows:
                    await copy.write_row(row)
        except (
            TypeError,
            ValueError,
            OverflowError,
            psycopg.errors.InvalidBinaryRepresentation,
        ) as exc:
            raise BinaryCopyFault(exc) from exc
    else:
        async with cur.copy(st.copy) as copy:
            for row in rows:
                await copy.write_row(row)
    await cur.execute(st.upsert)
    return await cur.fetchall()


class BinaryCopyFault(Exception):
    """Binary COPY could not send a batch's values; text COPY may (PostgresSink.apply)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _sqlstate(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(getattr(orig, "sqlstate", None) or "")
