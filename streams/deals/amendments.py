"""Change orders and amendments of a provisioned deal, as a pure state machine.

A provisioned deal has a *baseline*: contract value, hourly list price, the tasks with their
hours, the billing milestones. Two things move it, and both are amendments of that deal,
never a new deal:

- a change order: a CRM opportunity of type change order naming the won deal as its parent;
  its value is added, its line items add hours to the tasks of their service line (or add
  that service line's tasks), its milestones are added (or replace the one of that name);
- an edit of the provisioned deal itself (amount, line items, milestones).

The baseline the applications should hold is a function of the deal and the change orders
applied: `target(deal, orders, ref)`. Amendments are applied one at a time per deal, each a
numbered revision (`number`, the applications' external key), through the steps in STEPS;
whatever arrived meanwhile is the next amendment. A change order that names a deal pssync does
not know, or one not provisioned yet, waits for it up to a deadline, then raises a business
exception (it is still applied, and the exception resolved, once the deal is provisioned).

Functions return the new state and the effects to carry out; they do no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from connectors.ports import MilestoneSpec, TaskSpec
from streams.deals.model import LineItem, Milestone, Opportunity
from streams.deals.reference import Reference

STEPS = ("erp_amendment", "psa_amendment", "crm_change_order")
TARGETS = {"erp_amendment": "erp", "psa_amendment": "psa", "crm_change_order": "crm"}
RUNNING, PARKED, DONE = "running", "parked", "done"
CENT = Decimal("0.01")

# Reason codes of the business exceptions of change orders.
UNKNOWN_PARENT = "change_order.unknown_parent"
NOT_PROVISIONED = "change_order.parent_not_provisioned"
REJECTED = "change_order.rejected"


@dataclass(frozen=True)
class Baseline:
    """What a provisioned project is committed to: the financial and delivery baseline."""

    amount: Decimal | None = None
    list_price: Decimal = Decimal("0.00")
    tasks: tuple[TaskSpec, ...] = ()
    milestones: tuple[MilestoneSpec, ...] = ()

    @property
    def hours(self) -> Decimal:
        return sum((t.effort_hours or Decimal(0) for t in self.tasks), Decimal(0))

    def changes(self, after: Baseline) -> tuple[str, ...]:
        """Which parts of the baseline `after` moves: amount, list_price, hours, tasks,
        milestones."""
        out = []
        if self.amount != after.amount:
            out.append("amount")
        if self.list_price != after.list_price:
            out.append("list_price")
        if self.hours != after.hours:
            out.append("hours")
        if {t.name for t in self.tasks} != {t.name for t in after.tasks}:
            out.append("tasks")
        if self.milestones != after.milestones:
            out.append("milestones")
        return tuple(out)


@dataclass(frozen=True)
class ChangeOrder:
    """A closed-won change order as its own deal assembled it."""

    key: str  # canonical id of the change order's opportunity
    crm_id: str
    name: str
    revision: int  # of the change order's assembled deal: a revised change order is newer
    currency: str
    amount: Decimal | None = None
    lines: tuple[LineItem, ...] = ()
    milestones: tuple[Milestone, ...] = ()
    committed_at: float = 0.0  # when the CRM committed it closed-won
    received_at: float = 0.0
    wait_until: float = 0.0  # then an exception, if the deal is still not provisioned


@dataclass(frozen=True)
class Amendment:
    number: int  # the deal's amendment revision: 1, 2, ...
    cause: str  # canonical id of the change order, or of the deal amended in the CRM
    cause_crm_id: str
    cause_revision: int
    before: Baseline
    after: Baseline
    changed: tuple[str, ...]
    requested_at: float  # when the source committed the change
    started_at: float
    step: str = STEPS[0]
    attempt: int = 1
    awaiting: str | None = None
    status: str = RUNNING
    error: str | None = None
    done_at: float | None = None


@dataclass(frozen=True)
class Amendments:
    """Per deal: the baseline applied, change orders applied and waiting, the amendment in
    flight, open change order exceptions (change order key -> reason)."""

    baseline: Baseline | None = None  # None until the deal is provisioned
    applied: dict[str, ChangeOrder] = field(default_factory=dict)
    pending: dict[str, ChangeOrder] = field(default_factory=dict)
    number: int = 0
    current: Amendment | None = None
    last: Amendment | None = None
    deal_revision: int = 0  # of the deal whose own edits the baseline holds
    exceptions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Issue:
    step: str
    attempt: int
    command_id: str
    amendment: Amendment


@dataclass(frozen=True)
class Applied:
    """An amendment passed every step: publish it."""

    amendment: Amendment


@dataclass(frozen=True)
class Raise:
    """A change order's business exception, raised (or its reason changed)."""

    order: ChangeOrder  # key "" for an edit of the deal itself
    reason: str
    message: str
    step: str = "change_order"
    attempt: int = 1


@dataclass(frozen=True)
class Clear:
    order: ChangeOrder
    reason: str


Effect = Issue | Applied | Raise | Clear


def _cause(state: Amendments, amendment: Amendment) -> ChangeOrder:
    """The change order an amendment applies; for an edit of the deal, a stand-in (key "")."""
    held = state.pending.get(amendment.cause) if amendment.cause else None
    if held is not None:
        return held
    return ChangeOrder(
        amendment.cause, amendment.cause_crm_id, "", amendment.cause_revision, currency=""
    )


def command_id(correlation_id: str, number: int, step: str, attempt: int) -> str:
    base = f"{correlation_id}:amendment:{number}:{step}"
    return base if attempt == 1 else f"{base}:{attempt}"


# -- the baseline --------------------------------------------------------------------------


def _milestones(milestones: tuple[Milestone, ...], amount: Decimal | None) -> list[MilestoneSpec]:
    out = []
    for m in sorted(milestones, key=lambda m: (m.due is None, m.due, m.name, m.key)):
        value = m.amount
        if value is None and m.percent is not None and amount is not None:
            value = (amount * m.percent / 100).quantize(CENT)
        out.append(MilestoneSpec(m.name, m.due, value))
    return out


def _template_tasks(code: str, ref: Reference) -> list[tuple[str, str, Decimal]]:
    """(phase, name, weight) of a service line's template; one task named after the service
    line when its template has none."""
    service = ref.service_line(code)
    template = ref.template(service.template if service else None)
    if template is not None and template.tasks:
        return [(t.phase, t.name, t.effort_hours or Decimal(1)) for t in template.tasks]
    name = service.name if service and service.name else code
    return [(code, name, Decimal(1))]


def _add_order(
    tasks: dict[str, TaskSpec], order: ChangeOrder, ref: Reference
) -> dict[str, TaskSpec]:
    """The tasks after a change order's line items: each line's hours spread over its service
    line's template tasks by their template hours, added to the task of that name (in that
    phase) or to a new one."""
    out = dict(tasks)
    for line in sorted(order.lines, key=lambda x: x.key):
        parts = _template_tasks(line.service_line, ref)
        hours = line.quantity if line.quantity is not None else Decimal(0)
        weight = sum((w for _, _, w in parts), Decimal(0))
        given = Decimal(0)
        for n, (phase, name, w) in enumerate(parts):
            share = hours - given if n == len(parts) - 1 else (hours * w / weight).quantize(CENT)
            given += share
            held = out.get(name)
            if held is not None and held.phase != phase:
                name = f"{phase}: {name}"
                held = out.get(name)
            if held is None:
                out[name] = TaskSpec(name, phase, share, line.unit_price)
            else:
                total = (held.effort_hours or Decimal(0)) + share
                out[name] = dataclasses.replace(held, effort_hours=total)
    return out


def target(
    deal_tasks: tuple[TaskSpec, ...],
    opp: Opportunity,
    deal_lines: tuple[LineItem, ...],
    deal_milestones: tuple[Milestone, ...],
    orders: dict[str, ChangeOrder],
    ref: Reference,
) -> Baseline:
    """The baseline of a deal (its planned tasks, line items and milestones) with `orders`."""
    tasks = {t.name: t for t in deal_tasks}
    amount = opp.amount
    lines = list(deal_lines)
    milestones = {m.name: m for m in _milestones(deal_milestones, opp.amount)}
    for order in sorted(orders.values(), key=lambda o: (o.committed_at, o.key)):
        tasks = _add_order(tasks, order, ref)
        if order.amount is not None:
            amount = (amount or Decimal(0)) + order.amount
        lines += order.lines
        for m in _milestones(order.milestones, order.amount):
            milestones[m.name] = m
    priced = [x for x in lines if x.unit_price is not None]
    weight = sum((x.quantity or Decimal(1) for x in priced), Decimal(0))
    price = Decimal("0.00")
    if priced and weight:
        total = sum(((x.quantity or Decimal(1)) * (x.unit_price or 0) for x in priced), Decimal(0))
        price = (total / weight).quantize(CENT)
    ordered = sorted(milestones.values(), key=lambda m: (m.due is None, m.due, m.name))
    return Baseline(
        amount=None if amount is None else amount.quantize(CENT),
        list_price=price,
        tasks=tuple(tasks.values()),
        milestones=tuple(ordered),
    )


# -- the machine ---------------------------------------------------------------------------


def receive(state: Amendments, order: ChangeOrder) -> Amendments:
    """A change order (or a newer revision of it) arrived for this deal."""
    held = state.pending.get(order.key) or state.applied.get(order.key)
    if held is not None and held.revision >= order.revision:
        return state  # a redelivery or an older revision: nothing new
    previous = state.pending.get(order.key)
    if previous is not None:  # keep the first wait deadline: the wait is bounded
        order = dataclasses.replace(order, wait_until=previous.wait_until)
    return dataclasses.replace(state, pending={**state.pending, order.key: order})


def provision(state: Amendments, baseline: Baseline, deal_revision: int) -> Amendments:
    """The deal was provisioned with `baseline`: from now on amendments apply to it."""
    if state.baseline is not None:
        return state
    return dataclasses.replace(state, baseline=baseline, deal_revision=deal_revision)


def _issue(amendment: Amendment, cid: str) -> Issue:
    attempt = amendment.attempt
    cmd = command_id(cid, amendment.number, amendment.step, attempt)
    return Issue(amendment.step, attempt, cmd, amendment)


def step(
    state: Amendments,
    correlation_id: str,
    provisioned: bool,
    deal_known: bool,
    deal_revision: int,
    deal_crm_id: str,
    baseline_of: Callable[[dict[str, ChangeOrder]], Baseline],
    now: float,
) -> tuple[Amendments, list[Effect]]:
    """Start the next amendment if the deal is provisioned and its baseline would move, else
    judge the change orders waiting for it. `baseline_of(orders)` is the target baseline of
    the deal with those change orders applied."""
    compute = baseline_of
    effects: list[Effect] = []
    if not provisioned or state.baseline is None:
        reason = NOT_PROVISIONED if deal_known else UNKNOWN_PARENT
        exceptions = dict(state.exceptions)
        for order in sorted(state.pending.values(), key=lambda o: o.key):
            if now < order.wait_until or exceptions.get(order.key) == reason:
                continue
            exceptions[order.key] = reason
            what = (
                "is not provisioned yet (its saga has not finished: see pssync exceptions "
                "for the deal)"
                if deal_known
                else "is unknown to pssync (check the change order's parent opportunity)"
            )
            effects.append(
                Raise(order, reason, f"change order {order.crm_id}: the deal it amends {what}")
            )
        return dataclasses.replace(state, exceptions=exceptions), effects
    if state.current is not None and state.current.status != DONE:
        return state, []
    before = state.baseline
    pending = sorted(state.pending.values(), key=lambda o: (o.committed_at, o.key))
    if pending:
        order = pending[0]
        after = compute({**state.applied, order.key: order})
        cause, crm_id, revision, at = order.key, order.crm_id, order.revision, order.committed_at
    else:
        after = compute(state.applied)
        if after == before:
            return dataclasses.replace(state, deal_revision=deal_revision), []
        cause, crm_id, revision, at = "", deal_crm_id, deal_revision, now
    number = state.number + 1
    amendment = Amendment(
        number=number,
        cause=cause,
        cause_crm_id=crm_id,
        cause_revision=revision,
        before=before,
        after=after,
        changed=before.changes(after),
        requested_at=at or now,
        started_at=now,
    )
    issue = _issue(amendment, correlation_id)
    amendment = dataclasses.replace(amendment, awaiting=issue.command_id)
    effects = [issue]
    exceptions = dict(state.exceptions)
    waited = exceptions.pop(cause, None) if pending else None
    if waited is not None:  # its deal is provisioned now: the wait is over
        effects.insert(0, Clear(pending[0], waited))
    state = dataclasses.replace(state, number=number, current=amendment, exceptions=exceptions)
    return state, effects


def on_result(
    state: Amendments,
    correlation_id: str,
    command: str,
    status: str,
    error: str | None,
    now: float,
) -> tuple[Amendments, list[Effect]]:
    """The result of an amendment command: the awaited one advances or parks it."""
    current = state.current
    if current is None or current.status != RUNNING or command != current.awaiting:
        return state, []
    if status != "done":
        parked = dataclasses.replace(
            current, status=PARKED, awaiting=None, error=f"{current.step} rejected: {error}"
        )
        exceptions = {**state.exceptions, current.cause: REJECTED}
        raised = Raise(
            _cause(state, current), REJECTED, parked.error or "", current.step, current.attempt
        )
        return dataclasses.replace(state, current=parked, exceptions=exceptions), [raised]
    following = STEPS.index(current.step) + 1
    if following < len(STEPS):
        moved = dataclasses.replace(current, step=STEPS[following], attempt=1)
        issue = _issue(moved, correlation_id)
        moved = dataclasses.replace(moved, awaiting=issue.command_id)
        return dataclasses.replace(state, current=moved), [issue]
    done = dataclasses.replace(current, status=DONE, awaiting=None, done_at=now)
    applied, pending = dict(state.applied), dict(state.pending)
    exceptions = dict(state.exceptions)
    effects: list[Effect] = [Applied(done)]
    reason = exceptions.pop(done.cause, None)
    if reason is not None:
        effects.append(Clear(_cause(state, done), reason))
    order = pending.get(done.cause)
    if order is not None and order.revision == done.cause_revision:
        applied[order.key] = pending.pop(order.key)
    state = dataclasses.replace(
        state,
        baseline=done.after,
        applied=applied,
        pending=pending,
        current=None,
        last=done,
        exceptions=exceptions,
    )
    return state, effects


def retry(state: Amendments, correlation_id: str, now: float) -> tuple[Amendments, list[Effect]]:
    """Apply the parked amendment's step again (next attempt)."""
    current = state.current
    if current is None or current.status != PARKED:
        return state, []
    again = dataclasses.replace(current, status=RUNNING, attempt=current.attempt + 1, error=None)
    issue = _issue(again, correlation_id)
    again = dataclasses.replace(again, awaiting=issue.command_id)
    effects: list[Effect] = [issue]
    exceptions = dict(state.exceptions)
    if exceptions.pop(current.cause, None) is not None:
        effects.insert(0, Clear(_cause(state, current), REJECTED))
    return dataclasses.replace(state, current=again, exceptions=exceptions), effects


def waiting_until(state: Amendments) -> float | None:
    """When the next change order waiting for its deal is to be judged (None: none is)."""
    due = [o.wait_until for o in state.pending.values() if o.key not in state.exceptions]
    return min(due) if due and state.baseline is None else None
