"""The canonical contract, project and tasks a deal becomes, as the saga learns them.

No single system holds these: the contract is the CRM deal's commercial payload, the
project is numbered by the ERP and staffed in the PSA. The saga knows both sides, so it
publishes the enterprise view: after the ERP project step the contract and the project
(keyed by the ERP project code, the enterprise id), after the PSA step the project again
with its PSA id, and its tasks (keyed by project code and WBS position). Event ids and
versions derive from the step, so a replayed or redelivered result republishes identical
events that every consumer and sink drops as duplicates.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from streams.deals.amendments import Amendment, Baseline
from streams.deals.assembly import Deal
from streams.deals.plan import tasks as plan_tasks
from streams.deals.reference import Reference
from streams.deals.saga import STEPS, Saga
from streams.ids import name_id

_NS = uuid.UUID("2b8e7c1d-5a4f-5e3b-9d6c-7a1f0e4b3c21")
BILLING_TYPES = {"fixed_fee", "time_and_materials", "milestone", "retainer"}
REVENUE_RULES = {
    "fixed_fee": "percent_complete",
    "time_and_materials": "time_and_materials",
    "milestone": "milestone",
    "retainer": "straight_line",
}
CENT = Decimal("0.01")

Event = tuple[str, str, dict[str, Any]]  # entity, key, record


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _envelope(
    saga: Saga, entity: str, key: str, step: str, system: str, source_key: str, now: float
) -> dict[str, Any]:
    passed = saga.passed[step]
    version = STEPS.index(step) + 1  # grows with every step that changes what is known
    return {
        "event_id": name_id(_NS, f"{entity}|{key}|{passed.command_id}"),
        "correlation_id": saga.correlation_id,
        "causation_id": passed.command_id,
        "source": {
            "system": system,
            "connector": "saga",
            "entity": f"saga.{step}",
            "key": source_key,
            "position": passed.command_id,
            "sequence": version,
            "committed_at": _at(passed.at),
        },
        "op": "create" if step == "erp_project" else "update",
        "entity_version": version,
        "emitted_at": _at(now),
    }


def contract_id(deal: Deal) -> str:
    return f"crm:contract:{deal.opportunity.crm_id if deal.opportunity else deal.key}"


def events(deal: Deal, saga: Saga, step: str, ref: Reference, now: float) -> list[Event]:
    """What passing `step` tells the enterprise: [] for steps that change nothing of it."""
    opp = deal.opportunity
    code = saga.learned.get("project_code")
    if opp is None or code is None or step not in ("erp_project", "psa_project"):
        return []
    customer = ref.customer(opp.customer_id)
    country = customer.billing_country if customer else None
    entity = ref.legal_entity(country, opp.delivery_region)
    billing = opp.billing_type if opp.billing_type in BILLING_TYPES else "unknown"
    signed = _at(saga.closed_won_at) if saga.closed_won_at else None
    out: list[Event] = []
    if step == "erp_project":
        out.append(
            (
                "contract",
                contract_id(deal),
                {
                    "envelope": _envelope(
                        saga, "contract", contract_id(deal), step, "crm", opp.crm_id, now
                    ),
                    "data": {
                        "contract_id": contract_id(deal),
                        "contract_number": opp.sow_reference,
                        "opportunity_id": opp.key,
                        "customer_id": opp.customer_id or "",
                        "legal_entity_id": entity.key if entity else None,
                        "sow_reference": opp.sow_reference,
                        "status": "active",
                        "billing_type": billing,
                        "total_value": opp.amount.quantize(CENT)
                        if opp.amount is not None
                        else None,
                        "currency": opp.currency,
                        "start_date": None,
                        "end_date": None,
                        "signed_at": signed,
                        "last_modified_at": _at(now),
                    },
                },
            )
        )
    psa_id = saga.learned.get("psa_project_id") if step == "psa_project" else None
    milestones = sorted(deal.all_milestones(), key=lambda m: (m.due is None, m.due, m.name))
    out.append(
        (
            "project",
            code,
            {
                "envelope": _envelope(
                    saga,
                    "project",
                    code,
                    step,
                    "erp",
                    saga.learned.get("erp_project_id", code),
                    now,
                ),
                "data": {
                    "project_id": code,
                    "project_code": code,
                    "erp_project_id": saga.learned.get("erp_project_id"),
                    "psa_project_id": psa_id,
                    "name": opp.name,
                    "customer_id": opp.customer_id or "",
                    "opportunity_id": opp.key,
                    "contract_id": contract_id(deal),
                    "legal_entity_id": entity.key if entity else "",
                    "status": "active" if psa_id else "planned",
                    "billing_type": billing,
                    "revenue_rule": REVENUE_RULES.get(billing, "unknown"),
                    "billing_schedule": [
                        {
                            "line_id": m.key,
                            "description": m.name,
                            "planned_date": m.due,
                            "amount": m.amount.quantize(CENT) if m.amount is not None else None,
                            "percent": m.percent.quantize(CENT) if m.percent is not None else None,
                            "status": "planned",
                        }
                        for m in milestones
                    ],
                    "budget_amount": opp.amount.quantize(CENT) if opp.amount is not None else None,
                    "currency": opp.currency,
                    "cost_center": None,
                    "department": None,
                    "practice": None,
                    "delivery_region": opp.delivery_region,
                    "project_manager": opp.project_manager,
                    "start_date": None,
                    "end_date": None,
                    "last_modified_at": _at(now),
                },
            },
        )
    )
    if step == "psa_project":
        out += list(_tasks(deal, saga, code, ref, now))
    return out


def _tasks(deal: Deal, saga: Saga, code: str, ref: Reference, now: float) -> Iterator[Event]:
    output = json.loads(saga.passed["psa_project"].output or "{}")
    issue_ids: dict[str, int] = output.get("task_ids") or {}
    phase_ids: dict[str, int] = output.get("phase_ids") or {}
    specs = plan_tasks(deal, ref)
    phases = list(dict.fromkeys(t.phase for t in specs))
    for p, phase in enumerate(phases, start=1):
        phase_key = f"{code}:{p}"
        for n, task in enumerate((t for t in specs if t.phase == phase), start=1):
            key = f"{code}:{p}.{n}"
            yield (
                "task",
                key,
                {
                    "envelope": _envelope(saga, "task", key, "psa_project", "psa", key, now),
                    "data": {
                        "task_id": key,
                        "psa_task_id": str(issue_ids.get(task.name, "")),
                        "project_id": code,
                        "parent_task_id": phase_key if phase in phase_ids else None,
                        "wbs_code": f"{p}.{n}",
                        "name": task.name,
                        "status": "not_started",
                        "is_milestone": False,
                        "is_billable": True,
                        "planned_hours": (
                            float(task.effort_hours) if task.effort_hours is not None else None
                        ),
                        "assignee_id": None,
                        "start_date": None,
                        "due_date": None,
                        "last_modified_at": _at(now),
                    },
                },
            )


def _baseline(b: Baseline) -> dict[str, Any]:
    return {
        "total_value": b.amount.quantize(CENT) if b.amount is not None else None,
        "list_price": b.list_price.quantize(CENT),
        "hours": b.hours.quantize(CENT),
        "tasks": [
            {
                "name": t.name,
                "phase": t.phase,
                "hours": t.effort_hours.quantize(CENT) if t.effort_hours is not None else None,
            }
            for t in b.tasks
        ],
        "milestones": [
            {
                "name": m.name,
                "due_date": m.due,
                "amount": m.amount.quantize(CENT) if m.amount is not None else None,
            }
            for m in b.milestones
        ],
    }


def amendment_events(deal: Deal, saga: Saga, amendment: Amendment, ref: Reference) -> list[Event]:
    """What an applied amendment tells the enterprise: the amended contract, and the project
    with its new budget and billing schedule."""
    contract = amendment_event(deal, saga, amendment, ref)
    project = [
        e for e in events(deal, saga, "psa_project", ref, amendment.started_at) if e[0] == "project"
    ]
    out = [contract]
    # The milestones' canonical ids, the deal's and its change orders' (by name).
    orders = deal.amendments.applied.values() if deal.amendments else ()
    ids = {m.name: m.key for o in orders for m in o.milestones}
    ids.update({m.name: m.key for m in deal.all_milestones()})
    for entity, key, record in project:
        after = amendment.after
        record["envelope"] = {
            **contract[2]["envelope"],
            "event_id": name_id(
                _NS,
                f"project|{key}|{record['envelope']['causation_id']}|amendment:{amendment.number}",
            ),
            "source": {**contract[2]["envelope"]["source"], "system": "erp"},
        }
        data = record["data"]
        data["budget_amount"] = after.amount.quantize(CENT) if after.amount is not None else None
        data["billing_schedule"] = [
            {
                "line_id": ids.get(m.name, f"{key}:milestone:{m.name}"),
                "description": m.name,
                "planned_date": m.due,
                "amount": m.amount.quantize(CENT) if m.amount is not None else None,
                "percent": None,
                "status": "planned",
            }
            for m in after.milestones
        ]
        data["last_modified_at"] = contract[2]["data"]["last_modified_at"]
        out.append((entity, key, record))
    return out


def amendment_event(deal: Deal, saga: Saga, amendment: Amendment, ref: Reference) -> Event:
    """The contract after an applied amendment: new total value, and what moved, from what to
    what, by which change order, when (the monitor of changed baselines reads it)."""
    opp = deal.opportunity
    assert opp is not None, "amendments apply to provisioned deals"
    key = contract_id(deal)
    at = amendment.done_at or amendment.started_at
    command = f"{saga.correlation_id}:amendment:{amendment.number}"
    customer = ref.customer(opp.customer_id)
    entity = ref.legal_entity(customer.billing_country if customer else None, opp.delivery_region)
    envelope = {
        "event_id": name_id(_NS, f"contract|{key}|{command}"),
        "correlation_id": saga.correlation_id,
        "causation_id": command,
        "source": {
            "system": "crm",
            "connector": "saga",
            "entity": "saga.amendment",
            "key": amendment.cause_crm_id,
            "position": command,
            # After every event of the deal's own saga (versions 1..len(STEPS)).
            "sequence": len(STEPS) + amendment.number,
            "committed_at": _at(amendment.requested_at),
        },
        "op": "update",
        "entity_version": len(STEPS) + amendment.number,
        "emitted_at": _at(at),
    }
    billing = opp.billing_type if opp.billing_type in BILLING_TYPES else "unknown"
    after = amendment.after
    data = {
        "contract_id": key,
        "contract_number": opp.sow_reference,
        "opportunity_id": opp.key,
        "customer_id": opp.customer_id or "",
        "legal_entity_id": entity.key if entity else None,
        "sow_reference": opp.sow_reference,
        "status": "active",
        "billing_type": billing,
        "total_value": after.amount.quantize(CENT) if after.amount is not None else None,
        "currency": opp.currency,
        "start_date": None,
        "end_date": None,
        "signed_at": _at(saga.closed_won_at) if saga.closed_won_at else None,
        "last_modified_at": _at(at),
        "amendment": {
            "number": amendment.number,
            "change_order_id": amendment.cause or None,
            "change_order_crm_id": amendment.cause_crm_id,
            "project_code": saga.learned.get("project_code", ""),
            "erp_project_id": saga.learned.get("erp_project_id"),
            "psa_project_id": saga.learned.get("psa_project_id"),
            "changed": list(amendment.changed),
            "previous_baseline": _baseline(amendment.before),
            "new_baseline": _baseline(after),
            "requested_at": _at(amendment.requested_at),
            "applied_at": _at(at),
        },
    }
    return "contract", key, {"envelope": envelope, "data": data}
