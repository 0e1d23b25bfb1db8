"""CRM (Salesforce-shaped) rows -> canonical records."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from schemas.conventions import canonical_id
from streams.changes import Change
from streams.errors import BadEventError
from streams.mappings.envelope import envelope
from streams.mappings.values import day

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
DEAL_TYPES = {
    "new business": "new_business",
    "new customer": "new_business",
    "existing business": "change_order",
    "change order": "change_order",
    "renewal": "renewal",
}
# Salesforce's Account.Type picklist, folded onto the customer lifecycle.
ACCOUNT_STATUS = {
    "prospect": "prospect",
    "customer": "active",
    "customer - direct": "active",
    "customer - channel": "active",
    "former customer": "inactive",
}
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


def _required(row: dict[str, Any], field: str, entity: str) -> Any:
    value = row.get(field)
    if value is None or value == "":
        raise BadEventError(f"{entity} row lacks required field {field!r}")
    return value


_CENT = Decimal("0.01")


def _decimal(value: Any, field: str, step: Decimal = _CENT) -> Decimal | None:
    if value is None:
        return None
    return _number(value, field, step)


def _number(value: Any, field: str, step: Decimal = _CENT) -> Decimal:
    try:
        return Decimal(str(value)).quantize(step)
    except InvalidOperation:
        raise BadEventError(f"{field}={value!r} is not a decimal number") from None


def _timestamp(value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadEventError(f"{field}={value!r} is not an ISO-8601 timestamp") from None


def _currency(row: dict[str, Any], entity: str) -> str:
    currency = str(_required(row, "currency_iso_code", entity)).strip().upper()
    if not _CURRENCY.match(currency):
        raise BadEventError(f"currency_iso_code={currency!r} is not an ISO 4217 code")
    return currency


def opportunity_key(source_key: str) -> str:
    return canonical_id(SYSTEM, "opportunity", source_key)


def customer_key(source_key: str) -> str:
    """A customer's canonical id stays crm:account:<id> for good: the ERP party is found and
    created by it (party code), opportunities refer to it, and a compacted topic whose key
    moved when the ERP number arrived would keep the old record alive."""
    return canonical_id(SYSTEM, "account", source_key)


def map_account(change: Change, causation: str) -> tuple[str, dict[str, Any]]:
    """(canonical key, CustomerEvent record) for a change of sales.account."""
    key = customer_key(change.key)
    env = envelope(change, SYSTEM, key, key, causation)
    if change.op == "delete":
        return key, {"envelope": env, "data": None}
    row = change.after or {}
    entity = "account"
    country = row.get("billing_country")
    country = str(country).strip().upper() if country else None
    if country is not None and not _COUNTRY.match(country):
        raise BadEventError(f"billing_country={country!r} is not an ISO 3166-1 alpha-2 code")
    parent = row.get("parent_id")
    data = {
        "customer_id": key,
        "crm_account_id": str(_required(row, "id", entity)),
        "erp_customer_id": row.get("erp_customer_id__c") or None,
        "psa_client_id": None,
        "name": str(_required(row, "name", entity)),
        "legal_name": None,
        "tax_id": row.get("tax_id__c") or None,
        "status": ACCOUNT_STATUS.get(str(row.get("type") or "").strip().lower(), "unknown"),
        "billing_country": country,
        "billing_address": None,
        "default_currency": _currency(row, entity),
        "payment_terms": None,
        "parent_customer_id": customer_key(str(parent)) if parent else None,
        "industry": row.get("industry"),
        "last_modified_at": _timestamp(row.get("last_modified_date"), "last_modified_date"),
    }
    return key, {"envelope": env, "data": data}


def _child(
    change: Change, entity: str, causation: str
) -> tuple[str, dict[str, Any], dict[str, Any] | None, str | None]:
    """Key, envelope, row and parent opportunity id of a child row of an opportunity.

    The correlation id is the opportunity's: a line item belongs to the deal's flow. A delete
    carries its old row (REPLICA IDENTITY FULL) and so still names its opportunity.
    """
    key = canonical_id(SYSTEM, entity, change.key)
    row = change.before if change.op == "delete" else change.after
    parent = (row or {}).get("opportunity_id")
    if change.op != "delete" and not parent:
        raise BadEventError(f"{entity} row lacks required field 'opportunity_id'")
    opportunity = opportunity_key(str(parent)) if parent else None
    env = envelope(change, SYSTEM, key, opportunity or key, causation)
    return key, env, (None if change.op == "delete" else row), opportunity


def map_line_item(change: Change, causation: str) -> tuple[str, dict[str, Any]]:
    """(canonical key, OpportunityLineItemEvent record) for sales.opportunity_line_item."""
    entity = "opportunity_line_item"
    key, env, row, opportunity = _child(change, entity, causation)
    if row is None or opportunity is None:
        return key, {"envelope": env, "data": None}
    quantity = _number(_required(row, "quantity", entity), "quantity", Decimal("0.0001"))
    unit_price = _number(_required(row, "unit_price", entity), "unit_price")
    data = {
        "line_item_id": key,
        "crm_id": str(_required(row, "id", entity)),
        "opportunity_id": opportunity,
        "service_line": str(_required(row, "service_line__c", entity)).strip(),
        "description": row.get("description"),
        "quantity": float(quantity),
        "unit_price": unit_price,
        "total_price": (quantity * unit_price).quantize(_CENT, ROUND_HALF_UP),
        "currency": _currency(row, entity),
        "last_modified_at": _timestamp(row.get("last_modified_date"), "last_modified_date"),
    }
    return key, {"envelope": env, "data": data}


def map_billing_milestone(change: Change, causation: str) -> tuple[str, dict[str, Any]]:
    """(canonical key, BillingMilestoneEvent record) for sales.billing_milestone."""
    entity = "billing_milestone"
    key, env, row, opportunity = _child(change, entity, causation)
    if row is None or opportunity is None:
        return key, {"envelope": env, "data": None}
    amount = _decimal(row.get("amount__c"), "amount__c")
    percent = _decimal(row.get("percent__c"), "percent__c")
    if amount is None and percent is None:
        raise BadEventError(
            f"billing milestone {change.key} has neither amount__c nor percent__c; set one"
        )
    if percent is not None and not Decimal(0) <= percent <= Decimal(100):
        raise BadEventError(f"percent__c={percent} is not between 0 and 100")
    data = {
        "milestone_id": key,
        "crm_id": str(_required(row, "id", entity)),
        "opportunity_id": opportunity,
        "name": str(_required(row, "name", entity)),
        "due_date": day(row.get("due_date__c"), "due_date__c"),
        "amount": amount,
        "percent": percent,
        "currency": _currency(row, entity),
        "last_modified_at": _timestamp(row.get("last_modified_date"), "last_modified_date"),
    }
    return key, {"envelope": env, "data": data}


def map_opportunity(change: Change, causation: str) -> tuple[str, dict[str, Any]]:
    """(canonical key, OpportunityEvent record) for a change of sales.opportunity."""
    key = opportunity_key(change.key)
    env = envelope(change, SYSTEM, key, key, causation)
    if change.op == "delete":
        return key, {"envelope": env, "data": None}
    row = change.after or {}
    entity = "opportunity"
    currency = _currency(row, entity)
    source_stage = str(_required(row, "stage_name", entity))
    probability = row.get("probability")
    lines = row.get("service_lines__c")
    account = row.get("account_id")
    parent = row.get("parent_opportunity_id")
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
        "close_date": day(row.get("close_date"), "close_date"),
        "probability": None if probability is None else round(float(probability)),
        "billing_type": BILLING_TYPES.get(
            str(row.get("billing_type__c") or "").strip().lower(), "unknown"
        ),
        "delivery_region": row.get("delivery_region__c"),
        "project_manager": row.get("project_manager_email__c"),
        "sow_reference": row.get("sow_reference__c"),
        "deal_type": DEAL_TYPES.get(str(row.get("type") or "").strip().lower(), "unknown"),
        "service_lines": [s.strip() for s in str(lines).split(";") if s.strip()] if lines else [],
        "last_modified_at": _timestamp(row.get("last_modified_date"), "last_modified_date"),
        "parent_opportunity_id": opportunity_key(str(parent)) if parent else None,
    }
    return key, {"envelope": env, "data": data}
