"""The second half of quote-to-cash in `pssync demo`, played by the applications' users.

Once the deals are provisioned: a consultant logs time in Redmine on the time-and-materials
deal's project, approved and not, and some approved time on an internal project no deal made;
finance invoices that project in Tryton and posts the invoice; sales closes a change order on
another won deal in the CRM. The demo then shows what reached where, read back through the
applications' APIs (the ERP and PSA) and the CRM's table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

from connectors.erp import TrytonErp, TrytonRpc
from connectors.psa.redmine import INVOICED_FIELD
from streams import demo_q2c as q2c
from streams.demo_apps import (
    TIME_USER,
    Redmine,
    ensure_employee,
    expense_lines,
    hours,
    invoice_and_post,
    money,
    project_id,
    run_erp,
    timesheet_lines,
)
from streams.errors import PssyncError
from streams.settings import Settings
from streams.timesheets.model import UNKNOWN_PROJECT

T = TypeVar("T")


@dataclass
class Played:
    """What the scenes made, for the report and the checks that follow."""

    time_deal: q2c.Seeded
    project_code: str
    approved: list[int]  # Redmine time entry ids
    unapproved: list[int]
    expense: int  # an approved expense (a Redmine issue)
    stray: int  # approved time on a project no deal made
    stray_project: str
    changed: q2c.Seeded
    change_order: str  # its CRM id
    invoice: dict[str, Any] | None = None


def prepare(settings: Settings) -> None:
    """The ERP's people make the consultant an employee (once; the ERP connector captures it)."""

    async def body(_erp: TrytonErp, admin: TrytonRpc) -> None:
        await ensure_employee(admin)

    run_erp(settings, body)


def _wait(settings: Settings, what: str, check: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise PssyncError(
                f"{what}: not seen after {timeout:.0f}s; see `pssync trace`, `pssync monitor` "
                f"and {settings.stack_dir / 'logs' / 'worker.log'}"
            )
        time.sleep(1)


def _role(deals: list[q2c.Seeded], role: str) -> q2c.Seeded:
    return next(s for s in deals if s.deal.role == role)


def play(
    settings: Settings, run: str, deals: list[q2c.Seeded], crm: dict[str, dict[str, Any]]
) -> Played:
    """Log time in Redmine and close the change order in the CRM (the worker is running)."""
    time_deal, changed = _role(deals, q2c.TIME_AND_INVOICE), _role(deals, q2c.CHANGED)
    code = str(crm[time_deal.crm_id]["project_code__c"])
    psa = Redmine(settings)
    try:
        project = psa.project(code)
        tasks = psa.issues(int(project["id"]))
        approved: list[int] = []
        unapproved: list[int] = []
        for task, spent, ok in q2c.TIME:
            entry = psa.log(int(project["id"]), tasks[task], spent, ok, f"{task} ({run})")
            (approved if ok else unapproved).append(entry)
            state = "approved" if ok else "not approved"
            print(f"  Redmine  {spent:4.1f} h on {task!r} in {project['identifier']}: {state}")
        subject, amount, category = q2c.EXPENSE
        expense = psa.expense(int(project["id"]), f"{subject} ({run})", amount, category, True)
        print(f"  Redmine  expense {amount} EUR ({category}) in {project['identifier']}: approved")
        internal, ident = psa.new_project("internal")
        stray = psa.log(internal, None, 1.0, True, f"internal work ({run})")
        print(f"  Redmine   1.0 h approved on {ident}, an internal project no deal made")
    finally:
        psa.close()
    change = q2c.seed_change_order(settings, run, changed)
    lines = ", ".join(f"{c} {h} h x {p}" for c, h, p in q2c.CHANGE_ORDER_LINES)
    print(f"  CRM      change order {change} on {changed.crm_id} ({changed.deal.name}): {lines}")
    return Played(time_deal, code, approved, unapproved, expense, stray, ident, changed, change)


def show_time(settings: Settings, p: Played, started: float) -> None:
    """Wait for the approved time in Tryton; show that the unapproved time is not there."""

    def lines(entry: int) -> list[dict[str, Any]]:
        async def body(erp: TrytonErp, _admin: TrytonRpc) -> list[dict[str, Any]]:
            return await timesheet_lines(erp, entry)

        return run_erp(settings, body)

    for entry in p.approved:
        (line,) = _wait(settings, f"the ERP line of time entry {entry}", partial(lines, entry), 90)
        print(
            f"  +{time.monotonic() - started:5.1f}s  Tryton timesheet line {line['id']}: "
            f'{hours(line):g} h on "{line["work."]["rec_name"]}", employee '
            f"{line['employee.']['party.']['code']} (Redmine time entry {entry})"
        )
    for entry in p.unapproved:
        found = lines(entry)
        print(f"  Redmine time entry {entry} (not approved): {len(found)} line(s) in Tryton")


def show_expense(settings: Settings, p: Played, started: float) -> None:
    """Wait for the approved expense in Tryton: a line re-billable to the deal's customer."""

    def lines() -> list[dict[str, Any]]:
        async def body(erp: TrytonErp, _admin: TrytonRpc) -> list[dict[str, Any]]:
            return await expense_lines(erp, p.expense)

        return run_erp(settings, body)

    (line,) = _wait(settings, f"the ERP line of expense {p.expense}", lines, 90)
    print(
        f"  +{time.monotonic() - started:5.1f}s  Tryton invoice line {line['id']}: "
        f"{money(line['unit_price'])} EUR re-billable to {line['party.']['code']} "
        f"(Redmine expense {p.expense})"
    )


def invoice(settings: Settings, p: Played, started: float) -> None:
    """Finance invoices the project's time in Tryton and posts the invoice; the CRM
    opportunity and the Redmine project hear of it."""

    async def body(erp: TrytonErp, admin: TrytonRpc) -> dict[str, Any]:
        return await invoice_and_post(admin, await project_id(erp, p.project_code))

    p.invoice = run_erp(settings, body)
    number, amount = p.invoice["number"], p.invoice["untaxed_amount"]
    print(f"  Tryton   invoice {number} posted for {p.project_code}: {amount} EUR untaxed")
    crm_id = p.time_deal.crm_id

    def crm_shows() -> dict[str, Any] | None:
        row = q2c.crm_rows(settings, [crm_id])[crm_id]
        done = row["last_invoice_number__c"] == number and row["last_invoice_status__c"]
        return row if done else None

    row = _wait(settings, f"invoice {number} on CRM opportunity {crm_id}", crm_shows, 90)
    print(
        f"  +{time.monotonic() - started:5.1f}s  CRM {crm_id}: invoiced to date "
        f"{row['invoiced_to_date__c']}, last invoice {row['last_invoice_number__c']} "
        f"({row['last_invoice_status__c']}), payment {row['payment_status__c']}"
    )
    psa = Redmine(settings)
    try:

        def psa_shows() -> dict[str, str | None] | None:
            shown = psa.financials(p.project_code)
            value = shown[INVOICED_FIELD]
            return shown if value is not None and Decimal(value) == amount else None

        shown = _wait(settings, f"invoice {number} on the Redmine project", psa_shows, 90)
    finally:
        psa.close()
    print(
        f"  +{time.monotonic() - started:5.1f}s  Redmine {p.project_code}: "
        + ", ".join(f"{k} {v}" for k, v in shown.items())
    )


def show_change(settings: Settings, p: Played, started: float) -> str:
    """Wait until the change order is applied: the CRM status pssync writes on it."""

    def applied() -> str | None:
        status = str(q2c.crm_rows(settings, [p.change_order])[p.change_order]["sync_status__c"])
        return status if status.startswith(("amendment", "exception")) else None

    status = _wait(settings, f"change order {p.change_order}", applied, 120)
    print(f"  +{time.monotonic() - started:5.1f}s  CRM {p.change_order}: {status}")
    return status


def show_stray(settings: Settings, p: Played, started: float) -> dict[str, Any]:
    """Wait until the approved time on the internal project is a business exception."""
    from streams.deals import exceptions

    key = f"psa:time_entry:{p.stray}"

    def raised() -> dict[str, Any] | None:
        found = exceptions.load(settings).get(key)
        return found if found and found.get("reason") == UNKNOWN_PROJECT else None

    found = _wait(settings, f"the exception of {key}", raised, 90)
    print(f"  +{time.monotonic() - started:5.1f}s  {key} on {p.stray_project}: {found['reason']}")
    return found


__all__ = ["TIME_USER", "Played", "invoice", "play", "prepare", "show_change", "show_stray"]
