"""The ERP port over Tryton 8.2 JSON-RPC (modules party, company, project, project_invoice).

- Customer = `party.party`, found by its `code` (unique in Tryton: the canonical customer id).
- Project = `project.work` of type project, found again by a marker line in its `comment`:
  the only field of `project.work` that the integration user may both set and search that
  Tryton leaves free (`number` is read-only, from the ERP's sequence; `origin` only takes
  records of other models; `name` is the people's). The ERP assigns `number`: the enterprise
  project code.
- Tasks = child works of type task, found by name under the project (the ERP keeps them
  flat: phases are the PSA's work breakdown).
- Billable expenses = customer invoice lines without an invoice (`account.invoice.line`,
  invoice_type out, party = the project's customer, the "EXPENSE" product at the expense's
  amount): the ERP's own "to invoice" lines, which the accountant adds to the customer's
  next invoice. With these modules nothing else takes a re-billable cost: an invoice line's
  origin cannot name a project and a project work holds one invoice line only, so the line
  names the project by its code in the description. Each line carries its posting key in
  `note` (the integration user sets and searches it, people do not), which finds it again;
  a correction is a reversal line (quantity -1) plus a new line, never an edit, so a line
  already on an invoice is never touched.

An existing customer or project is reused as it is: the ERP's people may have changed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from connectors.erp.rpc import SYSTEM, TrytonRpc
from connectors.ports import (
    CustomerSpec,
    ErpCustomer,
    ErpProject,
    ExpensePosting,
    PostingOutcome,
    ProjectSpec,
    TaskSpec,
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


def _like_literal(text: str) -> str:
    """`text` for a Tryton `like` pattern, matched literally (Tryton escapes with '\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _duration(hours: Decimal) -> dict[str, Any]:
    # TimeDelta fields travel as {"__class__": "timedelta", "seconds": ...}.
    return {"__class__": "timedelta", "seconds": float(hours * 3600)}


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

    # -- expenses ------------------------------------------------------------------------

    async def post_expenses(self, postings: list[ExpensePosting]) -> list[PostingOutcome]:
        """Post each expense revision once: lines found by their key are reported as done,
        the others created in one call (one by one only when the ERP refuses the batch)."""
        if not postings:
            return []
        company = await self._own_company()
        unique = list({p.key: p for p in postings}.values())
        found = await self.rpc.model(
            INVOICE_LINE,
            "search_read",
            [("note", "in", [EXPENSE_MARKER + p.key for p in unique])],
            0,
            None,
            [("id", "ASC")],
            ["id", "note"],
        )
        existing: dict[str, int] = {}
        for row in found:
            existing.setdefault(str(row["note"]).removeprefix(EXPENSE_MARKER), int(row["id"]))
        outcomes: dict[str, PostingOutcome] = {
            key: PostingOutcome(key, "done", f"{INVOICE_LINE},{line}", existed=True)
            for key, line in existing.items()
        }
        todo = [p for p in unique if p.key not in existing]
        if todo:
            outcomes.update(await self._create_expense_lines(todo, company))
        return [outcomes[p.key] for p in postings]

    async def _create_expense_lines(
        self, todo: list[ExpensePosting], company: _Company
    ) -> dict[str, PostingOutcome]:
        codes = sorted({p.project_code for p in todo})
        projects = await self.rpc.model(
            "project.work",
            "search_read",
            [("type", "=", "project"), ("company", "=", company.id), ("number", "in", codes)],
            0,
            None,
            [("id", "ASC")],
            ["id", "number", "party"],
        )
        customers = {str(r["number"]): r.get("party") for r in projects}
        currencies = await self._currency_ids({p.currency for p in todo})
        product = await self._expense_product_of()
        out: dict[str, PostingOutcome] = {}
        ready: list[tuple[ExpensePosting, dict[str, Any]]] = []
        for p in todo:
            rejected = _expense_problem(p, customers, currencies)
            if rejected is not None:
                out[p.key] = rejected
                continue
            ready.append((p, self._expense_line(p, company, customers, currencies, product)))
        if not ready:
            return out
        try:
            ids = await self.rpc.model(INVOICE_LINE, "create", [v for _, v in ready])
            for (p, _), line in zip(ready, ids, strict=True):
                out[p.key] = PostingOutcome(p.key, "done", f"{INVOICE_LINE},{int(line)}")
        except CommandRejectedError:
            # One line the ERP refuses must not hold back the others: find which.
            for p, values in ready:
                try:
                    (line,) = await self.rpc.model(INVOICE_LINE, "create", [values])
                except CommandRejectedError as exc:
                    out[p.key] = PostingOutcome(
                        p.key, "rejected", None, "expense.rejected", str(exc)
                    )
                    continue
                out[p.key] = PostingOutcome(p.key, "done", f"{INVOICE_LINE},{int(line)}")
        return out

    @staticmethod
    def _expense_line(
        p: ExpensePosting,
        company: _Company,
        customers: dict[str, Any],
        currencies: dict[str, int],
        product: _Product,
    ) -> dict[str, Any]:
        return {
            "invoice_type": "out",
            "type": "line",
            "company": company.id,
            "party": int(customers[p.project_code]),
            "currency": currencies[p.currency.upper()],
            "product": product.id,
            "unit": product.unit,
            "account": product.account,
            "quantity": float(p.quantity),
            "unit_price": _price(p.amount),
            "description": p.description,
            "note": f"{EXPENSE_MARKER}{p.key}",
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
    p: ExpensePosting, customers: dict[str, Any], currencies: dict[str, int]
) -> PostingOutcome | None:
    if p.project_code not in customers:
        return PostingOutcome(
            p.key,
            "rejected",
            reason="expense.unknown_project",
            message=f"the ERP has no project {p.project_code}; check the expense's project",
        )
    if not customers[p.project_code]:
        return PostingOutcome(
            p.key,
            "rejected",
            reason="expense.project_without_customer",
            message=f"ERP project {p.project_code} has no customer to re-bill; set its party",
        )
    if p.currency.upper() not in currencies:
        return PostingOutcome(
            p.key,
            "rejected",
            reason="expense.unknown_currency",
            message=f"the ERP has no currency {p.currency}; add it or fix the expense",
        )
    return None
