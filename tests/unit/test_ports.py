"""The JSON form of the workflow specs round-trips exactly (saga commands carry it)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from connectors.ports import (
    CrmWriteBack,
    ErpProject,
    Member,
    MilestoneSpec,
    ProjectSpec,
    PsaProjectSpec,
    TaskSpec,
    from_json,
    to_json,
)


@pytest.mark.parametrize(
    "value",
    [
        ProjectSpec(
            key="c0ffee",
            name="Acme rollout",
            customer_id=3,
            invoice_method="timesheet",
            currency="EUR",
            list_price=Decimal("120.00"),
            tasks=(TaskSpec("Design", "Plan", Decimal("8"), Decimal("150.50")),),
        ),
        PsaProjectSpec(
            identifier="prj-7",
            name="Acme rollout",
            erp_project_code="PRJ7",
            milestones=(MilestoneSpec("Go-live", date(2027, 1, 2), Decimal("5000")),),
            members=(Member("pm@example.com", "Manager"),),
            placeholders=("Solution architect",),
        ),
        ErpProject(1, "PRJ7", {"Design": 2}),
        CrmWriteBack(opportunity_id="006A", project_code="PRJ7"),
    ],
)
def test_json_round_trip(value: object) -> None:
    assert from_json(type(value), to_json(value)) == value


def test_unknown_fields_are_refused_with_their_names() -> None:
    with pytest.raises(ValueError, match="oops"):
        from_json(CrmWriteBack, '{"opportunity_id": "1", "oops": 2}')
