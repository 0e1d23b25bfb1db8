"""The business monitors, declared: what each reads (views of pssync's topics) and finds.

Each monitor follows compacted or event topics through views (tables/views.py), so the same
code serves a one-off report (`pssync monitor`, read up to the ends now) and the exporter
(`pssync monitor --serve`, following the topics and refreshing Prometheus gauges).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from streams.monitor.model import Finding
from streams.settings import Settings
from streams.topology import Topology
from tables.views import Decode, View, folded_view

Decoded = dict[str, Any]


def _data(record: Decoded) -> Decoded | None:
    data = record.get("data") if "envelope" in record else record
    return data if isinstance(data, dict) else None


def _committed_at(record: Decoded) -> datetime | None:
    source = (record.get("envelope") or {}).get("source") or {}
    at = source.get("committed_at")
    return at if isinstance(at, datetime) else None


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


class Monitor(Protocol):
    name: str
    title: str

    def views(self) -> list[View[Any]]: ...

    def findings(self, now: datetime) -> list[Finding]: ...


# -- closed-won deals without a project past their SLO ------------------------------------


@dataclass(frozen=True)
class _Deal:
    crm_id: str
    name: str
    correlation_id: str
    closed_won_since: datetime | None
    amends: bool = False  # a change order of a won deal: it amends that deal's project


def _fold_deal(old: _Deal | None, key: str, record: Decoded) -> _Deal | None:
    data = _data(record)
    if data is None:
        return None
    won = data.get("stage") == "closed_won"
    at = _committed_at(record) or datetime.now(UTC)
    since = (old.closed_won_since if old and old.closed_won_since else _aware(at)) if won else None
    envelope = record.get("envelope") or {}
    return _Deal(
        str(data.get("crm_id")),
        str(data.get("name")),
        str(envelope.get("correlation_id") or ""),
        since,
        data.get("deal_type") == "change_order" and bool(data.get("parent_opportunity_id")),
    )


@dataclass(frozen=True)
class _Project:
    code: str
    opportunity_id: str | None
    psa_project_id: str | None


def _project(_key: str, record: Decoded) -> _Project | None:
    data = _data(record)
    if data is None:
        return None
    psa = data.get("psa_project_id")
    return _Project(
        str(data.get("project_code") or _key),
        data.get("opportunity_id"),
        None if psa is None else str(psa),
    )


def _exception(_key: str, record: Decoded) -> Decoded | None:
    return record


class DealsWithoutProject:
    """Closed-won deals that have no PSA project yet; late past PSSYNC_SAGA_DEADLINE."""

    name = "deals_without_project"
    title = "closed-won deals without a project"

    def __init__(self, topo: Topology, settings: Settings, decode: Decode) -> None:
        self.slo = timedelta(seconds=settings.saga_deadline)
        self.deals = folded_view(topo.canonical("opportunity"), decode, _fold_deal)
        self.projects = View(topo.canonical("project"), decode, _project)
        self.exceptions = View(topo.exceptions, decode, _exception)

    def views(self) -> list[View[Any]]:
        return [self.deals, self.projects, self.exceptions]

    def findings(self, now: datetime) -> list[Finding]:
        provisioned = {
            p.opportunity_id: p
            for p in self.projects.values()
            if p.opportunity_id and p.psa_project_id
        }
        found = []
        for key, deal in self.deals.items():
            if deal.closed_won_since is None or key in provisioned or deal.amends:
                continue
            parked = self.exceptions.get(key)
            why = "saga running"
            if parked is not None and parked.get("status") == "open":
                reason, step = parked.get("reason"), parked.get("step")
                why = f"parked: {reason} at {step}: {parked.get('message')}"
            found.append(
                Finding(
                    self.name,
                    key,
                    f"{deal.name}: closed-won, no PSA project ({why})",
                    since=deal.closed_won_since,
                    late=now - deal.closed_won_since > self.slo,
                    ids={"crm_opportunity": deal.crm_id, "correlation_id": deal.correlation_id},
                )
            )
        return found


# -- approved time (and expenses) that failed ERP posting ----------------------------------

# Business exceptions of the posting flows: the step is the kind of the posting's source.
POSTING_STEPS = ("time_entry", "expense")


class FailedPostings:
    """Approved time entries and expenses that did not reach the ERP: refused by it (already
    invoiced, rejected) or waiting past their bound for a project, task or person. One
    finding per open business exception of the posting flows; it resolves by itself when
    the cause goes away."""

    name = "failed_postings"
    title = "approved time and expenses that failed ERP posting"

    def __init__(self, topo: Topology, settings: Settings, decode: Decode) -> None:
        self.exceptions = View(topo.exceptions, decode, _exception)

    def views(self) -> list[View[Any]]:
        return [self.exceptions]

    def findings(self, now: datetime) -> list[Finding]:
        found = []
        for key, record in self.exceptions.items():
            if record.get("step") not in POSTING_STEPS or record.get("status") != "open":
                continue
            raised = record.get("raised_at")
            ids = {"correlation_id": str(record.get("correlation_id") or "")}
            if record.get("opportunity_id"):
                ids["deal"] = str(record["opportunity_id"])
            found.append(
                Finding(
                    self.name,
                    key,
                    f"{record.get('reason')}: {record.get('message')}",
                    since=_aware(raised) if isinstance(raised, datetime) else None,
                    late=True,  # raised only once its wait is over
                    ids=ids,
                )
            )
        return found


# -- change orders that altered a project's financial baseline ------------------------------

# The parts of a baseline that are financial (`tasks` alone only renames the WBS).
FINANCIAL = ("amount", "list_price", "hours", "milestones")


@dataclass(frozen=True)
class _Amendment:
    number: int
    project_code: str
    change_order: str | None  # canonical id; None for an edit of the won deal itself
    change_order_crm_id: str
    correlation_id: str
    changed: tuple[str, ...]
    value: tuple[Any, Any]  # contract value before, after
    hours: tuple[Any, Any]
    milestones: tuple[int, int]
    currency: str
    applied_at: datetime | None
    erp_project_id: str | None
    psa_project_id: str | None


def _fold_amendments(
    old: tuple[_Amendment, ...] | None, _key: str, record: Decoded
) -> tuple[_Amendment, ...] | None:
    """Every amendment a contract's events carry (the contract topic is compacted: a fold
    keeps what the monitor read while the older records were still there)."""
    data = _data(record)
    held = old or ()
    a = (data or {}).get("amendment")
    if data is None or not isinstance(a, dict):
        return held if data is not None else None
    if any(x.number == a.get("number") for x in held):
        return held  # replayed
    before, after = a.get("previous_baseline") or {}, a.get("new_baseline") or {}
    applied = a.get("applied_at")
    found = _Amendment(
        number=int(a.get("number") or 0),
        project_code=str(a.get("project_code") or ""),
        change_order=a.get("change_order_id"),
        change_order_crm_id=str(a.get("change_order_crm_id") or ""),
        correlation_id=str((record.get("envelope") or {}).get("correlation_id") or ""),
        changed=tuple(a.get("changed") or ()),
        value=(before.get("total_value"), after.get("total_value")),
        hours=(before.get("hours"), after.get("hours")),
        milestones=(len(before.get("milestones") or ()), len(after.get("milestones") or ())),
        currency=str(data.get("currency") or ""),
        applied_at=_aware(applied) if isinstance(applied, datetime) else None,
        erp_project_id=a.get("erp_project_id"),
        psa_project_id=a.get("psa_project_id"),
    )
    return (*held, found)


class BaselineChanges:
    """Change orders (and edits of won deals) that altered a project's financial baseline:
    one finding per applied amendment, from the contract amendment events."""

    name = "baseline_changes"
    title = "change orders that altered a project's financial baseline"

    def __init__(self, topo: Topology, settings: Settings, decode: Decode) -> None:
        self.contracts = folded_view(topo.canonical("contract"), decode, _fold_amendments)

    def views(self) -> list[View[Any]]:
        return [self.contracts]

    def findings(self, now: datetime) -> list[Finding]:
        found = []
        for _key, amendments in self.contracts.items():
            for a in amendments:
                moved = [p for p in a.changed if p in FINANCIAL]
                if not moved:
                    continue
                by = (
                    f"change order {a.change_order_crm_id}"
                    if a.change_order
                    else (f"edit of deal {a.change_order_crm_id}")
                )
                summary = (
                    f"{a.project_code} amendment {a.number} by {by}: value {a.value[0]} -> "
                    f"{a.value[1]} {a.currency}, hours {a.hours[0]} -> {a.hours[1]}, "
                    f"milestones {a.milestones[0]} -> {a.milestones[1]} "
                    f"({', '.join(moved)} moved)"
                )
                ids = {
                    "project_code": a.project_code,
                    "crm_opportunity": a.change_order_crm_id,
                    "correlation_id": a.correlation_id,
                }
                if a.erp_project_id:
                    ids["erp_project"] = a.erp_project_id
                if a.psa_project_id:
                    ids["psa_project"] = a.psa_project_id
                found.append(
                    Finding(
                        self.name,
                        f"{a.project_code}#{a.number}",
                        summary,
                        since=a.applied_at,
                        late=True,  # an event to look at, not a clock
                        ids=ids,
                    )
                )
        return found


MonitorFactory = Callable[[Topology, Settings, Decode], Monitor]

# Every monitor `pssync monitor` reports and exports, in the order it prints them.
MONITORS: tuple[MonitorFactory, ...] = (DealsWithoutProject, FailedPostings, BaselineChanges)
