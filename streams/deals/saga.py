"""The quote-to-cash saga of one deal as a pure state machine.

State per correlation id: status, the current step and its attempt, the command awaited,
which steps passed (with what they returned), ids learned, timestamps, last error. Steps run
in order; each is one command to one application. The saga advances only on the result of
the exact command it awaits (its command id names the step and attempt), so a redelivered
or replayed result, the result of an earlier attempt, or that of a notice never advances it
twice. A `rejected` result parks the saga on a business exception naming the step; a fix in
the CRM or `pssync exceptions retry` resumes from that step with the next attempt.

Functions return the new state and the effects the stage carries out (commands to issue,
exceptions to raise or resolve); they do no I/O.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from connectors.ports import ErpCustomer, ErpProject, PsaProject, from_json
from streams.deals.amendments import TARGETS as AMENDMENT_TARGETS
from streams.deals.validation import Problem, summary

STEPS = ("erp_customer", "erp_project", "psa_project", "crm_writeback")
TARGETS = {
    "erp_customer": "erp",
    "erp_project": "erp",
    "psa_project": "psa",
    "crm_writeback": "crm",
    **AMENDMENT_TARGETS,  # a provisioned deal's amendments (streams/deals/amendments.py)
}
# The deal's own checks, before the first step: a saga parked there restarts from the top.
VALIDATE = "validate"

RUNNING, PARKED, DONE = "running", "parked", "done"
REJECTED = "rejected"
BAD_RESULT = "bad_result"


def command_id(correlation_id: str, step: str, attempt: int) -> str:
    """The idempotency key of a step's command; a retried step gets a new one."""
    base = f"{correlation_id}:{step}"
    return base if attempt == 1 else f"{base}:{attempt}"


def notice_id(correlation_id: str, number: int) -> str:
    """Command id of the CRM status notice of the deal's `number`th exception."""
    return f"{correlation_id}:crm_writeback:exception:{number}"


@dataclass(frozen=True)
class Passed:
    command_id: str
    attempt: int
    at: float
    output: str  # what the application returned (JSON)


@dataclass(frozen=True)
class Saga:
    key: str  # the saga key (the deal's canonical opportunity id)
    correlation_id: str
    status: str = RUNNING
    step: str = STEPS[0]
    attempt: int = 1
    awaiting: str | None = None  # command id of the result that advances the saga
    passed: dict[str, Passed] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)  # last attempt issued per step
    learned: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    last_error: str | None = None
    exceptions: int = 0  # exceptions raised so far (numbers the CRM notices)
    reasons: tuple[str, ...] = ()  # every problem's reason code, when parked
    parked_at: float | None = None
    closed_won_at: float = 0.0
    started_at: float = 0.0
    updated_at: float = 0.0
    deadline: float = 0.0
    done_at: float | None = None


@dataclass(frozen=True)
class Issue:
    """Build and send the command of `step`."""

    step: str
    attempt: int
    command_id: str


@dataclass(frozen=True)
class Park:
    """Raise (or update) the deal's business exception."""

    step: str
    attempt: int
    reason: str
    message: str
    number: int  # the saga's exception count after this one
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resolve:
    """The open exception is resolved: the saga moves on."""

    step: str
    attempt: int
    reason: str
    message: str
    number: int
    reasons: tuple[str, ...]
    parked_at: float


@dataclass(frozen=True)
class StepPassed:
    step: str
    at: float


Effect = Issue | Park | Resolve | StepPassed


@dataclass(frozen=True)
class Outcome:
    """A result of saga.results, decoded."""

    command_id: str
    step: str
    attempt: int
    status: str  # done | rejected | unknown
    output: str = "{}"
    error: str | None = None


def _issue(saga: Saga, step: str, now: float) -> tuple[Saga, list[Effect]]:
    attempt = saga.attempts.get(step, 0) + 1
    cid = command_id(saga.correlation_id, step, attempt)
    saga = dataclasses.replace(
        saga,
        status=RUNNING,
        step=step,
        attempt=attempt,
        awaiting=cid,
        attempts={**saga.attempts, step: attempt},
        reason=None,
        updated_at=now,
    )
    return saga, [Issue(step, attempt, cid)]


def _park(
    saga: Saga,
    step: str,
    attempt: int,
    reason: str,
    message: str,
    now: float,
    reasons: tuple[str, ...] = (),
) -> tuple[Saga, list[Effect]]:
    number = saga.exceptions + 1
    reasons = reasons or (reason,)
    saga = dataclasses.replace(
        saga,
        status=PARKED,
        step=step,
        attempt=attempt,
        awaiting=None,
        reason=reason,
        reasons=reasons,
        last_error=message,
        exceptions=number,
        parked_at=now,
        updated_at=now,
    )
    return saga, [Park(step, attempt, reason, message, number, reasons)]


def _resolved(saga: Saga) -> Resolve:
    return Resolve(
        saga.step,
        saga.attempt,
        saga.reason or "",
        saga.last_error or "",
        saga.exceptions,
        saga.reasons,
        saga.parked_at or saga.updated_at,
    )


def _reasons(problems: list[Problem]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.reason for p in problems))


def begin(
    key: str,
    correlation_id: str,
    problems: list[Problem],
    now: float,
    closed_won_at: float,
    deadline: float,
) -> tuple[Saga, list[Effect]]:
    """A deal fired: park it on its problems, or issue the first step."""
    saga = Saga(
        key=key,
        correlation_id=correlation_id,
        closed_won_at=closed_won_at,
        started_at=now,
        updated_at=now,
        deadline=deadline,
    )
    if problems:
        return _park(
            saga, VALIDATE, 1, problems[0].reason, summary(problems), now, _reasons(problems)
        )
    return _issue(saga, STEPS[0], now)


def _resume(saga: Saga, problems: list[Problem], now: float) -> tuple[Saga, list[Effect]]:
    """A parked saga checked again: still parked (exception updated if it says something
    new), or on its way again from the step it stopped at."""
    if problems:
        reason, message = problems[0].reason, summary(problems)
        if (reason, message) == (saga.reason, saga.last_error):
            return saga, []
        return _park(saga, saga.step, saga.attempt, reason, message, now, _reasons(problems))
    step = STEPS[0] if saga.step == VALIDATE else saga.step
    resumed, effects = _issue(saga, step, now)
    return resumed, [_resolved(saga), *effects]


def on_change(saga: Saga, problems: list[Problem], now: float) -> tuple[Saga, list[Effect]]:
    """The deal changed in the CRM: a parked saga is checked again and resumes if fixed."""
    if saga.status != PARKED:
        return saga, []
    return _resume(saga, problems, now)


def on_retry(
    saga: Saga, step: str, attempt: int, problems: list[Problem], now: float
) -> tuple[Saga, list[Effect]]:
    """`pssync exceptions retry` for the exception parked at (`step`, `attempt`).

    A retry of a step reruns it even when nothing in the deal changed (the fix may be in an
    application's setup); a retry recorded for an earlier exception does nothing.
    """
    if saga.status != PARKED or saga.step != step or saga.attempt != attempt:
        return saga, []
    if problems or saga.step == VALIDATE:
        return _resume(saga, problems, now)
    resumed, effects = _issue(saga, saga.step, now)
    return resumed, [_resolved(saga), *effects]


def _learn(step: str, output: str) -> dict[str, str]:
    if step == "erp_customer":
        customer = from_json(ErpCustomer, output)
        return {"erp_customer_id": str(customer.id), "erp_customer_code": customer.code}
    if step == "erp_project":
        project = from_json(ErpProject, output)
        return {"erp_project_id": str(project.id), "project_code": project.number}
    if step == "psa_project":
        psa = from_json(PsaProject, output)
        return {"psa_project_id": str(psa.id), "psa_identifier": psa.identifier, "psa_url": psa.url}
    return {}


def on_result(saga: Saga, outcome: Outcome, now: float) -> tuple[Saga, list[Effect]]:
    """A command's result: the awaited one advances or parks the saga; others do nothing."""
    if saga.status != RUNNING or outcome.command_id != saga.awaiting:
        return saga, []
    step = saga.step
    if outcome.status != "done":
        error = outcome.error or f"the application answered {outcome.status!r}"
        return _park(saga, step, saga.attempt, REJECTED, f"{step} rejected: {error}", now)
    try:
        learned = _learn(step, outcome.output)
    except (ValueError, TypeError, KeyError) as exc:
        return _park(
            saga,
            step,
            saga.attempt,
            BAD_RESULT,
            f"{step} returned output pssync cannot read ({exc}); check the command stage's "
            "version, then retry",
            now,
        )
    passed = {**saga.passed, step: Passed(outcome.command_id, saga.attempt, now, outcome.output)}
    saga = dataclasses.replace(
        saga, passed=passed, learned={**saga.learned, **learned}, last_error=None, updated_at=now
    )
    effects: list[Effect] = [StepPassed(step, now)]
    following = STEPS.index(step) + 1
    if following == len(STEPS):
        done = dataclasses.replace(saga, status=DONE, awaiting=None, done_at=now)
        return done, effects
    saga, issued = _issue(saga, STEPS[following], now)
    return saga, effects + issued


def park_step(saga: Saga, issue: Issue, problem: Problem, now: float) -> tuple[Saga, list[Effect]]:
    """The command of `issue` could not be built from the deal: park on that step."""
    return _park(saga, issue.step, issue.attempt, problem.reason, problem.message, now)


def is_open(saga: Saga) -> bool:
    return saga.status != DONE
