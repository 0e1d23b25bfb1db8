"""The business monitors and change orders: a change order is not a deal without a project;
amendments that moved a project's financial baseline are reported, each once."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from streams.monitor.checks import BaselineChanges, DealsWithoutProject
from streams.settings import Settings
from streams.topology import Topology

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
TOPO = Topology(routes=[], namespace="")


def _baseline(value: str, hours: str, milestones: int) -> dict[str, Any]:
    return {
        "total_value": Decimal(value),
        "hours": Decimal(hours),
        "milestones": [{"name": f"m{n}"} for n in range(milestones)],
    }


def _contract(number: int | None, changed: tuple[str, ...] = ("amount", "hours")) -> bytes:
    amendment = None
    if number is not None:
        amendment = {
            "number": number,
            "change_order_id": "crm:opportunity:006CO",
            "change_order_crm_id": "006CO",
            "project_code": "PRJ-1",
            "erp_project_id": "7",
            "psa_project_id": "9",
            "changed": list(changed),
            "previous_baseline": _baseline("30000.00", "110.00", 2),
            "new_baseline": _baseline("36070.00", "159.00", 3),
            "applied_at": T0 + timedelta(minutes=number),
        }
    data = {"contract_id": "crm:contract:006A", "currency": "EUR", "amendment": amendment}
    return pickle.dumps({"envelope": {"correlation_id": "c-1"}, "data": data})


def test_a_change_order_is_not_a_deal_without_a_project() -> None:
    m = DealsWithoutProject(TOPO, Settings(saga_deadline=300), pickle.loads)
    for key, extra in (
        ("co", {"deal_type": "change_order", "parent_opportunity_id": "crm:opportunity:006A"}),
        ("orphan-type", {"deal_type": "change_order"}),  # no parent: provisioned as a deal
    ):
        record = {
            "envelope": {"correlation_id": "c", "source": {"committed_at": T0}},
            "data": {"crm_id": key, "name": key, "stage": "closed_won", **extra},
        }
        m.deals.apply(key, pickle.dumps(record))
    assert [f.key for f in m.findings(T0 + timedelta(hours=1))] == ["orphan-type"]


def test_amendments_that_moved_the_baseline_are_reported_each_once() -> None:
    m = BaselineChanges(TOPO, Settings(), pickle.loads)
    key = "crm:contract:006A"
    m.contracts.apply(key, _contract(None))  # the contract as signed: nothing to report
    m.contracts.apply(key, _contract(1))
    m.contracts.apply(key, _contract(1))  # replayed
    m.contracts.apply(key, _contract(2, ("tasks",)))  # only the WBS renamed: not financial
    [found] = m.findings(T0)
    assert found.key == "PRJ-1#1" and found.late and found.since == T0 + timedelta(minutes=1)
    assert "30000.00 -> 36070.00 EUR" in found.summary and "110.00 -> 159.00" in found.summary
    assert found.ids == {
        "project_code": "PRJ-1",
        "crm_opportunity": "006CO",
        "correlation_id": "c-1",
        "erp_project": "7",
        "psa_project": "9",
    }
    m.contracts.apply(key, None)  # deleted
    assert m.findings(T0) == []
