"""Which project an invoice line bills, through the ERP's project works and timesheets."""

from __future__ import annotations

import json
from typing import Any

from streams.invoices.sources import (
    Lookups,
    ProjectRef,
    Timesheet,
    Work,
    project_of,
    raw_row,
    row_id_aliases,
    timesheet_aliases,
    timesheet_of,
    timesheet_work_of,
    work_aliases,
    work_of,
)
from tables.views import View


def _change(row: dict[str, Any] | None, op: str = "c") -> bytes:
    return json.dumps({"op": op, "before": None, "after": row, "source": {}}).encode()


def _lookups() -> Lookups:
    works: View[Work] = View("w", raw_row, work_of, work_aliases)
    projects: View[ProjectRef] = View("p", lambda b: json.loads(b), project_of)
    timesheets: View[Timesheet] = View("t", raw_row, timesheet_of, timesheet_aliases)
    timesheet_works: View[str] = View("tw", raw_row, timesheet_work_of, row_id_aliases)
    works.apply('{"id":1}', _change({"id": 1, "type": "project", "number": "PRJ-1"}))
    works.apply('{"id":2}', _change({"id": 2, "type": "task", "parent": 1, "invoice_line": 10}))
    timesheet_works.apply('{"id":5}', _change({"id": 5, "origin": "project.work,2"}))
    timesheets.apply('{"id":7}', _change({"id": 7, "work": 5, "invoice_line": 11}))
    timesheets.apply('{"id":8}', _change({"id": 8, "work": 5, "invoice_line": None}))
    projects.apply(
        "PRJ-1",
        json.dumps(
            {
                "envelope": {"correlation_id": "c"},
                "data": {"project_code": "PRJ-1", "customer_id": "x", "currency": "EUR"},
            }
        ).encode(),
    )
    return Lookups(works, projects, timesheets, timesheet_works)


def test_lines_find_their_project_by_effort_timesheet_and_credit() -> None:
    lookups = _lookups()
    assert lookups.project_code("10") == "PRJ-1"  # the task invoiced on effort
    assert lookups.project_code("11") == "PRJ-1"  # timesheet line -> timesheet work -> task
    credit = {"origin": "account.invoice.line,11"}
    assert lookups.project_code("99", credit) == "PRJ-1"  # a credit note's line
    assert lookups.project_code("12") is None
    assert len(lookups.timesheets or []) == 1  # only invoiced timesheet lines are kept
    ref = lookups.project("PRJ-1")
    assert ref is not None and ref.currency == "EUR"


def test_a_deleted_work_unlinks_its_line() -> None:
    lookups = _lookups()
    lookups.works.apply('{"id":2}', _change(None, "d"))
    assert lookups.project_code("10") is None
