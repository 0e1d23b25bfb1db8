"""An expense's state and what each change of it means for the ERP: the pure part.

A Redmine expense is an issue of the Expense tracker plus its custom values (amount,
currency, category, billable, approved), which arrive as separate events. `ExpenseState`
holds both, joined by the issue's canonical id; `decide` compares what the ERP should hold
(one billable line per approved expense of a known project) with what was posted and says
what to do: post a new revision, reverse the posted one, wait for the project, raise or
resolve a business exception, publish the canonical expense. Decisions are functions of the
state only, so deciding twice on the same state does nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal, InvalidOperation

from connectors.ports import ExpenseSpec

# The PSA's custom fields of an expense, by role -> their names in Redmine
# (docker/local/components/psa_setup.rb makes them).
FIELD_NAMES = {
    "amount": "Expense amount",
    "currency": "Expense currency",
    "category": "Expense category",
    "billable": "Billable",
    "approved": "Expense approved",
}
CATEGORIES = ("travel", "lodging", "meals", "mileage", "software", "materials", "other")
CENT = Decimal("0.01")

UNKNOWN_PROJECT = "expense.unknown_project"
INVALID = "expense.invalid"


@dataclass(frozen=True)
class Issue:
    psa_id: str
    psa_project_id: str
    subject: str = ""
    author_id: str | None = None
    start_date: date | None = None
    created_at: float | None = None
    modified_at: float | None = None  # when the PSA last changed it (epoch seconds)


@dataclass(frozen=True)
class Value:
    value: str | None
    version: int = -1


@dataclass(frozen=True)
class Posted:
    """The revision the ERP holds now (a line not reversed)."""

    key: str
    project_code: str
    amount: Decimal
    currency: str
    expense_date: date
    description: str


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str
    since: float  # when it was first seen


@dataclass(frozen=True)
class ExpenseState:
    key: str  # the issue's canonical id (psa:issue:<id>): what the stage is keyed by
    partition: int = 0
    issue: Issue | None = None
    version: int = -1  # source position of the issue held
    values: dict[str, Value] = field(default_factory=dict)  # custom field id -> value
    revision: int = 0  # postings issued so far; the next one is revision + 1
    posted: Posted | None = None
    waiting_since: float | None = None  # approved, its project not known yet
    problem: Problem | None = None  # the open business exception, if any
    exceptions: int = 0  # exceptions raised so far (numbers them)
    published: str | None = None  # fingerprint of the canonical expense last published
    rejection: Problem | None = None  # the ERP refused the latest posting (open exception)
    erp_id: str | None = None  # the ERP's id of the live line, once posted

    @property
    def psa_id(self) -> str:
        return self.key.rsplit(":", 1)[-1]

    @property
    def expense_id(self) -> str:
        # The expense is the PSA's issue: its canonical id is the issue's, so the postings
        # and their results (keyed by it) share the partition of the issue's records.
        return self.key


@dataclass(frozen=True)
class Project:
    """What the expense stage knows of a project (canonical.project)."""

    code: str
    correlation_id: str
    opportunity_id: str = ""
    customer_id: str = ""
    legal_entity_id: str = ""
    currency: str | None = None


@dataclass(frozen=True)
class Facts:
    """An expense as its PSA fields say, read through the field roles."""

    issue: Issue
    approved: bool
    billable: bool
    amount: Decimal | None
    currency: str | None
    category: str


def _flag(value: str | None) -> bool:
    return value == "1" or (value or "").lower() == "true"


def _amount(value: str | None) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        return None
    return amount.quantize(CENT) if amount.is_finite() else None


def facts(state: ExpenseState, field_ids: dict[str, str]) -> Facts | None:
    """The expense's facts; None when the issue is gone or is no expense (no amount field)."""
    if state.issue is None:
        return None
    amount_field = field_ids.get("amount")
    if amount_field is None or amount_field not in state.values:
        return None

    def raw(role: str) -> str | None:
        fid = field_ids.get(role)
        held = state.values.get(fid) if fid is not None else None
        return held.value if held is not None else None

    category = (raw("category") or "").strip().lower()
    currency = (raw("currency") or "").strip().upper()
    return Facts(
        issue=state.issue,
        approved=_flag(raw("approved")),
        # Redmine stores a boolean field never set as empty: billable unless said otherwise.
        billable=raw("billable") in (None, "") or _flag(raw("billable")),
        amount=_amount(raw("amount")),
        currency=currency or None,
        category=category if category in CATEGORIES else "other",
    )


# -- effects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Post:
    """Make `spec` the expense's line in the ERP (the ERP port reverses any other)."""

    spec: ExpenseSpec


@dataclass(frozen=True)
class Reverse:
    """Take the expense's line back (un-approved, no longer billable, deleted)."""

    revision: int


@dataclass(frozen=True)
class Raise:
    problem: Problem
    number: int


@dataclass(frozen=True)
class Resolve:
    problem: Problem
    number: int


@dataclass(frozen=True)
class Publish:
    """Publish the canonical expense: approval_state approved, or withdrawn (was approved,
    is not any more), or a delete (the issue is gone)."""

    approval_state: str  # approved | withdrawn | deleted
    project: Project | None


Effect = Post | Reverse | Raise | Resolve | Publish


def description(f: Facts, project_code: str, expense_id: str) -> str:
    day = f.issue.start_date.isoformat() if f.issue.start_date else "undated"
    return f"Expense ({f.category}, {day}) on {project_code}: {f.issue.subject} [{expense_id}]"


def _target(f: Facts, project: Project, expense_id: str) -> Posted | None:
    """The line the ERP should hold (its key is given when posted)."""
    if not f.approved or not f.billable or f.amount is None or f.currency is None:
        return None
    day = f.issue.start_date or date(1970, 1, 1)
    return Posted(
        "", project.code, f.amount, f.currency, day, description(f, project.code, expense_id)
    )


def _same(a: Posted | None, b: Posted | None) -> bool:
    if a is None or b is None:
        return a is b
    return replace(a, key="") == replace(b, key="")


def _problem_of(f: Facts | None, project: Project | None, now: float) -> Problem | None:
    if f is None or not f.approved:
        return None
    if f.amount is None or f.amount <= 0:
        return Problem(
            INVALID, "the approved expense has no positive amount; fix it in the PSA", now
        )
    if f.currency is None:
        return Problem(INVALID, "the approved expense has no currency; fix it in the PSA", now)
    if project is None:
        return Problem(
            UNKNOWN_PROJECT,
            f"PSA project {f.issue.psa_project_id} is not a project pssync knows (no canonical "
            "project names it): provision it from a closed-won deal or link it to its ERP "
            "project code",
            now,
        )
    return None


def fingerprint(f: Facts, project: Project) -> str:
    return "|".join(
        str(x)
        for x in (
            project.code,
            f.amount,
            f.currency,
            f.category,
            f.billable,
            f.issue.start_date,
            f.issue.subject,
            f.issue.author_id,
        )
    )


def _issue(state: ExpenseState, target: Posted | None) -> tuple[ExpenseState, Post | Reverse]:
    """The next revision: `target` as the ERP's line, or no line."""
    revision = state.revision + 1
    posted = None if target is None else replace(target, key=f"{state.expense_id}@{revision}")
    state = replace(state, revision=revision, posted=posted)
    if posted is None:
        return state, Reverse(revision)
    spec = ExpenseSpec(
        expense_id=state.expense_id,
        revision=revision,
        project_code=posted.project_code,
        amount=posted.amount,
        currency=posted.currency,
        expense_date=posted.expense_date,
        description=posted.description,
    )
    return state, Post(spec)


def decide(
    state: ExpenseState,
    f: Facts | None,
    project: Project | None,
    now: float,
    wait: float,
) -> tuple[ExpenseState, list[Effect]]:
    """What the state's current facts call for. `wait`: seconds an approved expense waits
    for its project before it becomes a business exception (it keeps waiting after)."""
    effects: list[Effect] = []
    problem = _problem_of(f, project, now)
    waiting = problem is not None and problem.reason == UNKNOWN_PROJECT
    waiting_since = (state.waiting_since or now) if waiting else None
    new = replace(state, waiting_since=waiting_since)
    # Business exceptions: an unknown project only once its wait is over.
    due = problem is not None and (not waiting or now - (waiting_since or now) >= wait)
    open_reason = state.problem.reason if state.problem else None
    if state.problem is not None and (problem is None or problem.reason != open_reason):
        effects.append(Resolve(state.problem, new.exceptions))
        new = replace(new, problem=None)
    if problem is not None and due and new.problem is None:
        number = new.exceptions + 1
        raised = replace(problem, since=waiting_since or now)
        effects.append(Raise(raised, number))
        new = replace(new, problem=raised, exceptions=number)
    if waiting:
        return new, effects  # what was posted stays until the project is known
    target = (
        None if f is None or project is None or problem else _target(f, project, state.expense_id)
    )
    if not _same(target, state.posted):
        new, issued = _issue(new, target)
        effects.append(issued)
    # The canonical expense: approved ones, and what became of one published before.
    if f is not None and f.approved and project is not None and problem is None:
        print_ = fingerprint(f, project)
        if print_ != state.published:
            effects.append(Publish("approved", project))
            new = replace(new, published=print_)
    elif state.published is not None:
        effects.append(Publish("deleted" if f is None else "withdrawn", project))
        new = replace(new, published=None)
    return new, effects


def on_result(
    state: ExpenseState,
    revision: int,
    done: bool,
    reason: str | None,
    message: str | None,
    erp_id: str | None,
    now: float,
) -> tuple[ExpenseState, list[Effect]]:
    """What the ERP did with a posting: a refusal of the latest revision is a business
    exception until a later revision (or the same, retried) is done."""
    if revision != state.revision:
        return state, []  # superseded by a later posting
    effects: list[Effect] = []
    if done:
        new = replace(state, erp_id=erp_id if state.posted is not None else None)
        if state.rejection is not None:
            effects.append(Resolve(state.rejection, state.exceptions))
            new = replace(new, rejection=None)
        return new, effects
    if state.rejection is not None:
        return state, []
    number = state.exceptions + 1
    problem = Problem(reason or "expense.rejected", message or "the ERP refused the expense", now)
    return replace(state, rejection=problem, exceptions=number), [Raise(problem, number)]


def retry(state: ExpenseState, attempt: int) -> tuple[ExpenseState, list[Effect]]:
    """An operator's retry of the refused posting (the exception's attempt is the revision it
    was raised at), once its cause is fixed outside pssync: what the ERP should hold, posted
    again as the next revision. Nothing refused open (or an attempt not made yet): nothing."""
    if state.rejection is None or not 0 < attempt <= max(1, state.revision):
        return state, []
    new, issued = _issue(state, state.posted)
    return new, [issued]
