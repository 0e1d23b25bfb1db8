"""The applications' own users in the demo (and the integration tests that play the same
scenes): a consultant logging and approving time in Redmine over its REST API, and finance in
Tryton over its RPC as the ERP's administrator (the ERP's people make employees, finance
invoices projects and posts invoices). pssync itself never writes through these: it only
reads what they do, through CDC.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import create_engine, text

from connectors.erp import TrytonErp, TrytonRpc
from connectors.erp.tryton import EXPENSE_MARKER
from connectors.psa import psa_identifier
from connectors.psa.redmine import INVOICED_FIELD, REVENUE_FIELD
from connectors.sql import db_url
from schemas.conventions import canonical_id
from streams.errors import PssyncError
from streams.settings import Settings

T = TypeVar("T")

# The PSA user whose API key the stack keeps logs and approves the time (Redmine lets its
# integration user do both); its ERP employee's party carries this canonical resource id.
TIME_USER = "psa:user:pssync"
SERVICE_PRODUCT = "Consulting hour"  # docker/local/components/erp_setup.py
# The consultant's hourly cost the ERP's people record with the employee (timesheet_cost),
# in effect since long before any time is logged: time entries take it as their cost rate.
TIME_USER_COST = Decimal("65.50")
COST_SINCE = date(2000, 1, 1)


def admin_rpc(settings: Settings) -> TrytonRpc:
    """Finance's session: the ERP's administrator (its password is the stack's secret)."""
    password = (Path(settings.erp_password_file).parent / "erp-admin.password").read_text()
    return TrytonRpc(settings.erp_url, settings.erp_database, "admin", password.strip())


def run_erp(settings: Settings, body: Callable[[TrytonErp, TrytonRpc], Awaitable[T]]) -> T:
    """`body(integration user's adapter, administrator's session)`, both closed after."""

    async def go() -> T:
        erp, admin = TrytonErp.from_settings(settings), admin_rpc(settings)
        try:
            return await body(erp, admin)
        finally:
            await erp.aclose()
            await admin.aclose()

    return asyncio.run(go())


async def ensure_employee(admin: TrytonRpc, code: str = TIME_USER) -> None:
    """The person booking time is an employee in the ERP whose party carries `code`."""
    await admin.ensure_session()
    employees = await admin.model(
        "company.employee", "search", [("party.code", "=", code)], 0, 1, None
    )
    if not employees:
        parties = await admin.model("party.party", "search", [("code", "=", code)], 0, 1, None)
        if not parties:
            parties = await admin.model(
                "party.party", "create", [{"name": "PSA integration user", "code": code}]
            )
        employees = await admin.model(
            "company.employee",
            "create",
            [{"party": parties[0], "company": admin.context["company"]}],
        )
    await ensure_cost_price(admin, int(employees[0]))


async def ensure_cost_price(
    admin: TrytonRpc, employee: int, cost: Decimal = TIME_USER_COST
) -> None:
    """The employee has an hourly cost price in the ERP (one since COST_SINCE when none)."""
    prices = "company.employee_cost_price"
    if await admin.model(prices, "search", [("employee", "=", employee)], 0, 1, None):
        return
    since = {"__class__": "date", "year": COST_SINCE.year, "month": 1, "day": 1}
    price = {"__class__": "Decimal", "decimal": str(cost)}
    await admin.model(
        prices, "create", [{"employee": employee, "date": since, "cost_price": price}]
    )


async def cost_price(admin: TrytonRpc, employee_code: str, on: date) -> Decimal:
    """The ERP's own answer: the hourly cost price of the employee on a day."""
    await admin.ensure_session()
    (found,) = await admin.model(
        "company.employee", "search", [("party.code", "=", employee_code)], 0, 1, None
    )
    context = {
        **admin.context,
        "date": {"__class__": "date", "year": on.year, "month": on.month, "day": on.day},
    }
    (row,) = await admin.call("model.company.employee.read", [found], ["cost_price"], context)
    value = row["cost_price"]
    return Decimal(str(value["decimal"] if isinstance(value, dict) else value))


async def project_id(erp: TrytonErp, code: str) -> int:
    found = await erp.rpc.model(
        "project.work", "search", [("number", "=", code), ("type", "=", "project")], 0, 1, None
    )
    if not found:
        raise PssyncError(f"the ERP has no project {code}")
    return int(found[0])


async def invoice_project(admin: TrytonRpc, project: int) -> None:
    """What finance does: the project's Invoice button, which invoices its timesheet lines
    (the customer gets the invoice address an invoice needs, when it has none)."""
    (work,) = await admin.model("project.work", "read", [project], ["party"])
    addresses = await admin.model(
        "party.address", "search", [("party", "=", work["party"])], 0, 1, None
    )
    if not addresses:
        await admin.model("party.address", "create", [{"party": work["party"]}])
    # Finance prices the works with the ERP's hourly service product (its revenue account).
    (product,) = await admin.model(
        "product.product", "search", [("template.name", "=", SERVICE_PRODUCT)], 0, 1, None
    )
    works = await admin.model(
        "project.work",
        "search",
        ["OR", ("id", "=", project), ("parent", "=", project)],
        0,
        None,
        None,
    )
    await admin.model("project.work", "write", works, {"product": product})
    await admin.model("project.work", "invoice", [project])


async def invoice_and_post(admin: TrytonRpc, project: int) -> dict[str, Any]:
    """Invoice the project and post the new invoice: its id, number, state, untaxed amount."""
    (work,) = await admin.model("project.work", "read", [project], ["party"])
    mine = [("party", "=", work["party"]), ("type", "=", "out")]
    before = set(await admin.model("account.invoice", "search", mine, 0, None, None))
    await invoice_project(admin, project)
    new = [i for i in await admin.model("account.invoice", "search", mine, 0, None, None)]
    new = [i for i in new if i not in before]
    if len(new) != 1:
        raise PssyncError(f"invoicing ERP project {project} made {len(new)} invoices: {new}")
    await admin.model("account.invoice", "post", new)  # dated today, as posting does
    (invoice,) = await admin.model(
        "account.invoice", "read", new, ["id", "number", "state", "untaxed_amount"]
    )
    invoice["untaxed_amount"] = money(invoice["untaxed_amount"])
    return dict(invoice)


async def timesheet_lines(erp: TrytonErp, entry_id: int) -> list[dict[str, Any]]:
    """The ERP's timesheet lines of one PSA time entry (pssync's key in the description)."""
    rows: list[dict[str, Any]] = await erp.rpc.model(
        "timesheet.line",
        "search_read",
        [("description", "like", f"%[pssync psa:time_entry:{entry_id}]")],
        0,
        None,
        None,
        ["id", "duration", "work.rec_name", "employee.party.code", "invoice_line"],
    )
    return rows


async def expense_lines(erp: TrytonErp, issue_id: int) -> list[dict[str, Any]]:
    """The ERP's re-billable lines of one PSA expense (pssync's key in the line's note)."""
    key = canonical_id("psa", "issue", str(issue_id))
    rows: list[dict[str, Any]] = await erp.rpc.model(
        "account.invoice.line",
        "search_read",
        [("note", "like", f"{EXPENSE_MARKER}{key}@%")],
        0,
        None,
        None,
        ["id", "quantity", "unit_price", "party.code", "description"],
    )
    return rows


def money(value: Any) -> Decimal:
    """A Decimal from Tryton's JSON ({"__class__": "Decimal", "decimal": "..."}) or a number."""
    return Decimal(str(value.get("decimal") if isinstance(value, dict) else value))


def hours(line: dict[str, Any]) -> float:
    duration = line["duration"]
    seconds = duration["seconds"] if isinstance(duration, dict) else duration
    return float(seconds) / 3600


class Redmine:
    """Redmine's REST API as the user who logs and approves time."""

    def __init__(self, settings: Settings) -> None:
        key = Path(settings.psa_api_key_file).read_text().strip()
        self.http = httpx.Client(
            base_url=settings.psa_url, headers={"X-Redmine-API-Key": key}, timeout=30
        )
        # The "Approved" field's id: an administrator's setting, not data pssync syncs.
        engine = create_engine(db_url(settings.psa_db))
        try:
            with engine.connect() as conn:
                self.approved = int(
                    conn.execute(
                        text(
                            "SELECT id FROM custom_fields WHERE type = 'TimeEntryCustomField' "
                            "AND name = 'Approved'"
                        )
                    ).scalar_one()
                )
        finally:
            engine.dispose()
        acts = self.http.get("/enumerations/time_entry_activities.json").json()
        self.activity = int(acts["time_entry_activities"][0]["id"])

    def close(self) -> None:
        self.http.close()

    def _ok(self, resp: httpx.Response, *codes: int) -> httpx.Response:
        if resp.status_code not in codes:
            raise PssyncError(
                f"Redmine {resp.request.method} {resp.request.url.path}: "
                f"{resp.status_code} {resp.text[:300]}"
            )
        return resp

    def project(self, code: str) -> dict[str, Any]:
        """The project the saga made for an ERP project code."""
        return self.project_by_identifier(psa_identifier(code))

    def project_by_identifier(self, identifier: str) -> dict[str, Any]:
        resp = self._ok(self.http.get(f"/projects/{identifier}.json"), 200)
        project: dict[str, Any] = resp.json()["project"]
        return project

    def financials(self, code: str) -> dict[str, str | None]:
        """The project's invoiced to date and recognized revenue, as Redmine shows them."""
        values = {f["name"]: f.get("value") for f in self.project(code).get("custom_fields", [])}
        return {name: values.get(name) or None for name in (INVOICED_FIELD, REVENUE_FIELD)}

    def new_project(self, prefix: str = "int") -> tuple[int, str]:
        """A Redmine project of the PSA's own, with time tracking, that no deal made."""
        ident = f"{prefix}-{uuid.uuid4().hex[:10]}"
        resp = self.http.post(
            "/projects.json",
            json={
                "project": {
                    "name": f"Internal {ident}",
                    "identifier": ident,
                    "enabled_module_names": ["time_tracking", "issue_tracking"],
                }
            },
        )
        return int(self._ok(resp, 201).json()["project"]["id"]), ident

    def issues(self, project: int) -> dict[str, int]:
        resp = self.http.get(
            "/issues.json", params={"project_id": project, "status_id": "*", "limit": 100}
        )
        return {i["subject"]: int(i["id"]) for i in self._ok(resp, 200).json()["issues"]}

    def log(
        self,
        project: int,
        issue: int | None,
        hours: float,
        approved: bool,
        comments: str = "consulting work",
        spent_on: date | None = None,
    ) -> int:
        """A time entry, approved or not: its id."""
        entry: dict[str, Any] = {
            "project_id": project,
            "hours": hours,
            "spent_on": (spent_on or date.today()).isoformat(),
            "activity_id": self.activity,
            "comments": comments,
            "custom_fields": [{"id": self.approved, "value": "1" if approved else "0"}],
        }
        if issue is not None:
            entry["issue_id"] = issue
        resp = self.http.post("/time_entries.json", json={"time_entry": entry})
        return int(self._ok(resp, 201).json()["time_entry"]["id"])

    def expense(
        self, project: int, subject: str, amount: str, category: str, approved: bool
    ) -> int:
        """An expense as Redmine users keep them: an issue of the Expense tracker, then its
        fields (found by name on the issue): its id."""
        trackers = self._ok(self.http.get("/trackers.json"), 200).json()["trackers"]
        tracker = next((t["id"] for t in trackers if t["name"] == "Expense"), None)
        if tracker is None:
            raise PssyncError("Redmine has no Expense tracker: rerun psa_setup.rb")
        issue = {"project_id": project, "tracker_id": tracker, "subject": subject}
        resp = self.http.post("/issues.json", json={"issue": issue})
        issue_id = int(self._ok(resp, 201).json()["issue"]["id"])
        values = {
            "Expense amount": amount,
            "Expense currency": "EUR",
            "Expense category": category,
            "Billable": "1",
            "Expense approved": "1" if approved else "0",
        }
        shown = self._ok(self.http.get(f"/issues/{issue_id}.json"), 200).json()["issue"]
        ids = {f["name"]: f["id"] for f in shown.get("custom_fields", [])}
        fields = [{"id": ids[n], "value": v} for n, v in values.items() if n in ids]
        if len(fields) != len(values):
            raise PssyncError(f"the Expense tracker lacks {set(values) - set(ids)}")
        body = {"issue": {"custom_fields": fields}}
        self._ok(self.http.put(f"/issues/{issue_id}.json", json=body), 200, 204)
        return issue_id

    def update(self, entry_id: int, **values: Any) -> None:
        """Edit a time entry; `approved=` sets or withdraws the approval."""
        approved = values.pop("approved", None)
        if approved is not None:
            values["custom_fields"] = [{"id": self.approved, "value": "1" if approved else "0"}]
        resp = self.http.put(f"/time_entries/{entry_id}.json", json={"time_entry": values})
        self._ok(resp, 200, 204)
