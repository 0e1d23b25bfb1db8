"""Raw PSA rows as time entry inputs: keyed by the entry, custom values of other objects
left out; and the enrichment's verdicts from the views."""

from __future__ import annotations

import json
from typing import Any

from streams.changes import Change
from streams.settings import Settings
from streams.timesheets.model import (
    UNKNOWN_PERSON,
    UNKNOWN_PROJECT,
    Enriched,
    Entry,
    Missing,
    TimeEntry,
)
from streams.timesheets.sources import ENTRY, VALUE, intake, lookups, raw_topics

TOPICS = raw_topics(Settings.from_env({}))


def change(after: dict[str, Any] | None, before: dict[str, Any] | None = None) -> Change:
    op = "delete" if after is None else "create"
    return Change(op, before, after, "psa", "public.x", "1", "0/1", 7, 1_700_000_000_000)


def test_time_entry_rows_and_their_approval_values_share_the_entry_key() -> None:
    row = {"id": 42, "project_id": 3, "user_id": 5, "hours": 1.5, "spent_on": 20422}
    key, record = intake(change(row), TOPICS, TOPICS[ENTRY]) or ("", {})
    assert key == "psa:time_entry:42" and record["kind"] == ENTRY and record["seq"] == 7
    value = {
        "customized_type": "TimeEntry",
        "customized_id": 42,
        "custom_field_id": 1,
        "value": "1",
    }
    vkey, vrecord = intake(change(value), TOPICS, TOPICS[VALUE]) or ("", {})
    assert vkey == key and vrecord == {
        "seq": 7,
        "at": 1_700_000_000_000,
        "kind": VALUE,
        "field": "1",
        "value": "1",
    }
    project_value = {**value, "customized_type": "Project"}
    assert intake(change(project_value), TOPICS, TOPICS[VALUE]) is None
    assert intake(change(None, {"id": 9}), TOPICS, TOPICS[VALUE]) is None  # names only itself


def _raw(after: dict[str, Any]) -> bytes:
    return json.dumps({"before": None, "after": after, "op": "c"}).encode()


def test_enrichment_waits_for_project_and_person_then_gives_the_line() -> None:
    views = lookups(Settings.from_env({}), lambda b: json.loads(b))
    state = TimeEntry("psa:time_entry:42", 0, Entry("42", "3", "5", "77", "1.5", "2025-11-30"))
    assert isinstance(views.enrich(state), Missing)
    assert views.enrich(state).reason == UNKNOWN_PROJECT  # type: ignore[union-attr]
    project = {
        "envelope": {"correlation_id": "c-1"},
        "data": {"project_code": "PRJ-1", "erp_project_id": "11", "psa_project_id": "3"},
    }
    views.projects.apply("PRJ-1", json.dumps(project).encode())
    assert views.enrich(state).reason == UNKNOWN_PERSON  # type: ignore[union-attr]
    views.users.apply('{"id":5}', _raw({"id": 5, "login": "ann"}))
    views.parties.apply('{"id":8}', _raw({"id": 8, "code": "psa:user:ann"}))
    task = {"data": {"name": "Build", "project_id": "PRJ-1", "psa_task_id": "77"}}
    views.tasks.apply("PRJ-1:1.1", json.dumps(task).encode())
    got = views.enrich(state)
    assert isinstance(got, Enriched)
    assert got.correlation_id == "c-1" and got.project_code == "PRJ-1"
    assert got.spec["project_id"] == 11 and got.spec["task"] == "Build"
    assert got.spec["employee"] == "psa:user:ann" and got.spec["hours"] == "1.5"
    assert views.task_id(state) == "PRJ-1:1.1"
    views.fields.apply(
        '{"id":1}', _raw({"id": 1, "type": "TimeEntryCustomField", "name": "Approved"})
    )
    assert views.approved_field() == "1"
    views.works.apply('{"id":11}', _raw({"id": 11, "name": "P", "list_price": "100.0"}))
    views.works.apply(
        '{"id":12}', _raw({"id": 12, "name": "Build", "parent": 11, "list_price": "120.5"})
    )
    assert str(views.bill_rate("11", "Build")) == "120.50"
    assert str(views.bill_rate("11", "Other")) == "100.00"
