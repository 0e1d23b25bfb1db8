"""The canonical invoice, billing_event and revenue_schedule records, and the facts per project.

Event ids derive from the entity, its key and its version, so a replayed change republishes
identical events. Every record carries the deal's correlation id when the invoice bills a
project of a deal (the first project of its lines otherwise the invoice's own flow id), the
ERP's ids, when the ERP committed the change (envelope.source.committed_at) and when pssync
published it (envelope.emitted_at).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from streams.ids import name_id
from streams.invoices.model import (
    ZERO,
    Fact,
    Invoice,
    Ledger,
    Summary,
    cents,
    line_amount,
    line_key,
    money,
    revenue_by_period,
)
from streams.invoices.sources import ProjectRef
from streams.mappings.envelope import correlation_id as flow_id
from streams.mappings.values import day

_NS = uuid.UUID("8d3f6a2e-1c4b-5f7a-9e2d-4b6c8a1f3e57")
UNKNOWN_CURRENCY = "XXX"  # ISO 4217 "no currency": the invoice bills no known project
# Project billing type -> what made its invoice lines billable.
KINDS = {
    "time_and_materials": "time",
    "fixed_fee": "fixed_fee_installment",
    "milestone": "milestone",
    "retainer": "retainer",
}
BILLING_STATUS = {"draft": "pending", "open": "invoiced", "paid": "invoiced", "void": "cancelled"}

Resolved = dict[str, ProjectRef | None]  # line id -> the project it bills (None: unknown)


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def envelope(
    entity: str,
    key: str,
    version: int,
    cid: str,
    source_entity: str,
    source_key: str,
    position: str,
    committed_at: float,
    now: float,
    connector: str = "erp",
) -> dict[str, Any]:
    return {
        "event_id": name_id(_NS, f"{entity}|{key}|{version}"),
        "correlation_id": cid,
        "causation_id": f"{source_entity}:{source_key}@{position}" if position else None,
        "source": {
            "system": "erp",
            "connector": connector,
            "entity": source_entity,
            "key": source_key,
            "position": position or str(version),
            "sequence": version,
            "committed_at": _at(committed_at),
        },
        "op": "update",
        "entity_version": version,
        "emitted_at": _at(now),
    }


def first_project(invoice: Invoice, resolved: Resolved) -> ProjectRef | None:
    for line_id, _ in invoice.billed_lines():
        ref = resolved.get(line_id)
        if ref is not None:
            return ref
    return None


def correlation(invoice: Invoice, resolved: Resolved) -> str:
    ref = first_project(invoice, resolved)
    return ref.correlation_id if ref and ref.correlation_id else flow_id(invoice.key)


def _header(invoice: Invoice) -> dict[str, Any]:
    return (invoice.header.row if invoice.header else None) or {}


def invoice_date(invoice: Invoice) -> date | None:
    return day(_header(invoice).get("invoice_date"), "invoice_date")


def invoice_data(invoice: Invoice, resolved: Resolved) -> dict[str, Any]:
    """The canonical Invoice (schemas/avro/invoice.avsc), without timestamps."""
    row = _header(invoice)
    ref = first_project(invoice, resolved)
    lines = invoice.billed_lines()
    untaxed = cents(sum((line_amount(r) for _, r in lines), ZERO))
    status = invoice.status()
    # Tryton fills the amount caches when it posts; before that the lines are the invoice.
    cached = row.get("total_amount_cache")
    total = untaxed if cached is None else cents(money(cached))
    tax = row.get("tax_amount_cache")
    party, company = row.get("party"), row.get("company")
    return {
        "invoice_id": invoice.key,
        "erp_id": str(row.get("id") or invoice.key.rsplit(":", 1)[-1]),
        "invoice_number": row.get("number") or None,
        "customer_id": ref.customer_id if ref and ref.customer_id else f"erp:party:{party}",
        "project_id": ref.code if ref else None,
        "legal_entity_id": (
            ref.legal_entity_id if ref and ref.legal_entity_id else f"erp:company:{company}"
        ),
        "status": status,
        "invoice_date": invoice_date(invoice),
        "due_date": None,
        "amount": total,
        "tax_amount": None if tax is None else cents(money(tax)),
        "amount_due": ZERO if status in ("paid", "void") else total,
        "currency": ref.currency if ref and ref.currency else UNKNOWN_CURRENCY,
        "paid_date": None,
        "lines": [
            {
                "line_id": line_id,
                "description": str(r.get("description") or ""),
                "amount": line_amount(r),
                "billing_event_id": line_key(line_id) if resolved.get(line_id) else None,
                "tax_code": None,
                "project_id": ref_code(resolved.get(line_id)),
            }
            for line_id, r in lines
        ],
    }


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def ref_code(ref: ProjectRef | None) -> str | None:
    return ref.code if ref else None


def signature(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))


def invoice_record(
    invoice: Invoice, resolved: Resolved, data: dict[str, Any], now: float
) -> dict[str, Any]:
    header = invoice.header
    return {
        "envelope": envelope(
            "invoice",
            invoice.key,
            invoice.version,
            correlation(invoice, resolved),
            "public.account_invoice",
            data["erp_id"],
            header.position if header else "",
            invoice.changed_at,
            now,
        ),
        "data": {**data, "last_modified_at": _at(invoice.changed_at)},
    }


def billing_events(
    invoice: Invoice, resolved: Resolved, now: float
) -> list[tuple[str, dict[str, Any]]]:
    """One billing event per invoice line that bills a known project: (key, record)."""
    out = []
    status = BILLING_STATUS.get(invoice.status(), "unknown")
    when = invoice_date(invoice) or _at(invoice.changed_at).date()
    for line_id, row in invoice.billed_lines():
        ref = resolved.get(line_id)
        if ref is None:
            continue
        amount = line_amount(row)
        key = line_key(line_id)
        part = invoice.lines[line_id]
        out.append(
            (
                key,
                {
                    "envelope": envelope(
                        "billing_event",
                        key,
                        invoice.version,
                        ref.correlation_id or flow_id(invoice.key),
                        "public.account_invoice_line",
                        line_id,
                        part.position,
                        invoice.changed_at,
                        now,
                    ),
                    "data": {
                        "billing_event_id": key,
                        "project_id": ref.code,
                        "contract_id": None,
                        "kind": "credit" if amount < 0 else KINDS.get(ref.billing_type, "unknown"),
                        "source_ref": None,
                        "description": str(row.get("description") or ""),
                        "event_date": when,
                        "amount": amount,
                        "currency": ref.currency or UNKNOWN_CURRENCY,
                        "status": status,
                        "invoice_id": invoice.key,
                        "last_modified_at": _at(invoice.changed_at),
                    },
                },
            )
        )
    return out


def facts(invoice: Invoice, resolved: Resolved) -> dict[str, Fact]:
    """Project code -> what the invoice says about it now (net amount of its lines there)."""
    row = _header(invoice)
    amounts: dict[str, Decimal] = {}
    refs: dict[str, ProjectRef] = {}
    for line_id, line in invoice.billed_lines():
        ref = resolved.get(line_id)
        if ref is None:
            continue
        refs[ref.code] = ref
        amounts[ref.code] = amounts.get(ref.code, ZERO) + line_amount(line)
    return {
        code: Fact(
            invoice=invoice.key,
            project=code,
            version=invoice.version,
            placed=placed(resolved),
            erp_id=str(row.get("id") or ""),
            number=row.get("number") or None,
            status=invoice.status(),
            erp_state=invoice.erp_state(),
            amount=cents(amount),
            currency=refs[code].currency,
            invoice_date=invoice_date(invoice),
            changed_at=invoice.changed_at,
            correlation_id=refs[code].correlation_id or flow_id(invoice.key),
            opportunity_id=refs[code].opportunity_id,
            move=_text(row.get("move")),
            cancel_move=_text(row.get("cancel_move")),
        )
        for code, amount in amounts.items()
    }


def placed(resolved: Resolved) -> int:
    """How many lines have a known project."""
    return sum(1 for ref in resolved.values() if ref is not None)


def detached(invoice: Invoice, code: str, resolved: Resolved) -> Fact:
    """The invoice no longer bills project `code` (its lines moved or went): amount 0."""
    row = _header(invoice)
    return Fact(
        invoice=invoice.key,
        project=code,
        version=invoice.version,
        placed=placed(resolved),
        erp_id=str(row.get("id") or ""),
        number=row.get("number") or None,
        status=invoice.status(),
        erp_state=invoice.erp_state(),
        amount=ZERO,
        currency="",
        invoice_date=invoice_date(invoice),
        changed_at=invoice.changed_at,
        correlation_id=flow_id(invoice.key),
        move=_text(row.get("move")),
        cancel_move=_text(row.get("cancel_move")),
    )


def revenue_record(
    ledger: Ledger, ref: ProjectRef, summary: Summary, version: int, at: float, now: float
) -> dict[str, Any]:
    """The project's revenue schedule: recognized as billed, one line per invoiced month."""
    lines = []
    for period, amount in revenue_by_period(ledger):
        start = date.fromisoformat(f"{period}-01")
        end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
        lines.append(
            {
                "period": period,
                "period_start": start,
                "period_end": date.fromordinal(end.toordinal() - 1),
                "amount": amount,
                "is_recognized": True,
                "recognized_at": None,
                "journal_ref": None,
            }
        )
    budget = money(ref.budget) if ref.budget is not None else summary.recognized_revenue
    return {
        "envelope": envelope(
            "revenue_schedule",
            ref.code,
            version,
            ref.correlation_id or flow_id(ref.code),
            "public.account_invoice",
            ref.code,
            "",
            at,
            now,
        ),
        "data": {
            "revenue_schedule_id": ref.code,
            "project_id": ref.code,
            "contract_id": None,
            "legal_entity_id": ref.legal_entity_id,
            "revenue_rule": "as_billed",
            "total_amount": cents(max(budget, summary.recognized_revenue)),
            "recognized_amount": summary.recognized_revenue,
            "currency": ref.currency or summary.currency or UNKNOWN_CURRENCY,
            "lines": lines,
            "last_modified_at": _at(at),
        },
    }
