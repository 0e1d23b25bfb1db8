"""Wall time of the application calls of one deal: ERP customer, ERP project, PSA project.

Ten deals one after the other through one instance of each port (as one worker holds
them); the median is printed (`pytest -s`) and held to the issue's p99 target of 10 s for
the whole closed-won -> PSA project path, of which these calls are the bulk.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from datetime import date
from decimal import Decimal

import pytest

from connectors.erp import TrytonErp
from connectors.ports import (
    CustomerSpec,
    Member,
    MilestoneSpec,
    ProjectSpec,
    PsaProjectSpec,
    TaskSpec,
)
from connectors.psa import RedminePsa, psa_identifier
from streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TASKS = (
    TaskSpec("Workshops", "Discovery", Decimal("16")),
    TaskSpec("Solution design", "Discovery", Decimal("24")),
    TaskSpec("Build", "Delivery", Decimal("80")),
    TaskSpec("Hand-over", "Delivery", Decimal("8")),
)


async def _one_deal(erp: TrytonErp, psa: RedminePsa) -> tuple[float, float, float]:
    """Seconds to the ERP customer, to the ERP project, to the PSA project."""
    suffix = uuid.uuid4().hex[:10]
    started = time.perf_counter()
    customer = await erp.ensure_customer(CustomerSpec(code=f"T-{suffix}", name=f"Acme {suffix}"))
    at_customer = time.perf_counter() - started
    project = await erp.ensure_project(
        ProjectSpec(
            key=str(uuid.uuid4()),
            name=f"Rollout {suffix}",
            customer_id=customer.id,
            invoice_method="timesheet",
            currency="EUR",
            list_price=Decimal("120"),
            tasks=TASKS,
        )
    )
    at_project = time.perf_counter() - started
    await psa.ensure_project(
        PsaProjectSpec(
            identifier=psa_identifier(project.number),
            name=f"Rollout {suffix}",
            erp_project_code=project.number,
            tasks=TASKS,
            milestones=(
                MilestoneSpec("Design signed off", date(2027, 1, 29)),
                MilestoneSpec("Go-live", date(2027, 3, 31)),
            ),
            members=(Member("demo.pm", "Manager"),),
            placeholders=("Solution architect", "Consultant", "Project manager"),
        )
    )
    return at_customer, at_project, time.perf_counter() - started


def test_one_deal_provisioning_time() -> None:
    async def go() -> list[tuple[float, float, float]]:
        settings = Settings.from_env()
        erp, psa = TrytonErp.from_settings(settings), RedminePsa.from_settings(settings)
        try:
            return [await _one_deal(erp, psa) for _ in range(10)]
        finally:
            await erp.aclose()
            await psa.aclose()

    runs = asyncio.run(go())
    times = [r[2] for r in runs]
    median = statistics.median(times)
    customer = statistics.median(r[0] for r in runs)
    erp_project = statistics.median(r[1] - r[0] for r in runs)
    psa_project = statistics.median(r[2] - r[1] for r in runs)
    print(
        f"\nERP customer + ERP project + PSA project, one deal: median {median:.2f} s, "
        f"min {min(times):.2f} s, max {max(times):.2f} s over {len(times)} deals "
        f"(medians per step: customer {customer:.2f} s, ERP project {erp_project:.2f} s, "
        f"PSA project {psa_project:.2f} s)"
    )
    assert median < 10.0
