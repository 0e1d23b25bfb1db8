"""The deal stage with change orders, without Kafka: which records it writes for which inputs.

A change order closed won before its deal is provisioned is sent to the deal, waits, becomes
an exception, and is applied (the exception resolved) once the deal is provisioned; a
redelivered result applies nothing twice. The same paths run on the real stack in
tests/integration/test_change_orders.py.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from connectors.ports import (
    ErpAmendment,
    ErpAmendmentSpec,
    ErpCustomer,
    ErpProject,
    PsaProject,
    from_json,
    to_json,
)
from schemas import contracts
from streams.agents.deal import CHANGE_ORDER_SETTLE
from tests.unit.test_deal_stage import CID, KEY, LINE_ITEM, Harness, Msg, reference

CO = "crm:opportunity:006CO"


def _change_order(h: Harness) -> list[Msg]:
    """The change order's opportunity and line item, as the deal stage reads them."""
    data = {
        "opportunity_id": CO,
        "crm_id": "006CO",
        "customer_id": "crm:account:001A",
        "name": "Phase 2",
        "stage": "closed_won",
        "is_closed": True,
        "is_won": True,
        "amount": Decimal("500.00"),
        "currency": "EUR",
        "billing_type": "time_and_materials",
        "service_lines": ["ARCH"],
        "deal_type": "change_order",
        "parent_opportunity_id": KEY,
    }
    envelope = {**h.envelope(), "correlation_id": "5b7b0c4e-1f7a-5a53-9c65-2d4f0f2a9e11"}
    opp = h.encode(contracts.schema_str("opportunity"), {"envelope": envelope, "data": data})
    line = {"opportunity_id": CO, "service_line": "ARCH", "quantity": "4", "unit_price": "100"}
    item = h.encode(LINE_ITEM, {"envelope": {"entity_version": 1}, "data": line})
    return [
        Msg(h.topo.canonical("opportunity_line_item"), b"crm:li:CO1", item),
        Msg(h.topo.canonical("opportunity"), CO.encode(), opp),
    ]


def _forwarded(h: Harness) -> list[Msg]:
    """What the stage sent to saga.control, delivered back to it (Kafka's part)."""
    return [
        Msg(t, k, v) for t, k, v in h.output.sent if t == h.topo.saga_control and k == KEY.encode()
    ]


def _last(h: Harness, target: str) -> dict[str, Any]:
    return h.commands(target)[-1]


def test_change_order_waits_for_its_deal_then_amends_it_once() -> None:
    h = Harness(wait=0)
    h.stage.settings = dataclasses.replace(h.settings, change_order_wait=10)
    reference(h)
    h.feed(h.line("l1", "ARCH"), h.opportunity())  # the deal: its saga starts
    assert [c["step"] for c in h.all_commands()] == ["erp_customer"]

    h.feed(*_change_order(h))
    assert _forwarded(h) == []  # the rest of its CRM save may still be on its way
    h.clock.now += CHANGE_ORDER_SETTLE
    h.tick()
    [request] = _forwarded(h)
    assert [c["step"] for c in h.all_commands()] == ["erp_customer"]  # not a new deal
    h.feed(request)
    h.clock.now += 11
    h.tick()
    [waited] = h.records(h.topo.exceptions)
    assert (waited["reason"], waited["saga_key"], waited["status"]) == (
        "change_order.parent_not_provisioned",
        CO,
        "open",
    )
    [notice] = h.commands("crm")  # the CRM shows why on the change order
    assert notice["step"] == "crm_change_order"
    assert '"sync_status":"exception: change_order.parent_not_provisioned"' in notice["payload"]

    # The deal is provisioned: its change order is its first amendment.
    h.feed(h.result(_last(h, "erp"), "done", to_json(ErpCustomer(5, "crm:account:001A"))))
    h.feed(h.result(_last(h, "erp"), "done", to_json(ErpProject(7, "PRJ-1", {"Design": 8}))))
    psa = PsaProject(9, "prj-1", "http://psa/projects/prj-1", {"Plan": 1}, {"Design": 2})
    h.feed(h.result(_last(h, "psa"), "done", to_json(psa)))
    h.feed(h.result(_last(h, "crm"), "done"))
    erp = _last(h, "erp")
    assert (
        erp["step"] == "erp_amendment" and erp["command_id"] == f"{CID}:amendment:1:erp_amendment"
    )
    spec = from_json(ErpAmendmentSpec, erp["payload"])
    assert (spec.project_number, spec.revision, spec.change_order) == ("PRJ-1", 1, CO)
    # The template's one task gets the change order's 4 hours on top of its 8.
    assert [(t.name, t.effort_hours) for t in spec.tasks] == [("Design", Decimal("12.00"))]

    h.feed(h.result(erp, "done", to_json(ErpAmendment(7, "PRJ-1", 1))))
    h.feed(h.result(_last(h, "psa"), "done", to_json(psa)))
    crm = _last(h, "crm")
    assert crm["step"] == "crm_change_order"
    assert '"opportunity_id":"006CO"' in crm["payload"]
    assert '"sync_status":"amendment 1 of PRJ-1 applied"' in crm["payload"]
    last = h.result(crm, "done")
    h.feed(last, last)  # a redelivered result applies nothing twice

    contracts_out = [r for r in h.records(h.topo.canonical("contract")) if r["data"]["amendment"]]
    [amended] = contracts_out
    a = amended["data"]["amendment"]
    assert (a["number"], a["change_order_id"], a["project_code"]) == (1, CO, "PRJ-1")
    assert amended["data"]["total_value"] == Decimal("1500.00")
    assert (a["previous_baseline"]["hours"], a["new_baseline"]["hours"]) == (
        Decimal("8.00"),
        Decimal("12.00"),
    )
    assert str(amended["envelope"]["correlation_id"]) == CID
    assert [r["status"] for r in h.records(h.topo.exceptions)] == ["open", "resolved"]
    assert len([c for c in h.all_commands() if "amendment" in c["command_id"]]) == 3
