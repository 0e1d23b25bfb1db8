"""`pssync exceptions retry` per flow: where each flow's retry goes (the declared routes),
and what a retry does to a time entry or an expense the ERP refused: the last posting again
as the next revision while the refusal is open, nothing otherwise; the exception resolves
when that posting is done."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.ports import DONE, POST, REJECTED
from streams.deals.records import RETRY, Control
from streams.errors import BadEventError
from streams.expenses.model import ExpenseState, Post, Raise, Resolve, Value, decide, facts
from streams.expenses.model import Issue as ExpenseIssue
from streams.expenses.model import on_result as expense_result
from streams.expenses.model import retry as expense_retry
from streams.postings import PostingRetry
from streams.retries import SAGA, route
from streams.timesheets.model import (
    UNKNOWN_PERSON,
    UNKNOWN_PROJECT,
    Enriched,
    Entry,
    Issue,
    Missing,
    Sent,
    TimeEntry,
    on_result,
    retry,
)
from streams.timesheets.model import Raise as TimeRaise
from streams.timesheets.model import Resolve as TimeResolve
from streams.timesheets.model import decide as time_decide
from tests.unit.test_expense_model import FIELDS, PROJECTS, WAIT

SPEC = {"key": "psa:time_entry:1", "hours": "2", "project_id": 3, "task": "Build"}


def _exception(step: str, attempt: int = 2) -> dict[str, object]:
    return {"saga_key": "k", "step": step, "attempt": attempt, "reason": "r", "status": "open"}


# -- the routes -------------------------------------------------------------------------------


def test_posting_flows_retry_on_the_posting_control_topic() -> None:
    for flow in ("time_entry", "expense"):
        r = route(flow)
        assert r.topic("ns") == "ns.postings.control" and r.topic("") == "postings.control"
        request = PostingRetry.from_bytes(r.request(_exception(flow), "at", "ann"))
        assert request == PostingRetry(flow, 2, "at", "ann")
    assert route("time_entry").noun == "time entry" and route("expense").noun == "expense"


def test_any_other_step_is_a_deal_saga_step_retried_on_saga_control() -> None:
    for step in ("erp_customer", "psa_project", "amend_erp"):
        r = route(step)
        assert r is SAGA and r.topic("ns") == "ns.saga.control"
        control = Control.from_bytes(r.request(_exception(step, 3), "at", "ann"))
        assert (control.action, control.step, control.attempt) == (RETRY, step, 3)


def test_a_posting_retry_that_is_not_one_is_a_bad_event() -> None:
    for raw in (b"", b"{}", b'{"flow": "time_entry"}', b'{"flow": 1, "attempt": "x"}'):
        with pytest.raises(BadEventError):
            PostingRetry.from_bytes(raw)


# -- time entries -----------------------------------------------------------------------------


def _posted(now: float = 1.0) -> TimeEntry:
    entry = Entry("1", "10", "5", "77", "2", "2026-11-30")
    return TimeEntry("psa:time_entry:1", 0, entry, revision=1, sent=Sent(1, POST, SPEC))


def test_a_refused_time_entry_posts_again_on_retry_and_resolves_when_done() -> None:
    state, effects = on_result(_posted(), 1, REJECTED, None, "unknown_task", "no task", 2.0)
    assert [type(e) for e in effects] == [TimeRaise]
    assert state.problem is not None and state.problem.number == 1 and state.problem.refused
    assert retry(state, 2) == (state, [])  # not the open exception's attempt
    again, effects = retry(state, 1)
    assert effects == [Issue(2, POST, SPEC)] and again.sent == Sent(2, POST, SPEC)
    assert again.problem == state.problem  # open until the ERP takes it
    assert on_result(again, 1, DONE, "9", None, None, 3.0) == (again, [])  # stale
    done, effects = on_result(again, 2, DONE, "9", None, None, 4.0)
    assert [type(e) for e in effects] == [TimeResolve] and done.erp_id == "9"
    assert retry(done, 1) == (done, [])  # resolved: nothing to retry


def test_a_wait_for_a_reference_is_not_retried() -> None:
    entry = Entry("1", "10", "5", None, "2", "2026-11-30")
    state, effects = time_decide(
        TimeEntry("psa:time_entry:1", 0, entry), True, Missing(UNKNOWN_PROJECT, "?"), 0, 0
    )
    assert [type(e) for e in effects] == [TimeRaise]
    assert retry(state, 1) == (state, [])


def test_the_erps_unknown_person_stays_open_until_a_posting_is_done() -> None:
    # The ERP's reason reads like pssync's own wait for a person; pssync knew the person
    # (it posted), so judging the entry again resolves nothing: only a done posting does.
    state, _ = on_result(_posted(), 1, REJECTED, None, "unknown_person", "no employee", 2.0)
    assert state.problem is not None and state.problem.reason == UNKNOWN_PERSON
    judged, effects = time_decide(state, True, Enriched(SPEC, "PRJ-1", None), 3.0, 0)
    assert effects == [] and judged.problem == state.problem
    again, _ = retry(judged, 1)
    _, effects = on_result(again, 2, DONE, "9", None, None, 4.0)
    assert [type(e) for e in effects] == [TimeResolve]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("refused"), st.sampled_from(["unknown_task", "unknown_person"])),
        st.tuples(st.just("done"), st.just("")),
        st.tuples(st.just("stale"), st.just("")),
        st.tuples(st.just("retry"), st.sampled_from(["open", "other"])),
    ),
    max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_time_entry_retries_against_a_reference_model(steps: list[tuple[str, str]]) -> None:
    """Reference: an open refusal with a number; a retry naming it posts the last posting
    again as the next revision, anything else posts nothing; a done posting closes it."""
    state = _posted()
    revision, open_number, number, reason = 1, None, 0, ""
    for t, (op, arg) in enumerate(steps, start=2):
        if op == "refused":
            state, effects = on_result(state, revision, REJECTED, None, arg, "no", t)
            if open_number is None or reason != arg:
                number += 1
                open_number, reason = number, arg
                assert [type(e) for e in effects] == [TimeRaise]
            else:
                assert effects == []
        elif op == "done":
            state, effects = on_result(state, revision, DONE, "9", None, None, t)
            assert [type(e) for e in effects] == ([TimeResolve] if open_number else [])
            open_number = None
        elif op == "stale":
            assert on_result(state, revision - 1, DONE, "9", None, None, t) == (state, [])
        else:
            attempt = (open_number or 0) if arg == "open" else number + 1
            state, effects = retry(state, attempt)
            if open_number is not None and attempt == open_number:
                revision += 1
                assert effects == [Issue(revision, POST, SPEC)]
            else:
                assert effects == []
        assert state.revision == revision and state.sent == Sent(revision, POST, SPEC)
        is_open = state.problem is not None and state.problem.status == "open"
        assert is_open == (open_number is not None)


# -- expenses ---------------------------------------------------------------------------------


def test_a_refused_expense_posts_again_on_retry_and_resolves_when_done() -> None:
    issue = ExpenseIssue("7", "1", "Taxi", "3", date(2026, 11, 2))
    values = {"5": Value("42"), "6": Value("EUR"), "9": Value("1")}
    state = ExpenseState("psa:issue:7", issue=issue, values=values)
    state, effects = decide(state, facts(state, FIELDS), PROJECTS["1"], 1.0, WAIT)
    (first,) = [e for e in effects if isinstance(e, Post)]
    assert expense_retry(state, 1) == (state, [])  # nothing refused yet
    state, effects = expense_result(state, 1, False, "unknown_project", "no project", None, 2.0)
    assert [type(e) for e in effects] == [Raise]
    assert expense_retry(state, 2) == (state, [])  # an attempt not made yet
    again, effects = expense_retry(state, 1)
    (post,) = effects
    assert isinstance(post, Post) and post.spec == replace(first.spec, revision=2)
    assert again.revision == 2 and again.posted is not None
    assert again.posted.key == "psa:issue:7@2" and again.rejection == state.rejection
    done, effects = expense_result(again, 2, True, None, None, "11", 3.0)
    assert [type(e) for e in effects] == [Resolve] and done.rejection is None
    assert expense_retry(done, 1) == (done, [])  # resolved: nothing to retry
