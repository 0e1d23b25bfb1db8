"""Where the expense stage's inputs come from and what it writes: the one place.

Inputs (co-partitioned by the issue's canonical id, psa:issue:<id>):
- canonical.psa_issue          -> Issue         (issue_of)
- canonical.psa_custom_value   -> Value         (value_of; values of issues only)
- postings.results             -> the ERP's answer to the stage's postings (kind expense)
Views (tables/views.py, read whole by every worker):
- project: canonical.project, found by the PSA project id (the saga publishes it with its
  ERP code and the deal's correlation id);
- custom_field: the PSA's custom field definitions (raw CDC of custom_fields), so the
  stage finds the expense fields by name, whatever ids the PSA gave them;
- user: the PSA's users (raw CDC of users): the login of the person who entered the
  expense, whose canonical resource id is psa:user:<login> (as for time entries).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from schemas.conventions import canonical_id, canonical_topic, raw_topic
from streams.expenses.model import (
    FIELD_NAMES,
    ExpenseState,
    Facts,
    Issue,
    Problem,
    Project,
    Value,
)
from streams.ids import name_id
from streams.mappings.envelope import correlation_id
from streams.settings import Settings
from tables.views import View

ISSUE = "psa_issue"
VALUE = "psa_custom_value"
EXPENSE = "expense"
KIND = "expense"  # the posting kind (streams/postings.py)
STEP = "expense"  # the exception's step: the posting flow (pssync monitor, failed_postings)
_NS = uuid.UUID("0c3f6f2e-7d1b-5a8e-b4c9-3e2a1d5f6b70")


def _seconds(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


def version_of(record: dict[str, Any]) -> int:
    return int((record.get("envelope") or {}).get("entity_version", -1))


def issue_of(record: dict[str, Any]) -> Issue | None:
    """A PsaIssueEvent's issue; None for a delete."""
    data = record.get("data")
    if not isinstance(data, dict):
        return None
    start = data.get("start_date")
    return Issue(
        psa_id=str(data["psa_id"]),
        psa_project_id=str(data["psa_project_id"]),
        subject=str(data.get("subject") or ""),
        author_id=data.get("author_id"),
        start_date=start if isinstance(start, date) else None,
        created_at=_seconds(data.get("created_at")),
        modified_at=_seconds(data.get("last_modified_at")),
    )


def value_of(record: dict[str, Any]) -> tuple[str, str, Value] | None:
    """(owner key, field id, value) of a PsaCustomValueEvent of an issue; None otherwise."""
    data = record.get("data")
    if not isinstance(data, dict) or data.get("owner_type") != "Issue":
        return None
    value = data.get("value")
    return (
        str(data["owner_id"]),
        str(data["field_id"]),
        Value(None if value is None else str(value), version_of(record)),
    )


# -- views ------------------------------------------------------------------------------


def project_of(key: str, record: dict[str, Any]) -> tuple[Project, str | None] | None:
    data = record.get("data")
    if not isinstance(data, dict):
        return None
    envelope = record.get("envelope") or {}
    project = Project(
        code=str(data.get("project_code") or data.get("project_id") or key),
        correlation_id=str(envelope.get("correlation_id") or ""),
        opportunity_id=str(data.get("opportunity_id") or ""),
        customer_id=str(data.get("customer_id") or ""),
        legal_entity_id=str(data.get("legal_entity_id") or ""),
        currency=data.get("currency"),
    )
    return project, data.get("psa_project_id")


def project_alias(psa_project_id: str) -> str:
    return f"psa-project:{psa_project_id}"


def _project_aliases(key: str, value: tuple[Project, str | None]) -> Iterable[str]:
    if value[1]:
        yield project_alias(str(value[1]))


def _field_of(key: str, record: dict[str, Any]) -> tuple[str, str, str] | None:
    row = record.get("after")
    if not isinstance(row, dict):
        return None
    return str(row.get("id")), str(row.get("type") or ""), str(row.get("name") or "")


def _raw_json(data: bytes) -> dict[str, Any]:
    value = json.loads(data)
    if isinstance(value, dict) and "payload" in value and "schema" in value:
        value = value["payload"]
    return value if isinstance(value, dict) else {}


def project_view(settings: Settings, decode: Any) -> View[tuple[Project, str | None]]:
    return View(
        canonical_topic("project", settings.topic_namespace),
        decode,
        project_of,
        _project_aliases,
    )


def field_view(settings: Settings) -> View[tuple[str, str, str]]:
    topic = raw_topic(settings.psa_topic_prefix, "public", "custom_fields")
    return View(topic, _raw_json, _field_of)


def _login_of(key: str, record: dict[str, Any]) -> str | None:
    row = record.get("after")
    if not isinstance(row, dict) or not row.get("login"):
        return None
    return str(row["login"])


def _user_aliases(key: str, login: str) -> Iterable[str]:
    try:
        yield str(json.loads(key)["id"])  # found by the PSA's user id
    except (ValueError, KeyError, TypeError):
        return


def user_view(settings: Settings) -> View[str]:
    topic = raw_topic(settings.psa_topic_prefix, "public", "users")
    return View(topic, _raw_json, _login_of, _user_aliases)


def resource_id(users: View[str] | None, psa_user_id: str | None) -> str:
    """The canonical resource id of a PSA user: psa:user:<login>, by id until the login is
    known."""
    if not psa_user_id:
        return ""
    login = users.get(psa_user_id) if users is not None else None
    return canonical_id("psa", "user", login or psa_user_id)


def field_ids(view: View[tuple[str, str, str]]) -> dict[str, str]:
    """Role (amount, currency, ...) -> the id of the PSA's issue custom field of that name."""
    by_name = {name: fid for fid, kind, name in view.values() if kind == "IssueCustomField"}
    return {role: by_name[name] for role, name in FIELD_NAMES.items() if name in by_name}


def find_project(view: View[tuple[Project, str | None]], psa_project_id: str) -> Project | None:
    found = view.get(project_alias(psa_project_id))
    return found[0] if found else None


# -- records ------------------------------------------------------------------------------


def _at(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def flow_of(state: ExpenseState, project: Project | None) -> str:
    """The deal's correlation id once the project is known, else the expense's own flow."""
    return (
        project.correlation_id if project and project.correlation_id else correlation_id(state.key)
    )


def expense_record(
    state: ExpenseState,
    f: Facts | None,
    project: Project | None,
    approval_state: str,
    now: float,
    users: View[str] | None = None,
) -> dict[str, Any]:
    """The canonical ExpenseEvent (schemas/avro/expense.avsc) of the expense as it stands."""
    issue = state.issue
    version = state.version
    for v in state.values.values():
        version = max(version, v.version)
    committed = (issue.modified_at if issue else None) or now
    envelope = {
        "event_id": name_id(_NS, f"{state.key}|{approval_state}|{version}|{state.published}"),
        "correlation_id": flow_of(state, project),
        "causation_id": None,
        "source": {
            "system": "psa",
            "connector": "psa",
            "entity": "public.issues",
            "key": state.psa_id,
            "position": str(version),
            "sequence": version,
            "committed_at": _at(committed),
        },
        "op": "delete" if f is None else "update",
        "entity_version": version,
        "emitted_at": _at(now),
    }
    if f is None or project is None:
        return {"envelope": envelope, "data": None}
    day = f.issue.start_date or (
        _at(f.issue.created_at).date() if f.issue.created_at else date(1970, 1, 1)  # type: ignore[union-attr]
    )
    return {
        "envelope": envelope,
        "data": {
            "expense_id": state.expense_id,
            "psa_id": state.psa_id,
            "project_id": project.code,
            "resource_id": resource_id(users, f.issue.author_id),
            "expense_date": day,
            "category": f.category,
            "amount": f.amount if f.amount is not None else Decimal("0.00"),
            "currency": f.currency or project.currency or "",
            "is_billable": f.billable,
            "receipt_reference": None,
            "approval_state": approval_state,
            "approved_by": None,
            "approved_at": _at(f.issue.modified_at) if approval_state == "approved" else None,
            "description": f.issue.subject or None,
            "erp_posting_ref": state.posted.key if state.posted else None,
            "last_modified_at": _at(f.issue.modified_at),
            "customer_id": project.customer_id or None,
            "legal_entity_id": project.legal_entity_id or None,
            "opportunity_id": project.opportunity_id or None,
            "psa_project_id": f.issue.psa_project_id,
        },
    }


def exception_record(
    state: ExpenseState,
    project: Project | None,
    problem: Problem,
    number: int,
    now: float,
    resolved: bool,
) -> dict[str, Any]:
    """A BusinessException (schemas/avro/saga/exception.avsc) about one expense, keyed by
    the expense's canonical id."""
    flow = flow_of(state, project)
    return {
        "exception_id": f"{state.expense_id}:{number}",
        "saga_key": state.expense_id,
        "correlation_id": flow,
        "reason": problem.reason,
        "reasons": [problem.reason],
        "message": problem.message,
        "step": STEP,
        "attempt": max(1, state.revision),
        "status": "resolved" if resolved else "open",
        "opportunity_id": project.opportunity_id if project else "",
        "crm_id": None,
        "customer_id": project.customer_id or None if project else None,
        "line_item_ids": [],
        "milestone_ids": [],
        "deal_revision": state.revision,
        "raised_at": _at(problem.since),
        "resolved_at": _at(now) if resolved else None,
    }
