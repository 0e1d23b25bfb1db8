"""Invoices as the ERP holds them, and what they add up to per project: the pure part.

An invoice is assembled from two captured tables, its header (account_invoice) and its lines
(account_invoice_line), each row kept at the newest source position seen for it, so the
assembled invoice is the same whatever order, and however often, the changes arrive.

Each invoice line bills one project: the project work (project or task) whose
`invoice_line` points at it, which is how Tryton's project invoicing links them (a task
counts for the project above it); a credit note's line bills the project of the line it
credits (its `origin`, `account.invoice.line,<id>`). Per project an invoice becomes one
`Fact` (its net amount on that project, its status, number and date), and a project's
`Ledger` keeps the newest fact of every invoice that ever billed it.

Revenue recognition: as billed. A project's recognized revenue is the net (untaxed) amount
of its lines on posted or paid invoices, in the project currency; posting recognizes it,
cancelling a posted invoice reverses it, a credit note (negative lines) reduces it. Tryton
books no separate revenue journal for projects (no project_revenue postings are captured),
so the invoice is the revenue event; this equals time-and-materials recognition for
projects invoiced on timesheets, and is the conservative rule for fixed-fee and milestone
projects until percent-complete postings exist in the ERP. "Invoiced to date" is the same
net amount: tax belongs to the customer's invoice, not to the project.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

CENT = Decimal("0.01")
ZERO = Decimal("0.00")

# The columns read of each table (nothing else is kept in state).
HEADER_FIELDS = (
    "id",
    "number",
    "state",
    "type",
    "party",
    "company",
    "currency",
    "invoice_date",
    "untaxed_amount_cache",
    "tax_amount_cache",
    "total_amount_cache",
    "move",
    "cancel_move",
)
LINE_FIELDS = (
    "id",
    "invoice",
    "type",
    "quantity",
    "unit_price",
    "description",
    "product",
    "origin",
)

# Tryton's invoice states -> the canonical InvoiceStatus.
STATUS = {
    "draft": "draft",
    "validated": "draft",
    "posted": "open",
    "paid": "paid",
    "cancelled": "void",
}
COUNTED = frozenset({"open", "paid"})  # statuses whose amounts are invoiced and recognized


def invoice_key(erp_id: object) -> str:
    return f"erp:invoice:{erp_id}"


def line_key(erp_id: object) -> str:
    return f"erp:invoice_line:{erp_id}"


def money(value: Any) -> Decimal:
    """A NUMERIC column (Debezium: decimal as string) or a float quantity, as Decimal."""
    if value is None or value == "":
        return ZERO
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return ZERO


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Part:
    """One captured row at the newest source position seen for it."""

    seq: int  # the change's source position (LSN): newer changes have larger ones
    at: float  # when the source committed it, epoch seconds
    row: dict[str, Any] | None  # the columns read (HEADER_FIELDS / LINE_FIELDS); None: deleted
    position: str = ""  # the native position, for lineage


@dataclass(frozen=True)
class Invoice:
    """An invoice assembled from its header and lines, keyed by its canonical id."""

    key: str
    partition: int
    header: Part | None = None
    lines: dict[str, Part] = field(default_factory=dict)
    # What was last published: "invoice" -> signature, project code -> signature of its fact.
    emitted: dict[str, str] = field(default_factory=dict)
    # Counted with a billed line of unknown project: until when the stage looks again.
    look_until: float | None = None

    @property
    def version(self) -> int:
        """Grows with every change the invoice takes, whatever order they came in: the sum
        of its parts' source positions (a merge only ever raises one, or adds a part). The
        newest position alone would not do: a line's later change can arrive before the
        header's earlier one, and the header's then changes the invoice at the same maximum.
        """
        header = self.header.seq if self.header is not None else 0
        return header + sum(p.seq for p in self.lines.values())

    @property
    def changed_at(self) -> float:
        """Commit time of the newest change the invoice is made of."""
        parts = [*self.lines.values(), *([self.header] if self.header else [])]
        newest = max(parts, key=lambda p: p.seq, default=None)
        return newest.at if newest else 0.0

    def customer_invoice(self) -> bool:
        row = self.header.row if self.header else None
        return row is not None and row.get("type", "out") == "out"

    def status(self) -> str:
        row = (self.header.row if self.header else None) or {}
        return STATUS.get(str(row.get("state") or ""), "unknown")

    def erp_state(self) -> str:
        row = (self.header.row if self.header else None) or {}
        return str(row.get("state") or "unknown")

    def billed_lines(self) -> list[tuple[str, dict[str, Any]]]:
        """(line id, row) of the lines that bill something (not titles, comments)."""
        out = []
        for line_id, part in sorted(self.lines.items(), key=lambda kv: int_or(kv[0])):
            row = part.row
            if row is not None and row.get("type", "line") == "line":
                out.append((line_id, row))
        return out


def int_or(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (0, text)


def line_amount(row: dict[str, Any]) -> Decimal:
    """Net amount of a line: quantity x unit price, rounded to cents as Tryton rounds it."""
    return cents(money(row.get("quantity")) * money(row.get("unit_price")))


def merge_header(invoice: Invoice, part: Part) -> Invoice:
    """The invoice with its header at `part`, unless it already holds a newer change."""
    if invoice.header is not None and invoice.header.seq >= part.seq:
        return invoice
    return dataclasses.replace(invoice, header=part)


def merge_line(invoice: Invoice, line_id: str, part: Part) -> Invoice:
    held = invoice.lines.get(line_id)
    if held is not None and held.seq >= part.seq:
        return invoice
    return dataclasses.replace(invoice, lines={**invoice.lines, line_id: part})


def pick(row: dict[str, Any] | None, fields: tuple[str, ...]) -> dict[str, Any] | None:
    return None if row is None else {f: row.get(f) for f in fields}


# -- per project -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """What one invoice, at one version, says about one project."""

    invoice: str  # canonical invoice id
    project: str  # project code
    version: int  # the invoice's version (newest source position it is made of)
    erp_id: str
    number: str | None
    status: str  # canonical InvoiceStatus: draft, open, paid, void
    erp_state: str  # Tryton's state: draft, validated, posted, paid, cancelled
    amount: Decimal  # net amount of the invoice's lines on this project (0: none any more)
    currency: str
    invoice_date: date | None
    changed_at: float  # when the ERP committed the change that made this version
    correlation_id: str
    opportunity_id: str | None = None
    move: str | None = None  # the invoice's accounting move
    cancel_move: str | None = None  # the move that cancelled it (a refund's move, if any)
    # How many of the invoice's lines had a known project: at one version, a fact made once
    # more of its lines were placed (their works, timesheets or progress seen) is newer.
    placed: int = 0


@dataclass(frozen=True)
class Summary:
    """A project's invoicing as the CRM and the PSA are told it."""

    invoiced_to_date: Decimal
    recognized_revenue: Decimal
    currency: str
    last_invoice_number: str | None
    last_invoice_status: str | None  # Tryton's words: posted, paid, cancelled
    payment_status: str  # none, unpaid, partially_paid, paid
    invoices: int  # invoices counted (posted or paid)


@dataclass(frozen=True)
class Ledger:
    """Every invoice that billed a project, at its newest version; keyed by project code."""

    project: str
    partition: int
    invoices: dict[str, Fact] = field(default_factory=dict)
    # Write-back target -> the JSON of the values last sent there (sent again only on change).
    sent: dict[str, str] = field(default_factory=dict)
    revenue: str = ""  # signature of the revenue schedule last published


def apply_fact(ledger: Ledger, fact: Fact) -> Ledger:
    """The ledger with `fact`, unless it holds that invoice at the same or a newer version
    (at the same version, with as many of its lines placed or more)."""
    held = ledger.invoices.get(fact.invoice)
    if held is not None and (held.version, held.placed) >= (fact.version, fact.placed):
        return ledger
    return dataclasses.replace(ledger, invoices={**ledger.invoices, fact.invoice: fact})


def summarize(ledger: Ledger, currency: str) -> Summary:
    """What the CRM and the PSA show of a project's invoices.

    A posted invoice cancelled with a refunding credit note (Tryton's "credit with refund")
    is cancelled, and the credit note's move is the invoice's cancel move: that credit note
    is the cancellation itself, so it neither counts nor is the last invoice; a credit note
    issued on its own (partial credit) counts with its negative amount.
    """
    refunds = {f.cancel_move for f in ledger.invoices.values() if f.status == "void"}
    refunds.discard(None)
    facts = [f for f in ledger.invoices.values() if f.amount != ZERO and f.move not in refunds]
    counted = [f for f in facts if f.status in COUNTED]
    invoiced = cents(sum((f.amount for f in counted), ZERO))
    numbered = [f for f in facts if f.number and f.status in COUNTED | {"void"}]
    last = max(
        numbered,
        key=lambda f: (f.invoice_date or date.min, int_or(f.number or ""), f.number or ""),
        default=None,
    )
    paid = sum(1 for f in counted if f.status == "paid")
    if not counted:
        payment = "none"
    elif paid == len(counted):
        payment = "paid"
    elif paid:
        payment = "partially_paid"
    else:
        payment = "unpaid"
    return Summary(
        invoiced_to_date=invoiced,
        recognized_revenue=invoiced,
        currency=currency,
        last_invoice_number=last.number if last else None,
        last_invoice_status=last.erp_state if last else None,
        payment_status=payment,
        invoices=len(counted),
    )


def statuses(ledger: Ledger) -> list[tuple[str, str]]:
    """(invoice, status) of the invoices the CRM is told about: posted, paid or cancelled."""
    return sorted(
        (f.invoice, f.status)
        for f in ledger.invoices.values()
        if f.status in COUNTED | {"void"} and f.amount != ZERO
    )


def changed_at(ledger: Ledger) -> float:
    """When the newest invoice change the ledger holds was committed in the ERP."""
    return max((f.changed_at for f in ledger.invoices.values()), default=0.0)


def revenue_by_period(ledger: Ledger) -> list[tuple[str, Decimal]]:
    """Recognized revenue per accounting month (YYYY-MM of the invoice date), oldest first."""
    periods: dict[str, Decimal] = {}
    for f in ledger.invoices.values():
        if f.status in COUNTED and f.amount != ZERO and f.invoice_date is not None:
            period = f.invoice_date.strftime("%Y-%m")
            periods[period] = periods.get(period, ZERO) + f.amount
    return sorted((p, cents(a)) for p, a in periods.items())
