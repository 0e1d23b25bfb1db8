"""Where the invoice stage's lookups come from: the one place that reads their fields.

- ERP project works (the raw `project_work` topic, read whole as a view): which work an
  invoice line bills (`project_work.invoice_line`, set by Tryton's project invoicing) and
  the project above a task (`parent`), whose `number` is the project code.
- Projects (canonical.project, published by the closed-won saga): project code -> the deal
  (opportunity, correlation id), customer, legal entity, currency, PSA project.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streams.deals.sources import data_of
from tables.views import View

# Project works climbed from a task to its project at most this deep (Tryton has no cycles;
# the bound keeps a corrupt row from looping).
MAX_DEPTH = 32
# The origin Tryton gives a credit note's line: the line it credits.
CREDITED = "account.invoice.line,"


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
    """Line -> project through the two views."""

    def __init__(self, works: View[Work], projects: View[ProjectRef]) -> None:
        self.works = works
        self.projects = projects

    def project_code(self, line_id: str, row: dict[str, Any] | None = None) -> str | None:
        """The project an invoice line bills: through the work invoiced by it, or for a
        credit note's line through the line it credits."""
        work = self.works.get(f"line:{line_id}")
        origin = str((row or {}).get("origin") or "")
        if work is None and origin.startswith(CREDITED):
            work = self.works.get(f"line:{origin[len(CREDITED) :]}")
        depth = 0
        while work is not None and work.type != "project" and depth < MAX_DEPTH:
            work = self.works.get(f"work:{work.parent}") if work.parent else None
            depth += 1
        return work.number if work is not None and work.type == "project" else None

    def project(self, code: str) -> ProjectRef | None:
        return self.projects.get(code)
