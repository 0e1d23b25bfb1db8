"""Change orders and amendments of a provisioned deal (streams/deals/amendments.py).

The machine is driven by random interleavings of change orders (new, revised, redelivered),
command results (awaited, stale, redelivered, refused), retries, provisioning and time, and
checked against a simple model: once every awaited command succeeded, the deal's baseline
is the target of the deal with the latest revision of every change order received, each
amendment starts from the baseline the previous one left, numbers run 1, 2, ... and a
change order waiting past its deadline for an unprovisioned deal has an exception, which
clears once the change order is applied.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.ports import TaskSpec
from streams.deals import amendments as amend
from streams.deals.amendments import Amendments, Baseline, ChangeOrder
from streams.deals.model import (
    LineItem,
    Milestone,
    Opportunity,
    ServiceLine,
    Template,
    TemplateTask,
)
from streams.deals.reference import Reference

CID = "9d7f2c1e-0000-5000-8000-000000000001"
DEAL = "crm:opportunity:006P"


class Lookup(dict[str, Any]):
    pass


def _ref() -> Reference:
    services = Lookup(
        CONSULT=ServiceLine("CONSULT", "Advisory consulting", "TPL-C"),
        ARCH=ServiceLine("ARCH", "Architecture review", "TPL-A"),
        PM=ServiceLine("PM", "Project management", None),
    )
    templates = Lookup(
        {
            "TPL-C": Template(
                "TPL-C",
                "Consulting",
                (
                    TemplateTask("Kick-off workshop", "Discovery", Decimal(8)),
                    TemplateTask("Recommendations", "Delivery", Decimal(40)),
                ),
            ),
            "TPL-A": Template(
                "TPL-A",
                "Architecture",
                (
                    TemplateTask("Interviews", "Review", Decimal(16)),
                    TemplateTask("Report", "Review", Decimal(16)),
                ),
            ),
        }
    )
    empty = Lookup()
    return Reference(empty, empty, empty, empty, empty, services, templates, empty, empty)


REF = _ref()
OPP = Opportunity(DEAL, "006P", CID, "Platform", "closed_won", "EUR", amount=Decimal("10000"))
DEAL_TASKS = (
    TaskSpec("Kick-off workshop", "Discovery", Decimal(8), Decimal(120)),
    TaskSpec("Recommendations", "Delivery", Decimal(40), Decimal(120)),
)
DEAL_LINES = (LineItem("l0", DEAL, "CONSULT", Decimal(48), Decimal(120)),)
DEAL_MILESTONES = (Milestone("m0", "Kick-off", date(2027, 1, 1), Decimal(5000)),)


def _target(orders: dict[str, ChangeOrder]) -> Baseline:
    return amend.target(DEAL_TASKS, OPP, DEAL_LINES, DEAL_MILESTONES, orders, REF)


def _order(n: int, revision: int, hours: int, amount: int, service: str = "CONSULT") -> ChangeOrder:
    key = f"crm:opportunity:006CO{n}"
    return ChangeOrder(
        key=key,
        crm_id=f"006CO{n}",
        name=f"CO {n}",
        revision=revision,
        currency="EUR",
        amount=Decimal(amount),
        lines=(LineItem(f"{key}:l", key, service, Decimal(hours), Decimal(150)),),
        milestones=(
            Milestone(f"{key}:m", f"CO {n} delivery", date(2027, 3, n + 1), None, Decimal(50)),
        ),
        committed_at=float(n),
        received_at=0.0,
        wait_until=30.0,
    )


# -- the baseline ---------------------------------------------------------------------------


def test_a_change_order_adds_value_hours_tasks_and_milestones() -> None:
    before = _target({})
    after = _target({"a": _order(1, 1, 24, 3000), "b": _order(2, 1, 32, 4000, "ARCH")})
    assert before.amount == Decimal("10000.00") and after.amount == Decimal("17000.00")
    assert after.hours == before.hours + 24 + 32
    by_name = {t.name: t for t in after.tasks}
    # CONSULT hours spread over its template's tasks by their template hours (8:40).
    assert by_name["Kick-off workshop"].effort_hours == Decimal(8) + Decimal("4.00")
    assert by_name["Recommendations"].effort_hours == Decimal(40) + Decimal("20.00")
    # ARCH is new to the project: its template's tasks are new tasks at the line's price.
    assert by_name["Interviews"] == TaskSpec("Interviews", "Review", Decimal("16.00"), Decimal(150))
    assert [m.name for m in after.milestones] == ["Kick-off", "CO 1 delivery", "CO 2 delivery"]
    assert after.milestones[1].amount == Decimal("1500.00")  # 50 % of the change order
    assert before.changes(after) == ("amount", "list_price", "hours", "tasks", "milestones")


@given(
    st.lists(
        st.tuples(
            st.integers(0, 500), st.integers(0, 50000), st.sampled_from(["CONSULT", "ARCH", "PM"])
        ),
        max_size=5,
    )
)
def test_hours_and_value_are_conserved(orders: list[tuple[int, int, str]]) -> None:
    made = {f"k{n}": _order(n, 1, h, a, s) for n, (h, a, s) in enumerate(orders)}
    before, after = _target({}), _target(made)
    assert after.hours == before.hours + sum(h for h, _, _ in orders)
    assert after.amount == before.amount + sum(a for _, a, _ in orders)
    assert {t.name for t in before.tasks} <= {t.name for t in after.tasks}
    assert len({t.name for t in after.tasks}) == len(after.tasks)


def test_no_change_no_amendment() -> None:
    state = amend.provision(Amendments(), _target({}), 3)
    same, effects = amend.step(state, CID, True, True, 3, "006P", _target, 10.0)
    assert effects == [] and same.current is None and same.number == 0


# -- the machine against a model ------------------------------------------------------------

Op = tuple[str, int, int]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("order"), st.integers(0, 3), st.integers(1, 3)),  # CO n at revision r
        st.tuples(st.just("done"), st.just(0), st.just(0)),  # the awaited command succeeds
        st.tuples(st.just("refuse"), st.just(0), st.just(0)),
        st.tuples(st.just("stale"), st.integers(0, 20), st.just(0)),  # an old result again
        st.tuples(st.just("retry"), st.just(0), st.just(0)),
        st.tuples(st.just("provision"), st.just(0), st.just(0)),
        st.tuples(st.just("tick"), st.integers(1, 40), st.just(0)),
    ),
    max_size=40,
)


class Run:
    def __init__(self) -> None:
        self.state = Amendments()
        self.provisioned = False
        self.now = 0.0
        self.applied: list[amend.Amendment] = []
        self.raised: dict[str, str] = {}
        self.seen_commands: list[str] = []
        self.latest: dict[str, ChangeOrder] = {}

    def effects(self, effects: list[amend.Effect]) -> None:
        for e in effects:
            if isinstance(e, amend.Issue):
                self.seen_commands.append(e.command_id)
            elif isinstance(e, amend.Applied):
                self.applied.append(e.amendment)
            elif isinstance(e, amend.Raise):
                self.raised[e.order.key] = e.reason
            elif isinstance(e, amend.Clear):
                assert self.raised.pop(e.order.key) == e.reason

    def step(self) -> None:
        if self.provisioned:
            self.state = amend.provision(self.state, _target({}), 1)
        self.state, effects = amend.step(
            self.state, CID, self.provisioned, True, 1, "006P", _target, self.now
        )
        self.effects(effects)

    def result(self, command: str | None, status: str) -> None:
        if command is None:
            return
        self.state, effects = amend.on_result(self.state, CID, command, status, "no", self.now)
        self.effects(effects)
        if any(isinstance(e, amend.Applied) for e in effects):
            self.step()

    def apply(self, op: Op) -> None:
        kind, a, b = op
        current = self.state.current
        if kind == "order":
            order = dataclasses.replace(
                _order(a, b, 8 * b, 1000 * b), received_at=self.now, wait_until=self.now + 30
            )
            if order.revision > self.latest.get(order.key, order).revision or (
                order.key not in self.latest
            ):
                self.latest[order.key] = order
            self.state = amend.receive(self.state, order)
            self.step()
        elif kind == "done":
            self.result(current.awaiting if current else None, "done")
        elif kind == "refuse":
            self.result(current.awaiting if current else None, "rejected")
        elif kind == "stale":
            before = self.state
            if self.seen_commands:
                old = self.seen_commands[a % len(self.seen_commands)]
                if current is None or old != current.awaiting:
                    self.result(old, "done")
                    assert self.state == before  # an old or redelivered result changes nothing
        elif kind == "retry":
            self.state, effects = amend.retry(self.state, CID, self.now)
            self.effects(effects)
        elif kind == "provision":
            self.provisioned = True
            self.step()
        else:
            self.now += a
            self.step()

    def drain(self) -> None:
        self.provisioned = True
        self.step()
        for _ in range(100):
            current = self.state.current
            if current is None:
                return
            if current.status == amend.PARKED:
                self.state, effects = amend.retry(self.state, CID, self.now)
                self.effects(effects)
            else:
                self.result(current.awaiting, "done")
        raise AssertionError("amendments never settle")


@settings(max_examples=300, deadline=None)
@given(ops)
def test_amendments_against_a_model(script: list[Op]) -> None:
    run = Run()
    for op in script:
        waited_before = (
            {k for k, o in run.state.pending.items() if run.now >= o.wait_until}
            if not run.provisioned
            else set()
        )
        run.apply(op)
        if op[0] == "tick" and not run.provisioned:
            # every change order that waited past its deadline has an exception
            overdue = {k for k, o in run.state.pending.items() if run.now >= o.wait_until}
            assert overdue | waited_before <= set(run.raised) | set(run.state.applied)
        if not run.provisioned:
            assert run.state.current is None and not run.applied
    run.drain()
    state = run.state
    # Everything received is applied at its latest revision, the baseline is their target.
    assert state.pending == {}
    # (The first revision's wait deadline is kept: the wait is bounded.)
    assert {k: o.revision for k, o in state.applied.items()} == {
        k: o.revision for k, o in run.latest.items()
    }
    assert state.baseline == _target(run.latest)
    # Numbered 1..n, each from the baseline the previous one left.
    assert [a.number for a in run.applied] == list(range(1, len(run.applied) + 1))
    previous = _target({})
    for a in run.applied:
        assert a.before == previous and a.changed == a.before.changes(a.after)
        previous = a.after
    # Exceptions of change orders that are applied are cleared.
    assert run.raised == {} and state.exceptions == {}
    # Commands are unique per amendment, step and attempt.
    assert len(run.seen_commands) == len(set(run.seen_commands))


def test_an_unknown_parent_waits_then_raises_once() -> None:
    order = _order(1, 1, 8, 100)
    state = amend.receive(Amendments(), order)
    state, effects = amend.step(state, CID, False, False, 0, "", _target, 10.0)
    assert effects == []
    state, effects = amend.step(state, CID, False, False, 0, "", _target, 31.0)
    assert [(type(e).__name__, getattr(e, "reason", "")) for e in effects] == [
        ("Raise", amend.UNKNOWN_PARENT)
    ]
    assert amend.waiting_until(state) is None  # judged: nothing more to wait for
    again, effects = amend.step(state, CID, False, False, 0, "", _target, 40.0)
    assert effects == [] and again == state


# -- the ERP's record of the last amendment applied --------------------------------------------


@given(st.lists(st.integers(1, 99), max_size=5), st.text(alphabet="ab \n", max_size=20))
def test_the_erp_comment_keeps_one_amendment_line(revisions: list[int], prose: str) -> None:
    from connectors.erp.tryton import KEY_MARKER, amendment_revision, with_amendment

    comment = f"{KEY_MARKER}{CID}\n{prose}"
    for n in revisions:
        comment = with_amendment(comment, n, f"crm:opportunity:006CO{n}")
    assert amendment_revision(comment) == (revisions[-1] if revisions else 0)
    assert comment.startswith(f"{KEY_MARKER}{CID}")  # the project is still found by its key
    assert comment.count("pssync amendment: ") == (1 if revisions else 0)
