"""The invoice stage: the ERP's invoices -> canonical invoice, billing_event, revenue_schedule
-> the deal's CRM opportunity and PSA project (saga commands).

Three hops, each keyed by what it keeps state about, in one stage on four topics:

1. raw `account_invoice` / `account_invoice_line` changes -> `invoice.changes`, keyed by the
   canonical invoice id, so a header and its lines meet on one partition (a line's delete
   names only the line: `invoice-line-owner` remembers its invoice);
2. `invoice.changes` -> the invoice assembled (`invoice-assembly`, streams/invoices/model.py)
   -> canonical invoice and billing events, and per project it bills a fact on
   `invoice.facts`, keyed by the project code; lines find their project through the ERP's
   project works, timesheet lines or invoiced progress, and canonical.project (views,
   streams/invoices/sources.py);
3. `invoice.facts` -> the project's ledger (`invoice-ledger`) -> the canonical revenue
   schedule, and `crm_invoice_status` / `psa_financials` commands to the command stages when
   what the PSA shows would change, and for the CRM also when an invoice is posted, paid or
   cancelled (a replayed change leaves the ledger as it is and issues nothing; the adapters
   write only what differs).

pssync's own write-backs come back as CDC of the CRM opportunity (fields the opportunity's
mapping does not read, so its canonical event equals the deal's state: an echo the deal
stage drops) and of Redmine's custom values (no route reads project custom values); nothing
they change reaches the ERP's invoice tables, so they cannot loop.

Per batch: records first (flushed), then the tables, flushed with the producer before the
offsets are committed. A 1 s timer looks again at posted invoices with lines whose project
was not known yet (the views follow their topics on a thread and may be a moment behind).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import Message

from connectors.ports import CrmInvoiceStatus, PsaProjectFinancials, to_json
from schemas import contracts
from schemas.registry import Registry
from schemas.serde import Decoder, Encoder
from streams.agents.batching import StageRunner, bytes_topic
from streams.agents.fanout import attach
from streams.agents.owned import Owned, every
from streams.changes import parse
from streams.deals.records import Encoders
from streams.dlq import send_to_dlq
from streams.errors import BadEventError
from streams.invoices import records
from streams.invoices.model import (
    COUNTED,
    HEADER_FIELDS,
    LINE_FIELDS,
    Fact,
    Invoice,
    Ledger,
    Part,
    apply_fact,
    changed_at,
    invoice_key,
    line_key,
    merge_header,
    merge_line,
    pick,
    statuses,
    summarize,
)
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
    row_id_aliases,
    timesheet_work_of,
    work_aliases,
    work_of,
)
from streams.mappings.envelope import correlation_id as flow_id
from streams.metrics import metrics
from streams.output import Output
from streams.settings import Settings
from streams.topology import (
    INVOICED,
    INVOICED_PROGRESS_TABLE,
    TIMESHEET_LINE_TABLE,
    TIMESHEET_WORK_TABLE,
    WORK_TABLE,
    Topology,
    erp_raw,
)
from tables.codec import decode, encode
from tables.invoices import InvoiceTables
from tables.views import View, ViewReader

log = logging.getLogger(__name__)
STAGE = "invoice"
HEADER, LINE = "header", "line"
# The write-back steps (streams/agents/commands.py TARGETS): target -> step.
STEPS = {"crm": "crm_invoice_status", "psa": "psa_financials"}


@dataclass
class Batch:
    """What one batch (or timer tick) changed, written together at its end."""

    owners: dict[str, tuple[int, str]] = field(default_factory=dict)
    invoices: dict[str, Invoice] = field(default_factory=dict)
    ledgers: dict[str, Ledger] = field(default_factory=dict)
    dirty_invoices: set[str] = field(default_factory=set)
    dirty_ledgers: set[str] = field(default_factory=set)


class InvoiceStage:
    def __init__(
        self,
        settings: Settings,
        topology: Topology,
        output: Output,
        registry: Registry,
        tables: InvoiceTables,
        lookups: Lookups,
        reader: ViewReader | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.output = output
        self.registry = registry
        self.tables = tables
        self.lookups = lookups
        self.reader = reader
        self.clock = clock
        self.raw = {
            erp_raw(settings, "account_invoice"): HEADER,
            erp_raw(settings, "account_invoice_line"): LINE,
        }
        self.topics = {*self.raw, topology.invoice_changes, topology.invoice_facts}
        self.encoders = Encoders(registry.register)
        self.canonical: dict[str, Encoder] = {}
        self.lock = asyncio.Lock()
        # Counted invoices with a line of unknown project: key -> (partition, look until).
        # In memory, rebuilt from the table whenever the assignment moves.
        self.pending: dict[str, tuple[int, float]] = {}
        self._assignment: frozenset[int] | None = None

    async def prepare(self) -> None:
        if self.reader is not None:
            self.reader.start()
        for target in STEPS:
            await asyncio.to_thread(
                self.encoders.register, self.topology.commands(target), "command"
            )
        for entity in INVOICED:
            await asyncio.to_thread(self._encoder, entity)
        waited = 0.0
        for view in self.lookups.views:
            while not await view.wait_ready(timeout=30):
                waited += 30
                log.warning("invoice stage: view %s not caught up after %.0fs", view.topic, waited)

    def _encoder(self, entity: str) -> Encoder:
        enc = self.canonical.get(entity)
        if enc is None:
            topic = self.topology.canonical(entity)
            enc = Encoder(self.registry.register, f"{topic}-value", contracts.schema_str(entity))
            enc.schema_id  # noqa: B018 - register now, not in the middle of a batch
            self.canonical[entity] = enc
        return enc

    # -- batches ----------------------------------------------------------------------------

    async def process(self, messages: Sequence[Message]) -> None:
        m = metrics()
        seen: Counter[str] = Counter()
        async with self.lock:
            now = self.clock()
            batch = Batch()
            for msg in messages:
                seen[msg.topic] += 1
                try:
                    kind = self.raw.get(msg.topic)
                    if kind is not None:
                        self._raw(batch, msg, kind)
                    elif msg.topic == self.topology.invoice_changes:
                        self._change(batch, msg)
                    else:
                        self._fact(batch, msg)
                except Exception as exc:  # noqa: BLE001 - poison must never stop the line
                    log.warning(
                        "invoice: %s/%s@%s to DLQ: %s", msg.topic, msg.partition, msg.offset, exc
                    )
                    send_to_dlq(self.output, self.topology.dlq(STAGE), STAGE, msg, exc)
                    m.dlq.labels(STAGE, type(exc).__name__).inc()
            self._settle(batch, now)
            await self._finish(batch)
        for topic, n in seen.items():
            m.events_in.labels(STAGE, topic).inc(n)
        m.batch_size.labels(STAGE).observe(len(messages))

    async def tick(self, owned: frozenset[int]) -> None:
        """Look again at counted invoices whose lines' projects were unknown."""
        if owned == self._assignment and not self.pending:
            return
        async with self.lock:
            if owned != self._assignment:
                self._rescan(owned)
            batch = Batch()
            now = self.clock()
            for key, (partition, until) in list(self.pending.items()):
                invoice = self.tables.invoice(key) if partition in owned else None
                if invoice is None:
                    self.pending.pop(key, None)
                    continue
                if now > until:
                    metrics().dropped.labels(STAGE, "invoice_line", "unknown_project").inc()
                    self.pending.pop(key, None)
                    batch.invoices[key] = dataclasses.replace(invoice, look_until=None)
                    continue
                batch.invoices[key] = invoice
                batch.dirty_invoices.add(key)
            self._settle(batch, now, recheck=True)
            await self._finish(batch)
        metrics().invoices_unresolved.set(len(self.pending))

    def _rescan(self, owned: frozenset[int]) -> None:
        """Pending invoices of the owned partitions, from the table: a restarted worker or a
        new owner would otherwise never look at them again (their input is committed)."""
        self._assignment = owned
        self.pending.clear()
        for invoice in self.tables.invoices():
            if invoice.partition in owned and invoice.look_until is not None:
                self.pending[invoice.key] = (invoice.partition, invoice.look_until)

    def _resolve(self, invoice: Invoice) -> records.Resolved:
        resolved: records.Resolved = {}
        for line_id, row in invoice.billed_lines():
            code = self.lookups.project_code(line_id, row)
            resolved[line_id] = self.lookups.project(code) if code else None
        return resolved

    def _settle(self, batch: Batch, now: float, recheck: bool = False) -> None:
        for key in sorted(batch.dirty_invoices):
            self._publish_invoice(batch, key, now, recheck)
        for code in sorted(batch.dirty_ledgers):
            self._publish_ledger(batch, code, now)

    async def _finish(self, batch: Batch) -> None:
        await self.output.flush()
        self.tables.write(
            ((p, line, inv) for line, (p, inv) in batch.owners.items()),
            batch.invoices.values(),
            batch.ledgers.values(),
        )

    # -- hop 1: raw changes, keyed by invoice ---------------------------------------------------

    def _raw(self, batch: Batch, msg: Message, kind: str) -> None:
        change = parse(msg.key, msg.value, msg.topic)
        if change is None or change.tombstone:
            return  # the delete event before a tombstone carried the change
        if kind == HEADER:
            invoice = change.key
            row = pick(change.after, HEADER_FIELDS)
        else:
            row = pick(change.after, LINE_FIELDS)
            line = line_key(change.key)
            owner = (change.after or change.before or {}).get("invoice")
            if owner is not None:
                if self._owner(batch, line) != invoice_key(owner):
                    batch.owners[line] = (msg.partition, invoice_key(owner))
                invoice = str(owner)
            else:
                held = self._owner(batch, line)
                if held is None:
                    metrics().dropped.labels(STAGE, "line", "unknown_invoice").inc()
                    return
                invoice = held.rsplit(":", 1)[-1]
        value = {
            "kind": kind,
            "id": change.key,
            "seq": change.sequence,
            "at": change.committed_at_ms / 1000,
            "row": row,
            "position": change.position,
        }
        self.output.send(
            self.topology.invoice_changes,
            invoice_key(invoice).encode(),
            json.dumps(value, sort_keys=True, default=str).encode(),
        )

    def _owner(self, batch: Batch, line: str) -> str | None:
        held = batch.owners.get(line)
        return held[1] if held else self.tables.owner(line)

    # -- hop 2: invoices ------------------------------------------------------------------------

    def _change(self, batch: Batch, msg: Message) -> None:
        if msg.key is None or msg.value is None:
            raise BadEventError("invoice change without key or value; the stage writes both")
        key = msg.key.decode()
        value = json.loads(msg.value)
        try:
            part = Part(
                int(value["seq"]), float(value["at"]), value.get("row"), str(value["position"])
            )
            kind, row_id = str(value["kind"]), str(value["id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BadEventError(f"invoice change lacks {exc}: not written by this stage") from exc
        invoice = self._invoice(batch, key, msg.partition)
        if kind == HEADER:
            updated = merge_header(invoice, part)
        else:
            updated = merge_line(invoice, row_id, part)
        if updated is not invoice:
            batch.invoices[key] = updated
            batch.dirty_invoices.add(key)

    def _invoice(self, batch: Batch, key: str, partition: int) -> Invoice:
        return batch.invoices.get(key) or self.tables.invoice(key) or Invoice(key, partition)

    def _publish_invoice(self, batch: Batch, key: str, now: float, recheck: bool) -> None:
        invoice = batch.invoices[key]
        if not invoice.customer_invoice():
            return  # a supplier invoice, or lines whose header has not come yet
        resolved = self._resolve(invoice)
        until = invoice.look_until
        if invoice.status() in COUNTED and None in resolved.values():
            if not recheck or until is None:  # a change of the invoice starts a new wait
                until = now + self.settings.invoice_project_wait
            self.pending[key] = (invoice.partition, until)
        else:
            until = None
            self.pending.pop(key, None)
        emitted = dict(invoice.emitted)
        data = records.invoice_data(invoice, resolved)
        signature = records.signature(data)
        if emitted.get("invoice") != signature:
            self._send("invoice", key, records.invoice_record(invoice, resolved, data, now))
            for event_key, record in records.billing_events(invoice, resolved, now):
                self._send("billing_event", event_key, record)
            emitted["invoice"] = signature
        facts = records.facts(invoice, resolved)
        for code in emitted:
            if code != "invoice" and code not in facts:
                facts[code] = records.detached(invoice, code, resolved)
        for code, fact in sorted(facts.items()):
            same = dataclasses.replace(fact, version=0, changed_at=0.0, placed=0)
            fact_signature = records.signature(encode(same))
            if emitted.get(code) != fact_signature:
                self.output.send(
                    self.topology.invoice_facts,
                    code.encode(),
                    json.dumps(encode(fact), sort_keys=True).encode(),
                )
                emitted[code] = fact_signature
        if emitted != invoice.emitted or until != invoice.look_until:
            batch.invoices[key] = dataclasses.replace(invoice, emitted=emitted, look_until=until)

    def _send(self, entity: str, key: str, record: dict[str, Any]) -> None:
        self.output.send(
            self.topology.canonical(entity), key.encode(), self._encoder(entity).encode(record)
        )
        metrics().events_out.labels(STAGE, entity).inc()

    # -- hop 3: project ledgers -----------------------------------------------------------------

    def _fact(self, batch: Batch, msg: Message) -> None:
        if msg.key is None or msg.value is None:
            raise BadEventError("invoice fact without key or value; the stage writes both")
        code = msg.key.decode()
        fact = decode(Fact, json.loads(msg.value))
        ledger = batch.ledgers.get(code) or self.tables.ledger(code) or Ledger(code, msg.partition)
        updated = apply_fact(ledger, fact)
        if updated is not ledger:
            batch.ledgers[code] = updated
            batch.dirty_ledgers.add(code)
        else:
            metrics().dropped.labels(STAGE, "fact", "not_newer").inc()

    def _publish_ledger(self, batch: Batch, code: str, now: float) -> None:
        ledger = batch.ledgers[code]
        ref = self.lookups.project(code)
        if ref is None:
            log.warning("invoice: project %s left canonical.project; nothing written back", code)
            return
        summary = summarize(ledger, ref.currency)
        at = changed_at(ledger)
        # Grows with every fact the ledger takes (each invoice's version only grows).
        version = sum(f.version for f in ledger.invoices.values())
        sent = dict(ledger.sent)
        revenue = records.revenue_record(ledger, ref, summary, version, at, now)
        revenue_signature = records.signature(
            {k: v for k, v in revenue["data"].items() if k != "last_modified_at"}
        )
        if revenue_signature != ledger.revenue:
            self._send("revenue_schedule", code, revenue)
        specs: dict[str, Any] = {
            "psa": PsaProjectFinancials(
                erp_project_code=code,
                invoiced_to_date=summary.invoiced_to_date,
                recognized_revenue=summary.recognized_revenue,
                changed_at=at,
            )
        }
        if ref.crm_opportunity is not None:
            specs["crm"] = CrmInvoiceStatus(
                opportunity_id=ref.crm_opportunity,
                project_code=code,
                invoiced_to_date=summary.invoiced_to_date,
                currency=summary.currency,
                last_invoice_number=summary.last_invoice_number,
                last_invoice_status=summary.last_invoice_status,
                payment_status=summary.payment_status,
                changed_at=at,
            )
        untouched = summary.invoices == 0 and summary.last_invoice_number is None
        # The CRM hears of every posted, paid or cancelled invoice, even one that changes none
        # of its values (the adapter then writes nothing): its result is the invoice's "CRM
        # updated" for the monitor. The PSA shows amounts only.
        seen = json.dumps(sorted(statuses(ledger)))
        for target, spec in specs.items():
            values = to_json(dataclasses.replace(spec, changed_at=0.0))
            if target == "crm":
                values += seen
            if target not in sent and untouched:
                continue  # only drafts so far: the applications have nothing to show yet
            if sent.get(target) != values:
                self._command(ref, target, spec, f"{values}@{version}", now)
                sent[target] = values
        batch.ledgers[code] = dataclasses.replace(ledger, sent=sent, revenue=revenue_signature)

    def _command(self, ref: ProjectRef, target: str, spec: Any, identity: str, now: float) -> None:
        step = STEPS[target]
        cid = ref.correlation_id or flow_id(ref.code)
        saga_key = ref.opportunity_id or ref.code
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        record = {
            # From the values and the ledger's version: a write-back re-issued from the same
            # state (a replay) has the same id; the same values later on, a new one.
            "command_id": f"{cid}:{step}:{digest}",
            "correlation_id": cid,
            "saga_key": saga_key,
            "step": step,
            "target": target,
            "attempt": 1,
            "payload": to_json(spec),
            "issued_at": datetime.fromtimestamp(now, UTC),
        }
        topic = self.topology.commands(target)
        self.output.send(
            topic, saga_key.encode(), self.encoders.encoder(topic, "command").encode(record)
        )
        metrics().events_out.labels(STAGE, step).inc()


def open_lookups(settings: Settings, topology: Topology, registry: Registry) -> Lookups:
    decoder = Decoder(registry.schema_by_id)
    works: View[Work] = View(erp_raw(settings, WORK_TABLE), raw_row, work_of, work_aliases)
    projects: View[ProjectRef] = View(topology.canonical("project"), decoder.decode, project_of)

    def billed(table: str) -> View[Billed]:
        return View(erp_raw(settings, table), raw_row, billed_of, billed_aliases)

    timesheet_works: View[str] = View(
        erp_raw(settings, TIMESHEET_WORK_TABLE), raw_row, timesheet_work_of, row_id_aliases
    )
    # How a line finds its work besides the work's own invoice line (effort invoicing).
    vias = (
        Via("timesheet", billed(TIMESHEET_LINE_TABLE), (timesheet_works,)),
        Via("progress", billed(INVOICED_PROGRESS_TABLE)),
    )
    return Lookups(works, projects, vias)


def register(
    app: faust.App,
    runners: dict[str, StageRunner],
    settings: Settings,
    topology: Topology,
    output: Output,
    registry: Registry,
    tables: InvoiceTables,
) -> InvoiceStage:
    lookups = open_lookups(settings, topology, registry)
    reader = ViewReader(settings, lookups.views)
    stage = InvoiceStage(settings, topology, output, registry, tables, lookups, reader)
    topic = bytes_topic(app, *sorted(stage.topics))
    attach(app, runners, topic, STAGE, stage, settings)

    every(
        app,
        "recheck_unresolved_invoices",
        1.0,
        lambda: topology.invoice_changes,
        Owned(),
        stage.tick,
    )
    reader.stop_on_shutdown(app)
    return stage
