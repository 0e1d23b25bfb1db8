from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from fastavro import parse_schema
from fastavro.validation import validate

from schemas import contracts
from streams.changes import Change
from streams.errors import BadEventError
from streams.mappings.crm import map_opportunity


def change(op: str = "create", **after: Any) -> Change:
    row = {
        "id": "006A",
        "account_id": "001A",
        "name": "Rollout",
        "stage_name": "Closed Won",
        "amount": "1200.5",
        "currency_iso_code": "eur",
        "close_date": 20000,
        "probability": "75.00",
        "is_closed": True,
        "is_won": True,
        "billing_type__c": "Time & Materials",
        "service_lines__c": "CONSULT; PM;",
        "last_modified_date": "2026-11-29T10:00:00.123456Z",
        **after,
    }
    return Change(
        op,
        None,
        None if op == "delete" else row,
        "crm",
        "sales.opportunity",
        "006A",
        "0/64",
        100,
        1_700_000_000_000,
    )


def test_maps_salesforce_row_to_canonical_opportunity() -> None:
    key, record = map_opportunity(change(), "crm.sales.opportunity/0/5")
    assert key == "crm:opportunity:006A"
    data = record["data"]
    assert data["stage"] == "closed_won" and data["source_stage"] == "Closed Won"
    assert data["amount"] == Decimal("1200.50") and data["currency"] == "EUR"
    assert data["close_date"] == date(2024, 10, 4)
    assert data["probability"] == 75
    assert data["billing_type"] == "time_and_materials"
    assert data["service_lines"] == ["CONSULT", "PM"]
    assert data["customer_id"] == "crm:account:001A"
    env = record["envelope"]
    assert env["op"] == "create" and env["entity_version"] == 100
    assert env["causation_id"] == "crm.sales.opportunity/0/5"
    assert env["source"]["position"] == "0/64" and env["source"]["system"] == "crm"


def test_record_fits_the_avro_contract() -> None:
    _, record = map_opportunity(change(), "c")
    assert validate(record, parse_schema(contracts.schema("opportunity")))
    _, deleted = map_opportunity(change("delete"), "c")
    assert validate(deleted, parse_schema(contracts.schema("opportunity")))


def test_event_id_is_deterministic_and_correlation_is_per_deal() -> None:
    _, a = map_opportunity(change(), "x")
    _, b = map_opportunity(change(), "y")
    _, c = map_opportunity(change("update"), "z")
    assert a["envelope"]["event_id"] == b["envelope"]["event_id"]
    assert a["envelope"]["event_id"] != c["envelope"]["event_id"]
    assert a["envelope"]["correlation_id"] == c["envelope"]["correlation_id"]


def test_unknown_stage_and_billing_type_fall_back() -> None:
    _, record = map_opportunity(change(stage_name="Custom", billing_type__c=None), "c")
    assert record["data"]["stage"] == "unknown" and record["data"]["billing_type"] == "unknown"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", None, "'name'"),
        ("currency_iso_code", "EURO", "ISO 4217"),
        ("amount", "12,5", "decimal"),
        ("last_modified_date", "yesterday", "timestamp"),
    ],
)
def test_bad_rows_raise_with_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(BadEventError, match=message):
        map_opportunity(change(**{field: value}), "c")


def test_delete_has_no_data() -> None:
    _, record = map_opportunity(change("delete"), "c")
    assert record["data"] is None and record["envelope"]["op"] == "delete"
