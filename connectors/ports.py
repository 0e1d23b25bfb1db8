"""What the quote-to-cash workflows need from the applications, independent of the vendor.

The saga speaks only these protocols; `connectors/erp`, `connectors/psa` and `connectors/crm`
implement them over each application's API. Every operation is idempotent on an external key
the caller derives deterministically (the canonical customer id, the deal's correlation id),
so a redelivered or replayed command finds what an earlier attempt created instead of
creating it twice.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Protocol, TypeVar


@dataclass(frozen=True)
class CustomerSpec:
    code: str  # the canonical customer id: the ERP party code, unique there
    name: str
    tax_id: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2
    currency: str | None = None  # ISO 4217


@dataclass(frozen=True)
class ErpCustomer:
    id: int
    code: str


@dataclass(frozen=True)
class TaskSpec:
    name: str
    phase: str  # the WBS phase the task belongs to
    effort_hours: Decimal | None = None
    unit_price: Decimal | None = None  # per hour, from the deal's line items


@dataclass(frozen=True)
class MilestoneSpec:
    name: str
    due: date | None = None
    amount: Decimal | None = None


@dataclass(frozen=True)
class ProjectSpec:
    """The ERP project of one closed-won deal."""

    key: str  # the deal's correlation id: how the project is found again
    name: str
    customer_id: int  # ErpCustomer.id
    invoice_method: str  # timesheet | effort | progress | manual
    currency: str
    list_price: Decimal  # per hour, the project's default rate
    tasks: tuple[TaskSpec, ...] = ()


@dataclass(frozen=True)
class ErpProject:
    id: int
    number: str  # assigned by the ERP: the enterprise project code
    task_ids: dict[str, int] = field(default_factory=dict, hash=False)  # task name -> id


@dataclass(frozen=True)
class Member:
    login: str  # the user's login (or mail) in the PSA
    role: str  # e.g. "Manager", "Developer"


@dataclass(frozen=True)
class PsaProjectSpec:
    identifier: str  # derived from the ERP project code: how the project is found again
    name: str
    erp_project_code: str
    description: str = ""
    tasks: tuple[TaskSpec, ...] = ()  # phases become parent issues, tasks their children
    milestones: tuple[MilestoneSpec, ...] = ()  # versions
    members: tuple[Member, ...] = ()
    placeholders: tuple[str, ...] = ()  # roles to staff later, e.g. "Solution architect"


@dataclass(frozen=True)
class PsaProject:
    id: int
    identifier: str
    url: str
    # WBS phase -> parent issue id, task name -> issue id: what the project holds now, not
    # part of its identity (a project grown by a newer template is the same project).
    phase_ids: dict[str, int] = field(default_factory=dict, hash=False, compare=False)
    task_ids: dict[str, int] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class CrmWriteBack:
    """Fields pssync owns in the CRM; their change data is recognized as pssync's own echo."""

    opportunity_id: str
    account_id: str | None = None
    erp_customer_id: str | None = None
    project_code: str | None = None
    psa_project_url: str | None = None
    sync_status: str | None = None  # e.g. "provisioned", "exception: <reason>"
    sync_error: str | None = None


@dataclass(frozen=True)
class CrmInvoiceStatus:
    """A deal's invoicing on its CRM opportunity: fields pssync owns (their CDC is its echo)."""

    opportunity_id: str  # the CRM's id of the opportunity
    project_code: str
    invoiced_to_date: Decimal  # net, posted and paid invoices, in `currency`
    currency: str
    last_invoice_number: str | None
    last_invoice_status: str | None  # posted, paid, cancelled (the ERP's words)
    payment_status: str  # none, unpaid, partially_paid, paid
    changed_at: float = 0.0  # when the ERP committed the invoice change behind it (latency)


@dataclass(frozen=True)
class PsaProjectFinancials:
    """A project's invoicing and revenue in the PSA's project custom fields."""

    erp_project_code: str  # how the project is found (its "ERP project code" field)
    invoiced_to_date: Decimal
    recognized_revenue: Decimal
    changed_at: float = 0.0  # when the ERP committed the invoice change behind it (latency)


# -- postings: ERP writes of approved work, applied in batches (streams/postings) -------

POST = "post"  # create the ERP record of the source object, or correct it to this spec
REVERSE = "reverse"  # take the source object's ERP record back (it was un-approved, deleted)
POSTING_ACTIONS = (POST, REVERSE)
DONE = "done"
REJECTED = "rejected"


@dataclass(frozen=True)
class TimesheetLineSpec:
    """One approved time entry as a Tryton timesheet line (one line per time entry)."""

    key: str  # the canonical time entry id: how the line is found again
    project_id: int  # ERP project.work of the project (ErpProject.id)
    task: str | None  # name of the project's task the hours go on; None: the project itself
    employee: str  # canonical resource id = the code of the employee's party in the ERP
    date: date
    hours: Decimal
    description: str = ""


@dataclass(frozen=True)
class Posting:
    """One posting as a kind's batch operation receives it."""

    key: str  # the source object's canonical id, the ERP record's external key
    action: str  # POST | REVERSE
    spec: Any = None  # the kind's spec dataclass for POST, None for REVERSE


@dataclass(frozen=True)
class ExpenseSpec:
    """One revision of an approved, billable expense as a cost re-billed to the project's
    customer. The ERP holds one live line per expense: a new revision reverses the line of
    the previous one and adds its own; each line is found again by expense id + revision."""

    expense_id: str  # canonical id of the expense
    revision: int  # grows with every change that reaches the ERP
    project_code: str  # the ERP project (its number) whose customer is re-billed
    amount: Decimal  # in `currency`, positive
    currency: str  # ISO 4217
    expense_date: date
    description: str = ""


@dataclass(frozen=True)
class PostingOutcome:
    """What the ERP did with one posting of a batch."""

    key: str
    status: str  # DONE | REJECTED
    erp_id: str | None = None  # the ERP record (None once reversed or never there)
    reason: str | None = None  # stable code when rejected, e.g. "invoiced", "unknown_task"
    message: str | None = None  # what the ERP said and what to fix


@dataclass(frozen=True)
class ErpAmendmentSpec:
    """A provisioned project's financial baseline after an amendment (absolute values).

    `revision` (the deal's amendment number) is the external key: the ERP project records
    the last revision applied, and an amendment not newer than it is not applied again.
    """

    key: str  # the deal's correlation id: how the project is found (as in ProjectSpec)
    project_number: str  # the ERP project code, checked against the project found
    revision: int
    change_order: str  # canonical id of the change order (or of the deal amended itself)
    list_price: Decimal
    tasks: tuple[TaskSpec, ...] = ()  # every task's effort; a task not there yet is made


@dataclass(frozen=True)
class ErpAmendment:
    id: int
    number: str
    revision: int  # the revision the project holds now
    task_ids: dict[str, int] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class PsaAmendmentSpec:
    """A PSA project's baseline after an amendment: estimates, WBS and milestone versions."""

    identifier: str
    erp_project_code: str
    revision: int
    tasks: tuple[TaskSpec, ...] = ()  # estimated hours of each; missing issues are made
    milestones: tuple[MilestoneSpec, ...] = ()  # versions, due dates moved when changed


class Erp(Protocol):
    async def ensure_customer(self, spec: CustomerSpec) -> ErpCustomer: ...

    async def ensure_project(self, spec: ProjectSpec) -> ErpProject: ...

    async def post_timesheet_lines(self, postings: list[Posting]) -> list[PostingOutcome]:
        """Apply a batch of time entry postings, one outcome per posting, same order.

        Idempotent per key: POST creates the line when the ERP has none for the key and
        writes it to the spec otherwise; REVERSE deletes it (none: done). A line already
        invoiced is not changed: REJECTED with reason "invoiced".
        """
        ...

    async def amend_project(self, spec: ErpAmendmentSpec) -> ErpAmendment: ...

    async def post_expenses(self, postings: list[Posting]) -> list[PostingOutcome]:
        """Apply a batch of expense postings (ExpenseSpec for POST), one outcome per posting.

        Idempotent per key and revision: POST adds the revision's line unless the ERP has it
        and reverses any other live line of the expense; REVERSE reverses the live line."""
        ...


class Psa(Protocol):
    async def ensure_project(self, spec: PsaProjectSpec) -> PsaProject: ...

    async def set_financials(self, spec: PsaProjectFinancials) -> None: ...
    async def amend_project(self, spec: PsaAmendmentSpec) -> PsaProject: ...


class Crm(Protocol):
    async def write_back(self, change: CrmWriteBack) -> None: ...

    async def write_invoice_status(self, status: CrmInvoiceStatus) -> None: ...


# -- JSON form of the specs and results, as saga commands and results carry them ----------

_Spec = TypeVar("_Spec")


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal | date):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def to_json(value: object) -> str:
    """A spec or result as JSON: decimals and dates as strings, tuples as lists."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"))


def _typed(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        inner = [a for a in args if a is not type(None)]
        return _typed(inner[0], value) if len(inner) == 1 else value
    if origin is tuple:
        return tuple(_typed(args[0], v) for v in value)
    if origin is dict:
        return {k: _typed(args[1], v) for k, v in value.items()}
    if hint is Decimal:
        return Decimal(str(value))
    if hint is date:
        return date.fromisoformat(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_json(hint, value)
    return value


def from_json(kind: type[_Spec], data: str | dict[str, Any]) -> _Spec:
    """The inverse of `to_json` for one of the dataclasses above."""
    raw = json.loads(data) if isinstance(data, str) else data
    hints = typing.get_type_hints(kind)
    names = {f.name for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    unknown = set(raw) - names
    if unknown:
        raise ValueError(f"{kind.__name__} has no field(s) {sorted(unknown)}")
    return kind(**{k: _typed(hints[k], v) for k, v in raw.items()})
