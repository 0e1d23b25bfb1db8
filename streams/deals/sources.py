"""Where the deal stage's inputs come from, and the fields it reads of each: the one place.

Every record the stage consumes or looks up is decoded through the registry and adapted
here to a small value of streams/deals/model.py. Wiring another contract (a renamed field,
a different topic for a reference set) is a change to one line of this module.

Inputs of the stage itself (co-partitioned by the deal's canonical opportunity id):
- canonical.opportunity                  -> Opportunity       (opportunity_of)
- canonical.opportunity_line_item        -> LineItem          (line_item_of)
- canonical.billing_milestone            -> Milestone         (milestone_of)
Views (tables/views.py, read whole by every worker), declared in VIEWS:
- customer (canonical.customer), legal_entity (reference.legal_entity_profile), region,
  jurisdiction, tax_code, service_line, project_template, role (reference.<set>), and
  project_manager (canonical.resource: people by e-mail; nothing publishes it yet).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from schemas.conventions import canonical_id, canonical_topic, reference_topic
from streams.deals.model import (
    Child,
    Customer,
    Jurisdiction,
    LegalEntity,
    LineItem,
    Milestone,
    Opportunity,
    Person,
    Region,
    Role,
    ServiceLine,
    TaxCode,
    Template,
    TemplateTask,
)
from streams.errors import BadEventError

# Entities the stage consumes, by role.
OPPORTUNITY = "opportunity"
LINE_ITEM = "opportunity_line_item"
MILESTONE = "billing_milestone"
CHILDREN = (LINE_ITEM, MILESTONE)


def data_of(record: dict[str, Any]) -> dict[str, Any] | None:
    """The entity of a canonical event (None for a delete); reference records may be bare."""
    if "envelope" in record:
        data = record.get("data")
        return data if isinstance(data, dict) else None
    return record


@dataclass(frozen=True)
class Stamp:
    """Ordering and timing of one canonical event."""

    version: int  # entity_version: the source position, -1 for a delete of unknown position
    committed_at: float  # when the source committed it (epoch seconds), 0 if unknown


def stamp_of(record: dict[str, Any]) -> Stamp:
    envelope = record.get("envelope") or {}
    source = envelope.get("source") or {}
    committed = source.get("committed_at")
    at = committed.timestamp() if isinstance(committed, datetime) else 0.0
    return Stamp(int(envelope.get("entity_version", -1)), at)


def _text(data: dict[str, Any], field: str) -> str | None:
    value = data.get(field)
    return None if value is None or value == "" else str(value)


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def _milestone(key: str, m: dict[str, Any]) -> Milestone:
    return Milestone(
        key=key,
        name=str(m.get("name") or ""),
        due=_date(m.get("due_date")),
        amount=_decimal(m.get("amount")),
        percent=_decimal(m.get("percent")),
    )


def opportunity_of(key: str, record: dict[str, Any]) -> Opportunity | None:
    """An OpportunityEvent (schemas/avro/opportunity.avsc); None for a delete."""
    data = data_of(record)
    if data is None:
        return None
    envelope = record.get("envelope") or {}
    customer = _text(data, "customer_id")
    account = (
        customer.split(":", 2)[2] if customer and customer.startswith("crm:account:") else None
    )
    return Opportunity(
        key=key,
        crm_id=str(data["crm_id"]),
        correlation_id=str(envelope.get("correlation_id") or ""),
        name=str(data["name"]),
        stage=str(data.get("stage") or "unknown"),
        currency=str(data["currency"]),
        customer_id=customer,
        crm_account_id=account,
        amount=_decimal(data.get("amount")),
        billing_type=str(data.get("billing_type") or "unknown"),
        delivery_region=_text(data, "delivery_region"),
        project_manager=_text(data, "project_manager"),
        sow_reference=_text(data, "sow_reference"),
        service_lines=tuple(str(s) for s in data.get("service_lines") or ()),
        milestones=tuple(
            _milestone(f"{key}#{n}", m) for n, m in enumerate(data.get("billing_milestones") or ())
        ),
        deal_type=str(data.get("deal_type") or "unknown"),
        parent_id=_text(data, "parent_opportunity_id"),
    )


def closed_won_of(record: dict[str, Any] | None) -> bool:
    """Whether a canonical opportunity event says closed-won (`Opportunity.closed_won`), read
    without building the Opportunity: most events of a deal are not."""
    data = None if record is None else data_of(record)
    return data is not None and data.get("stage") == "closed_won"


def _parent(data: dict[str, Any], what: str) -> str:
    parent = _text(data, "opportunity_id")
    if parent is None:
        raise BadEventError(f"{what} without opportunity_id: it cannot join its deal")
    return parent


def line_item_of(key: str, record: dict[str, Any]) -> Child:
    """A canonical opportunity line item: service line, quantity, unit price."""
    data = data_of(record)
    if data is None:
        return Child(key, None)
    parent = _parent(data, "line item")
    line = LineItem(
        key=key,
        opportunity_id=parent,
        service_line=str(data.get("service_line") or ""),
        quantity=_decimal(data.get("quantity")),
        unit_price=_decimal(data.get("unit_price")),
    )
    return Child(key, parent, line=line)


def milestone_of(key: str, record: dict[str, Any]) -> Child:
    """A canonical billing milestone: name, due date, amount or percent."""
    data = data_of(record)
    if data is None:
        return Child(key, None)
    return Child(key, _parent(data, "billing milestone"), milestone=_milestone(key, data))


CHILD_ADAPTERS: dict[str, Callable[[str, dict[str, Any]], Child]] = {
    LINE_ITEM: line_item_of,
    MILESTONE: milestone_of,
}


# -- views ------------------------------------------------------------------------------


def customer_of(key: str, record: dict[str, Any]) -> Customer | None:
    data = data_of(record)
    if data is None:
        return None
    return Customer(
        key=str(data.get("customer_id") or key),
        name=str(data.get("name") or ""),
        crm_account_id=_text(data, "crm_account_id"),
        legal_name=_text(data, "legal_name"),
        tax_id=_text(data, "tax_id"),
        billing_country=_text(data, "billing_country"),
        default_currency=_text(data, "default_currency"),
        erp_customer_id=_text(data, "erp_customer_id"),
    )


def customer_aliases(key: str, customer: Customer) -> Iterable[str]:
    # Deals name their customer by CRM account; the customer's key may be the ERP number.
    if customer.crm_account_id:
        yield canonical_id("crm", "account", customer.crm_account_id)
    yield customer.key


def legal_entity_of(key: str, record: dict[str, Any]) -> LegalEntity | None:
    """A legal entity profile of the reference file (reference.legal_entity_profile)."""
    data = data_of(record)
    if data is None:
        return None
    return LegalEntity(
        key=str(data.get("code") or key),
        name=str(data.get("name") or ""),
        country=str(data.get("country") or "").upper(),
        base_currency=str(data.get("base_currency") or "").upper(),
        currencies=tuple(str(c).upper() for c in data.get("allowed_currencies") or ()),
        active=bool(data.get("is_active", True)),
    )


def region_of(key: str, record: dict[str, Any]) -> Region | None:
    data = data_of(record)
    if data is None:
        return None
    return Region(
        code=str(data.get("code") or key),
        countries=tuple(str(c).upper() for c in data.get("countries") or ()),
        legal_entity=_text(data, "legal_entity"),
        active=bool(data.get("is_active", True)),
    )


def jurisdiction_of(key: str, record: dict[str, Any]) -> Jurisdiction | None:
    data = data_of(record)
    if data is None:
        return None
    return Jurisdiction(
        code=str(data.get("code") or key).upper(),
        tax_code=_text(data, "tax_code"),
        active=bool(data.get("is_active", True)),
    )


def role_of(key: str, record: dict[str, Any]) -> Role | None:
    data = data_of(record)
    if data is None:
        return None
    return Role(code=str(data.get("code") or key), name=str(data.get("name") or key))


def tax_code_of(key: str, record: dict[str, Any]) -> TaxCode | None:
    data = data_of(record)
    if data is None:
        return None
    return TaxCode(
        code=str(data.get("code") or key),
        jurisdiction=str(data.get("jurisdiction") or "").upper(),
        active=bool(data.get("is_active", True)),
        valid_from=_date(data.get("valid_from")),
        valid_to=_date(data.get("valid_to")),
    )


def service_line_of(key: str, record: dict[str, Any]) -> ServiceLine | None:
    data = data_of(record)
    if data is None:
        return None
    return ServiceLine(
        code=str(data.get("code") or key),
        name=str(data.get("name") or ""),
        template=_text(data, "project_template"),
        active=bool(data.get("is_active", True)),
    )


def template_of(key: str, record: dict[str, Any]) -> Template | None:
    """A project template: phases of tasks (flattened, in order), placeholder role codes."""
    data = data_of(record)
    if data is None:
        return None
    tasks = tuple(
        TemplateTask(
            name=str(t["name"]),
            phase=str(phase.get("name") or ""),
            effort_hours=_decimal(t.get("hours")),
        )
        for phase in data.get("phases") or ()
        for t in phase.get("tasks") or ()
    )
    return Template(
        code=str(data.get("code") or key),
        name=str(data.get("name") or ""),
        tasks=tasks,
        placeholders=tuple(str(p) for p in data.get("placeholder_roles") or ()),
        active=bool(data.get("is_active", True)),
    )


def person_of(key: str, record: dict[str, Any]) -> Person | None:
    data = data_of(record)
    if data is None or not data.get("email"):
        return None
    return Person(
        key=str(data.get("resource_id") or key),
        email=str(data["email"]).strip().lower(),
        name=str(data.get("name") or ""),
        role=_text(data, "role"),
        active=bool(data.get("is_active", True)),
    )


def person_aliases(key: str, person: Person) -> Iterable[str]:
    yield person.email  # project managers are named by e-mail on the deal


@dataclass(frozen=True)
class ViewSource:
    topic: Callable[[str], str]  # namespace -> topic name
    adapt: Callable[[str, dict[str, Any]], Any]
    aliases: Callable[[str, Any], Iterable[str]] | None = None


def _reference(name: str) -> Callable[[str], str]:
    return lambda ns: reference_topic(name, ns)


VIEWS: dict[str, ViewSource] = {
    "customer": ViewSource(
        lambda ns: canonical_topic("customer", ns), customer_of, customer_aliases
    ),
    "legal_entity": ViewSource(_reference("legal_entity_profile"), legal_entity_of),
    "region": ViewSource(_reference("region"), region_of),
    "jurisdiction": ViewSource(_reference("jurisdiction"), jurisdiction_of),
    "tax_code": ViewSource(_reference("tax_code"), tax_code_of),
    "service_line": ViewSource(_reference("service_line"), service_line_of),
    "project_template": ViewSource(_reference("project_template"), template_of),
    "role": ViewSource(_reference("role"), role_of),
    "project_manager": ViewSource(
        lambda ns: canonical_topic("resource", ns), person_of, person_aliases
    ),
}
