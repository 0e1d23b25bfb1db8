"""The expense stage's join: an issue and its custom values, arriving in any order, with
duplicates and stale redeliveries, end as the latest issue and the latest value per field
(hypothesis against a dictionary of latest versions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.registry import Registry
from streams.agents.expense import ExpenseStage
from streams.expenses.model import ExpenseState
from streams.output import Output
from streams.settings import Settings
from streams.topology import topology
from tables.expenses import ExpenseTable
from tables.views import View

KEY = "psa:issue:7"


@dataclass
class Msg:
    topic: str
    key: bytes
    value: Any
    partition: int = 0
    offset: int = 0


class _Registry:
    def schema_by_id(self, _id: int) -> dict[str, Any]:
        raise AssertionError("not decoded here")

    def register(self, _subject: str, _schema: str) -> int:
        return 1


class _Table:
    def __init__(self) -> None:
        self.data: dict[str, ExpenseState] = {}

    def get(self, key: str) -> ExpenseState | None:
        return self.data.get(key)


def _stage() -> ExpenseStage:
    s = Settings()
    view: View[Any] = View("t", lambda b: {}, lambda k, r: None)
    stage = ExpenseStage(
        s,
        topology(s),
        cast(Output, None),
        cast(Registry, _Registry()),
        cast(ExpenseTable, _Table()),
        view,
        view,
    )
    stage._decode = lambda msg: msg.value  # type: ignore[method-assign]
    return stage


def _issue(version: int, subject: str) -> dict[str, Any]:
    return {
        "envelope": {"entity_version": version},
        "data": {"psa_id": "7", "psa_project_id": "1", "subject": subject},
    }


def _value(version: int, field: str, value: str) -> dict[str, Any]:
    return {
        "envelope": {"entity_version": version},
        "data": {"owner_id": KEY, "owner_type": "Issue", "field_id": field, "value": value},
    }


events = st.lists(
    st.one_of(
        st.tuples(st.just("issue"), st.integers(1, 20), st.sampled_from(["a", "b", "c"])),
        st.tuples(
            st.sampled_from(["5", "6", "9"]), st.integers(1, 20), st.sampled_from(["1", "0", "x"])
        ),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(events, st.integers(1, 5))
def test_the_join_keeps_the_latest_of_each_part(
    stream: list[tuple[str, int, str]], batches: int
) -> None:
    stage = _stage()
    table = cast(_Table, stage.table)
    issue_topic, value_topic = stage.issue_topic, stage.value_topic
    latest: dict[str, tuple[int, str]] = {}  # part -> (version, value): the reference
    chunk = max(1, len(stream) // batches)
    for start in range(0, len(stream), chunk):
        work: dict[str, ExpenseState] = {}
        for part, version, value in stream[start : start + chunk]:
            if part == "issue":
                msg = Msg(issue_topic, KEY.encode(), _issue(version, value))
            else:
                msg = Msg(
                    value_topic, f"psa:custom_value:{part}".encode(), _value(version, part, value)
                )
            stage._source(work, msg)  # type: ignore[arg-type]
            if version > latest.get(part, (0, ""))[0]:
                latest[part] = (version, value)
        table.data.update(work)  # what the batch writes
    state = table.get(KEY)
    if not stream:
        assert state is None
        return
    assert state is not None
    if "issue" in latest:
        assert state.issue is not None and state.issue.subject == latest["issue"][1]
        assert state.version == latest["issue"][0]
    else:
        assert state.issue is None
    assert {f: v.value for f, v in state.values.items()} == {
        part: value for part, (_, value) in latest.items() if part != "issue"
    }
