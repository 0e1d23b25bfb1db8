"""Business rules a closed-won deal must pass before anything is created for it.

Each rule says what is wrong and what to fix, in words the deal's owner can act on in the
CRM (or, for reference data, in the reference file). The rules are declared in RULES, in the
order the problems are reported; the first problem's reason names the exception.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from streams.deals.assembly import Deal
from streams.deals.model import LegalEntity
from streams.deals.reference import Reference

# Billing type -> how the ERP invoices the project.
INVOICE_METHODS = {
    "time_and_materials": "timesheet",
    "fixed_fee": "effort",
    "milestone": "progress",
    "retainer": "manual",
}


@dataclass(frozen=True)
class Problem:
    reason: str  # a stable code, e.g. legal_entity_missing
    message: str  # what is wrong and what to fix


@dataclass(frozen=True)
class Facts:
    """What the rules look at: the deal and what the reference data says about it."""

    deal: Deal
    ref: Reference
    today: date

    @property
    def country(self) -> str | None:
        customer = self.ref.customer(
            self.deal.opportunity.customer_id if self.deal.opportunity else None
        )
        return customer.billing_country if customer else None

    def legal_entity(self) -> LegalEntity | None:
        opp = self.deal.opportunity
        return self.ref.legal_entity(self.country, opp.delivery_region if opp else None)


Rule = Callable[[Facts], Problem | None]


def closed_won(f: Facts) -> Problem | None:
    opp = f.deal.opportunity
    if opp is None:
        return Problem("deal_deleted", "the opportunity was deleted in the CRM; restore it")
    if not opp.closed_won:
        return Problem(
            "deal_reopened",
            f"the opportunity is in stage {opp.stage!r}, no longer closed-won; close it as won "
            "again to provision it",
        )
    return None


def customer_present(f: Facts) -> Problem | None:
    opp = f.deal.opportunity
    if opp is None:
        return None
    if not opp.customer_id:
        return Problem(
            "customer_missing", "the opportunity has no account; set its account in the CRM"
        )
    if f.ref.customer(opp.customer_id) is None:
        return Problem(
            "customer_missing",
            f"account {opp.crm_account_id or opp.customer_id} is not known as a customer; check "
            "that the account exists in the CRM and is captured",
        )
    return None


def legal_entity_found(f: Facts) -> Problem | None:
    opp = f.deal.opportunity
    if opp is None or f.legal_entity() is not None:
        return None
    return Problem(
        "legal_entity_missing",
        f"no legal entity for billing country {f.country or '(none)'} or delivery region "
        f"{opp.delivery_region or '(none)'}; set the account's billing country or the "
        "opportunity's delivery region to one a legal entity serves",
    )


def tax_code_found(f: Facts) -> Problem | None:
    if f.deal.opportunity is None or f.ref.customer(f.deal.opportunity.customer_id) is None:
        return None  # reported as customer_missing
    if f.ref.tax_code(f.country, f.today) is not None:
        return None
    return Problem(
        "tax_code_missing",
        f"no tax code valid today for jurisdiction {f.country or '(no billing country)'}; set "
        "the account's billing country, or add a tax code for it in the ERP",
    )


def currency_allowed(f: Facts) -> Problem | None:
    opp = f.deal.opportunity
    entity = f.legal_entity()
    if opp is None or entity is None:
        return None
    allowed = f.ref.currencies(entity)
    if opp.currency in allowed:
        return None
    return Problem(
        "currency_not_allowed",
        f"currency {opp.currency} is not allowed for legal entity {entity.key} ({entity.name}); "
        f"change the opportunity's currency to one of {', '.join(sorted(allowed))}",
    )


def billing_type_known(f: Facts) -> Problem | None:
    opp = f.deal.opportunity
    if opp is None or opp.billing_type in INVOICE_METHODS:
        return None
    return Problem(
        "billing_type_unknown",
        f"billing type {opp.billing_type!r} has no invoice method; set the opportunity's billing "
        f"type to one of {', '.join(sorted(INVOICE_METHODS))}",
    )


def templates_found(f: Facts) -> Problem | None:
    lines = f.deal.service_lines()
    if f.deal.opportunity is None:
        return None
    if not lines:
        return Problem(
            "no_service_lines",
            "the opportunity sells no service line; add line items (or service lines) in the CRM",
        )
    missing = []
    for code in lines:
        service = f.ref.service_line(code)
        if service is None or not service.active or f.ref.template(service.template) is None:
            missing.append(code)
    if not missing:
        return None
    return Problem(
        "template_missing",
        f"no project template for service line(s) {', '.join(missing)}; use a service line "
        "that has one, or add its template to the reference file (`pssync reference load`)",
    )


def project_manager_known(f: Facts) -> Problem | None:
    """Named, and known when a directory of people is published (canonical.resource). Without
    one, the PSA checks the manager when it adds them to the project: an unknown one gets the
    psa_project step rejected, which parks the deal naming that step."""
    opp = f.deal.opportunity
    if opp is None:
        return None
    if not opp.project_manager:
        return Problem(
            "project_manager_missing",
            "the opportunity names no project manager; set the project manager's e-mail",
        )
    if f.ref.knows_people() and f.ref.person(opp.project_manager) is None:
        return Problem(
            "project_manager_unknown",
            f"project manager {opp.project_manager} is not a known, active person; use the "
            "e-mail of a project manager the PSA knows",
        )
    return None


RULES: tuple[Rule, ...] = (
    closed_won,
    customer_present,
    legal_entity_found,
    tax_code_found,
    currency_allowed,
    billing_type_known,
    templates_found,
    project_manager_known,
)


def validate(deal: Deal, ref: Reference, today: date) -> list[Problem]:
    facts = Facts(deal, ref, today)
    return [p for rule in RULES if (p := rule(facts)) is not None]


def summary(problems: list[Problem]) -> str:
    return "; ".join(p.message for p in problems)
