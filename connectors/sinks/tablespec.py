"""Target tables compiled from the canonical Avro contracts: one spec per contract version.

A spec says which columns an entity's table has and how an event's data becomes a row; the
PostgreSQL sink generates its DDL and upserts from it, so every canonical entity lands in a
table of its own without a table written by hand per entity. The rules:

- table: the contract's name (``opportunity``, ``customer``, ``currency``);
- key column: the data record's first field, a required string: ``code`` for reference sets,
  a name ending in ``_id`` for entities (``opportunity_id``, ``customer_id``). It holds the
  record's key, which by convention is that field's value. The contract the worker ships
  with decides it; the other versions it meets on a topic must keep that field;
- one column per other field of the data record, named like the field and typed by logical
  type first (see ``_column_type``); records, maps, unions of several types and arrays of
  anything but scalars are ``jsonb`` (decimals, dates and ids inside as strings);
- nullability from the union: a field whose type has no ``null`` branch is required. Its
  column is NULL only on a row that never held data (a delete seen before any live image),
  which a CHECK enforces; a NOT NULL column could not hold such a row;
- the sink's bookkeeping columns (versions, delete mark, ids) after the data columns.

Specs are cached by (entity, fingerprint of the schema's JSON), so each contract version a
worker meets is compiled once. Evolution is add-only (``PostgresSink`` adds the columns a
newer spec brings and never drops, retypes or narrows one).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from schemas.compat import TypeIndex
from streams.errors import SchemaError


@dataclass(frozen=True)
class Bookkeeping:
    """A column the sink keeps beside the data: its type as PostgreSQL's format_type() spells
    it, whether every row has a value, and what rows written before it existed get."""

    name: str
    type: str
    required: bool = False
    default: str | None = None

    @property
    def ddl(self) -> str:
        """The column's definition after its name (CREATE TABLE, ADD COLUMN)."""
        out = self.type + (" NOT NULL" if self.required else "")
        return out if self.default is None else f"{out} DEFAULT {self.default}"


# Bookkeeping that makes writes idempotent and traceable, after the data columns, in this
# order (the order of the hand-written table these specs replaced).
BOOKKEEPING: tuple[Bookkeeping, ...] = (
    Bookkeeping("is_deleted", "boolean", required=True, default="false"),
    Bookkeeping("deleted_at", "timestamp with time zone"),
    Bookkeeping("entity_version", "bigint", required=True),
    # Version of the live image the data came from, and of the newest delete seen: the row is
    # deleted while deleted_version >= data_version (see connectors/sinks/plan.py).
    Bookkeeping("data_version", "bigint"),
    Bookkeeping("deleted_version", "bigint"),
    Bookkeeping("source_position", "text"),
    Bookkeeping("correlation_id", "text"),
    Bookkeeping("last_event_id", "text"),
    Bookkeeping("applied_at", "timestamp with time zone", required=True),
)
BOOKKEEPING_NAMES = frozenset(b.name for b in BOOKKEEPING)
# PostgreSQL truncates longer identifiers, which would make two fields one column.
MAX_IDENTIFIER = 63
JSONB = "jsonb"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCALARS = {
    "boolean": "boolean",
    "int": "integer",
    "long": "bigint",
    "float": "real",
    "double": "double precision",
    "string": "text",
    "bytes": "bytea",
    "fixed": "bytea",
    "enum": "text",
}
_LOGICAL = {
    "date": "date",
    "time-millis": "time without time zone",
    "time-micros": "time without time zone",
    "timestamp-millis": "timestamp with time zone",
    "timestamp-micros": "timestamp with time zone",
    "local-timestamp-millis": "timestamp without time zone",
    "local-timestamp-micros": "timestamp without time zone",
    "uuid": "uuid",
}


class NoDefault:
    """Marks a field without an Avro default (distinct from a default of null)."""

    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = NoDefault()


@dataclass(frozen=True)
class Column:
    """One data column: the field it comes from, its type, and what a row holds without it."""

    name: str
    sql_type: str  # as PostgreSQL's format_type() spells it, e.g. numeric(18,2), text[]
    nullable: bool  # the field's type is a union with null
    # The value a reader of this contract gets for a record whose writer lacked the field
    # (Avro schema resolution), as the row holds it; NO_DEFAULT when the field has none.
    default: Any = NO_DEFAULT

    @property
    def is_json(self) -> bool:
        return self.sql_type == JSONB


@dataclass(frozen=True)
class TableSpec:
    """The table one contract version needs; `fingerprint` names that version."""

    entity: str
    table: str
    key: str
    columns: tuple[Column, ...]  # data columns in contract order, the key excluded
    fingerprint: str
    _by_name: dict[str, Column] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update((c.name, c) for c in self.columns)

    @property
    def data_columns(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def names(self) -> list[str]:
        """Every column the sink writes, in table order: key, data, bookkeeping."""
        return [self.key, *self.data_columns, *(b.name for b in BOOKKEEPING)]

    def column(self, name: str) -> Column:
        return self._by_name[name]

    def merged(self, other: TableSpec) -> TableSpec:
        """This spec plus the columns only `other` has (add-only: nothing dropped)."""
        if (other.entity, other.table, other.key) != (self.entity, self.table, self.key):
            raise SchemaError(
                f"contract versions of {self.entity} disagree on table or key: "
                f"{self.table}({self.key}) vs {other.table}({other.key}); the key field of a "
                "contract cannot change, keep it and add a new field instead"
            )
        new = tuple(c for c in other.columns if c.name not in self._by_name)
        if not new:
            return self
        digest = hashlib.sha256(f"{self.fingerprint}+{other.fingerprint}".encode()).hexdigest()
        return TableSpec(self.entity, self.table, self.key, self.columns + new, digest[:16])

    def create_sql(self) -> str:
        cols = [f"{quote(self.key)} text PRIMARY KEY"]
        cols += [column_ddl(c) for c in self.columns]
        cols += [f"{quote(b.name)} {b.ddl}" for b in BOOKKEEPING]
        return f"CREATE TABLE IF NOT EXISTS {quote(self.table)} ({', '.join(cols)})"


def quote(identifier: str) -> str:
    """A column or table name as SQL: quoted, so reserved words (order, user) work too."""
    return '"' + identifier.replace('"', '""') + '"'


def required_check(column: Column) -> str:
    """A required field holds a value on every row that holds data (see module doc)."""
    return f"CHECK (data_version IS NULL OR {quote(column.name)} IS NOT NULL)"


def column_ddl(column: Column) -> str:
    ddl = f"{quote(column.name)} {column.sql_type}"
    return ddl if column.nullable else f"{ddl} {required_check(column)}"


def key_field(entity: str, reference: bool, fields: list[dict[str, Any]]) -> str:
    """The data record's first field, checked against the naming rule (see module doc)."""
    first = fields[0] if fields else {}
    name, kind = first.get("name", ""), first.get("type")
    wanted = "`code`" if reference else "a field named `..._id`"
    if kind != "string" or (name != "code" if reference else not name.endswith("_id")):
        raise SchemaError(
            f"contract {entity}: the data record's first field must be the key, a required "
            f"string ({wanted}); it is {name or 'missing'!r} of type {json.dumps(kind)}. Put the "
            "canonical id field first in schemas/avro"
        )
    return str(name)


def fingerprint(schema: dict[str, Any]) -> str:
    """Names one contract version: docs and defaults included, since columns depend on both."""
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()[:16]


_SPECS: dict[tuple[str, bool, str, str | None], TableSpec] = {}


def compile_spec(
    entity: str, schema: dict[str, Any], reference: bool = False, key: str | None = None
) -> TableSpec:
    """The table spec of one version of `entity`'s contract (the whole event schema).

    `key` None: the key follows the rule (the data record's first field). A table's key is
    decided once, by the contract the worker ships with; the other versions it meets on a
    topic are compiled with that key, so a version that reorders fields keeps the table.
    """
    fp = fingerprint(schema)
    cached = _SPECS.get((entity, reference, fp, key))
    if cached is not None:
        return cached
    index = TypeIndex(schema)
    data = next((f for f in schema.get("fields", []) if f.get("name") == "data"), None)
    if data is None:
        raise SchemaError(
            f"schema of {entity} has no `data` field; canonical events are "
            "{envelope, data} records (schemas/README.md)"
        )
    record = index.resolve(data["type"], schema.get("namespace", ""))
    if record.kind == "union":
        branches = [index.resolve(b, record.ns) for b in record.node if b != "null"]
        record = branches[0] if len(branches) == 1 else record
    if record.kind != "record":
        raise SchemaError(f"schema of {entity}: `data` must be a record or null")
    fields: list[dict[str, Any]] = record.node["fields"]
    if key is None:
        key_name = key_field(entity, reference, fields)
    elif any(f["name"] == key and f["type"] == "string" for f in fields):
        key_name = key
    else:
        raise SchemaError(
            f"this version ({fp}) of the {entity} contract has no required string field "
            f"{key!r}, the key of table {entity}; a contract version must keep its key field"
        )
    columns = []
    for f in fields:
        name = f["name"]
        if name == key_name:
            continue
        if name in BOOKKEEPING_NAMES or len(name) > MAX_IDENTIFIER:
            raise SchemaError(
                f"contract {entity}: field {name!r} cannot be a column of the target: "
                + (
                    "the sink keeps a bookkeeping column of that name"
                    if name in BOOKKEEPING_NAMES
                    else f"longer than {MAX_IDENTIFIER} characters"
                )
                + "; rename the field"
            )
        sql_type, nullable = _column_type(index, f["type"], record.ns)
        default = (
            _default_value(index, f["type"], record.ns, f["default"], sql_type)
            if "default" in f
            else NO_DEFAULT
        )
        columns.append(Column(name, sql_type, nullable, default))
    spec = TableSpec(entity, entity, key_name, tuple(columns), fp)
    _SPECS[(entity, reference, fp, key)] = spec
    return spec


def _column_type(index: TypeIndex, node: Any, ns: str) -> tuple[str, bool]:
    """(PostgreSQL type, nullable) of a field's Avro type."""
    t = index.resolve(node, ns)
    if t.kind == "union":
        branches = [b for b in t.node if b != "null"]
        nullable = len(branches) < len(t.node)
        if len(branches) == 1:
            return _column_type(index, branches[0], t.ns)[0], nullable
        return JSONB, nullable  # several types (or none): JSON holds any of them
    return _scalar_type(index, t) or _array_type(index, t) or JSONB, False


def _scalar_type(index: TypeIndex, t: Any) -> str | None:
    n = t.node
    logical = n.get("logicalType") if isinstance(n, dict) else None
    if logical == "decimal" and t.kind in ("bytes", "fixed"):
        return f"numeric({int(n['precision'])},{int(n.get('scale', 0))})"
    if logical in _LOGICAL:
        return _LOGICAL[logical]
    return _SCALARS.get(t.kind)


def _array_type(index: TypeIndex, t: Any) -> str | None:
    """Arrays of scalars are PostgreSQL arrays (elements may be null); others are JSON."""
    if t.kind != "array":
        return None
    items = index.resolve(t.node["items"], t.ns)
    if items.kind == "union":
        branches = [b for b in items.node if b != "null"]
        if len(branches) != 1:
            return None
        items = index.resolve(branches[0], items.ns)
    scalar = _scalar_type(index, items)
    return f"{scalar}[]" if scalar else None


def _default_value(index: TypeIndex, node: Any, ns: str, default: Any, sql_type: str) -> Any:
    """An Avro JSON default as the row holds it (a union's default is its first branch's)."""
    if default is None or sql_type == JSONB:
        return default  # JSON columns take the JSON default as it is
    t = index.resolve(node, ns)
    if t.kind == "union":
        t = index.resolve(t.node[0], t.ns)
    if t.kind == "array":
        items = index.resolve(t.node["items"], t.ns)
        return [_scalar_default(items, d) for d in default]
    return _scalar_default(t, default)


def _scalar_default(t: Any, default: Any) -> Any:
    n = t.node
    logical = n.get("logicalType") if isinstance(n, dict) else None
    if default is None:
        return None
    if t.kind in ("bytes", "fixed"):
        raw = str(default).encode("latin-1")  # Avro: bytes defaults are code points 0-255
        if logical == "decimal":
            unscaled = int.from_bytes(raw, "big", signed=True)
            return Decimal(unscaled).scaleb(-int(n.get("scale", 0)))
        return raw
    if logical == "date":
        return date(1970, 1, 1) + timedelta(days=int(default))
    if logical in ("timestamp-millis", "local-timestamp-millis"):
        value = _EPOCH + timedelta(milliseconds=int(default))
        return value if logical == "timestamp-millis" else value.replace(tzinfo=None)
    if logical in ("timestamp-micros", "local-timestamp-micros"):
        value = _EPOCH + timedelta(microseconds=int(default))
        return value if logical == "timestamp-micros" else value.replace(tzinfo=None)
    if logical in ("time-millis", "time-micros"):
        micros = int(default) * (1000 if logical == "time-millis" else 1)
        return (datetime.min + timedelta(microseconds=micros)).time()
    return default


def json_value(value: Any) -> str:
    """A record, map or array as jsonb text: decimals, dates, times and ids as strings."""
    return _JSON.encode(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} has no JSON form")


# One encoder kept: json.dumps with options builds a new one per call (a fifth of its cost
# on a sink row's JSON column).
_JSON = json.JSONEncoder(default=_json_default, separators=(",", ":"))
