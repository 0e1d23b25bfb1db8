"""The trace of one deal: what happened to it, step by step, from what pssync's topics hold.

Assembled from decoded records only (no I/O here; `streams/deals/trace_read.py` reads them):
the deal's canonical opportunity events, its saga commands and results, and its business
exception. Each entry names the system, the ids involved and when it happened, so the path
opportunity -> ERP customer -> ERP project -> PSA project -> CRM write-back reads top down.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# What a step's result names, by step: (field of the output JSON, label).
_OUTPUT_IDS: dict[str, tuple[tuple[str, str], ...]] = {
    "erp_customer": (("id", "party id"), ("code", "party code")),
    "erp_project": (("id", "work id"), ("number", "project number")),
    "psa_project": (("id", "project id"), ("identifier", "identifier"), ("url", "url")),
    # A provisioned deal's amendments (change orders): the revision each application holds.
    "erp_amendment": (("id", "work id"), ("number", "project number"), ("revision", "amendment")),
    "psa_amendment": (("id", "project id"), ("identifier", "identifier"), ("url", "url")),
}
# What a CRM write-back command sets (fields of its payload, CrmWriteBack).
_WRITEBACK_FIELDS = ("erp_customer_id", "project_code", "psa_project_url", "sync_status")
# A change order's status is written to the change order's own opportunity: named too.
_WRITEBACKS = {
    "crm_writeback": _WRITEBACK_FIELDS,
    "crm_change_order": ("opportunity_id", *_WRITEBACK_FIELDS),
}


@dataclass(frozen=True)
class TraceEntry:
    at: datetime | None
    system: str  # crm, erp, psa, pssync
    what: str
    ids: dict[str, str] = field(default_factory=dict)
    status: str = ""  # done, rejected, open, resolved, pending ...

    def plain(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat() if self.at else None,
            "system": self.system,
            "what": self.what,
            "status": self.status,
            "ids": self.ids,
        }


@dataclass(frozen=True)
class Trace:
    saga_key: str
    correlation_id: str
    entries: list[TraceEntry]

    @property
    def closed_won_at(self) -> datetime | None:
        for e in self.entries:
            if e.what == "opportunity closed won":
                return e.at
        return None


def _sort_key(entry: TraceEntry) -> tuple[int, float]:
    # Entries without a time (a command still unanswered) go last, in the order given.
    return (0, entry.at.timestamp()) if entry.at else (1, 0.0)


def _stage(event: Mapping[str, Any]) -> str:
    return str((event.get("data") or {}).get("stage") or "")


def _opportunity_entries(events: Iterable[Mapping[str, Any]]) -> list[TraceEntry]:
    """The CRM's changes of the deal that moved its stage (the first event, then each change)."""
    out: list[TraceEntry] = []
    last = None
    for event in sorted(events, key=lambda e: int(e["envelope"].get("entity_version") or 0)):
        env, data = event["envelope"], event.get("data") or {}
        stage = _stage(event)
        if stage == last:
            continue
        last = stage
        what = "opportunity closed won" if stage == "closed_won" else f"opportunity {stage}"
        source = env.get("source") or {}
        out.append(
            TraceEntry(
                at=source.get("committed_at") or env.get("emitted_at"),
                system="crm",
                what=what,
                ids={
                    "crm id": str(data.get("crm_id") or ""),
                    "customer": str(data.get("customer_id") or ""),
                    "event id": str(env.get("event_id") or ""),
                    "position": str(source.get("position") or ""),
                },
                status="captured",
            )
        )
    return out


def _output_ids(step: str, output: str) -> dict[str, str]:
    try:
        answer = json.loads(output or "{}")
    except ValueError:
        return {"output": output}
    if not isinstance(answer, dict):
        return {}
    return {label: str(answer[k]) for k, label in _OUTPUT_IDS.get(step, ()) if k in answer}


def _writeback_ids(payload: str, fields: tuple[str, ...] = _WRITEBACK_FIELDS) -> dict[str, str]:
    try:
        change = json.loads(payload or "{}")
    except ValueError:
        return {}
    if not isinstance(change, dict):
        return {}
    return {k.replace("_", " "): str(change[k]) for k in fields if change.get(k)}


def _command_entries(
    commands: Iterable[Mapping[str, Any]], results: Iterable[Mapping[str, Any]]
) -> list[TraceEntry]:
    """One entry per command issued and one per result (the last answer of a command)."""
    answers: dict[str, Mapping[str, Any]] = {}
    for result in results:
        answers[str(result["command_id"])] = result  # a redelivery answers the same
    out: list[TraceEntry] = []
    seen: set[str] = set()
    for command in commands:
        command_id = str(command["command_id"])
        if command_id in seen:
            continue  # a command redelivered changes nothing
        seen.add(command_id)
        step, target = str(command["step"]), str(command["target"])
        attempt = int(command.get("attempt") or 1)
        label = step.replace("_", " ") + (f" (attempt {attempt})" if attempt > 1 else "")
        ids = {"command": command_id}
        if step in _WRITEBACKS:
            ids.update(_writeback_ids(str(command.get("payload") or ""), _WRITEBACKS[step]))
        out.append(
            TraceEntry(command.get("issued_at"), "pssync", f"{label} -> {target}", ids, "issued")
        )
        answer = answers.get(command_id)
        if answer is None:
            out.append(TraceEntry(None, target, label, {"command": command_id}, "pending"))
            continue
        status = str(answer["status"])
        rids = _output_ids(step, str(answer.get("output") or ""))
        if answer.get("error"):
            rids["error"] = str(answer["error"])
        out.append(TraceEntry(answer.get("completed_at"), target, label, rids, status))
    return out


def _exception_entries(exception: Mapping[str, Any] | None) -> list[TraceEntry]:
    if exception is None:
        return []
    ids = {
        "reason": str(exception["reason"]),
        "step": f"{exception['step']} (attempt {exception['attempt']})",
        "what to fix": str(exception["message"]),
    }
    out = [TraceEntry(exception.get("raised_at"), "pssync", "business exception", ids, "open")]
    if exception.get("status") == "resolved":
        out.append(
            TraceEntry(
                exception.get("resolved_at"),
                "pssync",
                "business exception resolved",
                {"reason": str(exception["reason"])},
                "resolved",
            )
        )
    return out


@dataclass(frozen=True)
class Flow:
    """Work that flows into a provisioned deal's project, summed up in one trace entry:
    the latest canonical event of each object, matched to the deal by correlation id or
    by project code."""

    entity: str  # canonical entity, read whole (latest per key)
    what: str
    system: str  # where it lands
    amount: str  # data field summed (hours, money)
    unit: str
    at: str  # data field: when it reached the system
    posted: str  # data field set once it is there (the ERP's reference)


# The flows a trace follows after provisioning; a new flow is one line here.
FLOWS: tuple[Flow, ...] = (
    Flow("time_entry", "approved time posted", "erp", "hours", "h", "posted_at", "erp_posting_ref"),
    Flow(
        "expense",
        "approved expenses posted",
        "erp",
        "amount",
        "",
        "last_modified_at",
        "erp_posting_ref",
    ),
)


def _codes(results: Iterable[Mapping[str, Any]]) -> set[str]:
    """The ERP project codes the saga learned (the erp_project step's answer)."""
    found = set()
    for result in results:
        if result.get("step") == "erp_project" and result.get("status") == "done":
            number = _output_ids("erp_project", str(result.get("output") or "")).get(
                "project number"
            )
            if number:
                found.add(number)
    return found


def _flow_entry(
    flow: Flow, records: Iterable[Mapping[str, Any]], correlation_id: str, codes: set[str]
) -> list[TraceEntry]:
    mine = []
    for record in records:
        data = record.get("data") or {}
        env = record.get("envelope") or {}
        if str(env.get("correlation_id") or "") == correlation_id or (
            data.get("project_code") and data.get("project_code") in codes
        ):
            mine.append(data)
    if not mine:
        return []
    posted = [d for d in mine if d.get(flow.posted)]
    stamps = [d[flow.at] for d in posted if isinstance(d.get(flow.at), datetime)]
    total = sum(float(d.get(flow.amount) or 0) for d in posted)
    unit = flow.unit or (str(posted[0].get("currency") or "") if posted else "")
    refs = sorted(str(d[flow.posted]) for d in posted)
    ids = {
        "objects": str(len(mine)),
        "posted": str(len(posted)),
        "total": f"{total:g} {unit}".strip(),
    }
    if refs:
        ids["erp refs"] = ", ".join(refs[:5]) + (
            f" (+{len(refs) - 5} more)" if len(refs) > 5 else ""
        )
    status = "done" if len(posted) == len(mine) else "partial" if posted else "pending"
    return [TraceEntry(max(stamps) if stamps else None, flow.system, flow.what, ids, status)]


def assemble(
    saga_key: str,
    correlation_id: str,
    opportunity_events: Iterable[Mapping[str, Any]],
    commands: Iterable[Mapping[str, Any]],
    results: Iterable[Mapping[str, Any]],
    exception: Mapping[str, Any] | None = None,
    flows: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
) -> Trace:
    """The deal's trace from its decoded records (records of other deals are left out)."""

    def mine(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        return [r for r in records if r.get("saga_key") == saga_key]

    events = [
        e for e in opportunity_events if (e.get("data") or {}).get("opportunity_id") == saga_key
    ]
    own_exception = exception if exception and exception.get("saga_key") == saga_key else None
    own_commands, own_results = mine(commands), mine(results)
    codes = _codes(own_results)
    entries = (
        _opportunity_entries(events)
        + _command_entries(own_commands, own_results)
        + _exception_entries(own_exception)
    )
    for flow in FLOWS:
        entries += _flow_entry(flow, (flows or {}).get(flow.entity, ()), correlation_id, codes)
    return Trace(saga_key, correlation_id, sorted(entries, key=_sort_key))


def render(trace: Trace) -> list[str]:
    """Readable lines: time, seconds since closed-won, system, what, status, then the ids."""
    lines = [f"trace of {trace.saga_key} (correlation id {trace.correlation_id})"]
    if not trace.entries:
        lines.append("  nothing found: no opportunity event, saga command or exception")
        return lines
    start = trace.closed_won_at
    for e in trace.entries:
        when = e.at.strftime("%H:%M:%S.%f")[:-3] if e.at else "--:--:--.---"
        since = f"{(e.at - start).total_seconds():+7.2f}s" if e.at and start else " " * 8
        lines.append(f"  {when} {since}  {e.system:<6} {e.what:<34} {e.status}")
        for name, value in e.ids.items():
            lines.append(f"{'':<34}{name}: {value}")
    return lines
