"""Tables derived from the contracts, on the real target: every entity, new contract
versions, and the table of the previous release upgraded in place."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from connectors.sinks.postgres import PostgresSink, PostgresTarget
from connectors.sinks.tablespec import BOOKKEEPING, compile_spec
from schemas import contracts
from schemas.samples import Sampler
from streams.errors import SchemaError
from tests.sink_model import NOW, event, stored
from tests.unit.test_tablespec import with_fields

pytestmark = pytest.mark.integration


class Db:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def sql(self, statement: str, params: Any = None) -> list[Any]:
        with self.engine.begin() as conn:
            result = conn.execute(text(statement), params or {})
            return list(result.mappings()) if result.returns_rows else []

    def columns(self, table: str) -> dict[str, str]:
        rows = self.sql(
            "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute "
            "WHERE attrelid = to_regclass(:t) AND attnum > 0 AND NOT attisdropped",
            {"t": table},
        )
        return {r["attname"]: r["type"] for r in rows}

    def close(self) -> None:
        self.engine.dispose()
        self.loop.close()


@pytest.fixture
def db(target_url: str) -> Iterator[Db]:
    d = Db(target_url)
    yield d
    d.close()


def samples(name: str, n: int) -> list[dict[str, Any]]:
    """n live events of contract `name` with distinct keys: every field type, nulls too."""
    spec = compile_spec(name, contracts.schema(name), contracts.is_reference(name))
    sampler = Sampler(contracts.schema(name), seed=5)
    out = []
    while len(out) < n:
        record = sampler.record()
        if record["data"] is None:
            continue
        key = f"{name}:{len(out)}"
        record["data"][spec.key] = key
        out.append({**record, "key": key})
    return out


def test_every_contract_lands_in_a_table_of_its_own(db: Db) -> None:
    target = PostgresTarget(db.url)
    events = {name: samples(name, 12) for name in contracts.entities()}
    for name, batch in events.items():
        sink = target.table(name)
        db.run(sink.ensure_schema())
        writes = db.run(sink.apply(batch, now=NOW))
        assert len(writes) == 12, name
    db.run(target.close())
    for name, batch in events.items():
        spec = compile_spec(name, contracts.schema(name), contracts.is_reference(name))
        columns = db.columns(name)
        assert set(columns) == set(spec.names)
        assert {c: columns[c] for c in spec.names[: -len(BOOKKEEPING)]} == {
            spec.key: "text",
            **{c.name: c.sql_type for c in spec.columns},
        }
        rows = {r[spec.key]: r for r in db.sql(f'SELECT * FROM "{name}"')}
        for ev in batch:
            row = rows[ev["key"]]
            for column in spec.columns:
                want = stored(column.sql_type, ev["data"][column.name])
                assert row[column.name] == want, f"{name}.{column.name}"


def test_a_new_contract_version_adds_columns_and_older_versions_still_apply(db: Db) -> None:
    v1 = contracts.schema("customer")
    v2 = with_fields(
        v1,
        {"name": "segment", "type": ["null", "string"], "default": None},
        {"name": "priority", "type": "int", "default": 3},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "credit_limit", "default": "\u0000",
         "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}},
    )  # fmt: skip
    sink = PostgresSink(db.url, "customer")
    db.run(sink.ensure_schema())
    db.run(sink.apply([event(k, 1, True) for k in ("k1", "k2")], now=NOW))

    db.run(sink.evolve(compile_spec("customer", v2)))
    columns = db.columns("customer")
    assert (columns["segment"], columns["priority"], columns["tags"]) == (
        "text",
        "integer",
        "text[]",
    )
    assert columns["credit_limit"] == "numeric(12,2)"
    # Rows written before read the new fields' defaults.
    assert db.sql(
        "SELECT segment, priority, tags, credit_limit FROM customer WHERE customer_id = 'k1'"
    ) == [{"segment": None, "priority": 3, "tags": [], "credit_limit": Decimal("0.00")}]

    newer = event("k3", 2, True)
    newer["data"].update(segment="smb", priority=1, tags=["a", "b"], credit_limit=Decimal("9.50"))
    older = event("k1", 3, True)  # a version-1 record: no new fields
    db.run(sink.apply([newer, older], now=NOW))
    rows = {r["customer_id"]: r for r in db.sql("SELECT * FROM customer")}
    assert (rows["k3"]["segment"], rows["k3"]["priority"], rows["k3"]["tags"]) == (
        "smb",
        1,
        ["a", "b"],
    )
    assert rows["k3"]["credit_limit"] == Decimal("9.50")
    assert (rows["k1"]["priority"], rows["k1"]["entity_version"]) == (3, 3)

    # Another worker starting with the older contract neither drops nor breaks anything.
    other = PostgresSink(db.url, "customer")
    db.run(other.ensure_schema())
    db.run(other.apply([event("k2", 5, True)], now=NOW))
    assert "segment" in db.columns("customer")
    db.run(other.close())
    db.run(sink.close())


def test_a_required_field_without_default_stops_with_what_to_do(db: Db) -> None:
    sink = PostgresSink(db.url, "customer")
    db.run(sink.ensure_schema())
    before = db.columns("customer")
    v2 = with_fields(contracts.schema("customer"), {"name": "region", "type": "string"})
    with pytest.raises(SchemaError, match="required field 'region' without a default"):
        db.run(sink.evolve(compile_spec("customer", v2)))
    assert db.columns("customer") == before
    db.run(sink.close())


# The opportunity table as the release before contract-derived tables created it, before it
# kept data_version and deleted_version.
PREVIOUS_RELEASE = """
CREATE TABLE opportunity (
    opportunity_id TEXT NOT NULL PRIMARY KEY, crm_id TEXT, customer_id TEXT, name TEXT,
    stage VARCHAR(32), source_stage TEXT, is_closed BOOLEAN, is_won BOOLEAN,
    amount NUMERIC(18, 2), currency VARCHAR(3), close_date DATE, probability INTEGER,
    billing_type VARCHAR(32), delivery_region TEXT, project_manager TEXT, sow_reference TEXT,
    service_lines TEXT[], last_modified_at TIMESTAMP WITH TIME ZONE,
    is_deleted BOOLEAN DEFAULT false NOT NULL, deleted_at TIMESTAMP WITH TIME ZONE,
    entity_version BIGINT NOT NULL, source_position TEXT, correlation_id TEXT,
    last_event_id TEXT, applied_at TIMESTAMP WITH TIME ZONE NOT NULL
);
INSERT INTO opportunity (opportunity_id, name, stage, currency, entity_version, is_deleted,
                         applied_at)
VALUES ('a', 'Old', 'proposal', 'EUR', 7, false, now()),
       ('b', 'Gone', 'proposal', 'EUR', 9, true, now());
"""


def test_the_previous_release_table_is_upgraded_in_place(db: Db) -> None:
    db.sql(PREVIOUS_RELEASE)
    sink = PostgresSink(db.url, "opportunity")
    db.run(sink.ensure_schema())
    columns = db.columns("opportunity")
    assert columns["stage"] == "character varying(32)"  # never retyped
    assert columns["billing_milestones"] == "jsonb"
    rows = {r["opportunity_id"]: r for r in db.sql("SELECT * FROM opportunity")}
    assert (rows["a"]["data_version"], rows["a"]["deleted_version"]) == (7, None)
    assert (rows["b"]["data_version"], rows["b"]["deleted_version"]) == (None, 9)
    assert rows["a"]["billing_milestones"] == []

    updates = [event("a", 8, True), event("b", 10, True)]
    for ev in updates:
        ev["data"]["currency"] = "EUR"
    db.run(sink.apply(updates, now=NOW))
    rows = {r["opportunity_id"]: r for r in db.sql("SELECT * FROM opportunity")}
    assert (rows["a"]["name"], rows["b"]["name"], rows["b"]["is_deleted"]) == ("a@8", "b@10", False)
    # What the old column cannot hold is the record's fault: it goes to the DLQ, not the table.
    too_long = event("c", 1, True)
    too_long["data"]["currency"] = "EUROS"
    with pytest.raises(Exception, match="character varying") as err:
        db.run(sink.apply([too_long], now=NOW))
    assert sink.is_data_fault(err.value)
    db.run(sink.close())


def test_a_table_pssync_did_not_create_stops_at_start(db: Db) -> None:
    db.sql("CREATE TABLE customer (customer_id text PRIMARY KEY, name text)")
    sink = PostgresSink(db.url, "customer")
    with pytest.raises(SchemaError, match="not created by pssync"):
        db.run(sink.ensure_schema())
    db.run(sink.close())


def test_workers_starting_together_create_each_table_once(db: Db) -> None:
    async def start_all() -> None:
        sinks = [PostgresSink(db.url, "project") for _ in range(4)]
        await asyncio.gather(*(s.ensure_schema() for s in sinks))
        for s in sinks:
            await s.close()

    db.run(start_all())  # without the lock: "duplicate key value violates ... pg_type"
    assert "project_id" in db.columns("project")


# -- binary COPY ---------------------------------------------------------------------------


def table_rows(db: Db, name: str, key: str) -> list[dict[str, Any]]:
    return db.sql(f'SELECT * FROM "{name}" ORDER BY "{key}"')


def test_binary_copy_writes_every_contract_exactly_as_text_copy(db: Db) -> None:
    """Every field type of every contract, nulls and deletes too: the rows binary COPY writes
    are the rows text COPY writes."""
    for name in contracts.entities():
        spec = compile_spec(name, contracts.schema(name), contracts.is_reference(name))
        batch = samples(name, 25)
        batch += [{"key": batch[0]["key"], "envelope": {"entity_version": -1}, "data": None}]
        text_sink = PostgresSink(db.url, name)
        db.run(text_sink.ensure_schema())
        text_sink.statements.copy_types = []  # text COPY
        text_writes = db.run(text_sink.apply(batch, now=NOW))
        want = table_rows(db, name, spec.key)
        db.sql(f'TRUNCATE "{name}"')
        db.run(text_sink.close())

        binary_sink = PostgresSink(db.url, name)
        writes = db.run(binary_sink.apply(batch, now=NOW))
        assert binary_sink.statements.copy_types, f"{name} fell back to text COPY"
        assert writes == text_writes, name
        assert table_rows(db, name, spec.key) == want, name
        db.run(binary_sink.close())


def test_a_column_the_target_retyped_is_written_through_text_copy(db: Db) -> None:
    sink = PostgresSink(db.url, "opportunity")
    db.run(sink.ensure_schema())
    db.sql('ALTER TABLE opportunity ALTER COLUMN "amount" TYPE double precision')
    batch = samples("opportunity", 5)
    db.run(sink.apply(batch, now=NOW))
    assert sink.statements.copy_types == []
    key = sink.spec.key
    rows = {r[key]: r for r in table_rows(db, "opportunity", key)}
    assert set(rows) == {ev["key"] for ev in batch}
    for ev in batch:
        amount = ev["data"]["amount"]
        assert rows[ev["key"]]["amount"] == (None if amount is None else float(amount))


def test_values_binary_copy_cannot_send_fall_back_to_text_copy_and_land(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    # A naive time in a timestamptz column: text COPY lets PostgreSQL read it in the
    # session's zone (UTC here), binary COPY refuses it.
    batch = samples("opportunity", 3)
    naive = batch[1]["data"]["last_modified_at"] = NOW.replace(tzinfo=None)
    sink = PostgresSink(db.url, "opportunity")
    db.run(sink.ensure_schema())
    writes = db.run(sink.apply(batch, now=NOW))
    assert len(writes) == 3
    assert sink.statements.copy_types == []
    assert "using text COPY for this table" in caplog.text
    row = db.sql(
        f'SELECT last_modified_at FROM opportunity WHERE "{sink.spec.key}" = :k',
        {"k": batch[1]["key"]},
    )
    assert row[0]["last_modified_at"] == naive.replace(tzinfo=NOW.tzinfo)
