"""A time entry's decisions against a simple model of the ERP: whatever the PSA does in
whatever order (edits, approvals withdrawn, deletes, references late), once the postings
are applied the ERP holds one line with the entry's hours exactly when the entry is
approved and known, none otherwise; an invoiced line is never changed and raises
`time_entry.invoiced`; late references wait, then raise, then resolve."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.ports import DONE, POST, REJECTED
from streams.timesheets.model import (
    UNKNOWN_PROJECT,
    Enriched,
    Entry,
    Issue,
    Missing,
    Raise,
    Resolve,
    TimeEntry,
    decide,
    on_result,
)
from streams.timesheets.sources import ENTRY, VALUE, take

FIELD = "7"


def entry(hours: int) -> Entry:
    return Entry("1", "10", "5", None, str(hours), "2026-11-30")


def enriched(state: TimeEntry) -> Enriched:
    assert state.entry is not None
    spec = {"key": state.key, "hours": state.entry.hours, "project_id": 3}
    return Enriched(spec, "PRJ-1", None)


class World:
    """The PSA's entry, the reference data, and the ERP's one line, with pending postings."""

    def __init__(self) -> None:
        self.state = TimeEntry("psa:time_entry:1", 0)
        self.known = True
        self.line: str | None = None  # hours the ERP line holds
        self.invoiced = False
        self.pending: list[Issue] = []
        self.raised: list[str] = []
        self.resolved: list[str] = []
        self.now = 0.0
        self.seq = 0

    def judge(self) -> None:
        st_ = self.state
        approved = st_.approved(FIELD)
        info: Any = None
        if approved:
            info = enriched(st_) if self.known else Missing(UNKNOWN_PROJECT, "unknown")
        self.state, effects = decide(st_, approved, info, self.now, wait=10)
        self.effects(effects)

    def effects(self, effects: list[Any]) -> None:
        for e in effects:
            if isinstance(e, Issue):
                self.pending.append(e)
            elif isinstance(e, Raise):
                self.raised.append(e.problem.reason)
            elif isinstance(e, Resolve):
                self.resolved.append(e.problem.reason)

    def feed(self, record: dict[str, Any]) -> None:
        self.seq += 1
        self.state = take(self.state, {**record, "seq": self.seq, "at": 0})
        self.judge()

    def erp(self) -> None:
        """The ERP applies every pending posting; its answers come back in order."""
        todo, self.pending = self.pending, []
        for p in todo:
            if self.invoiced and self.line is not None:
                want = p.spec["hours"] if p.spec else None
                status, reason = (DONE, None) if want == self.line else (REJECTED, "invoiced")
            else:
                self.line = p.spec["hours"] if p.action == POST and p.spec else None
                status, reason = DONE, None
            self.state, effects = on_result(
                self.state, p.revision, status, "9", reason, "msg", self.now
            )
            self.effects(effects)


ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("hours"), st.integers(1, 4)),
        st.tuples(st.just("approve"), st.booleans()),
        st.tuples(st.just("delete"), st.none()),
        st.tuples(st.just("known"), st.booleans()),
        st.tuples(st.just("erp"), st.none()),
        st.tuples(st.just("time"), st.integers(1, 20)),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(actions=ACTIONS)
def test_the_erp_ends_holding_exactly_the_approved_known_entry(
    actions: list[tuple[str, Any]],
) -> None:
    w = World()
    w.feed(
        {
            "kind": ENTRY,
            "row": {"id": 1, "project_id": 10, "user_id": 5, "hours": 1, "spent_on": 20422},
        }
    )
    for action, arg in actions:
        if action == "hours":
            w.feed(
                {
                    "kind": ENTRY,
                    "row": {
                        "id": 1,
                        "project_id": 10,
                        "user_id": 5,
                        "hours": arg,
                        "spent_on": 20422,
                    },
                }
            )
        elif action == "approve":
            w.feed({"kind": VALUE, "field": FIELD, "value": "1" if arg else "0"})
        elif action == "delete":
            w.feed({"kind": ENTRY, "row": None})
        elif action == "known":
            w.known = arg
            w.judge()
        elif action == "erp":
            w.erp()
        else:
            w.now += arg
            w.judge()
        revisions = [p.revision for p in w.pending]
        assert revisions == sorted(set(revisions))
    # Settle: references arrive, every posting reaches the ERP.
    w.known = True
    w.judge()
    w.erp()
    before = w.state
    w.judge()
    assert w.state == before and not w.pending  # judging again changes nothing
    s = w.state
    if s.entry is not None and s.approved(FIELD):
        assert w.line == s.entry.hours
    else:
        assert w.line is None
    # Every exception raised for a late reference was resolved once it arrived.
    assert w.raised.count(UNKNOWN_PROJECT) == w.resolved.count(UNKNOWN_PROJECT)
    if s.problem is not None:
        assert s.problem.status == "resolved"


def test_an_invoiced_line_is_not_changed_and_raises_until_the_edit_is_undone() -> None:
    w = World()
    w.feed(
        {
            "kind": ENTRY,
            "row": {"id": 1, "project_id": 10, "user_id": 5, "hours": 2, "spent_on": 20422},
        }
    )
    w.feed({"kind": VALUE, "field": FIELD, "value": "1"})
    w.erp()
    assert w.line == "2"
    w.invoiced = True
    w.feed(
        {
            "kind": ENTRY,
            "row": {"id": 1, "project_id": 10, "user_id": 5, "hours": 3, "spent_on": 20422},
        }
    )
    w.erp()
    assert w.line == "2" and w.raised == ["time_entry.invoiced"]
    assert w.state.problem is not None and w.state.problem.status == "open"
    # Un-approving it cannot take it back either.
    w.feed({"kind": VALUE, "field": FIELD, "value": "0"})
    w.erp()
    assert w.line == "2" and w.state.problem.status == "open"
    # Approved again with the invoiced hours: the ERP already holds it, the exception closes.
    w.feed({"kind": VALUE, "field": FIELD, "value": "1"})
    w.feed(
        {
            "kind": ENTRY,
            "row": {"id": 1, "project_id": 10, "user_id": 5, "hours": 2, "spent_on": 20422},
        }
    )
    w.erp()
    assert w.state.problem is not None and w.state.problem.status == "resolved"
    assert w.resolved == ["time_entry.invoiced"]


def test_a_late_project_waits_then_raises_then_resolves() -> None:
    w = World()
    w.known = False
    w.feed(
        {
            "kind": ENTRY,
            "row": {"id": 1, "project_id": 10, "user_id": 5, "hours": 2, "spent_on": 20422},
        }
    )
    w.feed({"kind": VALUE, "field": FIELD, "value": "1"})
    assert w.pending == [] and w.raised == []
    w.now = 9
    w.judge()
    assert w.raised == []
    w.now = 10
    w.judge()
    w.judge()
    assert w.raised == [UNKNOWN_PROJECT]
    w.known = True
    w.judge()
    assert w.resolved == [UNKNOWN_PROJECT] and len(w.pending) == 1
    w.erp()
    assert w.line == "2"


def test_stale_redelivered_rows_change_nothing() -> None:
    s = TimeEntry("k", 0)
    row = {"id": 1, "project_id": 10, "user_id": 5, "hours": 2, "spent_on": 20422}
    s1 = take(s, {"kind": ENTRY, "row": row, "seq": 5, "at": 0})
    s2 = take(s1, {"kind": ENTRY, "row": {**row, "hours": 9}, "seq": 4, "at": 0})
    assert s2 == s1
    s3 = take(s1, {"kind": VALUE, "field": FIELD, "value": "1", "seq": 3, "at": 0})
    s4 = take(s3, {"kind": VALUE, "field": FIELD, "value": "0", "seq": 2, "at": 0})
    assert s4 == s3 and s4.approved(FIELD)
    assert replace(s4, values={}).approved(FIELD) is False
