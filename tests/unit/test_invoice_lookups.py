"""Which project an invoice line bills, through the ERP's project works, timesheets and
invoiced progress."""

from __future__ import annotations

import json
import re
from typing import Any

from connectors.debezium import captured_tables, erp_connector
from streams.invoices.sources import (
    Billed,
    Lookups,
    ProjectRef,
    Via,
    Work,
    billed_aliases,
    billed_of,
    project_of,
    raw_row,
    row_id_aliases,
    timesheet_work_of,
    work_aliases,
    work_of,
)
from streams.settings import Settings
from streams.topology import INVOICED_PROGRESS_TABLE, invoice_topic_specs, topology
from tables.views import View


def _change(row: dict[str, Any] | None, op: str = "c") -> bytes:
    return json.dumps({"op": op, "before": None, "after": row, "source": {}}).encode()


def _lookups() -> Lookups:
    works: View[Work] = View("w", raw_row, work_of, work_aliases)
    projects: View[ProjectRef] = View("p", lambda b: json.loads(b), project_of)
    timesheets: View[Billed] = View("t", raw_row, billed_of, billed_aliases)
    progress: View[Billed] = View("ip", raw_row, billed_of, billed_aliases)
    timesheet_works: View[str] = View("tw", raw_row, timesheet_work_of, row_id_aliases)
    works.apply('{"id":1}', _change({"id": 1, "type": "project", "number": "PRJ-1"}))
    works.apply('{"id":2}', _change({"id": 2, "type": "task", "parent": 1, "invoice_line": 10}))
    timesheet_works.apply('{"id":5}', _change({"id": 5, "origin": "project.work,2"}))
    timesheets.apply('{"id":7}', _change({"id": 7, "work": 5, "invoice_line": 11}))
    timesheets.apply('{"id":8}', _change({"id": 8, "work": 5, "invoice_line": None}))
    works.apply('{"id":3}', _change({"id": 3, "type": "task", "parent": 1}))
    # Tryton stores the invoiced progress first, then links it to the invoice line.
    progress.apply('{"id":4}', _change({"id": 4, "work": 3, "invoice_line": None}))
    progress.apply('{"id":4}', _change({"id": 4, "work": 3, "invoice_line": 13}, "u"))
    progress.apply('{"id":6}', _change({"id": 6, "work": 3, "invoice_line": None}))
    projects.apply(
        "PRJ-1",
        json.dumps(
            {
                "envelope": {"correlation_id": "c"},
                "data": {"project_code": "PRJ-1", "customer_id": "x", "currency": "EUR"},
            }
        ).encode(),
    )
    vias = (Via("timesheet", timesheets, (timesheet_works,)), Via("progress", progress))
    return Lookups(works, projects, vias)


def test_lines_find_their_project_by_effort_timesheet_and_credit() -> None:
    lookups = _lookups()
    assert lookups.project_code("10") == "PRJ-1"  # the task invoiced on effort
    assert lookups.project_code("11") == "PRJ-1"  # timesheet line -> timesheet work -> task
    assert lookups.project_code("13") == "PRJ-1"  # invoiced progress -> task
    credit = {"origin": "account.invoice.line,11"}
    assert lookups.project_code("99", credit) == "PRJ-1"  # a credit note's line
    assert lookups.project_code("12") is None
    # Only rows linked to an invoice line are kept.
    assert [len(via.billed) for via in lookups.vias] == [1, 1]
    ref = lookups.project("PRJ-1")
    assert ref is not None and ref.currency == "EUR"


def test_a_deleted_work_unlinks_its_line() -> None:
    lookups = _lookups()
    lookups.works.apply('{"id":2}', _change(None, "d"))
    assert lookups.project_code("10") is None


def test_a_deleted_invoiced_progress_unlinks_its_line() -> None:
    # A draft invoice line deleted: Tryton deletes its invoiced progress with it (cascade).
    lookups = _lookups()
    progress = lookups.vias[1].billed
    progress.apply('{"id":4}', _change(None, "d"))
    assert lookups.project_code("13") is None
    assert lookups.project_code("10") == "PRJ-1"


def test_the_erp_tables_read_as_views_are_captured_and_created_compacted() -> None:
    """Each ERP raw topic the invoice stage reads whole is a table the ERP connector
    captures, and Connect creates its topic compacted, as pssync's own spec does."""
    settings = Settings.from_env({"PSSYNC_ERP_TOPIC_PREFIX": "erp"})
    viewed = {
        spec.name
        for spec in invoice_topic_specs(settings, topology(settings))
        if spec.name.startswith("erp.") and spec.config == {"cleanup.policy": "compact"}
    }
    config = erp_connector(settings)["config"]
    captured = {f"erp.{schema}.{table}" for schema, table in captured_tables({"config": config})}
    group = re.compile(config["topic.creation.viewed.include"])
    assert f"erp.public.{INVOICED_PROGRESS_TABLE}" in viewed
    assert viewed <= captured
    assert all(group.fullmatch(topic) for topic in viewed)
