"""Where the invoice stage's lookups come from: the one place that reads their fields.

- ERP project works (the raw `project_work` topic, read whole as a view): which work an
  invoice line bills (`project_work.invoice_line`, set by Tryton's project invoicing on
  effort) and the project above a task (`parent`), whose `number` is the project code.
- Rows that name the invoice line billing them and the work they are about (`Billed`), one
  view per table, each declared with the views that lead from its work to a project work
  (`Via`): for projects invoiced on timesheets, timesheet lines (`timesheet_line`), whose
  timesheet work (`timesheet_work`) names the project work that is its origin
  (`timesheet_work.origin`, `project.work,<id>`); for projects invoiced on progress, the
  progress invoiced per work (`project_work_invoiced_progress`), whose work is the project
  work. Only rows already linked to an invoice line are kept.
- Projects (canonical.project, published by the closed-won saga): project code -> the deal
  (opportunity, correlation id), customer, legal entity, currency, PSA project.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from streams.deals.sources import data_of
from tables.views import View

# Project works climbed from a task to its project at most this deep (Tryton has no cycles;
# the bound keeps a corrupt row from looping).
MAX_DEPTH = 32
# The origin Tryton gives a credit note's line: the line it credits.
CREDITED = "account.invoice.line,"
# The origin of a timesheet work made for a project work.
PROJECT_WORK = "project.work,"


@dataclass(frozen=True)
class Work:
    id: str
    parent: str | None
    type: str  # project | task
    number: str | None
    invoice_line: str | None


@dataclass(frozen=True)
class ProjectRef:
    code: str
    erp_project_id: str | None
    opportunity_id: str | None  # canonical, crm:opportunity:<CRM id>
    customer_id: str
    legal_entity_id: str
    correlation_id: str
    currency: str
    billing_type: str
    budget: str | None  # Decimal as text

    @property
    def crm_opportunity(self) -> str | None:
        """The CRM's own id of the deal's opportunity."""
        opp = self.opportunity_id or ""
        return opp.split(":", 2)[2] if opp.startswith("crm:opportunity:") else None


def raw_row(value: bytes) -> dict[str, Any]:
    """A Debezium JSON change event, decoded (the view adapts it)."""
    decoded = json.loads(value)
    if isinstance(decoded, dict) and "payload" in decoded and "schema" in decoded:
        decoded = decoded["payload"]
    return decoded if isinstance(decoded, dict) else {}


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def work_of(_key: str, change: dict[str, Any]) -> Work | None:
    row = change.get("after")
    if change.get("op") == "d" or not isinstance(row, dict):
        return None
    return Work(
        id=str(row["id"]),
        parent=_text(row.get("parent")),
        type=str(row.get("type") or ""),
        number=_text(row.get("number")),
        invoice_line=_text(row.get("invoice_line")),
    )


@dataclass(frozen=True)
class Billed:
    """A row an invoice line bills (an invoiced timesheet line, a work's invoiced progress):
    the invoice line and the work the row is about."""

    id: str
    invoice_line: str
    work: str


def billed_of(_key: str, change: dict[str, Any]) -> Billed | None:
    row = change.get("after")
    if change.get("op") == "d" or not isinstance(row, dict):
        return None
    line, work = _text(row.get("invoice_line")), _text(row.get("work"))
    if line is None or work is None:
        return None  # not invoiced (yet): nothing to look up by
    return Billed(str(row["id"]), line, work)


def billed_aliases(_key: str, billed: Billed) -> Iterable[str]:
    yield f"line:{billed.invoice_line}"


@dataclass(frozen=True)
class Via:
    """One way from an invoice line to the project work it bills: the rows naming the line,
    then, from a row's work, each hop's view (`id:<id>` -> the next id) in turn; the last id
    is a project work's."""

    name: str
    billed: View[Billed]
    hops: tuple[View[str], ...] = ()

    @property
    def views(self) -> list[View[Any]]:
        return [self.billed, *self.hops]

    def work(self, line_id: str) -> str | None:
        """The project work (its id) the invoice line bills this way, if known yet."""
        row = self.billed.get(f"line:{line_id}")
        target = row.work if row is not None else None
        for hop in self.hops:
            target = hop.get(f"id:{target}") if target is not None else None
        return target


def timesheet_work_of(_key: str, change: dict[str, Any]) -> str | None:
    """The project work a timesheet work was made for (its id), if any."""
    row = change.get("after")
    if change.get("op") == "d" or not isinstance(row, dict):
        return None
    origin = str(row.get("origin") or "")
    return origin[len(PROJECT_WORK) :] if origin.startswith(PROJECT_WORK) else None


def row_id_aliases(key: str, _value: object) -> Iterable[str]:
    """A raw topic's key is the row's JSON key ({"id": 5}); looked up as `id:5`."""
    try:
        decoded = json.loads(key)
    except ValueError:
        return
    if isinstance(decoded, dict) and "id" in decoded:
        yield f"id:{decoded['id']}"


def work_aliases(_key: str, work: Work) -> Iterable[str]:
    yield f"work:{work.id}"
    if work.invoice_line is not None:
        yield f"line:{work.invoice_line}"


def project_of(key: str, record: dict[str, Any]) -> ProjectRef | None:
    data = data_of(record)
    if data is None:
        return None
    envelope = record.get("envelope") or {}
    budget = data.get("budget_amount")
    return ProjectRef(
        code=str(data.get("project_code") or key),
        erp_project_id=_text(data.get("erp_project_id")),
        opportunity_id=_text(data.get("opportunity_id")),
        customer_id=str(data.get("customer_id") or ""),
        legal_entity_id=str(data.get("legal_entity_id") or ""),
        correlation_id=str(envelope.get("correlation_id") or ""),
        currency=str(data.get("currency") or ""),
        billing_type=str(data.get("billing_type") or "unknown"),
        budget=None if budget is None else str(budget),
    )


class Lookups:
    """Line -> project through the views: the work invoiced by the line (effort), else the
    declared ways (`Via`), in order."""

    def __init__(
        self, works: View[Work], projects: View[ProjectRef], vias: Sequence[Via] = ()
    ) -> None:
        self.works = works
        self.projects = projects
        self.vias = tuple(vias)

    @property
    def views(self) -> list[View[Any]]:
        return [self.works, self.projects, *(v for via in self.vias for v in via.views)]

    def _work_of_line(self, line_id: str) -> Work | None:
        work = self.works.get(f"line:{line_id}")
        for via in self.vias:
            if work is not None:
                break
            target = via.work(line_id)
            work = self.works.get(f"work:{target}") if target is not None else None
        return work

    def project_code(self, line_id: str, row: dict[str, Any] | None = None) -> str | None:
        """The project an invoice line bills: through the work invoiced by it, or for a
        credit note's line through the line it credits."""
        work = self._work_of_line(line_id)
        origin = str((row or {}).get("origin") or "")
        if work is None and origin.startswith(CREDITED):
            work = self._work_of_line(origin[len(CREDITED) :])
        depth = 0
        while work is not None and work.type != "project" and depth < MAX_DEPTH:
            work = self.works.get(f"work:{work.parent}") if work.parent else None
            depth += 1
        return work.number if work is not None and work.type == "project" else None

    def project(self, code: str) -> ProjectRef | None:
        return self.projects.get(code)
