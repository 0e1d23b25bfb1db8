"""The ERP port over Tryton 8.2 JSON-RPC (modules party, company, project, project_invoice).

- Customer = `party.party`, found by its `code` (unique in Tryton: the canonical customer id).
- Project = `project.work` of type project, found again by a marker line in its `comment`:
  the only field of `project.work` that the integration user may both set and search that
  Tryton leaves free (`number` is read-only, from the ERP's sequence; `origin` only takes
  records of other models; `name` is the people's). The ERP assigns `number`: the enterprise
  project code.
- Tasks = child works of type task, found by name under the project (the ERP keeps them
  flat: phases are the PSA's work breakdown).
- Timesheet lines = `timesheet.line` on the timesheet work of a task (made available for
  timesheets when it is not yet), for the employee whose party's `code` is the person's
  canonical resource id; found again by a marker at the end of their `description` (the
  line's `uuid` is read-only to the API). One line per time entry: a correction writes it,
  a reversal deletes it; a line with an invoice line is left alone and reported.
- Billable expenses = customer invoice lines without an invoice (`account.invoice.line`,
  invoice_type out, party = the project's customer, the "EXPENSE" product at the expense's
  amount): the ERP's own "to invoice" lines, which the accountant adds to the customer's
  next invoice. With these modules nothing else takes a re-billable cost: an invoice line's
  origin cannot name a project and a project work holds one invoice line only, so the line
  names the project by its code in the description. Each line carries its posting key in
  `note` (the integration user sets and searches it, people do not), which finds it again;
  a correction is a reversal line (quantity -1) plus a new line, never an edit, so a line
  already on an invoice is never touched.

- Amendments (change orders) set the project's list price and its tasks' effort to the
  amended baseline and make the tasks it adds; the last amendment applied is a marker line
  in the project's comment, so an amendment redelivered or replayed is not applied twice
  and an older one never overwrites a newer one.

An existing customer or project is reused as it is: the ERP's people may have changed it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from connectors.erp.rpc import SYSTEM, TrytonRpc
from connectors.ports import (
    DONE,
    POST,
    REJECTED,
    CustomerSpec,
    ErpAmendment,
    ErpAmendmentSpec,
    ErpCustomer,
    ErpProject,
    ExpenseSpec,
    Posting,
    PostingOutcome,
    ProjectSpec,
    TaskSpec,
    TimesheetLineSpec,
)
from streams.errors import CommandRejectedError
from streams.settings import Settings

INVOICE_METHODS = ("manual", "effort", "progress", "timesheet")
# The line in a project's comment that finds it again; the deal's correlation id follows.
KEY_MARKER = "pssync deal: "
# The `note` of an expense's invoice line: the posting key follows.
EXPENSE_MARKER = "pssync expense: "
# The product of re-billed expenses (docker/local/components/erp_setup.py makes it).
EXPENSE_PRODUCT_CODE = "EXPENSE"
INVOICE_LINE = "account.invoice.line"
# The line in a project's comment naming the last amendment applied: revision, change order.
AMENDMENT_MARKER = "pssync amendment: "
_AMENDMENT = re.compile(rf"^{re.escape(AMENDMENT_MARKER)}(\d+)\b.*$", re.MULTILINE)


def amendment_revision(comment: str) -> int:
    """The amendment revision a project's comment records (0: none yet)."""
    found = _AMENDMENT.findall(comment or "")
    return max((int(n) for n in found), default=0)


def with_amendment(comment: str, revision: int, change_order: str) -> str:
    """The comment with its amendment line replaced by (`revision`, `change_order`)."""
    kept = [ln for ln in (comment or "").splitlines() if not ln.startswith(AMENDMENT_MARKER)]
    return "\n".join([*kept, f"{AMENDMENT_MARKER}{revision} {change_order}"])


# How a timesheet line names the time entry it posts: "<comment> [pssync <key>]".
LINE_MARKER = "[pssync {}]"


def line_description(comment: str, key: str) -> str:
    marker = LINE_MARKER.format(key)
    # Tryton's Char has no size limit here; keep a person's comment readable and short.
    text = " ".join(comment.split())[:200]
    return f"{text} {marker}" if text else marker


def _key_of_description(description: str) -> str | None:
    _head, sep, tail = (description or "").rpartition("[pssync ")
    return tail[:-1] if sep and tail.endswith("]") else None


def _same_line(line: dict[str, Any], values: dict[str, Any]) -> bool:
    """Whether a timesheet line as read holds `values` (work, employee, date, hours)."""
    when, duration = line.get("date") or {}, line.get("duration") or {}
    return (
        line.get("work") == values["work"]
        and line.get("employee") == values["employee"]
        and {k: when.get(k) for k in ("year", "month", "day")}
        == {k: values["date"][k] for k in ("year", "month", "day")}
        and abs(float(duration.get("seconds", -1)) - values["duration"]["seconds"]) < 1
    )


def _like_literal(text: str) -> str:
    """`text` for a Tryton `like` pattern, matched literally (Tryton escapes with '\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _duration(hours: Decimal) -> dict[str, Any]:
    # TimeDelta fields travel as {"__class__": "timedelta", "seconds": ...}.
    return {"__class__": "timedelta", "seconds": float(hours * 3600)}


def _date(value: Any) -> dict[str, Any]:
    return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}


def _price(value: Decimal) -> dict[str, Any]:
    # Numeric fields travel as {"__class__": "Decimal", "decimal": "..."}.
    return {"__class__": "Decimal", "decimal": str(value)}


@dataclass
class _Company:
    id: int
    currency: str


@dataclass(frozen=True)
class _Product:
    id: int
    unit: int
    account: int


class TrytonErp:
    """Implements `connectors.ports.Erp`. Every operation is idempotent on its external key."""

    def __init__(self, rpc: TrytonRpc) -> None:
        self.rpc = rpc
        self._company: _Company | None = None
        self._expense_product: _Product | None = None
        self._currencies: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings, timeout: float = 30.0) -> TrytonErp:
        password = settings.erp_password_file.read_text().strip()
        return cls(
            TrytonRpc(
                settings.erp_url,
                settings.erp_database,
                settings.erp_user,
                password,
                timeout=timeout,
            )
        )

    async def aclose(self) -> None:
        await self.rpc.aclose()

    # -- customers -------------------------------------------------------------------------

    async def _party_by_code(self, code: str) -> ErpCustomer | None:
        found = await self.rpc.model(
            "party.party", "search_read", [("code", "=", code)], 0, 2, None, ["id", "code"]
        )
        return ErpCustomer(id=int(found[0]["id"]), code=code) if found else None

    async def find_customer(self, code: str) -> ErpCustomer | None:
        """The party of a customer code, if the ERP has one (read only)."""
        return await self._party_by_code(code)

    async def ensure_customer(self, spec: CustomerSpec) -> ErpCustomer:
        existing = await self._party_by_code(spec.code)
        if existing is not None:
            return existing
        values: dict[str, Any] = {"name": spec.name, "code": spec.code}
        country = await self._country(spec.country) if spec.country else None
        if country is not None:
            values["addresses"] = [["create", [{"country": country}]]]
        try:
            (party_id,) = await self.rpc.model("party.party", "create", [values])
        except CommandRejectedError:
            # Lost a race with a concurrent create of the same code (unique in Tryton): the
            # winner's party is the one. Anything else is a real refusal.
            existing = await self._party_by_code(spec.code)
            if existing is not None:
                return existing
            raise
        return ErpCustomer(id=int(party_id), code=spec.code)

    async def _country(self, code: str) -> int | None:
        found = await self.rpc.model(
            "country.country", "search", [("code", "=", code.upper())], 0, 1, None
        )
        if found:
            return int(found[0])
        # An ERP without a country list (none imported) takes parties without an address;
        # one with a list that lacks the code is told so.
        if not await self.rpc.model("country.country", "search", [], 0, 1, None):
            return None
        raise CommandRejectedError(
            SYSTEM,
            f"country {code!r} is unknown to the ERP; fix the account's billing country "
            "(ISO 3166-1 alpha-2) in the CRM",
        )

    # -- projects --------------------------------------------------------------------------

    async def _own_company(self) -> _Company:
        if self._company is None:
            await self.rpc.ensure_session()
            company_id = self.rpc.context.get("company")
            if not company_id:
                raise CommandRejectedError(
                    SYSTEM,
                    f"the ERP user {self.rpc.login!r} has no current company; set one in Tryton",
                )
            (company,) = await self.rpc.model(
                "company.company", "read", [company_id], ["currency.code"]
            )
            currency = company.get("currency.")
            code = currency.get("code") if isinstance(currency, dict) else None
            self._company = _Company(int(company_id), str(code or ""))
        return self._company

    async def _project_by_key(self, key: str, company: int) -> dict[str, Any] | None:
        domain = [
            ("type", "=", "project"),
            ("company", "=", company),
            ("comment", "like", f"%{_like_literal(KEY_MARKER + key)}%"),
        ]
        found = await self.rpc.model(
            "project.work", "search_read", domain, 0, 2, [("id", "ASC")], ["id", "number"]
        )
        return found[0] if found else None

    async def find_project(self, key: str) -> ErpProject | None:
        """The project of a deal's correlation id with its ERP number, if any (read only)."""
        company = await self._own_company()
        found = await self._project_by_key(key, company.id)
        if found is None:
            return None
        return ErpProject(id=int(found["id"]), number=str(found.get("number") or ""))

    async def ensure_project(self, spec: ProjectSpec) -> ErpProject:
        if spec.invoice_method not in INVOICE_METHODS:
            raise CommandRejectedError(
                SYSTEM,
                f"invoice method {spec.invoice_method!r} is not one of {', '.join(INVOICE_METHODS)}"
                "; fix the deal's billing type or the mapping from it",
            )
        company = await self._own_company()
        if company.currency and spec.currency.upper() != company.currency.upper():
            raise CommandRejectedError(
                SYSTEM,
                f"the ERP company works in {company.currency}, the deal in {spec.currency}; "
                "change the deal's currency or route it to a legal entity in that currency",
            )
        project = await self._project_by_key(spec.key, company.id)
        if project is None:
            (work_id,) = await self.rpc.model(
                "project.work",
                "create",
                [
                    {
                        "name": spec.name,
                        "type": "project",
                        "company": company.id,
                        "party": spec.customer_id,
                        "project_invoice_method": spec.invoice_method,
                        "list_price": _price(spec.list_price),
                        "comment": f"{KEY_MARKER}{spec.key}",
                    }
                ],
            )
            project = {"id": work_id}
        project_id = int(project["id"])
        task_ids = await self._ensure_tasks(project_id, company.id, spec)
        (read,) = await self.rpc.model("project.work", "read", [project_id], ["number"])
        if not read.get("number"):
            raise CommandRejectedError(
                SYSTEM,
                "the ERP gave the project no number; give the project sequence "
                "(Project configuration -> Work Sequence) to the ERP",
            )
        return ErpProject(id=project_id, number=str(read["number"]), task_ids=task_ids)

    async def _ensure_tasks(
        self, project_id: int, company: int, spec: ProjectSpec
    ) -> dict[str, int]:
        if not spec.tasks:
            return {}
        found = await self.rpc.model(
            "project.work",
            "search_read",
            [("parent", "=", project_id)],
            0,
            None,
            [("id", "ASC")],
            ["id", "name"],
        )
        ids: dict[str, int] = {}
        for row in found:
            ids.setdefault(str(row["name"]), int(row["id"]))
        missing: list[TaskSpec] = []
        for task in spec.tasks:
            if task.name not in ids and task.name not in {t.name for t in missing}:
                missing.append(task)
        if missing:
            created = await self.rpc.model(
                "project.work",
                "create",
                [self._task_values(t, project_id, company, spec) for t in missing],
            )
            ids.update({t.name: int(i) for t, i in zip(missing, created, strict=True)})
        return {t.name: ids[t.name] for t in spec.tasks}

    @staticmethod
    def _task_values(
        task: TaskSpec, project_id: int, company: int, spec: ProjectSpec
    ) -> dict[str, Any]:
        values: dict[str, Any] = {
            "name": task.name,
            "type": "task",
            "parent": project_id,
            "company": company,
            # The ERP needs a price on every work it may invoice; the project's by default.
            "list_price": _price(
                task.unit_price if task.unit_price is not None else spec.list_price
            ),
        }
        if task.effort_hours is not None:
            values["effort_duration"] = _duration(task.effort_hours)
        return values

    # -- timesheet lines (posting kind "time_entry") --------------------------------------

    async def _lines_by_key(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        if not keys:
            return {}
        domain: list[Any] = ["OR"]
        domain += [
            ("description", "like", f"%{_like_literal(LINE_MARKER.format(k))}") for k in keys
        ]
        found = await self.rpc.model(
            "timesheet.line",
            "search_read",
            domain,
            0,
            None,
            [("id", "ASC")],
            ["id", "description", "invoice_line", "work", "employee", "date", "duration"],
        )
        lines: dict[str, dict[str, Any]] = {}
        for row in found:
            key = _key_of_description(str(row.get("description") or ""))
            if key is not None:
                lines.setdefault(key, row)  # the oldest line of a key is the one
        return lines

    async def _timesheet_works(
        self, wanted: set[tuple[int, str | None]], company: int
    ) -> dict[tuple[int, str | None], int]:
        """(project id, task name or None) -> timesheet.work id, for those the ERP has."""
        projects = sorted({p for p, _ in wanted})
        if not projects:
            return {}
        works = await self.rpc.model(
            "project.work",
            "search_read",
            ["OR", ("id", "in", projects), ("parent", "in", projects)],
            0,
            None,
            [("id", "ASC")],
            ["id", "name", "parent", "timesheet_works"],
        )
        by_target: dict[tuple[int, str | None], dict[str, Any]] = {}
        for w in works:
            if int(w["id"]) in projects:
                by_target.setdefault((int(w["id"]), None), w)
            if w.get("parent") in projects:
                by_target.setdefault((int(w["parent"]), str(w["name"])), w)
        chosen = {t: by_target[t] for t in wanted if t in by_target}
        closed = [int(w["id"]) for w in chosen.values() if not w.get("timesheet_works")]
        if closed:
            # Make the works bookable: Tryton then creates their timesheet works.
            await self.rpc.model(
                "project.work", "write", sorted(set(closed)), {"timesheet_available": True}
            )
        ids = sorted({int(w["id"]) for w in chosen.values()})
        origins = await self.rpc.model(
            "timesheet.work",
            "search_read",
            [("origin", "in", [f"project.work,{i}" for i in ids]), ("company", "=", company)],
            0,
            None,
            [("id", "ASC")],
            ["id", "origin"],
        )
        by_origin: dict[int, int] = {}
        for row in origins:
            origin = str(row.get("origin") or "")
            by_origin.setdefault(int(origin.rpartition(",")[2]), int(row["id"]))
        return {t: by_origin[int(w["id"])] for t, w in chosen.items() if int(w["id"]) in by_origin}

    async def _employees(self, codes: set[str], company: int) -> dict[str, int]:
        """Party code (canonical resource id) -> employee of the company."""
        if not codes:
            return {}
        found = await self.rpc.model(
            "company.employee",
            "search_read",
            [("party.code", "in", sorted(codes)), ("company", "=", company)],
            0,
            None,
            [("id", "ASC")],
            ["id", "party.code"],
        )
        out: dict[str, int] = {}
        for row in found:
            party = row.get("party.")
            code = party.get("code") if isinstance(party, dict) else None
            if code:
                out.setdefault(str(code), int(row["id"]))
        return out

    @staticmethod
    def _invoiced(key: str, line: dict[str, Any] | None) -> PostingOutcome:
        line = line or {}
        return PostingOutcome(
            key,
            REJECTED,
            str(line.get("id")),
            "invoiced",
            f"timesheet line {line.get('id')} is already invoiced (invoice line "
            f"{line.get('invoice_line')}); the ERP keeps it: credit the invoice in the ERP, "
            "or undo the change in the PSA",
        )

    async def post_timesheet_lines(self, postings: list[Posting]) -> list[PostingOutcome]:
        """See `connectors.ports.Erp.post_timesheet_lines`: about four requests per batch."""
        company = await self._own_company()
        specs: list[TimesheetLineSpec] = [p.spec for p in postings if p.action == POST]
        lines = await self._lines_by_key([p.key for p in postings])
        works = await self._timesheet_works({(s.project_id, s.task) for s in specs}, company.id)
        employees = await self._employees({s.employee for s in specs}, company.id)
        outcomes: list[PostingOutcome | None] = [None] * len(postings)
        creates: list[tuple[int, dict[str, Any]]] = []
        writes: list[tuple[int, int, dict[str, Any]]] = []
        deletes: list[tuple[int, int]] = []
        for i, posting in enumerate(postings):
            line = lines.get(posting.key)
            line_id = int(line["id"]) if line else None
            invoiced = line is not None and bool(line.get("invoice_line"))
            if invoiced and posting.action != POST:
                outcomes[i] = self._invoiced(posting.key, line)
                continue
            if posting.action != POST:
                if line_id is None:
                    outcomes[i] = PostingOutcome(posting.key, DONE)
                else:
                    deletes.append((i, line_id))
                continue
            spec: TimesheetLineSpec = posting.spec
            work = works.get((spec.project_id, spec.task))
            employee = employees.get(spec.employee)
            if work is None:
                where = f"task {spec.task!r} of " if spec.task else ""
                outcomes[i] = PostingOutcome(
                    posting.key,
                    REJECTED,
                    None,
                    "unknown_task",
                    f"the ERP has no {where}project work {spec.project_id}; create it in the "
                    "ERP or book the time on an existing task",
                )
                continue
            if employee is None:
                outcomes[i] = PostingOutcome(
                    posting.key,
                    REJECTED,
                    None,
                    "unknown_person",
                    f"the ERP has no employee whose party code is {spec.employee!r}; give the "
                    "person's employee party that code in the ERP",
                )
                continue
            values = {
                "company": company.id,
                "employee": employee,
                "work": work,
                "date": _date(spec.date),
                "duration": _duration(spec.hours),
                "description": line_description(spec.description, spec.key),
            }
            if invoiced:
                # The ERP keeps an invoiced line as it is; holding the same values is done.
                same = _same_line(line or {}, values)
                outcomes[i] = (
                    PostingOutcome(posting.key, DONE, str(line_id))
                    if same
                    else self._invoiced(posting.key, line)
                )
            elif line_id is None:
                creates.append((i, values))
            else:
                writes.append((i, line_id, values))
        if creates:
            created = await self.rpc.model("timesheet.line", "create", [v for _, v in creates])
            for (i, _), new_id in zip(creates, created, strict=True):
                outcomes[i] = PostingOutcome(postings[i].key, DONE, str(new_id))
        if writes:
            args: list[Any] = []
            for _, line_id, values in writes:
                args += [[line_id], {k: v for k, v in values.items() if k != "company"}]
            await self.rpc.model("timesheet.line", "write", *args)
            for i, line_id, _ in writes:
                outcomes[i] = PostingOutcome(postings[i].key, DONE, str(line_id))
        if deletes:
            await self.rpc.model("timesheet.line", "delete", [d for _, d in deletes])
            for i, _ in deletes:
                outcomes[i] = PostingOutcome(postings[i].key, DONE)
        return [o for o in outcomes if o is not None]

    # -- amendments ------------------------------------------------------------------------

    async def amend_project(self, spec: ErpAmendmentSpec) -> ErpAmendment:
        company = await self._own_company()
        project = await self._project_by_key(spec.key, company.id)
        if project is None:
            raise CommandRejectedError(
                SYSTEM,
                f"no ERP project of deal {spec.key} ({spec.project_number}); it was provisioned "
                "but is gone: restore it in the ERP, then retry the change order",
            )
        project_id = int(project["id"])
        (read,) = await self.rpc.model("project.work", "read", [project_id], ["number", "comment"])
        number, comment = str(read.get("number") or ""), str(read.get("comment") or "")
        if number != spec.project_number:
            raise CommandRejectedError(
                SYSTEM,
                f"the ERP project of deal {spec.key} is {number}, the amendment is for "
                f"{spec.project_number}; check which project the deal was provisioned as",
            )
        held = amendment_revision(comment)
        if held >= spec.revision:  # applied already (or a newer one is): change nothing
            tasks = await self._task_ids(project_id)
            return ErpAmendment(
                project_id,
                number,
                held,
                {t.name: tasks[t.name] for t in spec.tasks if t.name in tasks},
            )
        await self.rpc.model(
            "project.work", "write", [project_id], {"list_price": _price(spec.list_price)}
        )
        ids = await self._task_ids(project_id)
        for task in spec.tasks:
            if task.name not in ids or task.effort_hours is None:
                continue
            await self.rpc.model(
                "project.work",
                "write",
                [ids[task.name]],
                {"effort_duration": _duration(task.effort_hours)},
            )
        base = ProjectSpec(spec.key, "", 0, "manual", "", spec.list_price, spec.tasks)
        ids = await self._ensure_tasks(project_id, company.id, base)
        # The marker last: a crash before it applies the same absolute values again.
        await self.rpc.model(
            "project.work",
            "write",
            [project_id],
            {"comment": with_amendment(comment, spec.revision, spec.change_order)},
        )
        return ErpAmendment(project_id, number, spec.revision, ids)

    async def _task_ids(self, project_id: int) -> dict[str, int]:
        found = await self.rpc.model(
            "project.work",
            "search_read",
            [("parent", "=", project_id)],
            0,
            None,
            [("id", "ASC")],
            ["id", "name"],
        )
        ids: dict[str, int] = {}
        for row in found:
            ids.setdefault(str(row["name"]), int(row["id"]))
        return ids

    # -- expenses (posting kind "expense") --------------------------------------------

    async def _expense_lines(self, keys: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """Expense id -> its lines by line key (<id>@<revision>, <...>~reversal)."""
        if not keys:
            return {}
        domain: list[Any] = ["OR"]
        domain += [("note", "like", f"{_like_literal(EXPENSE_MARKER + k)}@%") for k in keys]
        found = await self.rpc.model(
            INVOICE_LINE,
            "search_read",
            domain,
            0,
            None,
            [("id", "ASC")],
            ["id", "note", "party", "currency", "unit_price", "description"],
        )
        out: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in keys}
        for row in found:
            line_key = str(row.get("note") or "").removeprefix(EXPENSE_MARKER)
            expense = line_key.partition("@")[0]
            if expense in out:
                out[expense].setdefault(line_key, row)  # the oldest line of a key is the one
        return out

    async def post_expenses(self, postings: list[Posting]) -> list[PostingOutcome]:
        """See `connectors.ports.Erp.post_expenses`: about four requests per batch."""
        if not postings:
            return []
        company = await self._own_company()
        lines = await self._expense_lines(sorted({p.key for p in postings}))
        specs: list[ExpenseSpec] = [p.spec for p in postings if p.action == POST]
        codes = sorted({s.project_code for s in specs})
        projects = (
            await self.rpc.model(
                "project.work",
                "search_read",
                [("type", "=", "project"), ("company", "=", company.id), ("number", "in", codes)],
                0,
                None,
                [("id", "ASC")],
                ["id", "number", "party"],
            )
            if codes
            else []
        )
        customers = {str(r["number"]): r.get("party") for r in projects}
        currencies = await self._currency_ids({s.currency for s in specs})
        product = await self._expense_product_of()
        outcomes: list[PostingOutcome | None] = [None] * len(postings)
        # Per posting, the lines it adds (reversals of live lines, then its own).
        planned: list[tuple[int, str | None, list[dict[str, Any]]]] = []
        for i, posting in enumerate(postings):
            held = lines.get(posting.key, {})
            live = [k for k in held if "~" not in k and f"{k}~reversal" not in held]
            own: str | None = None
            if posting.action == POST:
                spec: ExpenseSpec = posting.spec
                own = f"{posting.key}@{spec.revision}"
                if own in held:
                    outcomes[i] = PostingOutcome(posting.key, DONE, str(held[own]["id"]))
                    continue
                problem = _expense_problem(posting.key, spec, customers, currencies)
                if problem is not None:
                    outcomes[i] = problem
                    continue
            values = [self._reversal(held[k], f"{k}~reversal", company, product) for k in live]
            if posting.action == POST and own is not None:
                values.append(
                    self._expense_line(own, posting.spec, company, customers, currencies, product)
                )
            if not values:
                outcomes[i] = PostingOutcome(posting.key, DONE)
                continue
            planned.append((i, own, values))
            # A later posting of the same key in this batch sees these lines.
            for v in values:
                key = str(v["note"]).removeprefix(EXPENSE_MARKER)
                held[key] = {"id": 0, **v}
            lines[posting.key] = held
        if planned:
            await self._create_planned(postings, planned, outcomes)
        return [o or PostingOutcome(p.key, DONE) for o, p in zip(outcomes, postings, strict=True)]

    async def _create_planned(
        self,
        postings: list[Posting],
        planned: list[tuple[int, str | None, list[dict[str, Any]]]],
        outcomes: list[PostingOutcome | None],
    ) -> None:
        try:
            ids = await self.rpc.model(
                INVOICE_LINE, "create", [v for _, _, values in planned for v in values]
            )
            it = iter(ids)
            for i, own, values in planned:
                made = [int(next(it)) for _ in values]
                erp_id = str(made[-1]) if own is not None else None
                outcomes[i] = PostingOutcome(postings[i].key, DONE, erp_id)
        except CommandRejectedError:
            # One posting the ERP refuses must not hold back the others: each on its own
            # (its reversal and its new line together, in one transaction).
            for i, own, values in planned:
                try:
                    made = await self.rpc.model(INVOICE_LINE, "create", values)
                except CommandRejectedError as exc:
                    outcomes[i] = PostingOutcome(
                        postings[i].key, REJECTED, None, "expense.rejected", str(exc)
                    )
                    continue
                erp_id = str(int(made[-1])) if own is not None else None
                outcomes[i] = PostingOutcome(postings[i].key, DONE, erp_id)

    @staticmethod
    def _reversal(
        line: dict[str, Any], key: str, company: _Company, product: _Product
    ) -> dict[str, Any]:
        """A line that takes `line` back: same customer, currency and price, quantity -1."""
        return {
            "invoice_type": "out",
            "type": "line",
            "company": company.id,
            "party": line["party"],
            "currency": line["currency"],
            "product": product.id,
            "unit": product.unit,
            "account": product.account,
            "quantity": -1.0,
            "unit_price": line["unit_price"],
            "description": f"Reversal: {line.get('description') or ''}",
            "note": f"{EXPENSE_MARKER}{key}",
        }

    @staticmethod
    def _expense_line(
        key: str,
        spec: ExpenseSpec,
        company: _Company,
        customers: dict[str, Any],
        currencies: dict[str, int],
        product: _Product,
    ) -> dict[str, Any]:
        return {
            "invoice_type": "out",
            "type": "line",
            "company": company.id,
            "party": int(customers[spec.project_code]),
            "currency": currencies[spec.currency.upper()],
            "product": product.id,
            "unit": product.unit,
            "account": product.account,
            "quantity": 1.0,
            "unit_price": _price(spec.amount),
            "description": spec.description,
            "note": f"{EXPENSE_MARKER}{key}",
        }

    async def _currency_ids(self, codes: set[str]) -> dict[str, int]:
        missing = sorted({c.upper() for c in codes} - set(self._currencies))
        if missing:
            rows = await self.rpc.model(
                "currency.currency",
                "search_read",
                [("code", "in", missing)],
                0,
                None,
                None,
                ["id", "code"],
            )
            self._currencies.update({str(r["code"]): int(r["id"]) for r in rows})
        return self._currencies

    async def _expense_product_of(self) -> _Product:
        if self._expense_product is None:
            rows = await self.rpc.model(
                "product.product",
                "search_read",
                [("code", "=", EXPENSE_PRODUCT_CODE)],
                0,
                1,
                None,
                ["id", "default_uom", "template.account_category.account_revenue"],
            )
            account = None
            if rows:
                template = rows[0].get("template.") or {}
                category = template.get("account_category.") or {}
                account = category.get("account_revenue")
            if not rows or not account:
                raise CommandRejectedError(
                    SYSTEM,
                    f"the ERP has no product {EXPENSE_PRODUCT_CODE!r} with a revenue account "
                    "for re-billed expenses; run the ERP setup (erp_setup.py) or create it",
                )
            self._expense_product = _Product(
                int(rows[0]["id"]), int(rows[0]["default_uom"]), int(account)
            )
        return self._expense_product


def _expense_problem(
    key: str, spec: ExpenseSpec, customers: dict[str, Any], currencies: dict[str, int]
) -> PostingOutcome | None:
    if spec.project_code not in customers:
        return PostingOutcome(
            key,
            REJECTED,
            reason="expense.unknown_project",
            message=f"the ERP has no project {spec.project_code}; check the expense's project",
        )
    if not customers[spec.project_code]:
        return PostingOutcome(
            key,
            REJECTED,
            reason="expense.project_without_customer",
            message=f"ERP project {spec.project_code} has no customer to re-bill; set its party",
        )
    if spec.currency.upper() not in currencies:
        return PostingOutcome(
            key,
            REJECTED,
            reason="expense.unknown_currency",
            message=f"the ERP has no currency {spec.currency}; add it or fix the expense",
        )
    return None
