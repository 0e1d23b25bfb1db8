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
            if deal.closed_won_since is None or key in provisioned:
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


MonitorFactory = Callable[[Topology, Settings, Decode], Monitor]

# Every monitor `pssync monitor` reports and exports, in the order it prints them.
MONITORS: tuple[MonitorFactory, ...] = (DealsWithoutProject,)
