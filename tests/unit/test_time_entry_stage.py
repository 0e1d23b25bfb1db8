"""The time entry stage without Kafka: entries judged before the PSA's "Approved" field was
known are judged again once it is, also by a restarted worker (or a partition's new owner).

The producer and registry are the in-memory stand-ins of tests/unit/test_invoice_stage.py;
the same paths run on the real stack in tests/integration/test_time_entries.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from schemas.conventions import time_entry_inputs_topic
from streams.agents.timesheets import TimeEntryStage
from streams.settings import Settings
from streams.timesheets.model import TimeEntry
from streams.timesheets.sources import Lookups, lookups
from tables.codec import decode, encode
from tests.unit.test_invoice_stage import Msg, Out, Registry

SETTINGS = Settings.from_env({})
KEY = "psa:time_entry:42"


class Table:
    """The stage's table as a dict, through the same JSON encoding."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> TimeEntry | None:
        raw = self.data.get(key)
        return None if raw is None else decode(TimeEntry, raw)

    def owned(self) -> Iterator[TimeEntry]:
        for raw in list(self.data.values()):
            yield decode(TimeEntry, raw)

    def write(self, entries: Iterable[TimeEntry]) -> None:
        for e in entries:
            self.data[e.key] = encode(e)


def _row(after: dict[str, Any]) -> bytes:
    return json.dumps({"before": None, "after": after, "op": "c"}).encode()


def _views() -> Lookups:
    """Everything an approved entry needs except the "Approved" field itself."""
    views = lookups(SETTINGS, json.loads)
    project = {
        "envelope": {"correlation_id": "c-1"},
        "data": {"project_code": "PRJ-1", "erp_project_id": "11", "psa_project_id": "3"},
    }
    views.projects.apply("PRJ-1", json.dumps(project).encode())
    views.users.apply('{"id":5}', _row({"id": 5, "login": "ann"}))
    views.parties.apply('{"id":8}', _row({"id": 8, "code": "psa:user:ann"}))
    task = {"data": {"name": "Build", "project_id": "PRJ-1", "psa_task_id": "77"}}
    views.tasks.apply("PRJ-1:1.1", json.dumps(task).encode())
    for view in views.all():
        view.ready.set()
    return views


def _input(seq: int, body: dict[str, Any]) -> Msg:
    value = {"seq": seq, "at": 1.7e12, **body}
    topic = time_entry_inputs_topic(SETTINGS.topic_namespace)
    return Msg(topic, KEY.encode(), json.dumps(value).encode())


@pytest.mark.parametrize("restart", [False, True])
def test_an_entry_approved_before_the_field_was_known_is_posted_once_it_is(
    restart: bool,
) -> None:
    table, views, now = Table(), _views(), [0.0]
    out = Out()

    def start() -> TimeEntryStage:
        stage = TimeEntryStage(
            SETTINGS,
            out,  # type: ignore[arg-type]
            Registry(),  # type: ignore[arg-type]
            table,  # type: ignore[arg-type]
            views,
            clock=lambda: now[0],
        )
        asyncio.run(stage.prepare())
        return stage

    stage = start()
    row = {"id": 42, "project_id": 3, "user_id": 5, "issue_id": 77, "hours": 1.5}
    entry = _input(1, {"kind": "entry", "row": {**row, "spent_on": 20422}})
    approved = _input(2, {"kind": "value", "field": "1", "value": "1"})
    asyncio.run(stage.process([entry, approved]))  # type: ignore[list-item]
    assert not any("posting" in topic for topic, _, _ in out.sent)
    if restart:  # the batch was committed; a new process has only the table
        stage = start()
    field = {"id": 1, "type": "TimeEntryCustomField", "name": "Approved"}
    views.fields.apply('{"id":1}', _row(field))
    for _ in range(3):
        now[0] += 31
        asyncio.run(stage.tick())
    postings = [topic for topic, _, _ in out.sent if "posting" in topic]
    assert len(postings) == 1
    held = table.get(KEY)
    assert held is not None and held.revision == 1 and not held.field_unknown
