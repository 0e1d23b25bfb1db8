"""The table spec compiler: column types, keys, nullability, defaults and evolution."""

from __future__ import annotations

import copy
import logging
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from connectors.sinks.postgres import add_column, evolution
from connectors.sinks.tablespec import (
    BOOKKEEPING,
    NO_DEFAULT,
    Column,
    compile_spec,
    json_value,
)
from schemas import contracts
from streams.errors import SchemaError

ENVELOPE = "io.pssync.canonical.Envelope"


def event_schema(fields: list[dict[str, Any]], name: str = "Thing") -> dict[str, Any]:
    """A canonical event schema whose data record has `fields`."""
    return {
        "type": "record",
        "name": f"{name}Event",
        "namespace": "io.pssync.canonical",
        "fields": [
            contracts.schema("opportunity")["fields"][0],  # the inlined envelope
            {
                "name": "data",
                "default": None,
                "type": ["null", {"type": "record", "name": name, "fields": fields}],
            },
        ],
    }


KEY = {"name": "thing_id", "type": "string"}
MONEY = {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}
EVERY_TYPE = [
    KEY,
    {"name": "flag", "type": "boolean"},
    {"name": "small", "type": "int"},
    {"name": "big", "type": "long"},
    {"name": "ratio", "type": "float"},
    {"name": "measure", "type": "double"},
    {"name": "label", "type": "string"},
    {"name": "blob", "type": "bytes"},
    {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
    {"name": "amount", "type": ["null", MONEY], "default": None},
    {
        "name": "fixed_amount",
        "type": {
            "type": "fixed",
            "name": "Cents",
            "size": 8,
            "logicalType": "decimal",
            "precision": 10,
            "scale": 4,
        },
    },
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "at_micros", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "local_at", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
    {"name": "clock", "type": {"type": "int", "logicalType": "time-millis"}},
    {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["a", "b"]}},
    {"name": "kind_again", "type": ["null", "Kind"], "default": None},  # by name
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "days", "type": {"type": "array", "items": {"type": "int", "logicalType": "date"}}},
    {"name": "maybe_tags", "type": {"type": "array", "items": ["null", "string"]}},
    {"name": "kinds", "type": {"type": "array", "items": "Kind"}},
    {
        "name": "lines",
        "type": {
            "type": "array",
            "items": {"type": "record", "name": "Line", "fields": [{"name": "qty", "type": "int"}]},
        },
    },
    {"name": "matrix", "type": {"type": "array", "items": {"type": "array", "items": "int"}}},
    {"name": "attrs", "type": {"type": "map", "values": "string"}},
    {
        "name": "address",
        "type": [
            "null",
            {"type": "record", "name": "Address", "fields": [{"name": "city", "type": "string"}]},
        ],
        "default": None,
    },
    {"name": "either", "type": ["null", "string", "long"], "default": None},
]
EXPECTED_TYPES = {
    "flag": "boolean",
    "small": "integer",
    "big": "bigint",
    "ratio": "real",
    "measure": "double precision",
    "label": "text",
    "blob": "bytea",
    "digest": "bytea",
    "amount": "numeric(18,2)",
    "fixed_amount": "numeric(10,4)",
    "day": "date",
    "at": "timestamp with time zone",
    "at_micros": "timestamp with time zone",
    "local_at": "timestamp without time zone",
    "clock": "time without time zone",
    "ref": "uuid",
    "kind": "text",
    "kind_again": "text",
    "tags": "text[]",
    "days": "date[]",
    "maybe_tags": "text[]",
    "kinds": "text[]",
    "lines": "jsonb",
    "matrix": "jsonb",
    "attrs": "jsonb",
    "address": "jsonb",
    "either": "jsonb",
}


def test_types_follow_the_logical_type_first() -> None:
    spec = compile_spec("thing", event_schema(EVERY_TYPE))
    assert {c.name: c.sql_type for c in spec.columns} == EXPECTED_TYPES
    assert spec.key == "thing_id" and spec.table == "thing"


def test_nullability_comes_from_the_union() -> None:
    spec = compile_spec("thing", event_schema(EVERY_TYPE))
    nullable = {c.name for c in spec.columns if c.nullable}
    assert nullable == {"amount", "kind_again", "address", "either"}
    ddl = spec.create_sql()
    # Required: a value on every row that holds data; a delete seen first holds none.
    assert '"label" text CHECK (data_version IS NULL OR "label" IS NOT NULL)' in ddl
    assert '"amount" numeric(18,2),' in ddl
    assert '"thing_id" text PRIMARY KEY' in ddl


def test_columns_are_in_contract_order_then_bookkeeping() -> None:
    spec = compile_spec("opportunity", contracts.schema("opportunity"))
    # Every column of the hand-written table this spec replaced keeps its name and order;
    # fields added to the contract since (billing_milestones, ...) come in between.
    hand_written = [
        "opportunity_id", "crm_id", "customer_id", "name", "stage", "source_stage",
        "is_closed", "is_won", "amount", "currency", "close_date", "probability",
        "billing_type", "delivery_region", "project_manager", "sow_reference",
        "service_lines", "last_modified_at",
        "is_deleted", "deleted_at", "entity_version", "data_version", "deleted_version",
        "source_position", "correlation_id", "last_event_id", "applied_at",
    ]  # fmt: skip
    assert [n for n in spec.names if n in hand_written] == hand_written
    assert "billing_milestones" in spec.data_columns
    assert [b.name for b in BOOKKEEPING] == spec.names[-len(BOOKKEEPING) :]


@pytest.mark.parametrize("name", contracts.entities())
def test_every_contract_compiles_with_its_key(name: str) -> None:
    reference = contracts.is_reference(name)
    spec = compile_spec(name, contracts.schema(name), reference)
    data = next(t for t in contracts.schema(name)["fields"][1]["type"] if t != "null")
    assert spec.table == name
    assert spec.key == data["fields"][0]["name"] and spec.key not in spec.data_columns
    assert spec.key == "code" if reference else spec.key.endswith("_id")
    assert len(spec.data_columns) == len(data["fields"]) - 1


def test_keys_of_the_first_entities() -> None:
    keys = {n: compile_spec(n, contracts.schema(n), contracts.is_reference(n)).key
            for n in ("opportunity", "customer", "project", "currency", "tax_code")}  # fmt: skip
    assert keys == {
        "opportunity": "opportunity_id",
        "customer": "customer_id",
        "project": "project_id",
        "currency": "code",
        "tax_code": "code",
    }


@pytest.mark.parametrize(
    ("first", "reference", "message"),
    [
        ({"name": "id", "type": "string"}, False, "a field named `..._id`"),
        ({"name": "thing_id", "type": ["null", "string"], "default": None}, False, "required"),
        ({"name": "thing_id", "type": "long"}, False, "required string"),
        ({"name": "thing_id", "type": "string"}, True, "`code`"),
    ],
)
def test_the_key_is_the_first_field_by_rule(
    first: dict[str, Any], reference: bool, message: str
) -> None:
    with pytest.raises(SchemaError, match="first field must be the key") as err:
        compile_spec("thing", event_schema([first, {"name": "x", "type": "int"}]), reference)
    assert message in str(err.value)


def test_an_entity_key_need_not_repeat_the_entity_name() -> None:
    # An entity named billing_item keyed by item_id.
    spec = compile_spec("billing_item", event_schema([{"name": "item_id", "type": "string"}]))
    assert spec.key == "item_id"


def test_a_field_named_like_a_bookkeeping_column_is_refused() -> None:
    with pytest.raises(SchemaError, match="bookkeeping column"):
        compile_spec("thing", event_schema([KEY, {"name": "is_deleted", "type": "boolean"}]))


def test_defaults_are_what_an_avro_reader_gets() -> None:
    fields = [
        KEY,
        {"name": "price", "type": MONEY, "default": "\u0001\u0000"},  # 256 cents
        {"name": "day", "type": {"type": "int", "logicalType": "date"}, "default": 1},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"},
         "default": 1000},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": ["x"]},
        {"name": "lines", "type": {"type": "map", "values": "int"}, "default": {"a": 1}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "plain", "type": "string"},
    ]  # fmt: skip
    spec = compile_spec("thing", event_schema(fields))
    assert {c.name: c.default for c in spec.columns} == {
        "price": Decimal("2.56"),
        "day": date(1970, 1, 2),
        "at": datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
        "tags": ["x"],
        "lines": {"a": 1},
        "note": None,
        "plain": NO_DEFAULT,
    }


def test_json_values_keep_decimals_dates_and_ids_exact() -> None:
    value = [{"amount": Decimal("10.10"), "due": date(2027, 1, 31), "raw": b"\x00\x01"}]
    assert json_value(value) == '[{"amount":"10.10","due":"2027-01-31","raw":"AAE="}]'


def test_specs_are_cached_per_contract_version() -> None:
    v1 = contracts.schema("customer")
    assert compile_spec("customer", v1) is compile_spec("customer", copy.deepcopy(v1))
    v2 = with_fields(v1, {"name": "segment", "type": ["null", "string"], "default": None})
    assert compile_spec("customer", v2) is not compile_spec("customer", v1)
    assert compile_spec("customer", v2).fingerprint != compile_spec("customer", v1).fingerprint


def with_fields(schema: dict[str, Any], *fields: dict[str, Any]) -> dict[str, Any]:
    """`schema` with `fields` appended to its data record (a newer contract version)."""
    out = copy.deepcopy(schema)
    data = next(f for f in out["fields"] if f["name"] == "data")
    record = next(t for t in data["type"] if t != "null")
    record["fields"] += list(fields)
    return out


def existing(spec_names: list[str], **types: str) -> dict[str, str]:
    """A table as pg_attribute describes it: every listed column text unless typed."""
    return {n: types.get(n, "text") for n in spec_names}


def sql_text(statements: list[Any]) -> list[str]:
    return [s.as_string(None) for s in statements]


def test_a_new_optional_field_becomes_a_new_nullable_column() -> None:
    v1 = compile_spec("customer", contracts.schema("customer"))
    v2 = compile_spec(
        "customer",
        with_fields(
            contracts.schema("customer"),
            {"name": "segment", "type": ["null", "string"], "default": None},
            {"name": "priority", "type": "int", "default": 3},
            {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        ),
    )
    merged = v1.merged(v2)
    assert merged.names[: len(v1.columns) + 1] == [v1.key, *v1.data_columns]
    assert merged.data_columns[-3:] == ["segment", "priority", "tags"]
    assert sql_text(evolution(merged, existing(v1.names))) == [
        'ALTER TABLE "customer" ADD COLUMN IF NOT EXISTS "segment" text',
        # Rows already there read the default, as an Avro reader of the new version would.
        'ALTER TABLE "customer" ADD COLUMN IF NOT EXISTS "priority" integer DEFAULT 3::integer '
        'CHECK (data_version IS NULL OR "priority" IS NOT NULL)',
        'ALTER TABLE "customer" ADD COLUMN IF NOT EXISTS "tags" text[] DEFAULT \'{}\'::text[] '
        'CHECK (data_version IS NULL OR "tags" IS NOT NULL)',
    ]
    assert evolution(merged, existing(merged.names)) == []
    assert v1.merged(v1) is v1 and merged.merged(v1) is merged  # never drops a column


def test_a_required_field_without_default_on_an_existing_table_says_what_to_do() -> None:
    v1 = compile_spec("customer", contracts.schema("customer"))
    v2 = compile_spec(
        "customer", with_fields(contracts.schema("customer"), {"name": "region", "type": "string"})
    )
    with pytest.raises(SchemaError) as err:
        evolution(v1.merged(v2), existing(v1.names))
    message = str(err.value)
    assert "required field 'region' without a default" in message
    assert "Give the field a default" in message and "ALTER TABLE customer ADD COLUMN" in message


def test_existing_columns_are_never_retyped(caplog: pytest.LogCaptureFixture) -> None:
    spec = compile_spec("opportunity", contracts.schema("opportunity"))
    table = existing(spec.names, stage="character varying(32)")
    with caplog.at_level(logging.WARNING):
        assert evolution(spec, table) == []
    assert "opportunity.stage is character varying(32)" in caplog.text


def test_a_table_from_before_the_two_versions_gets_them_backfilled() -> None:
    spec = compile_spec("opportunity", contracts.schema("opportunity"))
    old = {n: "text" for n in spec.names if n not in ("data_version", "deleted_version")}
    statements = sql_text(evolution(spec, old))
    assert statements[:2] == [
        'ALTER TABLE "opportunity" ADD COLUMN IF NOT EXISTS "data_version" bigint',
        'ALTER TABLE "opportunity" ADD COLUMN IF NOT EXISTS "deleted_version" bigint',
    ]
    assert statements[2].startswith('UPDATE "opportunity" SET data_version = CASE')


def test_a_table_pssync_did_not_create_is_refused() -> None:
    spec = compile_spec("customer", contracts.schema("customer"))
    with pytest.raises(SchemaError, match="not created by pssync"):
        evolution(spec, {"customer_id": "text", "name": "text"})


def test_column_defaults_render_as_sql_literals() -> None:
    column = Column("lines", "jsonb", False, [{"a": Decimal("1.5")}])
    spec = compile_spec("thing", event_schema([KEY]))
    assert add_column(spec, column).as_string(None) == (
        'ALTER TABLE "thing" ADD COLUMN IF NOT EXISTS "lines" jsonb '
        'DEFAULT \'[{"a":"1.5"}]\'::jsonb CHECK (data_version IS NULL OR "lines" IS NOT NULL)'
    )


def test_other_versions_keep_the_key_of_the_workers_contract() -> None:
    own = compile_spec("thing", event_schema([KEY, {"name": "x", "type": "int"}]))
    # A compatible version with a new field in front: the table keeps its key.
    reordered = event_schema(
        [{"name": "a_id", "type": ["null", "string"], "default": None}, KEY,
         {"name": "x", "type": "int"}]
    )  # fmt: skip
    writer = compile_spec("thing", reordered, key=own.key)
    assert writer.key == "thing_id" and writer.data_columns == ["a_id", "x"]
    assert own.merged(writer).data_columns == ["x", "a_id"]
    # A version without the key field cannot be applied: its records are poison.
    with pytest.raises(SchemaError, match="must keep its key field"):
        compile_spec("thing", event_schema([{"name": "x_id", "type": "string"}]), key="thing_id")
