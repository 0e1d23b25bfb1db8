"""Business monitors against a simple model: which deals are closed-won without a project."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.monitor.checks import DealsWithoutProject
from streams.settings import Settings
from streams.topology import Topology

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
SLO = 300.0


def _monitor() -> DealsWithoutProject:
    topo = Topology(routes=[], namespace="")
    # Records travel as pickles: the views' decode step is the registry's in production.
    return DealsWithoutProject(topo, Settings(saga_deadline=SLO), pickle.loads)


def _opportunity(key: str, stage: str, at: datetime) -> bytes:
    record: dict[str, Any] = {
        "envelope": {"correlation_id": f"c-{key}", "source": {"committed_at": at}},
        "data": {"crm_id": key, "name": f"deal {key}", "stage": stage},
    }
    return pickle.dumps(record)


def _project(opportunity: str, psa: int | None) -> bytes:
    data = {"project_code": f"PRJ-{opportunity}", "opportunity_id": opportunity}
    return pickle.dumps({"envelope": {}, "data": {**data, "psa_project_id": psa}})


def test_a_late_deal_is_found_with_its_parked_reason() -> None:
    m = _monitor()
    m.deals.apply("d1", _opportunity("d1", "closed_won", T0))
    m.deals.apply("d2", _opportunity("d2", "closed_won", T0 + timedelta(seconds=200)))
    exc = {"status": "open", "reason": "template_missing", "step": "validate", "message": "x"}
    m.exceptions.apply("d1", pickle.dumps(exc))
    found = {f.key: f for f in m.findings(T0 + timedelta(seconds=400))}
    assert found["d1"].late and "template_missing" in found["d1"].summary
    assert not found["d2"].late and found["d2"].since == T0 + timedelta(seconds=200)
    assert found["d1"].ids == {"crm_opportunity": "d1", "correlation_id": "c-d1"}


def test_an_erp_project_alone_is_not_a_project_yet() -> None:
    m = _monitor()
    m.deals.apply("d1", _opportunity("d1", "closed_won", T0))
    m.projects.apply("PRJ-d1", _project("d1", None))
    assert [f.key for f in m.findings(T0)] == ["d1"]
    m.projects.apply("PRJ-d1", _project("d1", 7))
    assert m.findings(T0) == []


events = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(
            ["opp:prospecting", "opp:closed_won", "opp:closed_lost", "project", "delete"]
        ),
    ),
    max_size=40,
)


@given(events)
def test_findings_match_a_model_of_the_event_history(history: list[tuple[str, str]]) -> None:
    m = _monitor()
    stage: dict[str, str] = {}
    won_since: dict[str, datetime] = {}
    has_project: set[str] = set()
    for n, (key, what) in enumerate(history):
        at = T0 + timedelta(seconds=60 * n)
        if what == "project":
            m.projects.apply(f"PRJ-{key}", _project(key, n))
            has_project.add(key)
        elif what == "delete":
            m.deals.apply(key, None)
            stage.pop(key, None)
            won_since.pop(key, None)
        else:
            new = what.split(":")[1]
            m.deals.apply(key, _opportunity(key, new, at))
            if new == "closed_won":
                won_since.setdefault(key, at)
            else:
                won_since.pop(key, None)
            stage[key] = new
    now = T0 + timedelta(seconds=60 * len(history))
    expected = {
        key: (since, (now - since).total_seconds() > SLO)
        for key, since in won_since.items()
        if key not in has_project
    }
    assert {f.key: (f.since, f.late) for f in m.findings(now)} == expected


def test_open_posting_exceptions_are_failed_postings_and_resolved_ones_are_not() -> None:
    from streams.monitor.checks import FailedPostings

    m = FailedPostings(Topology(routes=[], namespace=""), Settings(), pickle.loads)

    def exc(step: str, status: str, reason: str) -> bytes:
        record = {"step": step, "status": status, "reason": reason, "message": "fix it"}
        return pickle.dumps({**record, "raised_at": T0, "correlation_id": "c1"})

    m.exceptions.apply("psa:time_entry:1", exc("time_entry", "open", "time_entry.invoiced"))
    m.exceptions.apply("psa:time_entry:2", exc("time_entry", "resolved", "time_entry.invoiced"))
    m.exceptions.apply("psa:expense:3", exc("expense", "open", "expense.unknown_project"))
    m.exceptions.apply("crm:opportunity:4", exc("validate", "open", "template_missing"))
    found = {f.key: f for f in m.findings(T0)}
    assert set(found) == {"psa:time_entry:1", "psa:expense:3"}
    assert found["psa:time_entry:1"].summary == "time_entry.invoiced: fix it"
    assert found["psa:time_entry:1"].since == T0
