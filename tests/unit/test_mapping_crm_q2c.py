"""CRM accounts, opportunity line items and billing milestones -> canonical records."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastavro import parse_schema
from fastavro.validation import validate

from schemas import contracts
from streams.changes import Change
from streams.errors import BadEventError
from streams.mappings.crm import (
    map_account,
    map_billing_milestone,
    map_line_item,
    map_opportunity,
)
from streams.mappings.envelope import correlation_id


def debezium(table: str, key: str, op: str, row: dict[str, Any]) -> Change:
    """A change as streams.changes.parse makes it from a Debezium event of `table`."""
    if op == "delete":
        return Change(op, row, None, "crm", f"sales.{table}", key, "0/80", 128, 1_700_000_000_000)
    return Change(op, None, row, "crm", f"sales.{table}", key, "0/80", 128, 1_700_000_000_000)


def account(op: str = "create", **row: Any) -> Change:
    base = {
        "id": "001A",
        "name": "Acme",
        "type": "Customer - Direct",
        "industry": "Manufacturing",
        "billing_country": "de",
        "currency_iso_code": "EUR",
        "tax_id__c": "DE123456789",
        "erp_customer_id__c": None,
        "parent_id": "001P",
        "last_modified_date": "2026-11-29T10:00:00Z",
    }
    return debezium("account", "001A", op, {**base, **row})


def line_item(op: str = "create", **row: Any) -> Change:
    base = {
        "id": "00kL1",
        "opportunity_id": "006A",
        "service_line__c": " IMPL ",
        "description": "Implementation, phase 1",
        "quantity": "120.00",
        "unit_price": "150.005",
        "currency_iso_code": "eur",
        "last_modified_date": "2026-11-29T10:00:00Z",
    }
    return debezium("opportunity_line_item", "00kL1", op, {**base, **row})


def milestone(op: str = "create", **row: Any) -> Change:
    base = {
        "id": "a0M1",
        "opportunity_id": "006A",
        "name": "Design sign-off",
        "due_date__c": 20800,
        "amount__c": "25000",
        "percent__c": None,
        "currency_iso_code": "EUR",
        "last_modified_date": "2026-11-29T10:00:00Z",
    }
    return debezium("billing_milestone", "a0M1", op, {**base, **row})


def _fits(entity: str, record: dict[str, Any]) -> None:
    assert validate(record, parse_schema(contracts.schema(entity)))


def test_account_becomes_customer_keyed_by_crm_id() -> None:
    key, record = map_account(account(), "crm.sales.account/0/1")
    assert key == "crm:account:001A"
    data = record["data"]
    assert data["customer_id"] == key and data["crm_account_id"] == "001A"
    assert data["status"] == "active" and data["billing_country"] == "DE"
    assert data["default_currency"] == "EUR" and data["tax_id"] == "DE123456789"
    assert data["parent_customer_id"] == "crm:account:001P"
    assert data["last_modified_at"] == datetime(2026, 11, 29, 10, tzinfo=UTC)
    _fits("customer", record)


def test_customer_key_does_not_move_when_the_erp_number_arrives() -> None:
    before, _ = map_account(account(), "c")
    key, record = map_account(account("update", erp_customer_id__c="C-0042"), "c")
    assert key == before == "crm:account:001A"
    assert record["data"]["erp_customer_id"] == "C-0042"
    # The opportunity points at the same id.
    opp = Change(
        "create",
        None,
        {
            "id": "006A",
            "account_id": "001A",
            "name": "x",
            "stage_name": "Prospecting",
            "currency_iso_code": "EUR",
        },
        "crm",
        "sales.opportunity",
        "006A",
        "0/1",
        1,
        0,
    )
    assert map_opportunity(opp, "c")[1]["data"]["customer_id"] == key


def test_account_delete_and_unknown_type() -> None:
    _, deleted = map_account(account("delete"), "c")
    assert deleted["data"] is None
    _fits("customer", deleted)
    _, record = map_account(account(type=None, parent_id=None, billing_country=None), "c")
    assert record["data"]["status"] == "unknown" and record["data"]["parent_customer_id"] is None


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"name": None}, "account row lacks required field 'name'"),
        ({"billing_country": "Germany"}, "billing_country='GERMANY' is not an ISO 3166-1"),
        ({"currency_iso_code": "EURO"}, "currency_iso_code='EURO' is not an ISO 4217 code"),
        ({"last_modified_date": "later"}, "is not an ISO-8601 timestamp"),
    ],
)
def test_bad_account_rows(row: dict[str, Any], message: str) -> None:
    with pytest.raises(BadEventError, match=message):
        map_account(account(**row), "c")


def test_line_item_belongs_to_its_opportunity_and_its_flow() -> None:
    key, record = map_line_item(line_item(), "crm.sales.opportunity_line_item/0/9")
    assert key == "crm:opportunity_line_item:00kL1"
    data = record["data"]
    assert data["opportunity_id"] == "crm:opportunity:006A"
    assert data["service_line"] == "IMPL" and data["currency"] == "EUR"
    assert data["quantity"] == 120.0
    assert data["unit_price"] == Decimal("150.00")  # cents, as the CRM column holds them
    assert data["total_price"] == Decimal("18000.00")
    # The deal's correlation id: line items travel with the deal.
    assert record["envelope"]["correlation_id"] == correlation_id("crm:opportunity:006A")
    _fits("opportunity_line_item", record)


def test_line_item_total_rounds_half_up_to_cents() -> None:
    _, record = map_line_item(line_item(quantity="0.5", unit_price="0.05"), "c")
    assert record["data"]["total_price"] == Decimal("0.03")


def test_line_item_delete_keeps_its_deal() -> None:
    old = {
        "id": "00kL1",
        "opportunity_id": "006A",
        "service_line__c": "IMPL",
        "quantity": "1",
        "unit_price": "1",
        "currency_iso_code": "EUR",
    }
    key, record = map_line_item(debezium("opportunity_line_item", "00kL1", "delete", old), "c")
    assert key == "crm:opportunity_line_item:00kL1" and record["data"] is None
    assert record["envelope"]["correlation_id"] == correlation_id("crm:opportunity:006A")
    _fits("opportunity_line_item", record)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"opportunity_id": None}, "lacks required field 'opportunity_id'"),
        ({"service_line__c": ""}, "lacks required field 'service_line__c'"),
        ({"unit_price": None}, "lacks required field 'unit_price'"),
        ({"quantity": "a dozen"}, "quantity='a dozen' is not a decimal number"),
        ({"currency_iso_code": "E"}, "is not an ISO 4217 code"),
    ],
)
def test_bad_line_items(row: dict[str, Any], message: str) -> None:
    with pytest.raises(BadEventError, match=message):
        map_line_item(line_item(**row), "c")


def test_milestone_by_amount_or_percent() -> None:
    key, record = map_billing_milestone(milestone(), "c")
    assert key == "crm:billing_milestone:a0M1"
    data = record["data"]
    assert data["opportunity_id"] == "crm:opportunity:006A"
    assert data["due_date"] == date(2026, 12, 13) and data["amount"] == Decimal("25000.00")
    assert data["percent"] is None
    _fits("billing_milestone", record)
    _, by_percent = map_billing_milestone(milestone(amount__c=None, percent__c="40"), "c")
    assert by_percent["data"]["percent"] == Decimal("40.00")
    _fits("billing_milestone", by_percent)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"amount__c": None, "percent__c": None}, "neither amount__c nor percent__c"),
        ({"percent__c": "140"}, "percent__c=140.00 is not between 0 and 100"),
        ({"name": None}, "lacks required field 'name'"),
        ({"due_date__c": "soon"}, "due_date__c='soon' is not a date"),
    ],
)
def test_bad_milestones(row: dict[str, Any], message: str) -> None:
    with pytest.raises(BadEventError, match=message):
        map_billing_milestone(milestone(**row), "c")


def test_opportunity_type_is_folded_onto_deal_types() -> None:
    row = {"id": "006A", "name": "x", "stage_name": "Prospecting", "currency_iso_code": "EUR"}
    for source, expected in (
        ("New Business", "new_business"),
        ("Change Order", "change_order"),
        (None, "unknown"),
        ("Upsell", "unknown"),
    ):
        c = Change(
            "create", None, {**row, "type": source}, "crm", "sales.opportunity", "006A", "0/1", 1, 0
        )
        _, record = map_opportunity(c, "c")
        assert record["data"]["deal_type"] == expected
        _fits("opportunity", record)
