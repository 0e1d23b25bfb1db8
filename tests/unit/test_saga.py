"""The saga: one command per step and attempt, advances once per step, parks and resumes."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.ports import ErpCustomer, ErpProject, PsaProject, from_json, to_json
from streams.deals import saga as m
from streams.deals.saga import Issue, Outcome, Park, Resolve, Saga, StepPassed
from streams.deals.validation import Problem

KEY = "crm:opportunity:006A"
CID = "c0ffee00-0000-5000-8000-000000000000"
OUTPUTS = {
    "erp_customer": to_json(ErpCustomer(7, "crm:account:001A")),
    "erp_project": to_json(ErpProject(9, "PRJ-0009", {"Design": 1})),
    "psa_project": to_json(PsaProject(3, "prj-prj-0009", "http://psa/projects/prj-prj-0009")),
    "crm_writeback": "{}",
}
PROBLEM = [Problem("template_missing", "no template for ARCH; add one")]


def done(issue: Issue) -> Outcome:
    return Outcome(issue.command_id, issue.step, issue.attempt, "done", OUTPUTS[issue.step])


def start(problems: list[Problem] | None = None) -> tuple[Saga, list[m.Effect]]:
    return m.begin(KEY, CID, problems or [], 1.0, 0.5, 300.5)


def test_happy_path_issues_the_steps_in_order_and_learns_the_ids() -> None:
    saga, effects = start()
    issued = []
    while saga.status == m.RUNNING:
        issue = next(e for e in effects if isinstance(e, Issue))
        issued.append(issue)
        saga, effects = m.on_result(saga, done(issue), 2.0)
    assert [i.step for i in issued] == list(m.STEPS)
    assert [i.command_id for i in issued] == [f"{CID}:{s}" for s in m.STEPS]
    assert saga.status == m.DONE and list(saga.passed) == list(m.STEPS)
    assert saga.learned == {
        "erp_customer_id": "7",
        "erp_customer_code": "crm:account:001A",
        "erp_project_id": "9",
        "project_code": "PRJ-0009",
        "psa_project_id": "3",
        "psa_identifier": "prj-prj-0009",
        "psa_url": "http://psa/projects/prj-prj-0009",
    }


def test_a_redelivered_result_never_advances_twice() -> None:
    saga, [first] = start()
    assert isinstance(first, Issue)
    saga, effects = m.on_result(saga, done(first), 2.0)
    again, nothing = m.on_result(saga, done(first), 3.0)
    assert again == saga and nothing == []
    assert [type(e) for e in effects] == [StepPassed, Issue]


def test_invalid_deal_parks_at_validate_and_a_fix_resumes_from_the_top() -> None:
    saga, effects = start(PROBLEM)
    assert saga.status == m.PARKED and saga.step == m.VALIDATE
    assert effects == [
        Park(m.VALIDATE, 1, "template_missing", PROBLEM[0].message, 1, ("template_missing",))
    ]
    # The same problems again: nothing new to say.
    assert m.on_change(saga, PROBLEM, 2.0) == (saga, [])
    saga, effects = m.on_change(saga, [], 3.0)
    assert isinstance(effects[0], Resolve) and effects[0].step == m.VALIDATE
    assert effects[1] == Issue("erp_customer", 1, f"{CID}:erp_customer")


def test_rejected_step_parks_and_retry_resumes_that_step_with_the_next_attempt() -> None:
    saga, [first] = start()
    assert isinstance(first, Issue)
    saga, [_, second] = m.on_result(saga, done(first), 2.0)
    assert isinstance(second, Issue) and second.step == "erp_project"
    rejected = Outcome(second.command_id, "erp_project", 1, "rejected", error="no such company")
    saga, [park] = m.on_result(saga, rejected, 3.0)
    assert isinstance(park, Park) and (park.step, park.reason) == ("erp_project", m.REJECTED)
    # A retry for another exception, or a stale one, does nothing.
    assert m.on_retry(saga, "psa_project", 1, [], 4.0) == (saga, [])
    assert m.on_retry(saga, "erp_project", 2, [], 4.0) == (saga, [])
    saga, effects = m.on_retry(saga, "erp_project", 1, [], 5.0)
    assert isinstance(effects[0], Resolve)
    assert effects[1] == Issue("erp_project", 2, f"{CID}:erp_project:2")
    # The old attempt's result, redelivered now, does not count for the new attempt.
    assert m.on_result(saga, rejected, 6.0) == (saga, [])
    # The replayed retry of attempt 1 does nothing either.
    assert m.on_retry(saga, "erp_project", 1, [], 7.0) == (saga, [])


def test_unreadable_output_parks_the_step() -> None:
    saga, [first] = start()
    assert isinstance(first, Issue)
    bad = Outcome(first.command_id, first.step, 1, "done", '{"nope": 1}')
    saga, [park] = m.on_result(saga, bad, 2.0)
    assert isinstance(park, Park) and park.reason == m.BAD_RESULT


def test_saga_round_trips_through_json() -> None:
    saga, [first] = start()
    assert isinstance(first, Issue)
    saga, _ = m.on_result(saga, done(first), 2.0)
    assert from_json(Saga, json.loads(to_json(saga))) == saga


# -- property: random interleavings of results, duplicates, replays, retries, fixes -----

# What happens next: the command stage answers a command issued so far (by index, done or
# rejected), an operator retries the latest exception, or the deal changes (fixed or not).
ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("result"), st.integers(0, 20), st.sampled_from(["done", "done", "rejected"])
        ),
        st.tuples(st.just("retry"), st.booleans()),
        st.tuples(st.just("change"), st.booleans()),
    ),
    max_size=40,
)


class Model:
    """What the saga must do, kept the simple way: the latest issued command is the one
    awaited while running; steps pass in order, each once."""

    def __init__(self) -> None:
        self.awaited: Issue | None = None
        self.passed: list[str] = []
        self.parked = False


@settings(max_examples=400, deadline=None)
@given(st.booleans(), ops)
def test_one_command_per_step_and_attempt_and_never_advancing_on_a_duplicate(
    invalid: bool, script: list[tuple[object, ...]]
) -> None:
    saga, effects = start(PROBLEM if invalid else None)
    issued: list[Issue] = []
    answered: list[Outcome] = []
    model = Model()
    now = 1.0

    def take(effects: list[m.Effect]) -> None:
        for e in effects:
            if isinstance(e, Issue):
                assert e.command_id not in {i.command_id for i in issued}, "command issued twice"
                issued.append(e)
                model.awaited, model.parked = e, False
            elif isinstance(e, StepPassed):
                assert e.step not in model.passed, "a step passed twice"
                model.passed.append(e.step)
            elif isinstance(e, Park):
                model.awaited, model.parked = None, True

    take(effects)
    model.parked = invalid
    for op in script:
        now += 1
        before = saga
        if op[0] == "result" and issued:
            issue = issued[int(str(op[1])) % len(issued)]
            if op[2] == "done":
                outcome = done(issue)
            else:
                outcome = Outcome(
                    issue.command_id, issue.step, issue.attempt, "rejected", error="no"
                )
            answered.append(outcome)
            saga, effects = m.on_result(saga, outcome, now)
            awaited = model.awaited
            if awaited is None or awaited.command_id != outcome.command_id:
                assert (saga, effects) == (before, []), "advanced on a result not awaited"
            take(effects)
        elif op[0] == "retry":
            # The operator retries what `pssync exceptions show` shows (or a stale retry).
            step, attempt = (saga.step, saga.attempt) if op[1] else ("erp_customer", 99)
            saga, effects = m.on_retry(saga, step, attempt, [], now)
            if not op[1] or not model.parked:
                assert effects == []
            take(effects)
        elif op[0] == "change":
            saga, effects = m.on_change(saga, [] if op[1] else PROBLEM, now)
            if not model.parked:
                assert effects == []
            take(effects)
        assert tuple(saga.passed) == m.STEPS[: len(saga.passed)], "steps out of order"
        assert list(saga.passed) == model.passed
    # A replay of every result at the end changes nothing.
    final = saga
    for outcome in answered:
        if model.awaited is not None and outcome.command_id == model.awaited.command_id:
            continue  # the live command's own result is not a replay
        saga, effects = m.on_result(saga, outcome, now + 1)
        assert (saga, effects) == (final, [])
    # Driven to the end by a well-behaved command stage, the saga completes.
    if saga.status == m.PARKED:
        saga, effects = m.on_change(saga, [], now + 2)
        take(effects)
    while saga.status == m.RUNNING:
        assert model.awaited is not None
        saga, effects = m.on_result(saga, done(model.awaited), now + 3)
        take(effects)
    assert saga.status == m.DONE and model.passed == list(m.STEPS)
