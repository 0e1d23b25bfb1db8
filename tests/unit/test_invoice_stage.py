"""The invoice stage's three hops in process, against a simple model of what the CRM shows.

ERP changes of a few invoices (created, posted, paid, cancelled; lines edited) are delivered
to the stage as Kafka would: per row in order, across rows in any interleaving, in batches
of any size, with redeliveries; what the stage sends to its own topics is delivered back the
same way. At the end the newest CRM write-back of the deal says what the model says, no
write-back was issued twice, and delivering everything again sends nothing.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.ports import CrmInvoiceStatus, from_json
from schemas import saga
from schemas.serde import Decoder
from streams.agents.invoices import InvoiceStage
from streams.invoices.model import Invoice, Ledger, cents
from streams.invoices.sources import (
    Billed,
    Lookups,
    ProjectRef,
    Via,
    Work,
    billed_aliases,
    billed_of,
    project_of,
    raw_row,
    work_aliases,
    work_of,
)
from streams.settings import Settings
from streams.topology import topology
from tables.codec import decode, encode
from tables.views import View

SETTINGS = Settings.from_env({"PSSYNC_TOPIC_NAMESPACE": "u", "PSSYNC_ERP_TOPIC_PREFIX": "erp"})
TOPO = topology(SETTINGS)
CODE, OPP = "PRJ-00007", "006S"
CID = "6f1c9a52-4d3e-5b8a-9c7e-2f4d8b1a6e30"


@dataclass
class Msg:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int = 0
    offset: int = 0
    headers: Any = None


class Out:
    """Collects what the stage sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, key: bytes, value: bytes, **_: Any) -> None:
        self.sent.append((topic, key, value))

    async def flush(self) -> None:
        return None


class Registry:
    def __init__(self) -> None:
        self.schemas: dict[int, dict[str, Any]] = {}
        self.ids: dict[str, int] = {}

    def register(self, subject: str, schema: str) -> int:
        if schema not in self.ids:
            self.ids[schema] = len(self.ids) + 1
            self.schemas[self.ids[schema]] = json.loads(schema)
        return self.ids[schema]

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        return self.schemas[schema_id]


class Tables:
    """The stage's tables as plain dicts, through the same JSON encoding."""

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}
        self.assembly: dict[str, dict[str, Any]] = {}
        self.ledgers: dict[str, dict[str, Any]] = {}

    def owner(self, line: str) -> str | None:
        return self.owners.get(line)

    def invoice(self, key: str) -> Invoice | None:
        raw = self.assembly.get(key)
        return None if raw is None else decode(Invoice, raw)

    def invoices(self) -> Iterator[Invoice]:
        for raw in list(self.assembly.values()):
            yield decode(Invoice, raw)

    def ledger(self, code: str) -> Ledger | None:
        raw = self.ledgers.get(code)
        return None if raw is None else decode(Ledger, raw)

    def write(self, owners: Any, invoices: Any, ledgers: Any) -> None:
        for _, line, inv in owners:
            self.owners[line] = inv
        for i in invoices:
            self.assembly[i.key] = encode(i)
        for g in ledgers:
            self.ledgers[g.project] = encode(g)


def _lookups(lines: list[int], vias: tuple[Via, ...] = ()) -> Lookups:
    """Each line bills a task of the project: the task names it (effort invoicing), or with
    `vias` the rows of those views will (the tasks name no line)."""
    works: View[Work] = View("w", raw_row, work_of, work_aliases)
    projects: View[ProjectRef] = View("p", json.loads, project_of)
    change = {"op": "r", "after": {"id": 1, "type": "project", "number": CODE}}
    works.apply("1", json.dumps(change).encode())
    for n, line in enumerate(lines):
        row = {"id": 100 + n, "type": "task", "parent": 1, "invoice_line": line}
        if vias:
            row["invoice_line"] = None
        works.apply(str(100 + n), json.dumps({"op": "r", "after": row}).encode())
    project = {
        "envelope": {"correlation_id": CID},
        "data": {
            "project_code": CODE,
            "opportunity_id": f"crm:opportunity:{OPP}",
            "customer_id": "crm:account:001S",
            "legal_entity_id": "LE-DE",
            "currency": "EUR",
            "billing_type": "fixed_fee",
        },
    }
    projects.apply(CODE, json.dumps(project).encode())
    for view in (works, projects, *(v for via in vias for v in via.views)):
        view.ready.set()
    return Lookups(works, projects, vias)


STATES = ("draft", "posted", "paid", "cancelled")
# One invoice's life: its states in order, and its line amounts (edited while a draft).
invoice_lives = st.lists(
    st.tuples(
        st.lists(st.sampled_from(STATES), min_size=1, max_size=3),
        # (amount, deleted later): a deleted line's delete event names only the line
        st.lists(
            st.tuples(st.integers(min_value=1, max_value=900), st.booleans()),
            min_size=1,
            max_size=2,
        ),
    ),
    min_size=1,
    max_size=3,
)


def _raw(table: str, row_id: int, row: dict[str, Any] | None, lsn: int) -> Msg:
    value = {
        "op": "u" if row is not None else "d",
        "before": {"id": row_id} if row is None else None,
        "after": row,
        "source": {
            "lsn": lsn,
            "ts_ms": 1_700_000_000_000 + lsn,
            "schema": "public",
            "table": table,
        },
    }
    return Msg(
        f"erp.public.{table}", json.dumps({"id": row_id}).encode(), json.dumps(value).encode()
    )


@settings(max_examples=150, deadline=None)
@given(invoice_lives, st.randoms(use_true_random=False))
def test_the_crm_ends_where_the_model_does_whatever_the_delivery(
    lives: list[tuple[list[str], list[tuple[int, bool]]]], rnd: random.Random
) -> None:
    lsn = iter(range(1, 10_000))
    streams: list[list[Msg]] = []  # per row: its changes in order
    model: dict[int, tuple[str, Decimal, str]] = {}
    lines: list[int] = []
    for n, (states, amounts) in enumerate(lives):
        inv = n + 1
        number = f"INV{inv:03d}"
        header = []
        for state in states:
            row = {"id": inv, "type": "out", "state": state, "invoice_date": 20_000 + inv}
            row["number"] = number if state != "draft" else None
            header.append(_raw("account_invoice", inv, row, next(lsn)))
        streams.append(header)
        for m, (amount, deleted) in enumerate(amounts):
            line = 10 * inv + m
            lines.append(line)
            row = {"id": line, "invoice": inv, "type": "line", "quantity": 1.0}
            changes = [
                _raw("account_invoice_line", line, {**row, "unit_price": str(amount)}, next(lsn))
            ]
            if deleted:
                changes.append(_raw("account_invoice_line", line, None, next(lsn)))
            streams.append(changes)
        kept = [Decimal(a) for a, deleted in amounts if not deleted]
        total = cents(sum(kept, Decimal(0)))
        model[inv] = (states[-1], total, number)

    stage = InvoiceStage(
        SETTINGS,
        TOPO,
        Out(),
        Registry(),
        Tables(),
        _lookups(lines),  # type: ignore[arg-type]
    )
    asyncio.run(stage.prepare())
    out: Out = stage.output  # type: ignore[assignment]

    def deliver(messages: list[Msg]) -> None:
        while messages:
            size = rnd.randint(1, len(messages))
            asyncio.run(stage.process(messages[:size]))  # type: ignore[arg-type]
            messages = messages[size:]

    def interleave(per_row: list[list[Msg]]) -> list[Msg]:
        queues = [list(q) for q in per_row if q]
        merged = []
        while queues:
            q = rnd.choice(queues)
            merged.append(q.pop(0))
            if not q:
                queues.remove(q)
        return merged

    def pump(raw: list[Msg]) -> None:
        deliver(interleave(raw) if raw else [])
        seen = 0
        while seen < len(out.sent):  # the stage's own topics, back to it, until quiet
            mine = [
                Msg(t, k, v)
                for t, k, v in out.sent[seen:]
                if t in (TOPO.invoice_changes, TOPO.invoice_facts)
            ]
            seen = len(out.sent)
            by_key: dict[bytes, list[Msg]] = {}
            for m in mine:
                by_key.setdefault(m.key or b"", []).append(m)
            deliver(interleave(list(by_key.values())))

    pump(streams)
    # Redelivered: a prefix of every row's changes again, as after a crash before a commit.
    pump([s[: rnd.randint(0, len(s))] for s in streams])

    decoder = Decoder(stage.registry.schema_by_id, json.loads(saga.schema_str(saga.COMMAND)))
    commands = [decoder.decode(v) for t, _, v in out.sent if t == TOPO.commands("crm")]
    crm = [from_json(CrmInvoiceStatus, c["payload"]) for c in commands]
    counted = {i: v for i, v in model.items() if v[0] in ("posted", "paid") and v[1] != 0}
    invoiced = sum((a for _, a, _ in counted.values()), Decimal("0.00"))
    if crm:
        last = crm[-1]
        assert last.invoiced_to_date == invoiced
        assert last.opportunity_id == OPP
        paid = sum(1 for s, _, _ in counted.values() if s == "paid")
        assert last.payment_status == (
            "none"
            if not counted
            else "paid"
            if paid == len(counted)
            else "partially_paid"
            if paid
            else "unpaid"
        )
    # Every command is new (same values and invoices, same id: none was issued twice).
    assert len({c["command_id"] for c in commands}) == len(commands)
    if counted:
        assert crm, "a posted invoice must reach the CRM"

    before = len(out.sent)
    pump(streams)  # everything again: nothing new
    assert [t for t, _, _ in out.sent[before:] if t == TOPO.commands("crm")] == []


def _progress(row_id: int, work: int, line: int | None) -> bytes:
    row = {"id": row_id, "work": work, "invoice_line": line, "progress": 0.5}
    return json.dumps({"op": "u" if line else "c", "after": row}).encode()


@settings(max_examples=100, deadline=None)
@given(invoice_lives, st.randoms(use_true_random=False))
def test_lines_invoiced_on_progress_find_their_project_whichever_comes_first(
    lives: list[tuple[list[str], list[tuple[int, bool]]]], rnd: random.Random
) -> None:
    """Invoiced on progress: each line bills a task through the work's invoiced progress
    (stored unlinked, then linked to the line), which the view may take before or after the
    stage sees the invoice, its posting or its lines; the timer looks again at posted
    invoices it could not place, also after the worker restarted between batches (its
    in-memory list of them is gone). The CRM ends with every counted invoice's amount."""
    lsn = iter(range(1, 10_000))
    raw: list[list[Msg]] = []  # per row: its changes in order
    views: list[list[bytes]] = []  # per invoiced progress row: its changes in order
    model: dict[int, tuple[str, Decimal]] = {}
    lines: list[int] = []
    for n, (states, amounts) in enumerate(lives):
        inv = n + 1
        header = []
        for state in states:
            row = {"id": inv, "type": "out", "state": state, "invoice_date": 20_000 + inv}
            row["number"] = f"INV{inv:03d}" if state != "draft" else None
            header.append(_raw("account_invoice", inv, row, next(lsn)))
        raw.append(header)
        for m, (amount, _) in enumerate(amounts):
            line = 10 * inv + m
            task = 100 + len(lines)
            lines.append(line)
            row = {"id": line, "invoice": inv, "type": "line", "quantity": 1.0}
            row["unit_price"] = str(amount)
            raw.append([_raw("account_invoice_line", line, row, next(lsn))])
            views.append([_progress(500 + line, task, None), _progress(500 + line, task, line)])
        model[inv] = (states[-1], cents(sum((Decimal(a) for a, _ in amounts), Decimal(0))))

    progress: View[Billed] = View("ip", raw_row, billed_of, billed_aliases)
    lookups = _lookups(lines, (Via("progress", progress),))
    out, registry, tables = Out(), Registry(), Tables()

    def start() -> InvoiceStage:
        started = InvoiceStage(
            SETTINGS,
            TOPO,
            out,  # type: ignore[arg-type]
            registry,  # type: ignore[arg-type]
            tables,  # type: ignore[arg-type]
            lookups,
            clock=lambda: 0.0,  # the wait for a line's project never runs out here
        )
        asyncio.run(started.prepare())
        return started

    stage = start()
    own: list[Msg] = []  # the stage's own topics, delivered back in the order sent
    seen = 0

    def collect() -> None:
        nonlocal seen
        own.extend(
            Msg(t, k, v)
            for t, k, v in out.sent[seen:]
            if t in (TOPO.invoice_changes, TOPO.invoice_facts)
        )
        seen = len(out.sent)

    queues: list[list[Any]] = [list(q) for q in raw + views]
    while any(queues) or own:
        choices = [q for q in queues if q] + ([own] if own else [])
        q = rnd.choice(choices)
        if q is own:
            size = rnd.randint(1, len(own))
            batch, own[:size] = own[:size], []
            asyncio.run(stage.process(batch))  # type: ignore[arg-type]
        elif isinstance(q[0], Msg):
            asyncio.run(stage.process([q.pop(0)]))  # type: ignore[arg-type]
        else:
            value = q.pop(0)
            progress.apply(json.dumps({"id": json.loads(value)["after"]["id"]}), value)
        if rnd.random() < 0.3:
            asyncio.run(stage.tick(frozenset({0})))
        if rnd.random() < 0.1:
            stage = start()  # a restart after the batch was committed
        collect()
    for _ in range(3):  # the timer's later ticks, each result delivered back
        asyncio.run(stage.tick(frozenset({0})))
        collect()
        while own:
            batch, own[:] = list(own), []
            asyncio.run(stage.process(batch))  # type: ignore[arg-type]
            collect()

    assert stage.pending == {}
    decoder = Decoder(stage.registry.schema_by_id, json.loads(saga.schema_str(saga.COMMAND)))
    commands = [decoder.decode(v) for t, _, v in out.sent if t == TOPO.commands("crm")]
    crm = [from_json(CrmInvoiceStatus, c["payload"]) for c in commands]
    counted = [a for state, a in model.values() if state in ("posted", "paid") and a != 0]
    if counted:
        assert crm, "a posted invoice must reach the CRM"
        assert crm[-1].invoiced_to_date == sum(counted, Decimal("0.00"))
        assert crm[-1].opportunity_id == OPP
    assert len({c["command_id"] for c in commands}) == len(commands)
