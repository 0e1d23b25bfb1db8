"""Amendments through the ERP and PSA ports, against the real Tryton and Redmine of the stack.

An amendment sets absolute values and carries its revision: applied again (a redelivered
command) it changes nothing, and an older revision after a newer one does not roll the ERP
project back. Read back through the applications' APIs as the integration users.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors.erp import TrytonErp
from connectors.erp.tryton import AMENDMENT_MARKER
from connectors.ports import (
    CustomerSpec,
    ErpAmendmentSpec,
    MilestoneSpec,
    ProjectSpec,
    PsaAmendmentSpec,
    PsaProjectSpec,
    TaskSpec,
)
from connectors.psa import RedminePsa, psa_identifier
from streams.errors import CommandRejectedError
from streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TASKS = (
    TaskSpec("Design", "Plan", Decimal("16"), Decimal("150")),
    TaskSpec("Build", "Deliver", Decimal("40")),
)


def _efforts(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {r["name"]: r["effort_duration"]["seconds"] / 3600 for r in rows}


def test_erp_amendment_applies_once_and_never_rolls_back() -> None:
    async def go() -> None:
        erp = TrytonErp.from_settings(Settings.from_env())
        try:
            code = f"C-{uuid.uuid4().hex[:10]}"
            customer = await erp.ensure_customer(CustomerSpec(code=code, name="Customer"))
            key = str(uuid.uuid4())
            spec = ProjectSpec(
                key, f"Rollout {code}", customer.id, "timesheet", "EUR", Decimal(120), TASKS
            )
            project = await erp.ensure_project(spec)

            async def state() -> tuple[dict[str, float], Decimal, str]:
                children = await erp.rpc.model(
                    "project.work",
                    "search_read",
                    [("parent", "=", project.id)],
                    0,
                    None,
                    None,
                    ["name", "effort_duration"],
                )
                (work,) = await erp.rpc.model(
                    "project.work", "read", [project.id], ["list_price", "comment"]
                )
                price = Decimal(work["list_price"]["decimal"])
                return _efforts(children), price, str(work["comment"])

            first = ErpAmendmentSpec(
                key,
                project.number,
                1,
                "crm:opportunity:006CO1",
                Decimal("130.00"),
                (
                    TaskSpec("Design", "Plan", Decimal("20")),
                    TaskSpec("Build", "Deliver", Decimal("40")),
                    TaskSpec("Audit", "Run", Decimal("8"), Decimal("100")),
                ),
            )
            done = await erp.amend_project(first)
            assert (done.id, done.number, done.revision) == (project.id, project.number, 1)
            assert set(done.task_ids) == {"Design", "Build", "Audit"}
            efforts, price, comment = await state()
            assert efforts == {"Design": 20, "Build": 40, "Audit": 8} and price == Decimal(130)
            assert comment.endswith(f"{AMENDMENT_MARKER}1 crm:opportunity:006CO1")

            # Redelivered: nothing changes (no second Audit task either).
            again = await erp.amend_project(first)
            assert again.revision == 1 and await state() == (efforts, price, comment)

            second = ErpAmendmentSpec(
                key,
                project.number,
                2,
                "crm:opportunity:006CO2",
                Decimal("135.00"),
                (TaskSpec("Build", "Deliver", Decimal("60")),),
            )
            assert (await erp.amend_project(second)).revision == 2
            efforts, price, comment = await state()
            assert efforts == {"Design": 20, "Build": 60, "Audit": 8} and price == Decimal(135)
            # The first one, replayed late, does not roll the project back.
            assert (await erp.amend_project(first)).revision == 2
            assert await state() == (efforts, price, comment)

            with pytest.raises(CommandRejectedError, match="the amendment is for"):
                await erp.amend_project(ErpAmendmentSpec(key, "PRJ-NOPE", 3, "x", Decimal(1), ()))
        finally:
            await erp.aclose()

    asyncio.run(go())


def test_psa_amendment_moves_estimates_and_milestones_idempotently() -> None:
    s = Settings.from_env()
    code = f"PRJ-{uuid.uuid4().hex[:8].upper()}"
    spec = PsaProjectSpec(
        identifier=psa_identifier(code),
        name=f"Amend {code}",
        erp_project_code=code,
        tasks=TASKS,
        milestones=(MilestoneSpec("Go-live", date(2027, 3, 31)),),
    )
    amendment = PsaAmendmentSpec(
        identifier=spec.identifier,
        erp_project_code=code,
        revision=1,
        tasks=(
            TaskSpec("Design", "Plan", Decimal("20")),
            TaskSpec("Build", "Deliver", Decimal("40")),
            TaskSpec("Audit", "Run", Decimal("8")),
        ),
        milestones=(
            MilestoneSpec("Go-live", date(2027, 4, 30)),
            MilestoneSpec("Phase 2", date(2027, 6, 30)),
        ),
    )

    async def go() -> tuple[int, int]:
        psa = RedminePsa.from_settings(s)
        try:
            project = await psa.ensure_project(spec)
            amended = await psa.amend_project(amendment)
            again = await psa.amend_project(amendment)
            assert amended.id == again.id == project.id
            assert amended.task_ids == again.task_ids
            with pytest.raises(CommandRejectedError, match="no Redmine project"):
                await psa.amend_project(
                    PsaAmendmentSpec("prj-nope", f"NOPE-{uuid.uuid4().hex[:6]}", 1)
                )
            return project.id, len(amended.task_ids)
        finally:
            await psa.aclose()

    project_id, tasks = asyncio.run(go())
    assert tasks == 3
    key = s.psa_api_key_file.read_text().strip()
    with httpx.Client(base_url=s.psa_url, headers={"X-Redmine-API-Key": key}, timeout=30) as api:
        issues = api.get(
            "/issues.json", params={"project_id": project_id, "status_id": "*", "limit": 100}
        ).json()["issues"]
        versions = api.get(f"/projects/{project_id}/versions.json").json()["versions"]
    children = {i["subject"]: i.get("estimated_hours") for i in issues if "parent" in i}
    assert children == {"Design": 20.0, "Build": 40.0, "Audit": 8.0}
    assert len(issues) == 3 + 3  # three phases, three tasks: made once
    assert sorted((v["name"], v["due_date"]) for v in versions) == [
        ("Go-live", "2027-04-30"),
        ("Phase 2", "2027-06-30"),
    ]
