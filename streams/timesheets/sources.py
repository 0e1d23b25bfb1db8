"""Where a time entry's facts come from: the PSA's raw rows and the views it is enriched from.

Raw rows (Debezium JSON): `time_entries` and `custom_values` (customized_type 'TimeEntry'),
re-keyed by the time entry's canonical id onto the entry's partition of the
`time_entries.inputs` topic (`inputs`), so the stage that joins them sees both in order.

Views (tables/views.py, read whole by every worker):
- canonical.project (published by the deal saga), found by its PSA project id;
- canonical.task, found by its PSA issue id: the ERP task of the same name;
- the PSA's `users` (raw): a user id's login;
- the ERP's `party_party` (raw): a person is known to the ERP when a party carries the
  person's canonical resource id (`psa:user:<login>`) as its code;
- the PSA's `custom_fields` (raw): the id of the time entry field named "Approved";
- the ERP's `project_work` (raw): the bill rate (list price) of the task, else the project;
- the ERP's `company_employee` and `company_employee_cost_price` (raw): the cost rate, the
  cost price of the person's employee (the employee of the party above) in effect on the day
  worked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from connectors.ports import TimesheetLineSpec, to_json
from schemas.conventions import canonical_id, canonical_topic, raw_topic
from streams.changes import Change
from streams.errors import BadEventError
from streams.mappings.values import day
from streams.settings import Settings
from streams.timesheets.model import (
    UNKNOWN_PERSON,
    UNKNOWN_PROJECT,
    Enriched,
    Entry,
    Missing,
    TimeEntry,
)
from tables.views import GroupedView, View

APPROVED_FIELD = "Approved"
TIME_ENTRY_FIELD_TYPE = "TimeEntryCustomField"
ENTRY, VALUE = "entry", "value"


def entry_key(psa_id: Any) -> str:
    return canonical_id("psa", "time_entry", str(psa_id))


def resource_key(login: str) -> str:
    """A PSA user's canonical resource id: the code of the person's party in the ERP."""
    return canonical_id("psa", "user", login)


def raw_topics(settings: Settings) -> dict[str, str]:
    psa = settings.psa_topic_prefix
    return {
        ENTRY: raw_topic(psa, "public", "time_entries"),
        VALUE: raw_topic(psa, "public", "custom_values"),
        "users": raw_topic(psa, "public", "users"),
        "custom_fields": raw_topic(psa, "public", "custom_fields"),
        "parties": raw_topic(settings.erp_topic_prefix, "public", "party_party"),
        "works": raw_topic(settings.erp_topic_prefix, "public", "project_work"),
        "employees": raw_topic(settings.erp_topic_prefix, "public", "company_employee"),
        "cost_prices": raw_topic(
            settings.erp_topic_prefix, "public", "company_employee_cost_price"
        ),
    }


def _ms(value: Any) -> float:
    """A Debezium timestamp (ms, µs since the epoch, or ISO text) in epoch seconds."""
    if isinstance(value, int):
        return value / 1_000_000 if value > 10**14 else value / 1000
    return 0.0


def intake(change: Change, topics: dict[str, str], topic: str) -> tuple[str, dict[str, Any]] | None:
    """A raw time entry or custom value change as (time entry key, input record), or None
    for rows that are not about a time entry."""
    row = change.after or change.before
    base = {"seq": change.sequence or 0, "at": change.committed_at_ms}
    if topic == topics[ENTRY]:
        psa_id = (row or {}).get("id", change.key)
        return entry_key(psa_id), {
            **base,
            "kind": ENTRY,
            "row": change.after,
        }
    if row is None or row.get("customized_type") != "TimeEntry":
        return None  # another object's value, or a delete that names only itself
    return entry_key(row.get("customized_id")), {
        **base,
        "kind": VALUE,
        "field": str(row.get("custom_field_id")),
        "value": None if change.after is None else change.after.get("value"),
    }


def _entry(row: dict[str, Any], changed_at: float) -> Entry:
    try:
        hours = str(Decimal(str(row["hours"])))
        spent = day(row.get("spent_on"), "spent_on")
    except (KeyError, InvalidOperation) as exc:
        raise BadEventError(f"time entry {row.get('id')} has no usable hours: {exc}") from exc
    if spent is None:
        raise BadEventError(f"time entry {row.get('id')} has no spent_on date")
    issue = row.get("issue_id")
    return Entry(
        psa_id=str(row["id"]),
        project=str(row.get("project_id")),
        user=str(row.get("user_id")),
        issue=None if issue is None else str(issue),
        hours=hours,
        spent_on=spent.isoformat(),
        comments=str(row.get("comments") or ""),
        changed_at=changed_at,
    )


def take(state: TimeEntry, record: dict[str, Any]) -> TimeEntry:
    """The state with one input record applied; a record older than the one applied last
    for the same row (a redelivery) changes nothing."""
    seq = int(record.get("seq") or 0)
    at = float(record.get("at") or 0) / 1000
    if record["kind"] == ENTRY:
        if seq and seq <= state.entry_seq:
            return state
        row = record.get("row")
        entry = None if row is None else _entry(row, at)
        return replace(state, entry=entry, entry_seq=seq or state.entry_seq)
    field = str(record["field"])
    if seq and seq <= state.value_seqs.get(field, -1):
        return state
    values = dict(state.values)
    if record.get("value") is None:
        values.pop(field, None)
    else:
        values[field] = str(record["value"])
    return replace(
        state,
        values=values,
        value_seqs={**state.value_seqs, field: seq or state.value_seqs.get(field, -1)},
    )


# -- views ----------------------------------------------------------------------------------


def _raw_row(value: bytes) -> dict[str, Any]:
    event = json.loads(value)
    if isinstance(event, dict) and "payload" in event and "schema" in event:
        event = event["payload"]
    return event if isinstance(event, dict) else {}


def _after(_key: str, event: dict[str, Any]) -> dict[str, Any] | None:
    after = event.get("after")
    return after if isinstance(after, dict) else None


def _employee_of(row: dict[str, Any]) -> str | None:
    return None if row.get("employee") is None else str(row["employee"])


def as_of(history: Iterable[tuple[date, int, str]], on: date) -> str | None:
    """The value in effect on a day, from (since, row id, value) rows: the latest row dated
    on or before it, the later recorded row of one day; None before the first row (the ERP
    itself reads 0 there: pssync does not make a rate up)."""
    best: tuple[date, int, str] | None = None
    for row in history:
        if row[0] <= on and (best is None or row[:2] > best[:2]):
            best = row
    return None if best is None else best[2]


@dataclass
class Lookups:
    """The views a time entry is enriched from."""

    projects: View[dict[str, Any]]
    tasks: View[dict[str, Any]]
    users: View[dict[str, Any]]
    parties: View[dict[str, Any]]
    fields: View[dict[str, Any]]
    works: View[dict[str, Any]]
    employees: View[dict[str, Any]]
    cost_prices: GroupedView[dict[str, Any]]

    def all(self) -> list[View[Any]]:
        return [
            self.projects,
            self.tasks,
            self.users,
            self.parties,
            self.fields,
            self.works,
            self.employees,
            self.cost_prices,
        ]

    def task_id(self, state: TimeEntry) -> str | None:
        """The canonical id of the task the entry is booked on, when the saga made it."""
        entry = state.entry
        task = self.tasks.get(f"psa:{entry.issue}") if entry and entry.issue else None
        return None if task is None else str(task.get("task_id"))

    def bill_rate(self, erp_project_id: Any, task: str | None) -> Decimal | None:
        """The hourly price the ERP invoices the work at: the task's, else the project's."""
        work = self.works.get(f"{erp_project_id}:{task}") if task else None
        work = work or self.works.get(str(erp_project_id))
        price = (work or {}).get("list_price")
        try:
            return None if price is None else Decimal(str(price)).quantize(Decimal("0.01"))
        except InvalidOperation:
            return None

    def cost_rate(self, resource: str | None, on: str) -> Decimal | None:
        """The consultant's hourly cost: the cost price of the employee whose party carries
        the resource id, in effect on the day worked (ISO date); None when the ERP holds
        none for that day."""
        party = self.parties.get(resource) if resource else None
        employee = self.employees.get(f"party:{party.get('id')}") if party else None
        if employee is None:
            return None
        history = []
        for row in self.cost_prices.group(str(employee.get("id"))):
            since = day(row.get("date"), "date")
            if since is not None and row.get("cost_price") is not None:
                history.append((since, int(row.get("id") or 0), str(row["cost_price"])))
        price = as_of(history, date.fromisoformat(on))
        try:
            return (
                None if price is None else Decimal(price).quantize(Decimal("0.01"), ROUND_HALF_UP)
            )
        except InvalidOperation:
            return None

    def version(self) -> tuple[int, ...]:
        return tuple(v.version for v in self.all())

    def approved_field(self) -> str | None:
        for row in self.fields.values():
            if row.get("type") == TIME_ENTRY_FIELD_TYPE and row.get("name") == APPROVED_FIELD:
                return str(row.get("id"))
        return None

    def enrich(self, state: TimeEntry) -> Enriched | Missing:
        entry = state.entry
        assert entry is not None
        project = self.projects.get(f"psa:{entry.project}")
        if project is None or not project.get("erp_project_id"):
            return Missing(
                UNKNOWN_PROJECT,
                f"PSA project {entry.project} is no ERP project pssync knows (no canonical "
                "project with that PSA id); provision it through a closed-won deal, or book "
                "the time on a provisioned project",
            )
        user = self.users.get(entry.user)
        login = str(user.get("login") or "") if user else ""
        resource = resource_key(login) if login else None
        if resource is None or self.parties.get(resource) is None:
            who = f"PSA user {login!r}" if login else f"PSA user {entry.user}"
            return Missing(
                UNKNOWN_PERSON,
                f"{who} has no employee in the ERP: give the person's employee party the code "
                f"{resource or 'psa:user:<login>'!r} in the ERP",
            )
        task = self.tasks.get(f"psa:{entry.issue}") if entry.issue else None
        task_name = (
            str(task["name"])
            if task and task.get("project_id") == project.get("project_code")
            else None
        )
        spec = TimesheetLineSpec(
            key=state.key,
            project_id=int(project["erp_project_id"]),
            task=task_name,
            employee=resource,
            date=day(entry.spent_on, "spent_on"),  # type: ignore[arg-type]
            hours=Decimal(entry.hours),
            description=entry.comments,
        )
        return Enriched(
            spec=json.loads(to_json(spec)),
            project_code=str(project.get("project_code") or ""),
            correlation_id=project.get("correlation_id"),
        )


def _project(_key: str, record: dict[str, Any]) -> dict[str, Any] | None:
    data = record.get("data")
    if not isinstance(data, dict):
        return None
    envelope = record.get("envelope") or {}
    cid = envelope.get("correlation_id")
    return {
        **{
            k: data.get(k)
            for k in (
                "project_code",
                "erp_project_id",
                "psa_project_id",
                "legal_entity_id",
                "cost_center",
                "department",
                "billing_type",
                "currency",
                "opportunity_id",
            )
        },
        "correlation_id": None if cid is None else str(cid),
    }


def _task(key: str, record: dict[str, Any]) -> dict[str, Any] | None:
    data = record.get("data")
    if not isinstance(data, dict):
        return None
    kept = {k: data.get(k) for k in ("name", "project_id", "psa_task_id", "is_billable")}
    return {**kept, "task_id": key}


def lookups(settings: Settings, decode: Any) -> Lookups:
    """The views, built (not started) for a worker; `decode` reads registry wire format."""
    topics = raw_topics(settings)
    ns = settings.topic_namespace
    return Lookups(
        projects=View(
            canonical_topic("project", ns),
            decode,
            _project,
            lambda _k, v: [f"psa:{v['psa_project_id']}"] if v.get("psa_project_id") else [],
        ),
        tasks=View(
            canonical_topic("task", ns),
            decode,
            _task,
            lambda _k, v: [f"psa:{v['psa_task_id']}"] if v.get("psa_task_id") else [],
        ),
        users=View(
            topics["users"],
            _raw_row,
            _after,
            lambda _k, v: [str(v.get("id"))],
        ),
        parties=View(
            topics["parties"],
            _raw_row,
            _after,
            lambda _k, v: [str(v["code"])] if v.get("code") else [],
        ),
        fields=View(topics["custom_fields"], _raw_row, _after),
        # ERP works by id, and tasks by "<project id>:<name>" (the ERP's rates).
        works=View(
            topics["works"],
            _raw_row,
            _after,
            lambda _k, v: (
                [str(v.get("id"))] + ([f"{v['parent']}:{v.get('name')}"] if v.get("parent") else [])
            ),
        ),
        # ERP employees by party ("party:<id>"), their cost prices grouped by employee id.
        employees=View(
            topics["employees"],
            _raw_row,
            _after,
            lambda _k, v: [f"party:{v['party']}"] if v.get("party") is not None else [],
        ),
        cost_prices=GroupedView(topics["cost_prices"], _raw_row, _after, _employee_of),
    )
