"""PSA issues and custom values as events, and the expense stage's records, against their
Avro contracts."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

from schemas import contracts
from schemas.serde import encode
from streams.agents.normalize import parent_key
from streams.changes import Change
from streams.expenses import sources
from streams.expenses.model import (
    ExpenseState,
    Issue,
    Problem,
    Project,
    Value,
    facts,
)
from streams.mappings.psa import map_custom_value, map_issue
from streams.settings import Settings
from streams.topology import topology
from tables.views import View

FIELDS = {"amount": "5", "currency": "6", "category": "7", "billable": "8", "approved": "9"}


def _change(table: str, key: str, op: str, row: dict[str, Any]) -> Change:
    before, after = (row, None) if op == "delete" else (None, row)
    return Change(op, before, after, "psa", f"public.{table}", key, "0/80", 128, 1_700_000_000_000)


def _fits(entity: str, record: dict[str, Any]) -> None:
    encode(1, contracts.parsed(entity), record)  # raises if the record breaks the contract


ISSUE_ROW = {
    "id": 42,
    "project_id": 7,
    "tracker_id": 4,
    "author_id": 5,
    "assigned_to_id": None,
    "subject": "Flight",
    "start_date": 20_412,  # days since the epoch
    "created_on": 1_763_600_000_000_000,
    "updated_on": 1_763_600_100_000_000,
}


def test_an_issue_becomes_a_psa_issue_event() -> None:
    key, record = map_issue(_change("issues", "42", "create", ISSUE_ROW), "psa.public.issues/0/1")
    assert key == "psa:issue:42"
    data = record["data"]
    assert data["psa_project_id"] == "7" and data["tracker_id"] == "4"
    assert data["start_date"] == date(2025, 11, 20)
    _fits("psa_issue", record)
    key, deleted = map_issue(_change("issues", "42", "delete", {"id": 42}), "c")
    assert key == "psa:issue:42" and deleted["data"] is None
    _fits("psa_issue", deleted)


def test_a_custom_value_goes_beside_its_owner() -> None:
    row = {"id": 9, "customized_type": "Issue", "customized_id": 42, "custom_field_id": 5,
           "value": "412.30"}  # fmt: skip
    change = _change("custom_values", "9", "update", row)
    mapped = map_custom_value(change, "c")
    assert mapped is not None
    key, record = mapped
    assert key == "psa:custom_value:9"
    assert record["data"]["owner_id"] == "psa:issue:42" and record["data"]["value"] == "412.30"
    _fits("psa_custom_value", record)
    route = next(r for r in topology(Settings()).routes if r.entity == "psa_custom_value")
    assert route.partition_by == "owner_id"
    # A delete still finds its owner's partition from the old row.
    deleted = _change("custom_values", "9", "delete", row)
    mapped_delete = map_custom_value(deleted, "c")
    assert mapped_delete is not None and mapped_delete[1]["data"] is None
    assert parent_key(route, deleted, mapped_delete[1]) == "psa:issue:42"
    # Other owners' values are not routed on (time entries join their raw rows), nor are
    # deletes that do not say whose value they were (the owner's own delete says it).
    other = _change("custom_values", "10", "update", {**row, "customized_type": "TimeEntry"})
    assert map_custom_value(other, "c") is None
    assert map_custom_value(_change("custom_values", "9", "delete", {"id": 9}), "c") is None


def test_field_ids_come_from_the_psa_definitions_by_name() -> None:
    view: View[tuple[str, str, str]] = View("t", sources._raw_json, sources._field_of)
    for fid, kind, name in [("1", "TimeEntryCustomField", "Approved"),
                            ("5", "IssueCustomField", "Expense amount"),
                            ("9", "IssueCustomField", "Expense approved")]:  # fmt: skip
        view.apply(
            f'{{"id":{fid}}}',
            f'{{"after":{{"id":{fid},"type":"{kind}","name":"{name}"}}}}'.encode(),
        )
    assert sources.field_ids(view) == {"amount": "5", "approved": "9"}


def test_the_canonical_expense_and_its_exception_fit_their_contracts() -> None:
    issue = Issue("42", "7", "Flight", "5", date(2026, 11, 20), 1.0, 2.0)
    values = {"5": Value("412.3"), "6": Value("eur"), "7": Value("travel"), "9": Value("1")}
    state = ExpenseState("psa:issue:42", issue=issue, values=values, version=3)
    f = facts(state, FIELDS)
    assert f is not None and f.amount == Decimal("412.30") and f.currency == "EUR"
    project = Project("PRJ-00042", "5b1c0e7e-0000-5000-8000-000000000000", "crm:opportunity:1")
    record = sources.expense_record(state, f, project, "approved", 3.0)
    _fits("expense", record)
    assert record["data"]["project_id"] == "PRJ-00042"
    assert record["envelope"]["correlation_id"] == project.correlation_id
    _fits("expense", sources.expense_record(replace(state, issue=None), None, None, "deleted", 4))
    exc = sources.exception_record(
        state, None, Problem("expense.unknown_project", "no project", 1.0), 1, 5.0, False
    )
    encode(1, _exception_schema(), exc)
    assert exc["saga_key"] == "psa:issue:42" and exc["status"] == "open"
    assert exc["step"] == "expense"  # the posting flow pssync monitor lists (failed_postings)


def _exception_schema() -> Any:
    from schemas import saga

    return saga.parsed("exception")


def test_the_person_is_named_by_login_as_for_time_entries() -> None:
    users = sources.user_view(Settings())
    assert sources.resource_id(users, "5") == "psa:user:5"  # login not known yet
    users.apply('{"id":5}', b'{"after":{"id":5,"login":"jdoe"}}')
    assert sources.resource_id(users, "5") == "psa:user:jdoe"
    assert sources.resource_id(users, None) == ""


def test_an_open_expense_exception_is_a_failed_posting_in_the_monitor() -> None:
    from datetime import UTC, datetime

    from streams.monitor.checks import FailedPostings

    state = ExpenseState("psa:issue:42", issue=Issue("42", "7"))
    exc = sources.exception_record(
        state, None, Problem("expense.unknown_project", "no project", 1.0), 1, 5.0, False
    )
    s = Settings()
    monitor = FailedPostings(topology(s), s, lambda _b: exc)
    monitor.exceptions.apply("psa:issue:42", b"x")
    [finding] = monitor.findings(datetime.now(UTC))
    assert finding.key == "psa:issue:42" and "expense.unknown_project" in finding.summary


def test_a_posted_expense_shows_in_the_deals_trace() -> None:
    from streams.deals.trace import FLOWS, _flow_entry

    issue = Issue("42", "7", "Flight", "5", date(2026, 11, 20), 1.0, 2.0)
    values = {"5": Value("412.3"), "6": Value("EUR"), "9": Value("1")}
    state = ExpenseState("psa:issue:42", issue=issue, values=values, version=3)
    state = replace(state, posted=None)
    f = facts(state, FIELDS)
    cid = "5b1c0e7e-0000-5000-8000-000000000000"
    project = Project("PRJ-00042", cid, "crm:opportunity:1")
    from streams.expenses.model import decide

    state, _ = decide(state, f, project, 3.0, 60.0)  # posted: the record names the posting
    record = sources.expense_record(state, f, project, "approved", 3.0)
    [flow] = [fl for fl in FLOWS if fl.entity == "expense"]
    [entry] = _flow_entry(flow, [record], cid, set())
    assert entry.status == "done" and entry.ids["total"] == "412.3 EUR"
    assert entry.ids["erp refs"] == "psa:issue:42@1"
