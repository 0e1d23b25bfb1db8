"""Invoices and project ledgers against a simple model: arrival order, replays, status moves."""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.invoices import records
from streams.invoices.model import (
    COUNTED,
    Fact,
    Invoice,
    Ledger,
    Part,
    apply_fact,
    line_amount,
    merge_header,
    merge_line,
    revenue_by_period,
    summarize,
)
from streams.invoices.sources import ProjectRef
from tables.codec import decode, encode

STATES = ("draft", "validated", "posted", "paid", "cancelled")
ERP_TO_STATUS = {
    "draft": "draft",
    "validated": "draft",
    "posted": "open",
    "paid": "paid",
    "cancelled": "void",
}
PROJECT = ProjectRef(
    code="PRJ-00001",
    erp_project_id="1",
    opportunity_id="crm:opportunity:006X",
    customer_id="crm:account:001X",
    legal_entity_id="LE-DE",
    correlation_id="6f1c9a52-4d3e-5b8a-9c7e-2f4d8b1a6e30",
    currency="EUR",
    billing_type="fixed_fee",
    budget="30000.00",
)

# One invoice's life: a sequence of (state, amount) versions, the newest last.
lives = st.lists(
    st.tuples(
        st.sampled_from(STATES),
        st.decimals(min_value=-500, max_value=5000, places=2, allow_nan=False),
    ),
    min_size=1,
    max_size=4,
)


def _fact(invoice: int, version: int, state: str, amount: Decimal) -> Fact:
    return Fact(
        invoice=f"erp:invoice:{invoice}",
        project=PROJECT.code,
        version=version,
        erp_id=str(invoice),
        number=f"INV{invoice:04d}" if state not in ("draft", "validated") else None,
        status=ERP_TO_STATUS[state],
        erp_state=state,
        amount=amount,
        currency="EUR",
        invoice_date=date(2026, 1 + invoice % 12, 1),
        changed_at=float(version),
        correlation_id=PROJECT.correlation_id,
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(lives, min_size=1, max_size=6),
    st.randoms(use_true_random=False),
    st.integers(min_value=0, max_value=3),
)
def test_ledger_matches_the_model_whatever_the_order_and_replays(
    invoices: list[list[tuple[str, Decimal]]], rnd: object, replays: int
) -> None:
    facts = [
        _fact(n, version, state, amount)
        for n, life in enumerate(invoices)
        for version, (state, amount) in enumerate(life, start=1)
    ]
    arrivals = facts + [facts[i % len(facts)] for i in range(replays)]
    rnd.shuffle(arrivals)  # type: ignore[attr-defined]
    ledger = Ledger(PROJECT.code, 0)
    for fact in arrivals:
        ledger = apply_fact(ledger, fact)
        ledger = decode(Ledger, encode(ledger))  # through the table, as the stage does

    # The model: every invoice at its newest version; counted when posted or paid.
    newest = {n: life[-1] for n, life in enumerate(invoices)}
    counted = {n: (s, a) for n, (s, a) in newest.items() if s in ("posted", "paid") and a != 0}
    summary = summarize(ledger, "EUR")
    assert summary.invoiced_to_date == sum((a for _, a in counted.values()), Decimal("0.00"))
    assert summary.recognized_revenue == summary.invoiced_to_date
    assert summary.invoices == len(counted)
    paid = sum(1 for s, _ in counted.values() if s == "paid")
    expected = (
        "none"
        if not counted
        else "paid"
        if paid == len(counted)
        else "partially_paid"
        if paid
        else "unpaid"
    )
    assert summary.payment_status == expected
    numbered = {
        n: s for n, (s, a) in newest.items() if s in ("posted", "paid", "cancelled") and a != 0
    }
    if numbered:
        last = max(numbered, key=lambda n: (date(2026, 1 + n % 12, 1), n))
        assert summary.last_invoice_number == f"INV{last:04d}"
        assert summary.last_invoice_status == numbered[last]
    else:
        assert summary.last_invoice_number is None
    assert sum((a for _, a in revenue_by_period(ledger)), Decimal("0.00")) == (
        summary.recognized_revenue
    )


@settings(max_examples=100, deadline=None)
@given(lives, st.randoms(use_true_random=False))
def test_a_replayed_fact_changes_nothing(life: list[tuple[str, Decimal]], rnd: object) -> None:
    facts = [_fact(1, v, s, a) for v, (s, a) in enumerate(life, start=1)]
    ledger = Ledger(PROJECT.code, 0)
    for fact in facts:
        ledger = apply_fact(ledger, fact)
    for fact in facts:
        assert apply_fact(ledger, fact) is ledger


# -- the invoice assembled from header and lines ---------------------------------------------

line_rows = st.dictionaries(
    st.sampled_from(["11", "12", "13"]),
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(min_value=1, max_value=20)),  # None: deleted
            st.decimals(min_value=0, max_value=300, places=2, allow_nan=False),
        ),
        min_size=1,
        max_size=3,
    ),
    min_size=1,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(STATES), min_size=1, max_size=4),
    line_rows,
    st.randoms(use_true_random=False),
    st.integers(min_value=0, max_value=4),
)
def test_assembly_is_the_newest_row_of_each_part_in_any_order(
    states: list[str],
    lines: dict[str, list[tuple[int | None, Decimal]]],
    rnd: object,
    replays: int,
) -> None:
    seq = iter(range(1, 1000))
    changes: list[tuple[str, str, Part]] = []
    for state in states:
        row = {"id": 7, "state": state, "type": "out", "number": None, "invoice_date": 20454}
        changes.append(("header", "7", Part(next(seq), 0.0, row, "")))
    for line_id, versions in lines.items():
        for qty, price in versions:
            row = (
                None
                if qty is None
                else {
                    "id": int(line_id),
                    "invoice": 7,
                    "type": "line",
                    "quantity": float(qty),
                    "unit_price": str(price),
                    "description": f"line {line_id}",
                }
            )
            changes.append(("line", line_id, Part(next(seq), 0.0, row, "")))
    arrivals = changes + [changes[i % len(changes)] for i in range(replays)]
    rnd.shuffle(arrivals)  # type: ignore[attr-defined]
    invoice = Invoice("erp:invoice:7", 0)
    for kind, key, part in arrivals:
        invoice = (
            merge_header(invoice, part) if kind == "header" else merge_line(invoice, key, part)
        )
        invoice = decode(Invoice, encode(invoice))

    assert invoice.status() == ERP_TO_STATUS[states[-1]]
    alive = {k: v[-1] for k, v in lines.items() if v[-1][0] is not None}
    assert {k for k, _ in invoice.billed_lines()} == set(alive)
    resolved: records.Resolved = {k: PROJECT for k in alive}
    facts = records.facts(invoice, resolved)
    expected = sum(
        (line_amount({"quantity": q, "unit_price": p}) for q, p in alive.values()),
        Decimal("0.00"),
    )
    if alive:
        assert facts[PROJECT.code].amount == expected
        assert facts[PROJECT.code].status == ERP_TO_STATUS[states[-1]]
    else:
        assert facts == {}
    data = records.invoice_data(invoice, resolved)
    assert data["project_id"] == (PROJECT.code if alive else None)
    assert data["amount_due"] == (
        0 if ERP_TO_STATUS[states[-1]] in ("paid", "void") else data["amount"]
    )


def test_records_carry_the_deal_and_the_project() -> None:
    row = {"id": 7, "state": "posted", "type": "out", "number": "INV1", "invoice_date": 20454}
    line = {"id": 11, "invoice": 7, "type": "line", "quantity": 3.0, "unit_price": "100"}
    invoice = merge_line(
        merge_header(Invoice("erp:invoice:7", 0), Part(5, 1.5, row, "0/5")),
        "11",
        Part(4, 1.0, line, "0/4"),
    )
    resolved: records.Resolved = {"11": PROJECT}
    data = records.invoice_data(invoice, resolved)
    record = records.invoice_record(invoice, resolved, data, now=2.0)
    assert record["envelope"]["correlation_id"] == PROJECT.correlation_id
    assert record["envelope"]["entity_version"] == 9  # 5 (header) + 4 (line)
    assert data["status"] == "open" and data["amount"] == Decimal("300.00")
    assert data["lines"][0]["project_id"] == PROJECT.code
    [(key, event)] = records.billing_events(invoice, resolved, now=2.0)
    assert key == "erp:invoice_line:11"
    assert event["data"]["status"] == "invoiced"
    assert event["data"]["kind"] == "fixed_fee_installment"
    fact = records.facts(invoice, resolved)[PROJECT.code]
    ledger = apply_fact(Ledger(PROJECT.code, 0), fact)
    summary = summarize(ledger, "EUR")
    assert summary.last_invoice_status == "posted"
    revenue = records.revenue_record(ledger, PROJECT, summary, 5, 1.5, 2.0)
    assert revenue["data"]["recognized_amount"] == Decimal("300.00")
    assert revenue["data"]["lines"][0]["period"] == "2026-01"
    assert "open" in COUNTED
    # The canonical contracts accept them.
    from schemas import contracts
    from schemas.serde import Encoder

    for entity, rec in (
        ("invoice", record),
        ("billing_event", event),
        ("revenue_schedule", revenue),
    ):
        Encoder(lambda _s, _schema: 1, f"{entity}-value", contracts.schema_str(entity)).encode(rec)


def test_a_line_moved_to_another_project_detaches_the_first() -> None:
    other = dataclasses.replace(PROJECT, code="PRJ-00002")
    row = {"id": 7, "state": "posted", "type": "out", "number": "INV1", "invoice_date": 20454}
    line = {"id": 11, "invoice": 7, "type": "line", "quantity": 1.0, "unit_price": "50"}
    invoice = merge_line(
        merge_header(Invoice("erp:invoice:7", 0), Part(5, 1.5, row, "")),
        "11",
        Part(4, 1.0, line, ""),
    )
    assert set(records.facts(invoice, {"11": PROJECT})) == {PROJECT.code}
    assert set(records.facts(invoice, {"11": other})) == {"PRJ-00002"}
    assert records.detached(invoice, PROJECT.code, {"11": other}).amount == 0


def test_at_one_version_a_fact_with_more_lines_placed_is_newer() -> None:
    """A posted invoice's second line finds its project later (its timesheet or progress row
    came after the invoice): the invoice did not change, the fact it makes now does."""
    row = {"id": 7, "state": "posted", "type": "out", "number": "INV1", "invoice_date": 20454}
    invoice = merge_header(Invoice("erp:invoice:7", 0), Part(5, 1.5, row, ""))
    for n in (11, 12):
        line = {"id": n, "invoice": 7, "type": "line", "quantity": 1.0, "unit_price": "50"}
        invoice = merge_line(invoice, str(n), Part(n, 1.0, line, ""))
    half = records.facts(invoice, {"11": PROJECT, "12": None})[PROJECT.code]
    whole = records.facts(invoice, {"11": PROJECT, "12": PROJECT})[PROJECT.code]
    assert half.version == whole.version
    ledger = apply_fact(apply_fact(Ledger(PROJECT.code, 0), half), whole)
    assert summarize(ledger, "EUR").invoiced_to_date == Decimal("100.00")
    assert apply_fact(ledger, half) is ledger  # redelivered: the older fact changes nothing


def test_a_refunding_credit_note_is_the_cancellation_not_a_second_credit() -> None:
    a = dataclasses.replace(_fact(1, 3, "paid", Decimal("300.00")), move="71")
    b = dataclasses.replace(
        _fact(2, 4, "cancelled", Decimal("100.00")), move="72", cancel_move="73"
    )
    c = dataclasses.replace(
        _fact(3, 5, "paid", Decimal("-100.00")), move="73", invoice_date=date(2026, 12, 1)
    )
    ledger = Ledger(PROJECT.code, 0)
    for fact in (c, a, b):
        ledger = apply_fact(ledger, fact)
    summary = summarize(ledger, "EUR")
    assert summary.invoiced_to_date == Decimal("300.00")
    assert (summary.last_invoice_number, summary.last_invoice_status) == ("INV0002", "cancelled")
    assert summary.payment_status == "paid"
    # A credit note on its own (no invoice cancelled by it) reduces what was invoiced.
    alone = Ledger(PROJECT.code, 0)
    for fact in (a, c):
        alone = apply_fact(alone, fact)
    assert summarize(alone, "EUR").invoiced_to_date == Decimal("200.00")
