"""What the deal stage knows of a deal and of the data it checks a deal against.

Only the fields the stage reads; `streams/deals/sources.py` fills them from the decoded
canonical and reference records. Values are plain, immutable and JSON-able through
`connectors.ports.to_json` / `from_json`, so they are kept in table state as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal


@dataclass(frozen=True)
class Milestone:
    key: str  # canonical id of the milestone (or <opportunity>#<n> when embedded in it)
    name: str
    due: date | None = None
    amount: Decimal | None = None
    percent: Decimal | None = None


@dataclass(frozen=True)
class Opportunity:
    """The deal's commercial payload as the CRM holds it (fields pssync writes excluded)."""

    key: str  # canonical id: the saga key
    crm_id: str
    correlation_id: str
    name: str
    stage: str
    currency: str
    customer_id: str | None = None
    crm_account_id: str | None = None
    amount: Decimal | None = None
    billing_type: str = "unknown"
    delivery_region: str | None = None
    project_manager: str | None = None
    sow_reference: str | None = None
    service_lines: tuple[str, ...] = ()
    milestones: tuple[Milestone, ...] = ()  # agreed in the deal record itself
    deal_type: str = "unknown"  # new_business, change_order, renewal, unknown
    parent_id: str | None = None  # a change order's won deal (canonical opportunity id)

    @property
    def closed_won(self) -> bool:
        return self.stage == "closed_won"

    @property
    def amends(self) -> str | None:
        """The deal this one amends: a change order naming its parent; None otherwise (a
        change order without a parent is provisioned like a new deal, as before)."""
        return self.parent_id if self.deal_type == "change_order" and self.parent_id else None


@dataclass(frozen=True)
class LineItem:
    key: str  # canonical id of the line item
    opportunity_id: str  # the parent deal's canonical id
    service_line: str
    quantity: Decimal | None = None  # hours or units sold
    unit_price: Decimal | None = None


@dataclass(frozen=True)
class Child:
    """A line item or milestone event, adapted: whose deal it is and what it now says."""

    key: str
    opportunity_id: str | None  # None for a delete (the deal is found by the child's key)
    line: LineItem | None = None
    milestone: Milestone | None = None


@dataclass(frozen=True)
class Customer:
    key: str  # canonical customer id
    name: str
    crm_account_id: str | None = None
    legal_name: str | None = None
    tax_id: str | None = None
    billing_country: str | None = None
    default_currency: str | None = None
    erp_customer_id: str | None = None


@dataclass(frozen=True)
class LegalEntity:
    key: str
    name: str
    country: str
    base_currency: str
    currencies: tuple[str, ...] = ()  # it may contract in, besides its book currency
    active: bool = True


@dataclass(frozen=True)
class Region:
    code: str
    countries: tuple[str, ...] = ()
    legal_entity: str | None = None  # the entity that contracts deals delivered there
    active: bool = True


@dataclass(frozen=True)
class Jurisdiction:
    code: str
    tax_code: str | None = None  # the tax services billed there use
    active: bool = True


@dataclass(frozen=True)
class Role:
    code: str
    name: str


@dataclass(frozen=True)
class TaxCode:
    code: str
    jurisdiction: str
    active: bool = True
    valid_from: date | None = None
    valid_to: date | None = None


@dataclass(frozen=True)
class ServiceLine:
    code: str
    name: str
    template: str | None = None
    active: bool = True


@dataclass(frozen=True)
class TemplateTask:
    name: str
    phase: str
    effort_hours: Decimal | None = None


@dataclass(frozen=True)
class Template:
    """A project template: the WBS (phases -> tasks) and the roles to staff."""

    code: str
    name: str
    tasks: tuple[TemplateTask, ...] = ()
    placeholders: tuple[str, ...] = ()  # role codes
    active: bool = True


@dataclass(frozen=True)
class Person:
    key: str
    email: str
    name: str = ""
    role: str | None = None
    active: bool = True
