"""ERP (Tryton) companies, currencies and taxes -> canonical legal entities and reference data."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema
from fastavro.validation import validate

from schemas import contracts
from streams.changes import Change
from streams.errors import BadEventError
from streams.mappings.erp import ReferenceResolver, map_currency

DEFAULT = Path(__file__).resolve().parents[2] / "schemas" / "reference" / "default.json"
# 2026-11-29T10:00:00Z as Debezium sends a `timestamp without time zone` (microseconds).
WRITE_DATE = 1_795_946_400_000_000


def erp(table: str, op: str, row: dict[str, Any], key: str = "1") -> Change:
    before, after = (row, None) if op == "delete" else (None, row)
    return Change(op, before, after, "erp", f"public.{table}", key, "0/90", 144, 1_700_000_000_000)


def _fits(name: str, record: dict[str, Any]) -> None:
    assert validate(record, parse_schema(contracts.schema(name)))


@pytest.fixture
def resolver() -> ReferenceResolver:
    return ReferenceResolver(DEFAULT)


def test_currency_is_keyed_by_its_iso_code() -> None:
    row = {
        "id": 1,
        "code": "eur",
        "name": "Euro",
        "symbol": "€",
        "digits": 2,
        "active": True,
        "rounding": "0.01",
        "write_date": WRITE_DATE,
    }
    key, record = map_currency(erp("currency_currency", "snapshot", row), "erp.public.c/0/1")
    assert key == "EUR"
    assert record["data"] == {
        "code": "EUR",
        "name": "Euro",
        "minor_units": 2,
        "symbol": "€",
        "is_active": True,
    }
    _fits("currency", record)
    _, inactive = map_currency(erp("currency_currency", "update", {**row, "active": False}), "c")
    assert inactive["data"]["is_active"] is False


def test_currency_delete_needs_its_code() -> None:
    key, record = map_currency(erp("currency_currency", "delete", {"id": 1, "code": "EUR"}), "c")
    assert key == "EUR" and record["data"] is None
    # REPLICA IDENTITY DEFAULT: the delete carries only the id.
    with pytest.raises(BadEventError, match="deactivate it in the ERP instead of deleting"):
        map_currency(erp("currency_currency", "delete", {"id": 1, "code": None}), "c")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"code": "EURO"}, "ERP currency code 'EURO' is not an ISO 4217 code"),
        ({"code": None}, "currency_currency row lacks required field 'code'"),
        ({"name": ""}, "currency_currency row lacks required field 'name'"),
    ],
)
def test_bad_currency_rows(row: dict[str, Any], message: str) -> None:
    base = {"id": 1, "code": "EUR", "name": "Euro", "digits": 2}
    with pytest.raises(BadEventError, match=message):
        map_currency(erp("currency_currency", "create", {**base, **row}), "c")


def test_company_becomes_the_legal_entity_its_profile_names(resolver: ReferenceResolver) -> None:
    row = {"id": 1, "party": 1, "currency": 1, "write_date": WRITE_DATE}
    key, record = resolver.map_company(erp("company_company", "snapshot", row), "c")
    assert key == "LC-DE"
    data = record["data"]
    assert data["legal_entity_id"] == "LC-DE" and data["erp_id"] == "1"
    assert (data["name"], data["country"], data["base_currency"]) == (
        "Local Consulting GmbH",
        "DE",
        "EUR",
    )
    assert data["region"] == "EMEA"
    assert data["last_modified_at"] == datetime(2026, 11, 29, 10, tzinfo=UTC)
    _fits("legal_entity", record)
    # A company delete carries its id (the primary key), enough to name the entity.
    key, deleted = resolver.map_company(erp("company_company", "delete", {"id": 1}), "c")
    assert key == "LC-DE" and deleted["data"] is None


def test_company_without_profile_says_what_to_add(resolver: ReferenceResolver) -> None:
    with pytest.raises(BadEventError, match=r"ERP company 7.*add it there \(legal_entities\)"):
        resolver.map_company(erp("company_company", "create", {"id": 7, "party": 9}, "7"), "c")


def tax(**row: Any) -> dict[str, Any]:
    return {
        "id": 3,
        "name": "VAT-DE-19",
        "description": "Umsatzsteuer 19 %",
        "type": "percentage",
        "rate": "0.19",
        "company": 1,
        "active": True,
        "start_date": 20454,
        "end_date": None,
        **row,
    }


def test_tax_is_a_tax_code_in_its_companys_country(resolver: ReferenceResolver) -> None:
    key, record = resolver.map_tax(erp("account_tax", "create", tax(), "3"), "c")
    assert key == "VAT-DE-19"
    assert record["data"] == {
        "code": "VAT-DE-19",
        "name": "Umsatzsteuer 19 %",
        "jurisdiction": "DE",
        "rate_percent": Decimal("19.0000"),
        "valid_from": date(2026, 1, 1),
        "valid_to": None,
        "is_active": True,
    }
    _fits("tax_code", record)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"type": "fixed"}, "only percentage taxes are tax codes"),
        ({"rate": "nineteen"}, "rate='nineteen' is no number"),
        ({"rate": None}, "account_tax row lacks required field 'rate'"),
        ({"company": 5}, "ERP company 5"),
        ({"name": None}, "account_tax row lacks required field 'name'"),
    ],
)
def test_bad_taxes(resolver: ReferenceResolver, row: dict[str, Any], message: str) -> None:
    with pytest.raises(BadEventError, match=message):
        resolver.map_tax(erp("account_tax", "create", tax(**row), "3"), "c")


def test_resolver_reads_its_file_once(tmp_path: Path) -> None:
    doc = json.loads(DEFAULT.read_text())
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(doc))
    r = ReferenceResolver(path)
    r.map_company(erp("company_company", "create", {"id": 1}), "c")
    path.write_text("not json any more")
    r.map_company(erp("company_company", "create", {"id": 1}), "c")  # still the loaded data


def test_tax_takes_the_jurisdiction_the_reference_file_applies_it_in(
    resolver: ReferenceResolver,
) -> None:
    # A tax of the German company used for invoices to France is French VAT.
    _, record = resolver.map_tax(erp("account_tax", "create", tax(name="VAT-FR-20"), "4"), "c")
    assert record["data"]["jurisdiction"] == "FR"
    # A tax no jurisdiction names applies in its company's country.
    _, other = resolver.map_tax(erp("account_tax", "create", tax(name="VAT-DE-7"), "5"), "c")
    assert other["data"]["jurisdiction"] == "DE"
