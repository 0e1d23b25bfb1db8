"""The deal stage: canonical deals -> assembled deals -> validation -> the saga's commands.

Reads, co-partitioned by the deal's canonical opportunity id (the saga key): canonical
opportunities, line items and billing milestones, saga results and saga control requests.
Looks up customers and reference data in views (tables/views.py). Writes saga commands,
business exceptions and CRM status notices, then its state (tables/deals.py), per batch:
records first, flushed, then the state, whose changelog is flushed before the offsets are
committed. A crash in between re-sends the same commands (same command ids) and never
loses one.

A timer judges closed-won deals whose late line items did not come in time, keeps the
metrics of open sagas, and checks deals parked on reference data again when it changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import faust
from faust.types import Message

from connectors.ports import CrmWriteBack, ErpAmendmentSpec, PsaAmendmentSpec, from_json, to_json
from connectors.psa.redmine import psa_identifier
from schemas import contracts
from schemas.registry import Registry
from schemas.serde import Decoder, Encoder
from streams.agents.batching import StageRunner, bytes_topic
from streams.agents.fanout import attach
from streams.agents.owned import Owned, every
from streams.agents.shared_decode import SharedDecoder
from streams.deals import amendments as amend
from streams.deals import canonical, plan
from streams.deals import saga as machine
from streams.deals.assembly import Deal, Signal, decide, fire, on_child, on_opportunity
from streams.deals.records import (
    CHANGE_ORDER,
    RETRY,
    Control,
    Encoders,
    change_order_exception,
    command_record,
    exception_record,
    outcome_of,
)
from streams.deals.reference import Reference
from streams.deals.saga import Effect, Issue, Park, Resolve, Saga, StepPassed
from streams.deals.sources import (
    CHILD_ADAPTERS,
    CHILDREN,
    OPPORTUNITY,
    VIEWS,
    Stamp,
    closed_won_of,
    opportunity_of,
    stamp_of,
)
from streams.deals.validation import Problem, validate
from streams.dlq import send_to_dlq
from streams.errors import BadEventError, DealError
from streams.mappings.envelope import correlation_id
from streams.metrics import metrics
from streams.output import Output
from streams.settings import Settings
from streams.topology import DERIVED, Topology
from tables.deals import DealTables
from tables.views import View, ViewReader

log = logging.getLogger(__name__)
# Seconds a closed-won change order waits for the rest of its CRM save (see
# DealStage._change_order_settles_at).
CHANGE_ORDER_SETTLE = 2.0
STAGE = "deal"
# How often the gauges of open sagas are recomputed from the tables (seconds).
GAUGE_EVERY = 15.0


@dataclass
class Work:
    """What one batch (or one timer tick) changed, written together at its end."""

    deals: dict[str, Deal] = field(default_factory=dict)
    sagas: dict[str, tuple[int, Saga]] = field(default_factory=dict)
    children: dict[str, tuple[int, str]] = field(default_factory=dict)
    untracked: int = 0  # opportunity events of deals that need no state yet
    dead_letters: int = 0

    def wrote(self) -> bool:
        """Whether anything was sent or changed: every send goes with a state change here,
        but dead letters."""
        return bool(self.deals or self.sagas or self.children or self.dead_letters)


class DealStage:
    def __init__(
        self,
        settings: Settings,
        topology: Topology,
        output: Output,
        registry: Registry,
        tables: DealTables,
        views: dict[str, View[Any]],
        reader: ViewReader | None = None,
        owns: Callable[[int], bool] = lambda _p: True,
        clock: Callable[[], float] = time.time,
        decoder: SharedDecoder | None = None,
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.output = output
        self.registry = registry
        self.tables = tables
        self.views = views
        self.reader = reader
        self.ref = Reference.of(views)
        self.owns = owns
        self.clock = clock
        # Shared with the sink, which decodes canonical opportunities in the same batches;
        # records from it are read, never changed.
        self.decoder = decoder or SharedDecoder.of(registry)
        self.encoders = Encoders(registry.register)
        self.registry = registry
        self.canonical_encoders: dict[str, Encoder] = {}
        self.opportunity_topic = topology.canonical(OPPORTUNITY)
        self.child_topics = {topology.canonical(e): e for e in CHILDREN}
        self.topics = {
            self.opportunity_topic,
            *self.child_topics,
            topology.results,
            topology.saga_control,
        }
        self.lock = asyncio.Lock()
        self.prepared = asyncio.Event()
        # Deals waiting for late line items (saga key -> wait_until) and sagas parked on
        # their own checks: in memory, rebuilt from the tables whenever the assignment moves.
        self.waiting: dict[str, float] = {}
        self.parked: set[str] = set()
        # Deals with change orders waiting for them to be provisioned (saga key -> judge at).
        self.amend_waiting: dict[str, float] = {}
        self._assignment: frozenset[int] | None = None
        self._view_versions: tuple[int, ...] = ()
        self._gauged_at = 0.0

    # -- start --------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Register the saga contracts and wait until every view has caught up."""
        if self.reader is not None:
            self.reader.start()
        subjects = [
            (self.topology.commands(target), "command")
            for target in sorted(set(machine.TARGETS.values()))
        ] + [(self.topology.exceptions, "exception")]
        for topic, schema in subjects:
            await asyncio.to_thread(self.encoders.register, topic, schema)
        for entity in DERIVED:
            await asyncio.to_thread(self._canonical_encoder, entity)
        waited = 0.0
        for name, view in self.views.items():
            while not await view.wait_ready(timeout=30):
                waited += 30
                log.warning(
                    "deal stage: view %s (%s) not caught up after %.0fs", name, view.topic, waited
                )
        self.prepared.set()
        log.info("deal stage ready: views %s", {n: len(v) for n, v in self.views.items()})

    # -- batches ------------------------------------------------------------------------

    async def process(self, messages: Sequence[Message]) -> None:
        m = metrics()
        seen: Counter[str] = Counter()
        async with self.lock:
            now = self.clock()
            work = Work()
            for msg in messages:
                seen[msg.topic] += 1
                try:
                    if msg.topic == self.opportunity_topic:
                        self._opportunity(work, msg, now)
                    elif msg.topic in self.child_topics:
                        self._child(work, msg, now)
                    elif msg.topic == self.topology.results:
                        self._result(work, msg, now)
                    else:
                        self._control(work, msg, now)
                except Exception as exc:  # noqa: BLE001 - poison must never stop the line
                    log.warning(
                        "deal: %s/%s@%s to DLQ: %s", msg.topic, msg.partition, msg.offset, exc
                    )
                    send_to_dlq(self.output, self.topology.dlq(STAGE), STAGE, msg, exc)
                    m.dlq.labels(STAGE, type(exc).__name__).inc()
                    work.dead_letters += 1
            await self._finish(work)
        if work.untracked:
            m.dropped.labels(STAGE, OPPORTUNITY, "not_closed_won").inc(work.untracked)
        for topic, n in seen.items():
            m.events_in.labels(STAGE, topic).inc(n)
        m.batch_size.labels(STAGE).observe(len(messages))

    async def _finish(self, work: Work) -> None:
        if not work.wrote():
            # Nothing to wait for. A flush would wait for whatever the other stages have in
            # flight on the shared producer, holding the lock (and this stage's batches).
            return
        await self.output.flush()
        self.tables.write(
            work.deals.values(),
            ((p, child, parent) for child, (p, parent) in work.children.items()),
            work.sagas.values(),
        )

    def _decode(self, msg: Message) -> dict[str, Any] | None:
        return None if msg.value is None else self.decoder.decode(msg)

    def _deal(self, work: Work, key: str, partition: int) -> Deal:
        return work.deals.get(key) or self.tables.deal(key) or Deal(key, partition)

    def _saga(self, work: Work, cid: str) -> Saga | None:
        held = work.sagas.get(cid)
        return held[1] if held else self.tables.saga(cid)

    def _opportunity(self, work: Work, msg: Message, now: float) -> None:
        if msg.key is None:
            raise BadEventError("canonical opportunity without a key; keys are canonical ids")
        key = msg.key.decode()
        record = self._decode(msg)
        held = work.deals.get(key) or self.tables.deal(key)
        if held is None and not closed_won_of(record):
            # A deal holds state from its closed-won event or its first line item on: before
            # that it cannot fire, and the closed-won event carries the whole opportunity.
            # Without state there is no order to keep either: a stale closed-won event would
            # have created the state when it first came.
            work.untracked += 1
            return
        opp = None if record is None else opportunity_of(key, record)
        stamp = Stamp(-1, 0.0) if record is None else stamp_of(record)
        deal = held or Deal(key, msg.partition)
        updated, changed = on_opportunity(
            deal, msg.partition, opp, stamp, now, self.settings.deal_line_wait
        )
        if updated != deal:
            self._after(work, updated, changed, now)

    def _child(self, work: Work, msg: Message, now: float) -> None:
        if msg.key is None:
            raise BadEventError("canonical line item or milestone without a key")
        key = msg.key.decode()
        record = self._decode(msg)
        entity = self.child_topics[msg.topic]
        child = CHILD_ADAPTERS[entity](key, record or {"envelope": {}, "data": None})
        parent = child.opportunity_id
        if parent is None:  # a delete names only itself
            held = work.children.get(key)
            parent = held[1] if held else self.tables.parent(key)
            if parent is None:
                return  # never joined a deal: nothing to remove
        elif work.children.get(key, (0, None))[1] != parent and self.tables.parent(key) != parent:
            work.children[key] = (msg.partition, parent)
        stamp = Stamp(-1, 0.0) if record is None else stamp_of(record)
        deal = self._deal(work, parent, msg.partition)
        updated, changed = on_child(deal, msg.partition, child, stamp)
        if updated != deal:
            self._after(work, updated, changed, now)

    def _after(self, work: Work, deal: Deal, changed: bool, now: float) -> None:
        """A deal's state moved: fire it, check it again, or let it wait."""
        opp = deal.opportunity
        known = opp is not None and self.ref.customer(opp.customer_id) is not None
        signal = decide(deal, now, known, changed)
        settle = self._change_order_settles_at(deal)
        if signal is Signal.FIRE and settle is not None and now < settle:
            signal = Signal.NONE  # the timer judges it again once settled
        if signal is Signal.FIRE:
            deal = fire(deal)
            work.deals[deal.key] = deal
            if opp is not None and opp.amends:
                self._forward_change_order(deal, opp.amends, now)
            elif self._saga(work, deal.correlation_id) is None:
                self._begin(work, deal, now)
        else:
            work.deals[deal.key] = deal
            if signal is Signal.CHANGED and opp is not None and opp.amends:
                self._forward_change_order(deal, opp.amends, now)  # a revised change order
            elif signal is Signal.CHANGED and opp is not None:
                held = self._saga(work, deal.correlation_id)
                if held is not None and held.status == machine.DONE:
                    self._amend(work, deal, now)  # a provisioned deal edited in the CRM
                elif held is not None:
                    saga, effects = machine.on_change(held, self._problems(deal, now), now)
                    self._apply(work, deal, saga, effects, now)
        if deal.waiting() and deal.wait_until is not None:
            self.waiting[deal.key] = min(deal.wait_until, settle or deal.wait_until)
        else:
            self.waiting.pop(deal.key, None)

    def _begin(self, work: Work, deal: Deal, now: float) -> None:
        saga, effects = machine.begin(
            deal.key,
            deal.correlation_id,
            self._problems(deal, now),
            now,
            deal.closed_won_at or now,
            (deal.closed_won_at or now) + self.settings.saga_deadline,
        )
        self._apply(work, deal, saga, effects, now)

    def _change_order_settles_at(self, deal: Deal) -> float | None:
        """When a closed-won change order may be applied: CHANGE_ORDER_SETTLE seconds after
        it was seen closed-won. The CRM saves a change order with its line items and
        milestones in one transaction, whose records reach this stage over three topics,
        possibly in different batches; applied at once, a milestone of the same save would
        come in late and become a second amendment."""
        opp = deal.opportunity
        if opp is None or not opp.amends or deal.fired or deal.wait_until is None:
            return None
        return deal.wait_until - self.settings.deal_line_wait + CHANGE_ORDER_SETTLE

    def _problems(self, deal: Deal, now: float) -> list[Problem]:
        return validate(deal, self.ref, datetime.fromtimestamp(now, UTC).date())

    def _result(self, work: Work, msg: Message, now: float) -> None:
        record = self._decode(msg)
        if record is None:
            return
        outcome = outcome_of(record)
        saga = self._saga(work, str(record.get("correlation_id")))
        if saga is None:
            metrics().dropped.labels(STAGE, "result", "unknown_saga").inc()
            return
        deal = self._deal(work, saga.key, msg.partition)
        if outcome.step in amend.STEPS:
            self._amendment_result(work, deal, saga, outcome.command_id, record, now)
            return
        updated, effects = machine.on_result(saga, outcome, now)
        if updated == saga:
            metrics().dropped.labels(STAGE, "result", "not_awaited").inc()
            return
        self._apply(work, deal, updated, effects, now)

    def _control(self, work: Work, msg: Message, now: float) -> None:
        if msg.key is None:
            raise BadEventError("saga control record without a key; the key is the saga key")
        key = msg.key.decode()
        control = Control.from_bytes(msg.value)
        if control.action == CHANGE_ORDER:
            self._change_order(work, key, msg.partition, control, now)
            return
        if control.action != RETRY:
            raise BadEventError(f"saga control action {control.action!r} is unknown; use retry")
        deal = self._deal(work, key, msg.partition)
        cid = deal.correlation_id or correlation_id(key)
        saga = self._saga(work, cid)
        if saga is None:
            return
        if control.step in amend.STEPS and deal.amendments is not None:
            state, again = amend.retry(deal.amendments, cid, now)
            self._amend_effects(work, deal, saga, state, again, now)
            return
        updated, effects = machine.on_retry(
            saga, control.step, control.attempt, self._problems(deal, now), now
        )
        if updated != saga:
            self._apply(work, deal, updated, effects, now)

    # -- effects ------------------------------------------------------------------------

    def _apply(self, work: Work, deal: Deal, saga: Saga, effects: list[Effect], now: float) -> None:
        todo = list(effects)
        while todo:
            effect = todo.pop(0)
            if isinstance(effect, Issue):
                try:
                    payload = plan.payload(effect.step, deal, saga, self.ref)
                except DealError as exc:
                    saga, more = machine.park_step(saga, effect, Problem(exc.reason, str(exc)), now)
                    todo = more + todo
                    continue
                self._command(saga, effect.step, effect.attempt, effect.command_id, payload, now)
            elif isinstance(effect, Park):
                self._exception(saga, deal, effect, effect_at=now)
                metrics().business_exceptions.labels(effect.reason, effect.step).inc()
                notice = plan.notice_spec(deal, effect.reason, effect.message)
                if notice is not None and effect.step != "crm_writeback":
                    cid = machine.notice_id(saga.correlation_id, effect.number)
                    self._command(saga, "crm_writeback", effect.number, cid, to_json(notice), now)
            elif isinstance(effect, Resolve):
                self._exception(saga, deal, effect, effect_at=now)
            elif isinstance(effect, StepPassed):
                for entity, key, record in canonical.events(deal, saga, effect.step, self.ref, now):
                    encoded = self._canonical_encoder(entity).encode(record)
                    self.output.send(self.topology.canonical(entity), key.encode(), encoded)
                    metrics().events_out.labels(STAGE, entity).inc()
                if effect.step == "psa_project" and saga.closed_won_at:
                    latency = max(0.0, effect.at - saga.closed_won_at)
                    metrics().closed_won_to_project.observe(latency)
        work.sagas[saga.correlation_id] = (deal.partition, saga)
        if saga.status == machine.DONE and any(
            isinstance(e, StepPassed) and e.step == machine.STEPS[-1] for e in effects
        ):
            # Provisioned: its baseline is set, and change orders waiting for it go on.
            self._amend(work, self._deal(work, deal.key, deal.partition), now)
        if saga.status == machine.PARKED and saga.step == machine.VALIDATE:
            self.parked.add(saga.correlation_id)
        else:
            self.parked.discard(saga.correlation_id)

    def _canonical_encoder(self, entity: str) -> Encoder:
        """The contract, project and task events the saga publishes (registers on first use)."""
        enc = self.canonical_encoders.get(entity)
        if enc is None:
            topic = self.topology.canonical(entity)
            enc = Encoder(self.registry.register, f"{topic}-value", contracts.schema_str(entity))
            enc.schema_id  # noqa: B018 - register now, not in the middle of a batch
            self.canonical_encoders[entity] = enc
        return enc

    def _command(
        self, saga: Saga, step: str, attempt: int, command_id: str, payload: str, now: float
    ) -> None:
        topic = self.topology.commands(machine.TARGETS[step])
        record = command_record(saga, step, attempt, command_id, payload, now)
        enc = self.encoders.encoder(topic, "command")
        self.output.send(topic, saga.key.encode(), enc.encode(record))
        metrics().events_out.labels(STAGE, f"command.{step}").inc()

    def _exception(self, saga: Saga, deal: Deal, exc: Park | Resolve, effect_at: float) -> None:
        topic = self.topology.exceptions
        if isinstance(exc, Park):
            record = exception_record(saga, deal, exc, raised_at=effect_at)
        else:
            record = exception_record(saga, deal, exc, exc.parked_at, resolved_at=effect_at)
        enc = self.encoders.encoder(topic, "exception")
        self.output.send(topic, saga.key.encode(), enc.encode(record))

    # -- change orders and amendments ----------------------------------------------------

    def _forward_change_order(self, deal: Deal, parent: str, now: float) -> None:
        """A closed-won change order goes to the deal it amends, on that deal's partition."""
        opp = deal.opportunity
        assert opp is not None
        order = amend.ChangeOrder(
            key=deal.key,
            crm_id=opp.crm_id,
            name=opp.name,
            revision=deal.revision,
            currency=opp.currency,
            amount=opp.amount,
            lines=tuple(sorted(deal.lines.values(), key=lambda x: x.key)),
            milestones=deal.all_milestones(),
            committed_at=deal.closed_won_at or now,
            received_at=now,
            wait_until=now + self.settings.change_order_wait,
        )
        control = Control(
            action=CHANGE_ORDER,
            step="change_order",
            attempt=deal.revision,
            requested_at=datetime.fromtimestamp(now, UTC).isoformat(),
            requested_by=deal.key,
            payload=to_json(order),
        )
        self.output.send(self.topology.saga_control, parent.encode(), control.to_bytes())
        metrics().events_out.labels(STAGE, "change_order").inc()

    def _change_order(
        self, work: Work, key: str, partition: int, control: Control, now: float
    ) -> None:
        try:
            order = from_json(amend.ChangeOrder, control.payload)
        except (ValueError, TypeError, KeyError) as exc:
            raise BadEventError(f"change order request for {key} is unreadable: {exc}") from exc
        deal = self._deal(work, key, partition)
        state = amend.receive(deal.amendments or amend.Amendments(), order)
        deal = dataclasses.replace(deal, amendments=state)
        work.deals[key] = deal
        self._amend(work, deal, now)

    def _baseline(self, deal: Deal, orders: dict[str, amend.ChangeOrder]) -> amend.Baseline:
        assert deal.opportunity is not None
        return amend.target(
            plan.tasks(deal, self.ref),
            deal.opportunity,
            tuple(sorted(deal.lines.values(), key=lambda x: x.key)),
            deal.all_milestones(),
            orders,
            self.ref,
        )

    def _amend(self, work: Work, deal: Deal, now: float) -> None:
        """Start the deal's next amendment, or judge change orders waiting for it."""
        cid = deal.correlation_id or correlation_id(deal.key)
        saga = self._saga(work, cid)
        state = deal.amendments or amend.Amendments()
        provisioned = (
            saga is not None and saga.status == machine.DONE and deal.opportunity is not None
        )
        try:
            if provisioned and state.baseline is None:
                state = amend.provision(state, self._baseline(deal, {}), deal.revision)
            state, effects = amend.step(
                state,
                cid,
                provisioned,
                deal.opportunity is not None and saga is not None,
                deal.revision,
                deal.opportunity.crm_id if deal.opportunity else "",
                lambda orders: self._baseline(deal, orders),
                now,
            )
        except DealError as exc:
            log.warning("deal %s: amendment not computed: %s", deal.key, exc)
            return
        self._amend_effects(work, deal, saga, state, effects, now)

    def _amendment_result(
        self,
        work: Work,
        deal: Deal,
        saga: Saga,
        command: str,
        record: dict[str, Any],
        now: float,
    ) -> None:
        if deal.amendments is None:
            metrics().dropped.labels(STAGE, "result", "unknown_amendment").inc()
            return
        state, effects = amend.on_result(
            deal.amendments,
            saga.correlation_id,
            command,
            str(record.get("status")),
            record.get("error"),
            now,
        )
        if state == deal.amendments:
            metrics().dropped.labels(STAGE, "result", "not_awaited").inc()
            return
        deal = self._amend_effects(work, deal, saga, state, effects, now)
        if any(isinstance(e, amend.Applied) for e in effects):
            self._amend(work, deal, now)  # what arrived meanwhile is the next amendment

    def _amend_effects(
        self,
        work: Work,
        deal: Deal,
        saga: Saga | None,
        state: amend.Amendments,
        effects: list[amend.Effect],
        now: float,
    ) -> Deal:
        deal = dataclasses.replace(deal, amendments=state)
        work.deals[deal.key] = deal
        cid = deal.correlation_id or correlation_id(deal.key)
        until = amend.waiting_until(state)
        if until is not None:
            self.amend_waiting[deal.key] = until
        else:
            self.amend_waiting.pop(deal.key, None)
        m = metrics()
        for effect in effects:
            if isinstance(effect, amend.Issue) and saga is not None:
                payload = self._amend_payload(effect, deal, saga)
                self._command(saga, effect.step, effect.attempt, effect.command_id, payload, now)
            elif isinstance(effect, amend.Applied) and saga and deal.opportunity:
                for entity, key, record in canonical.amendment_events(
                    deal, saga, effect.amendment, self.ref
                ):
                    encoded = self._canonical_encoder(entity).encode(record)
                    self.output.send(self.topology.canonical(entity), key.encode(), encoded)
                    m.events_out.labels(STAGE, entity).inc()
                a = effect.amendment
                kind = "change_order" if a.cause else "deal_edit"
                moved = bool({"amount", "list_price", "hours", "milestones"} & set(a.changed))
                m.change_orders_applied.labels(kind, "yes" if moved else "no").inc()
                for part in a.changed:
                    m.baseline_changes.labels(part).inc()
            elif isinstance(effect, amend.Raise | amend.Clear):
                self._change_order_exception(deal, cid, effect, now)
        return deal

    def _amend_payload(self, issue: amend.Issue, deal: Deal, saga: Saga) -> str:
        a = issue.amendment
        code = saga.learned.get("project_code", "")
        if issue.step == "erp_amendment":
            return to_json(
                ErpAmendmentSpec(
                    key=saga.correlation_id,
                    project_number=code,
                    revision=a.number,
                    change_order=a.cause or deal.key,
                    list_price=a.after.list_price,
                    tasks=a.after.tasks,
                )
            )
        if issue.step == "psa_amendment":
            return to_json(
                PsaAmendmentSpec(
                    identifier=saga.learned.get("psa_identifier") or psa_identifier(code),
                    erp_project_code=code,
                    revision=a.number,
                    tasks=a.after.tasks,
                    milestones=a.after.milestones,
                )
            )
        status = (
            f"amendment {a.number} of {code} applied"
            if a.cause
            else f"{plan.PROVISIONED}, amendment {a.number}"
        )
        return to_json(
            CrmWriteBack(
                opportunity_id=a.cause_crm_id,
                project_code=code,
                psa_project_url=saga.learned.get("psa_url"),
                sync_status=status,
                sync_error=None,
            )
        )

    def _change_order_exception(
        self, deal: Deal, cid: str, effect: amend.Raise | amend.Clear, now: float
    ) -> None:
        topic = self.topology.exceptions
        record = change_order_exception(deal.key, cid, effect, now)
        enc = self.encoders.encoder(topic, "exception")
        self.output.send(topic, str(record["saga_key"]).encode(), enc.encode(record))
        if not isinstance(effect, amend.Raise):
            return
        metrics().business_exceptions.labels(effect.reason, effect.step).inc()
        # The CRM shows why on the change order (the deal, for its own edit), as for deals.
        crm_id = effect.order.crm_id or (deal.opportunity.crm_id if deal.opportunity else "")
        if not crm_id:
            return
        notice = CrmWriteBack(
            opportunity_id=crm_id,
            sync_status=f"exception: {effect.reason}",
            sync_error=effect.message[:2000],
        )
        saga = Saga(key=deal.key, correlation_id=cid)  # (what a command record names)
        command = f"{cid}:change_order:{crm_id}:exception:{effect.reason}:{effect.attempt}"
        self._command(saga, "crm_change_order", 1, command, to_json(notice), now)

    # -- the timer ------------------------------------------------------------------------

    async def tick(self, assignment: frozenset[int]) -> None:
        """Judge deals that waited long enough, re-check deals parked on reference data,
        refresh the gauges. `assignment`: the partitions of the deal topics this worker owns."""
        if not self.prepared.is_set():
            return
        async with self.lock:
            now = self.clock()
            work = Work()
            if assignment != self._assignment:
                for unbegun in self._rescan(assignment):
                    self._begin(work, unbegun, now)
            versions = tuple(v.version for v in self.views.values())
            moved = versions != self._view_versions
            self._view_versions = versions
            for key, until in sorted(self.waiting.items()):
                # Judged when its wait is over, or earlier when a view moved (its customer
                # may have come in: complete deals need not wait).
                if until > now and not moved:
                    continue
                deal = self.tables.deal(key)
                if deal is None or not deal.waiting() or not self.owns(deal.partition):
                    self.waiting.pop(key, None)
                    continue
                self._after(work, deal, False, now)
            for key, until in sorted(self.amend_waiting.items()):
                if until > now:
                    continue
                self.amend_waiting.pop(key, None)
                held = self.tables.deal(key)
                if held is not None and self.owns(held.partition):
                    self._amend(work, self._deal(work, key, held.partition), now)
            if moved:
                for cid in sorted(self.parked):
                    self._recheck(work, cid, now)
            await self._finish(work)
            if now - self._gauged_at >= GAUGE_EVERY:
                self._gauged_at = now
                self._gauges(now)

    def _recheck(self, work: Work, cid: str, now: float) -> None:
        saga = self._saga(work, cid)
        if saga is None or saga.status != machine.PARKED or saga.step != machine.VALIDATE:
            self.parked.discard(cid)
            return
        deal = self._deal(work, saga.key, 0)
        if not self.owns(deal.partition):
            self.parked.discard(cid)
            return
        updated, effects = machine.on_change(saga, self._problems(deal, now), now)
        if updated != saga:
            self._apply(work, deal, updated, effects, now)

    def _rescan(self, assignment: frozenset[int]) -> list[Deal]:
        """Rebuild the in-memory registers from the owned tables; returns the fired deals
        whose saga is missing. A batch's table records reach their changelogs as separate
        sends, so a worker killed in between can leave a fired deal without its saga, and
        neither a replayed input nor the timer would begin it again (the deal no longer
        changes or waits). Beginning it anew repeats the first command under the same id,
        which the command stage applies once."""
        self._assignment = assignment
        self.waiting.clear()
        self.parked.clear()
        self.amend_waiting.clear()
        unbegun: list[Deal] = []
        for deal in self.tables.deals():
            if deal.partition not in assignment:
                continue
            if deal.waiting() and deal.wait_until is not None:
                self.waiting[deal.key] = deal.wait_until
            until = amend.waiting_until(deal.amendments) if deal.amendments else None
            if until is not None:
                self.amend_waiting[deal.key] = until
            opp = deal.opportunity
            fired = deal.fired and opp is not None and not opp.amends
            if fired and self.tables.saga(deal.correlation_id) is None:
                unbegun.append(deal)
        for saga in self.tables.sagas_owned():
            if saga.status == machine.PARKED and saga.step == machine.VALIDATE:
                self.parked.add(saga.correlation_id)
        return unbegun

    def _gauges(self, now: float) -> None:
        m = metrics()
        open_by: Counter[tuple[str, str]] = Counter()
        late: Counter[str] = Counter()
        for saga in self.tables.sagas_owned():
            if saga.status != machine.DONE:
                open_by[(saga.step, saga.status)] += 1
            if "psa_project" not in saga.passed:
                late["yes" if now > saga.deadline else "no"] += 1
        for key in self.waiting:
            deal = self.tables.deal(key)
            if deal is not None and deal.closed_won_at is not None:
                overdue = now > deal.closed_won_at + self.settings.saga_deadline
                late["yes" if overdue else "no"] += 1
        m.sagas_open.clear()
        for (step, status), n in open_by.items():
            m.sagas_open.labels(step, status).set(n)
        for flag in ("yes", "no"):
            m.deals_without_project.labels(flag).set(late[flag])


def open_views(settings: Settings, registry: Registry) -> dict[str, View[Any]]:
    """The deal stage's views (streams/deals/sources.py:VIEWS), not started yet."""
    decoder = Decoder(registry.schema_by_id)
    return {
        name: View(
            source.topic(settings.topic_namespace),
            decoder.decode,
            source.adapt,
            source.aliases,
        )
        for name, source in VIEWS.items()
    }


def register(
    app: faust.App,
    runners: dict[str, StageRunner],
    settings: Settings,
    topology: Topology,
    output: Output,
    registry: Registry,
    tables: DealTables,
    decoder: SharedDecoder | None = None,
) -> DealStage:
    """The deal stage on the runner of any stage already reading one of its topics;
    `decoder` shares decoded records with them (the sink's, for canonical opportunities)."""
    decoder = decoder or SharedDecoder.of(registry)
    views = open_views(settings, registry)
    reader = ViewReader(settings, views.values())

    owned = Owned()
    stage = DealStage(
        settings,
        topology,
        output,
        registry,
        tables,
        views,
        reader,
        owns=owned,
        decoder=decoder,
    )
    topic = bytes_topic(app, *sorted(stage.topics))
    runner = attach(app, runners, topic, STAGE, stage, settings)
    decoder.attach(runner)

    every(app, "judge_waiting_deals", 1.0, lambda: stage.opportunity_topic, owned, stage.tick)
    reader.stop_on_shutdown(app)

    return stage
