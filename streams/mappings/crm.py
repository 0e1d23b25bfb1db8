"""CRM (Salesforce-shaped) rows -> canonical records."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from schemas.conventions import canonical_id
from streams.changes import Change
from streams.errors import BadEventError
from streams.mappings.envelope import envelope

SYSTEM = "crm"

# Salesforce's default sales process, folded onto the canonical stages.
STAGES = {
    "prospecting": "prospecting",
    "qualification": "qualification",
    "needs analysis": "qualification",
    "value proposition": "qualification",
    "id. decision makers": "qualification",
    "perception analysis": "proposal",
    "proposal/price quote": "proposal",
    "negotiation/review": "negotiation",
    "closed won": "closed_won",
    "closed lost": "closed_lost",
}
BILLING_TYPES = {
    "fixed fee": "fixed_fee",
    "fixed_fee": "fixed_fee",
    "time and materials": "time_and_materials",
    "time & materials": "time_and_materials",
    "t&m": "time_and_materials",
    "time_and_materials": "time_and_materials",
    "milestone": "milestone",
    "retainer": "retainer",
}
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_EPOCH = date(1970, 1, 1)


def _required(row: dict[str, Any], field: str, entity: str) -> Any:
    value = row.get(field)
    if value is None or value == "":
        raise BadEventError(f"{entity} row lacks required field {field!r}")
    return value


def _decimal(value: Any, field: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value)).quantize(Decimal("0.01"))
    except InvalidOperation:
        raise BadEventError(f"{field}={value!r} is not a decimal number") from None


def _date(value: Any, field: str) -> date | None:
    if value is None:
        return None
    if isinstance(value, int):  # Debezium: days since epoch
        return _EPOCH + timedelta(days=value)
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise BadEventError(f"{field}={value!r} is not a date") from None


def _timestamp(value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadEventError(f"{field}={value!r} is not an ISO-8601 timestamp") from None


def opportunity_key(source_key: str) -> str:
    return canonical_id(SYSTEM, "opportunity", source_key)


def map_opportunity(change: Change, causation: str) -> tuple[str, dict[str, Any]]:
    """(canonical key, OpportunityEvent record) for a change of sales.opportunity."""
    key = opportunity_key(change.key)
    env = envelope(change, SYSTEM, key, key, causation)
    if change.op == "delete":
        return key, {"envelope": env, "data": None}
    row = change.after or {}
    entity = "opportunity"
    currency = str(_required(row, "currency_iso_code", entity)).strip().upper()
    if not _CURRENCY.match(currency):
        raise BadEventError(f"currency_iso_code={currency!r} is not an ISO 4217 code")
    source_stage = str(_required(row, "stage_name", entity))
    probability = row.get("probability")
    lines = row.get("service_lines__c")
    account = row.get("account_id")
    data = {
        "opportunity_id": key,
        "crm_id": str(_required(row, "id", entity)),
        "customer_id": canonical_id(SYSTEM, "account", str(account)) if account else None,
        "name": str(_required(row, "name", entity)),
        "stage": STAGES.get(source_stage.strip().lower(), "unknown"),
        "source_stage": source_stage,
        "is_closed": bool(row.get("is_closed")),
        "is_won": bool(row.get("is_won")),
        "amount": _decimal(row.get("amount"), "amount"),
        "currency": currency,
        "close_date": _date(row.get("close_date"), "close_date"),
        "probability": None if probability is None else round(float(probability)),
        "billing_type": BILLING_TYPES.get(
            str(row.get("billing_type__c") or "").strip().lower(), "unknown"
        ),
        "delivery_region": row.get("delivery_region__c"),
        "project_manager": row.get("project_manager_email__c"),
        "sow_reference": row.get("sow_reference__c"),
        "service_lines": [s.strip() for s in str(lines).split(";") if s.strip()] if lines else [],
        "last_modified_at": _timestamp(row.get("last_modified_date"), "last_modified_date"),
    }
    return key, {"envelope": env, "data": data}
