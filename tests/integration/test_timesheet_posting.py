"""Timesheet line postings against the real Tryton of the local stack, as the integration
user: batched creates found again by key (nothing twice), corrections, reversals, and a line
invoiced by finance (the administrator, through the project's Invoice button) refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from connectors.erp import TrytonErp, TrytonRpc
from connectors.ports import (
    DONE,
    POST,
    REJECTED,
    REVERSE,
    CustomerSpec,
    Posting,
    ProjectSpec,
    TaskSpec,
    TimesheetLineSpec,
)
from streams.demo_apps import admin_rpc, ensure_cost_price, invoice_project
from streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

T = TypeVar("T")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def employee(admin: TrytonRpc, code: str) -> int:
    """An employee of the company whose party carries `code` (made by the ERP's people)."""
    await admin.ensure_session()
    (party,) = await admin.model(
        "party.party", "create", [{"name": f"Consultant {code}", "code": code}]
    )
    (emp,) = await admin.model(
        "company.employee", "create", [{"party": party, "company": admin.context["company"]}]
    )
    await ensure_cost_price(admin, int(emp))
    return int(emp)


def _run(body: Callable[[TrytonErp, TrytonRpc], Awaitable[T]]) -> T:
    async def go() -> T:
        settings = Settings.from_env()
        erp = TrytonErp.from_settings(settings)
        admin = admin_rpc(settings)
        try:
            return await body(erp, admin)
        finally:
            await erp.aclose()
            await admin.aclose()

    return asyncio.run(go())


async def _lines(erp: TrytonErp, key: str) -> list[dict[str, Any]]:
    found = await erp._lines_by_key([key])
    if not found:
        return []
    rows: list[dict[str, Any]] = await erp.rpc.model(
        "timesheet.line",
        "search_read",
        [("description", "like", f"%[pssync {key}]")],
        0,
        None,
        None,
        ["id", "duration", "work", "invoice_line"],
    )
    return rows


def test_time_entry_lines_posted_corrected_reversed_and_invoiced_refused() -> None:
    async def body(erp: TrytonErp, admin: TrytonRpc) -> None:
        person = _unique("psa:user:consultant")
        await employee(admin, person)
        party = await erp.ensure_customer(CustomerSpec(_unique("crm:account:ts"), "Timesheets"))
        project = await erp.ensure_project(
            ProjectSpec(
                key=str(uuid.uuid4()),
                name=_unique("Timesheets"),
                customer_id=party.id,
                invoice_method="timesheet",
                currency="EUR",
                list_price=Decimal("100"),
                tasks=(TaskSpec("Build", "Deliver", Decimal("40")),),
            )
        )
        keys = [_unique("psa:time_entry") for _ in range(3)]

        def spec(key: str, hours: str, task: str | None = "Build") -> TimesheetLineSpec:
            return TimesheetLineSpec(
                key, project.id, task, person, date(2026, 11, 30), Decimal(hours), "work"
            )

        batch = [Posting(k, POST, spec(k, "2")) for k in keys[:2]]
        batch.append(Posting(keys[2], POST, spec(keys[2], "1", None)))
        first = await erp.post_timesheet_lines(batch)
        assert [o.status for o in first] == [DONE] * 3
        # Redelivered: found by key, nothing twice.
        again = await erp.post_timesheet_lines(batch)
        assert [o.erp_id for o in again] == [o.erp_id for o in first]
        for k in keys:
            assert len(await _lines(erp, k)) == 1
        # A correction writes the line; a reversal deletes it.
        fixed = await erp.post_timesheet_lines(
            [Posting(keys[0], POST, spec(keys[0], "3.5")), Posting(keys[1], REVERSE)]
        )
        assert [o.status for o in fixed] == [DONE, DONE]
        (line,) = await _lines(erp, keys[0])
        assert line["duration"]["seconds"] == 3.5 * 3600
        assert await _lines(erp, keys[1]) == []
        # An unknown person is refused alone, the others in its batch go on.
        mixed = await erp.post_timesheet_lines(
            [
                Posting(keys[1], POST, spec(keys[1], "1")),
                Posting(
                    "x",
                    POST,
                    TimesheetLineSpec(
                        "x", project.id, None, "psa:user:nobody", date(2026, 11, 30), Decimal(1)
                    ),
                ),
            ]
        )
        assert [(o.status, o.reason) for o in mixed] == [(DONE, None), (REJECTED, "unknown_person")]
        # Finance invoices the project: the lines are invoiced and then left alone.
        await invoice_project(admin, project.id)
        (line,) = await _lines(erp, keys[0])
        assert line["invoice_line"]
        refused = await erp.post_timesheet_lines(
            [Posting(keys[0], POST, spec(keys[0], "5")), Posting(keys[2], REVERSE)]
        )
        assert [(o.status, o.reason) for o in refused] == [
            (REJECTED, "invoiced"),
            (REJECTED, "invoiced"),
        ]
        # The invoiced values themselves are what the ERP holds: done.
        same = await erp.post_timesheet_lines([Posting(keys[0], POST, spec(keys[0], "3.5"))])
        assert same[0].status == DONE

    _run(body)
