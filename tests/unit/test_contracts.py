"""Every contract parses, follows the modelling rules, and round-trips sample records."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import validate

from schemas import contracts, conventions
from schemas.compat import TypeIndex
from schemas.samples import Sampler

NAMES = contracts.entities()
MONEY = {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}


def _fields(schema: Any) -> list[tuple[str, dict[str, Any], Any]]:
    """(path, field, resolved type) for every field in the schema, nested ones included."""
    index = TypeIndex(schema)
    out: list[tuple[str, dict[str, Any], Any]] = []

    def walk(node: Any, ns: str, path: str) -> None:
        t = index.resolve(node, ns)
        if t.kind == "union":
            for b in t.node:
                walk(b, t.ns, path)
        elif t.kind == "array":
            walk(t.node["items"], t.ns, path + "[]")
        elif t.kind == "record":
            for f in t.node["fields"]:
                fpath = f"{path}.{f['name']}" if path else f["name"]
                out.append((fpath, f, index.resolve(f["type"], t.ns)))
                walk(f["type"], t.ns, fpath)

    walk(schema, "", "")
    return out


def test_the_model_is_complete() -> None:
    assert set(contracts.ENTITIES) | contracts.REFERENCE == set(NAMES)
    assert {n for n in NAMES if contracts.is_reference(n)} == contracts.REFERENCE


@pytest.mark.parametrize("name", NAMES)
def test_contract_shape(name: str) -> None:
    schema = contracts.schema(name)
    contracts.parsed(name)
    assert schema["name"].endswith("Event") and schema["namespace"] == contracts.NAMESPACE
    env, data = schema["fields"]
    assert env["name"] == "envelope" and env["type"]["name"] == "Envelope"  # inlined
    assert data["name"] == "data" and data["type"][0] == "null" and data["default"] is None
    for path, field, t in _fields(schema):
        assert field.get("doc"), f"{name}: field {path} has no doc"
        if t.kind == "enum":
            assert "default" in t.node, f"{name}: enum at {path} has no default to grow with"
        if (
            isinstance(t.node, dict)
            and t.node.get("logicalType") == "decimal"
            and t.node.get("scale") == 2
        ):
            assert t.node == MONEY, f"{name}: money at {path} is not decimal(18,2)"


@pytest.mark.parametrize("name", sorted(contracts.ENTITIES))
def test_money_comes_with_a_currency(name: str) -> None:
    paths = [
        p
        for p, _, t in _fields(contracts.schema(name))
        if isinstance(t.node, dict) and t.node == MONEY
    ]
    if paths:
        names = {p.rsplit(".", 1)[-1] for p, _, _ in _fields(contracts.schema(name))}
        assert "currency" in names


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", range(5))
def test_samples_round_trip(name: str, seed: int) -> None:
    parsed = contracts.parsed(name)
    for optional in (0.0, 1.0):
        record = Sampler(contracts.schema(name), seed=seed, optional=optional).record()
        assert validate(record, parsed)
        buf = io.BytesIO()
        schemaless_writer(buf, parsed, record)
        assert schemaless_reader(io.BytesIO(buf.getvalue()), parsed) == record


@pytest.mark.parametrize("name", NAMES)
def test_delete_event_has_null_data(name: str) -> None:
    record = Sampler(contracts.schema(name)).record()
    record["data"] = None
    assert validate(record, contracts.parsed(name))


def test_opportunity_keeps_its_fields_and_gains_milestones() -> None:
    data = contracts.schema("opportunity")["fields"][1]["type"][1]
    names = [f["name"] for f in data["fields"]]
    for required in (
        "stage",
        "amount",
        "close_date",
        "billing_type",
        "service_lines",
        "sow_reference",
        "delivery_region",
        "project_manager",
    ):
        assert required in names
    milestones = next(f for f in data["fields"] if f["name"] == "billing_milestones")
    assert milestones["default"] == []


def test_topics_subjects_and_levels_follow_the_conventions() -> None:
    assert conventions.contract_subject("time_entry", False) == "canonical.time_entry-value"
    assert conventions.contract_subject("currency", True, "stg") == "stg.reference.currency-value"
    assert conventions.compatibility_level(False) == "BACKWARD_TRANSITIVE"
    assert conventions.compatibility_level(True) == "FULL"


def test_catalog_reads_a_scratch_directory(tmp_path: Any) -> None:
    from pathlib import Path

    src = Path(contracts.AVRO_DIR)
    for stem in ("envelope", "time_entry", "ref_region"):
        (tmp_path / f"{stem}.avsc").write_text((src / f"{stem}.avsc").read_text())
    cat = contracts.Catalog(tmp_path)
    assert cat.names() == ["region", "time_entry"]
    assert cat.is_reference("region") and not cat.is_reference("time_entry")
    assert cat.schema_str("time_entry") == contracts.schema_str("time_entry")


def test_bad_schema_file_is_named(tmp_path: Any) -> None:
    from streams.errors import SchemaError

    (tmp_path / "envelope.avsc").write_text((contracts.AVRO_DIR / "envelope.avsc").read_text())
    (tmp_path / "broken.avsc").write_text('{"type": "record", "name": "X", "fields": [')
    with pytest.raises(SchemaError, match=r"broken\.avsc"):
        contracts.Catalog(tmp_path).schema("broken")
