"""The command of each saga step, built from the assembled deal, the ids the saga learned
and the reference data (templates, customers): the connectors/ports.py spec as JSON."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from connectors.ports import (
    CrmWriteBack,
    CustomerSpec,
    Member,
    MilestoneSpec,
    ProjectSpec,
    PsaProjectSpec,
    TaskSpec,
    to_json,
)
from connectors.psa.redmine import psa_identifier  # the PSA adapter's one rule
from streams.deals.assembly import Deal
from streams.deals.model import Opportunity
from streams.deals.reference import Reference
from streams.deals.saga import Saga
from streams.deals.validation import INVOICE_METHODS
from streams.errors import DealError

# Roles staffed later, when the templates name none.
PLACEHOLDERS = ("Solution architect", "Consultant", "Project manager")
PM_ROLE = "Manager"
CENT = Decimal("0.01")
PROVISIONED = "provisioned"


def _opportunity(deal: Deal) -> Opportunity:
    if deal.opportunity is None:
        raise DealError("deal_deleted", "the opportunity was deleted in the CRM; restore it")
    return deal.opportunity


def _learned(saga: Saga, name: str, step: str) -> str:
    value = saga.learned.get(name)
    if not value:
        raise DealError(
            "step_out_of_order", f"{name} is not known yet: step {step} must pass first"
        )
    return value


def customer_spec(deal: Deal, saga: Saga, ref: Reference) -> CustomerSpec:
    opp = _opportunity(deal)
    customer = ref.customer(opp.customer_id)
    if customer is None or not opp.customer_id:
        raise DealError("customer_missing", f"customer {opp.customer_id} is not known")
    return CustomerSpec(
        # The CRM account's canonical id: stable for every deal of the account, whatever
        # the customer's canonical id becomes once the ERP numbers it.
        code=opp.customer_id,
        name=customer.legal_name or customer.name,
        tax_id=customer.tax_id,
        country=customer.billing_country,
        currency=customer.default_currency or opp.currency,
    )


def tasks(deal: Deal, ref: Reference) -> tuple[TaskSpec, ...]:
    """The WBS: each service line's template tasks, priced from its line items."""
    out: list[TaskSpec] = []
    for code in deal.service_lines():
        lines = [x for x in deal.lines.values() if x.service_line == code]
        priced = sorted((x for x in lines if x.unit_price is not None), key=lambda x: x.key)
        price = priced[0].unit_price if priced else None
        hours = sum((x.quantity for x in lines if x.quantity is not None), Decimal(0))
        service = ref.service_line(code)
        template = ref.template(service.template if service else None)
        if template is None:
            raise DealError("template_missing", f"no project template for service line {code}")
        if template.tasks:
            out += [TaskSpec(t.name, t.phase, t.effort_hours, price) for t in template.tasks]
        else:
            name = service.name if service and service.name else code
            out.append(TaskSpec(name, code, hours or None, price))
    counts: dict[str, int] = {}
    for t in out:
        counts[t.name] = counts.get(t.name, 0) + 1
    # Task names are the keys of the ERP's task ids: unique within the project.
    unique: list[TaskSpec] = []
    seen: set[str] = set()
    for t in out:
        name = f"{t.phase}: {t.name}" if counts[t.name] > 1 else t.name
        while name in seen:
            name = f"{name}'"
        seen.add(name)
        unique.append(TaskSpec(name, t.phase, t.effort_hours, t.unit_price))
    return tuple(unique)


def list_price(deal: Deal) -> Decimal:
    """The project's default hourly rate: line prices weighted by quantity."""
    priced = [x for x in deal.lines.values() if x.unit_price is not None]
    weight = sum((x.quantity or Decimal(1) for x in priced), Decimal(0))
    if not priced or weight == 0:
        return Decimal("0.00")
    total = sum(((x.quantity or Decimal(1)) * (x.unit_price or 0) for x in priced), Decimal(0))
    return (total / weight).quantize(CENT)


def project_spec(deal: Deal, saga: Saga, ref: Reference) -> ProjectSpec:
    opp = _opportunity(deal)
    method = INVOICE_METHODS.get(opp.billing_type)
    if method is None:
        raise DealError(
            "billing_type_unknown",
            f"billing type {opp.billing_type!r} has no invoice method; set the opportunity's "
            f"billing type to one of {', '.join(sorted(INVOICE_METHODS))}",
        )
    return ProjectSpec(
        key=saga.correlation_id,
        name=opp.name,
        customer_id=int(_learned(saga, "erp_customer_id", "erp_customer")),
        invoice_method=method,
        currency=opp.currency,
        list_price=list_price(deal),
        tasks=tasks(deal, ref),
    )


def _milestones(deal: Deal, opp: Opportunity) -> tuple[MilestoneSpec, ...]:
    out = []
    for m in deal.all_milestones():
        amount = m.amount
        if amount is None and m.percent is not None and opp.amount is not None:
            amount = (opp.amount * m.percent / 100).quantize(CENT)
        out.append(MilestoneSpec(m.name, m.due, amount))
    return tuple(out)


def psa_spec(deal: Deal, saga: Saga, ref: Reference) -> PsaProjectSpec:
    opp = _opportunity(deal)
    code = _learned(saga, "project_code", "erp_project")
    placeholders: list[str] = []
    for line in deal.service_lines():
        service = ref.service_line(line)
        template = ref.template(service.template if service else None)
        for role in template.placeholders if template else ():
            name = ref.role_name(role)
            if name not in placeholders:
                placeholders.append(name)
    sow = f", SOW {opp.sow_reference}" if opp.sow_reference else ""
    return PsaProjectSpec(
        identifier=psa_identifier(code),
        name=f"{code} {opp.name}"[:255],
        erp_project_code=code,
        description=f"Closed-won deal {opp.name} (CRM {opp.crm_id}{sow}).",
        tasks=tasks(deal, ref),
        milestones=_milestones(deal, opp),
        members=(Member(opp.project_manager, PM_ROLE),) if opp.project_manager else (),
        placeholders=tuple(placeholders) or PLACEHOLDERS,
    )


def writeback_spec(deal: Deal, saga: Saga, ref: Reference) -> CrmWriteBack:
    opp = _opportunity(deal)
    return CrmWriteBack(
        opportunity_id=opp.crm_id,
        account_id=opp.crm_account_id,
        erp_customer_id=saga.learned.get("erp_customer_id"),
        project_code=saga.learned.get("project_code"),
        psa_project_url=saga.learned.get("psa_url"),
        sync_status=PROVISIONED,
        sync_error=None,
    )


def notice_spec(deal: Deal, reason: str, message: str) -> CrmWriteBack | None:
    """The CRM status of a deal parked on an exception (None without an opportunity)."""
    if deal.opportunity is None:
        return None
    return CrmWriteBack(
        opportunity_id=deal.opportunity.crm_id,
        sync_status=f"exception: {reason}",
        sync_error=message[:2000],
    )


BUILDERS: dict[str, Callable[[Deal, Saga, Reference], object]] = {
    "erp_customer": customer_spec,
    "erp_project": project_spec,
    "psa_project": psa_spec,
    "crm_writeback": writeback_spec,
}


def payload(step: str, deal: Deal, saga: Saga, ref: Reference) -> str:
    """The command payload of `step` as JSON; DealError if the deal cannot provide it."""
    return to_json(BUILDERS[step](deal, saga, ref))
