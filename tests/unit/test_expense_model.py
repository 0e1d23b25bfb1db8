"""The expense decision against a reference model: whatever the PSA does, in any order, the
ERP's net lines equal what the final state asks for, each posting key is used once, and an
expense whose project stays unknown becomes exactly one exception after its wait."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import date
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.expenses.model import (
    INVALID,
    UNKNOWN_PROJECT,
    ExpenseState,
    Issue,
    Post,
    Project,
    Publish,
    Raise,
    Resolve,
    Reverse,
    Value,
    decide,
    facts,
    on_result,
)

FIELDS = {"amount": "5", "currency": "6", "category": "7", "billable": "8", "approved": "9"}
WAIT = 60.0
PROJECTS = {"1": Project("PRJ-00001", "c1"), "2": Project("PRJ-00002", "c2")}

ops = st.one_of(
    st.tuples(st.just("approved"), st.sampled_from(["0", "1", ""])),
    st.tuples(st.just("amount"), st.sampled_from(["10", "25.50", "0", "-3", "x", ""])),
    st.tuples(st.just("currency"), st.sampled_from(["EUR", "USD", ""])),
    st.tuples(st.just("billable"), st.sampled_from(["0", "1", ""])),
    st.tuples(st.just("category"), st.sampled_from(["travel", "meals", "odd"])),
    st.tuples(st.just("project"), st.sampled_from(["1", "2", "9"])),
    st.tuples(st.just("subject"), st.sampled_from(["Taxi", "Hotel"])),
    st.tuples(st.just("known"), st.booleans()),
    st.tuples(st.just("time"), st.sampled_from([1.0, 30.0, 61.0])),
    st.tuples(st.just("delete"), st.none()),
)


def _expected(state: ExpenseState, known: set[str]) -> Counter[tuple[str, str]]:
    f = facts(state, FIELDS)
    if f is None or not (f.approved and f.billable) or f.amount is None or f.amount <= 0:
        return Counter()
    if f.currency is None or f.issue.psa_project_id not in known:
        return Counter()
    return Counter({(PROJECTS[f.issue.psa_project_id].code, f.currency): int(f.amount * 100)})


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=25))
def test_erp_net_matches_the_final_state(steps: list[tuple[str, object]]) -> None:
    issue = Issue("7", "1", "Taxi", "3", date(2026, 11, 2))
    state = ExpenseState("psa:issue:7", issue=issue, values={"5": Value("10")})
    known = {"1", "2"}
    now = 1000.0
    # The ERP as the port keeps it: line key -> (project, currency, signed cents); a new
    # revision reverses the live line and adds its own.
    erp: dict[str, tuple[str, str, int]] = {}
    revisions: list[int] = []
    open_problem: str | None = None

    def run() -> list[object]:
        nonlocal state, open_problem
        project_id = state.issue.psa_project_id if state.issue else None
        project = PROJECTS.get(project_id or "") if project_id in known else None
        state, effects = decide(state, facts(state, FIELDS), project, now, WAIT)
        for e in effects:
            if isinstance(e, Post | Reverse):
                revision = e.spec.revision if isinstance(e, Post) else e.revision
                assert not revisions or revision > revisions[-1], "revisions grow"
                revisions.append(revision)
                live = [k for k in erp if "~" not in k and f"{k}~reversal" not in erp]
                assert len(live) <= 1
                for k in live:
                    project_code, currency, cents = erp[k]
                    erp[f"{k}~reversal"] = (project_code, currency, -cents)
                if isinstance(e, Post):
                    p = e.spec
                    erp[f"{p.expense_id}@{p.revision}"] = (
                        p.project_code,
                        p.currency,
                        int(p.amount * 100),
                    )
            elif isinstance(e, Raise):
                assert open_problem is None
                open_problem = e.problem.reason
            elif isinstance(e, Resolve):
                assert open_problem == e.problem.reason
                open_problem = None
        return list(effects)

    for version, (op, arg) in enumerate(steps, start=1):
        if op == "time":
            now += float(arg)  # type: ignore[arg-type]
        elif op == "known":
            known = {"1", "2"} if arg else {"2"}
        elif op == "delete":
            state = replace(state, issue=None)
        elif op in ("project", "subject"):
            base = state.issue or issue
            field = "psa_project_id" if op == "project" else "subject"
            state = replace(state, issue=replace(base, **{field: str(arg)}))
        else:
            state = replace(state, values={**state.values, FIELDS[op]: Value(str(arg), version)})
        run()
        assert run() == [], "deciding again does nothing"
        f = facts(state, FIELDS)
        waiting = (
            f is not None
            and f.approved
            and f.amount is not None
            and f.amount > 0
            and f.currency is not None
            and f.issue.psa_project_id not in known
        )
        if not waiting:
            net: Counter[tuple[str, str]] = Counter()
            for project_code, currency, cents in erp.values():
                net[(project_code, currency)] += cents
            assert +net == _expected(state, known)
        if waiting and state.waiting_since is not None and now - state.waiting_since >= WAIT:
            assert open_problem == UNKNOWN_PROJECT
        if open_problem is not None:
            assert state.problem is not None and state.problem.reason == open_problem
            assert open_problem in (UNKNOWN_PROJECT, INVALID)


def test_unknown_project_waits_then_raises_once_and_resolves() -> None:
    issue = Issue("7", "9", "Taxi", "3", date(2026, 11, 2))
    values = {"5": Value("42"), "6": Value("EUR"), "9": Value("1")}
    state = ExpenseState("psa:issue:7", issue=issue, values=values)
    state, effects = decide(state, facts(state, FIELDS), None, 100.0, WAIT)
    assert effects == [] and state.waiting_since == 100.0
    state, effects = decide(state, facts(state, FIELDS), None, 161.0, WAIT)
    assert [type(e) for e in effects] == [Raise]
    assert effects[0].problem.reason == UNKNOWN_PROJECT  # type: ignore[union-attr]
    state, effects = decide(state, facts(state, FIELDS), None, 500.0, WAIT)
    assert effects == []
    project = Project("PRJ-00009", "c9")
    state, effects = decide(state, facts(state, FIELDS), project, 501.0, WAIT)
    kinds = [type(e) for e in effects]
    assert kinds == [Resolve, Post, Publish]
    post = effects[1]
    assert isinstance(post, Post)
    assert post.spec.expense_id == "psa:issue:7" and post.spec.revision == 1
    assert post.spec.amount == Decimal("42.00")


def test_unapproval_after_posting_reverses_and_withdraws() -> None:
    issue = Issue("7", "1", "Taxi", "3", date(2026, 11, 2))
    values = {"5": Value("42"), "6": Value("EUR"), "9": Value("1")}
    state = ExpenseState("psa:issue:7", issue=issue, values=values)
    state, _ = decide(state, facts(state, FIELDS), PROJECTS["1"], 1.0, WAIT)
    state = replace(state, values={**values, "9": Value("0")})
    state, effects = decide(state, facts(state, FIELDS), PROJECTS["1"], 2.0, WAIT)
    reverse, publish = effects
    assert reverse == Reverse(2)
    assert isinstance(publish, Publish) and publish.approval_state == "withdrawn"


def test_a_refused_posting_is_an_exception_until_a_later_one_is_done() -> None:
    issue = Issue("7", "1", "Taxi", "3", date(2026, 11, 2))
    values = {"5": Value("42"), "6": Value("EUR"), "9": Value("1")}
    state = ExpenseState("psa:issue:7", issue=issue, values=values)
    state, _ = decide(state, facts(state, FIELDS), PROJECTS["1"], 1.0, WAIT)
    state, effects = on_result(state, 1, False, "expense.rejected", "no", None, 2.0)
    assert [type(e) for e in effects] == [Raise]
    assert on_result(state, 1, False, "expense.rejected", "no", None, 3.0) == (state, [])
    state = replace(state, values={**values, "5": Value("43")})
    state, effects = decide(state, facts(state, FIELDS), PROJECTS["1"], 4.0, WAIT)
    assert [type(e) for e in effects] == [Post, Publish]
    assert on_result(state, 1, True, None, None, "9", 5.0) == (state, [])  # superseded
    state, effects = on_result(state, 2, True, None, None, "10", 6.0)
    assert [type(e) for e in effects] == [Resolve] and state.erp_id == "10"
    assert state.rejection is None


def test_an_issue_without_expense_fields_is_no_expense() -> None:
    state = ExpenseState("psa:issue:8", issue=Issue("8", "1"), values={"1": Value("1")})
    assert facts(state, FIELDS) is None
    assert decide(state, None, PROJECTS["1"], 1.0, WAIT) == (state, [])
