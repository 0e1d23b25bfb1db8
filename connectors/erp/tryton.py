"""The ERP port over Tryton 8.2 JSON-RPC (modules party, company, project, project_invoice).

- Customer = `party.party`, found by its `code` (unique in Tryton: the canonical customer id).
- Project = `project.work` of type project, found again by a marker line in its `comment`:
  the only field of `project.work` that the integration user may both set and search that
  Tryton leaves free (`number` is read-only, from the ERP's sequence; `origin` only takes
  records of other models; `name` is the people's). The ERP assigns `number`: the enterprise
  project code.
- Tasks = child works of type task, found by name under the project (the ERP keeps them
  flat: phases are the PSA's work breakdown).
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
    CustomerSpec,
    ErpAmendment,
    ErpAmendmentSpec,
    ErpCustomer,
    ErpProject,
    ProjectSpec,
    TaskSpec,
)
from streams.errors import CommandRejectedError
from streams.settings import Settings

INVOICE_METHODS = ("manual", "effort", "progress", "timesheet")
# The line in a project's comment that finds it again; the deal's correlation id follows.
KEY_MARKER = "pssync deal: "
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


class TrytonErp:
    """Implements `connectors.ports.Erp`. Every operation is idempotent on its external key."""

    def __init__(self, rpc: TrytonRpc) -> None:
        self.rpc = rpc
        self._company: _Company | None = None

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
