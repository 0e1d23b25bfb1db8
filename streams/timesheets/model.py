"""One time entry's state and what each change of it means for the ERP (no I/O).

A time entry is known from two PSA tables: the `time_entries` row and its custom values
(the "Approved" field among them), joined here per entry. Only an approved entry whose
project and person are known is posted; what the ERP was last asked to hold (`sent`) is
compared with what it should hold now:

- should hold a line, holds none or another one -> a `post` posting (create or correct);
- should hold none (un-approved, deleted), was asked to hold one -> a `reverse` posting;
- approved but its project or person unknown -> nothing posted; it waits up to
  PSSYNC_TIME_ENTRY_WAIT seconds, then a business exception (time_entry.unknown_project /
  unknown_person) opens, and is resolved when the reference arrives and the entry posts;
- the ERP refuses a posting (e.g. the line is invoiced) -> a business exception with the
  ERP's reason (time_entry.invoiced), resolved by a later posting the ERP takes: after a
  change in the PSA, or an operator's retry (`retry`) once the cause is fixed in the ERP.

Every posting carries the next revision; results of an older revision than the last one
sent are stale and change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from connectors.ports import DONE, POST, REVERSE

UNKNOWN_PROJECT = "time_entry.unknown_project"
UNKNOWN_PERSON = "time_entry.unknown_person"
# Reasons whose exception resolves by itself once the reference arrives.
WAIT_REASONS = (UNKNOWN_PROJECT, UNKNOWN_PERSON)


def erp_reason(reason: str | None) -> str:
    """The business reason code of a posting the ERP refused."""
    return f"time_entry.{reason or 'rejected'}"


@dataclass(frozen=True)
class Entry:
    """The PSA's time entry row, as far as posting needs it."""

    psa_id: str
    project: str  # PSA project id
    user: str  # PSA user id
    issue: str | None  # PSA issue id the time is booked on
    hours: str  # decimal text
    spent_on: str  # ISO date
    comments: str = ""
    changed_at: float = 0.0  # when the PSA committed the change (epoch seconds)


@dataclass(frozen=True)
class Sent:
    """The last posting issued for the entry."""

    revision: int
    action: str  # POST | REVERSE
    spec: dict[str, Any] | None = None  # the TimesheetLineSpec as plain JSON, for POST


@dataclass(frozen=True)
class Problem:
    """The entry's current business exception (open or resolved)."""

    number: int
    reason: str
    message: str
    status: str  # open | resolved
    raised_at: float
    resolved_at: float | None = None
    # The ERP refused a posting (not a wait for a reference): only a posting resolves it,
    # even when its reason reads like a wait's (the ERP's unknown_person).
    refused: bool = False


@dataclass(frozen=True)
class TimeEntry:
    key: str  # canonical time entry id
    partition: int
    entry: Entry | None = None
    entry_seq: int = -1  # source position of the row change applied last
    values: dict[str, str] = field(default_factory=dict)  # custom field id -> value
    value_seqs: dict[str, int] = field(default_factory=dict)
    revision: int = 0
    sent: Sent | None = None
    erp_id: str | None = None  # the ERP line, once a post is done
    waiting_since: float | None = None
    problem: Problem | None = None
    correlation_id: str | None = None
    project_code: str | None = None
    # Has field values, but the "Approved" field was not known when last judged: judged
    # again once it is (kept here so a restarted worker or a new owner knows).
    field_unknown: bool = False

    def approved(self, field_id: str | None) -> bool:
        if self.entry is None or field_id is None:
            return False
        return self.values.get(field_id, "").strip().lower() in ("1", "true", "t", "yes")


@dataclass(frozen=True)
class Enriched:
    """An approved entry with everything the ERP line and the canonical event need."""

    spec: dict[str, Any]  # TimesheetLineSpec as plain JSON
    project_code: str
    correlation_id: str | None


@dataclass(frozen=True)
class Missing:
    reason: str  # UNKNOWN_PROJECT | UNKNOWN_PERSON
    message: str


@dataclass(frozen=True)
class Issue:
    """Put a posting on the queue."""

    revision: int
    action: str
    spec: dict[str, Any] | None


@dataclass(frozen=True)
class Raise:
    problem: Problem


@dataclass(frozen=True)
class Resolve:
    problem: Problem


Effect = Issue | Raise | Resolve


def _open(
    state: TimeEntry, reason: str, message: str, now: float, refused: bool = False
) -> tuple[TimeEntry, Effect]:
    number = (state.problem.number if state.problem else 0) + 1
    problem = Problem(number, reason, message, "open", now, refused=refused)
    return replace(state, problem=problem), Raise(problem)


def _waits(problem: Problem | None) -> bool:
    """The problem is a wait for a reference, which resolves once the reference is known."""
    return problem is not None and not problem.refused and problem.reason in WAIT_REASONS


def _resolve(state: TimeEntry, now: float) -> tuple[TimeEntry, list[Effect]]:
    if state.problem is None or state.problem.status != "open":
        return state, []
    problem = replace(state.problem, status="resolved", resolved_at=now)
    return replace(state, problem=problem), [Resolve(problem)]


def decide(
    state: TimeEntry,
    approved: bool,
    enriched: Enriched | Missing | None,
    now: float,
    wait: float,
) -> tuple[TimeEntry, list[Effect]]:
    """What the entry's current PSA state asks of the ERP. `enriched` is None when the
    entry is not approved (or deleted)."""
    effects: list[Effect] = []
    if approved and isinstance(enriched, Missing):
        since = state.waiting_since if state.waiting_since is not None else now
        state = replace(state, waiting_since=since)
        open_same = (
            state.problem is not None
            and state.problem.status == "open"
            and state.problem.reason == enriched.reason
        )
        if now - since >= wait and not open_same:
            state, raised = _open(state, enriched.reason, enriched.message, now)
            effects.append(raised)
        return state, effects
    state = replace(state, waiting_since=None)
    if _waits(state.problem):
        state, resolved = _resolve(state, now)
        effects += resolved
    if approved and isinstance(enriched, Enriched):
        state = replace(
            state, correlation_id=enriched.correlation_id, project_code=enriched.project_code
        )
        if state.sent is None or state.sent.action != POST or state.sent.spec != enriched.spec:
            revision = state.revision + 1
            state = replace(state, revision=revision, sent=Sent(revision, POST, enriched.spec))
            effects.append(Issue(revision, POST, enriched.spec))
        return state, effects
    if state.sent is not None and state.sent.action == POST:
        revision = state.revision + 1
        state = replace(state, revision=revision, sent=Sent(revision, REVERSE))
        effects.append(Issue(revision, REVERSE, None))
    return state, effects


def on_result(
    state: TimeEntry,
    revision: int,
    status: str,
    erp_id: str | None,
    reason: str | None,
    message: str | None,
    now: float,
) -> tuple[TimeEntry, list[Effect]]:
    """The ERP's answer to a posting; answers to postings older than the last are stale."""
    if state.sent is None or revision != state.sent.revision:
        return state, []
    if status == DONE:
        state = replace(state, erp_id=erp_id if state.sent.action == POST else None)
        if state.problem is not None and not _waits(state.problem):
            return _resolve(state, now)
        return state, []
    code = erp_reason(reason)
    problem = state.problem
    if problem is not None and problem.status == "open" and problem.reason == code:
        return state, []
    state, raised = _open(state, code, message or "the ERP refused the posting", now, True)
    return state, [raised]


def retry(state: TimeEntry, attempt: int) -> tuple[TimeEntry, list[Effect]]:
    """An operator's retry of the refused posting open exception number `attempt` is about,
    once its cause is fixed outside pssync: the last posting again, as the next revision.
    Anything else (no such open exception, a wait for a reference) changes nothing."""
    problem, sent = state.problem, state.sent
    if (
        problem is None
        or problem.status != "open"
        or problem.number != attempt
        or _waits(problem)
        or sent is None
    ):
        return state, []
    revision = state.revision + 1
    again = replace(sent, revision=revision)
    return replace(state, revision=revision, sent=again), [
        Issue(revision, again.action, again.spec)
    ]
