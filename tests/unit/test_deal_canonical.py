"""The contract, project and task events the saga publishes fit their contracts and repeat
exactly when a step's result is seen again."""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import fastavro

from connectors.ports import ErpProject, PsaProject, to_json
from schemas import contracts
from streams.deals import canonical
from streams.deals.saga import Passed, Saga
from tests.unit.test_deal_validation import deal, reference, saga

CID = "c0ffee00-0000-5000-8000-000000000000"


def _passed(s: Saga, **outputs: object) -> Saga:
    passed = {
        step: Passed(f"{CID}:{step}", 1, 1_800_000_000.0 + n, to_json(out))
        for n, (step, out) in enumerate(outputs.items())
    }
    return dataclasses.replace(s, passed=passed, closed_won_at=1_799_999_990.0)


def _roundtrip(entity: str, record: dict[str, Any]) -> dict[str, Any]:
    schema = fastavro.parse_schema(json.loads(contracts.schema_str(entity)))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)  # raises if the record does not fit
    buf.seek(0)
    out: dict[str, Any] = fastavro.schemaless_reader(buf, schema, schema)  # type: ignore[call-arg]
    return out


def test_erp_project_step_publishes_the_contract_and_the_planned_project() -> None:
    s = _passed(
        saga(project_code="PRJ-00007", erp_project_id="41"),
        erp_customer={"id": 3, "code": "crm:account:001A"},
        erp_project=ErpProject(41, "PRJ-00007", {"Design": 42}),
    )
    events = canonical.events(deal(), s, "erp_project", reference(), now=1_800_000_100.0)
    assert [(e, k) for e, k, _ in events] == [
        ("contract", "crm:contract:006A"),
        ("project", "PRJ-00007"),
    ]
    contract = _roundtrip("contract", events[0][2])["data"]
    assert (contract["status"], contract["legal_entity_id"], contract["currency"]) == (
        "active",
        "LE-DE",
        "EUR",
    )
    project = _roundtrip("project", events[1][2])
    assert project["data"]["status"] == "planned" and project["data"]["psa_project_id"] is None
    assert project["data"]["contract_id"] == "crm:contract:006A"
    assert [b["description"] for b in project["data"]["billing_schedule"]] == ["Go-live"]
    assert str(project["envelope"]["correlation_id"]) == CID
    assert project["envelope"]["entity_version"] == 2


def test_psa_step_publishes_the_active_project_and_its_tasks_with_psa_ids() -> None:
    s = _passed(
        saga(project_code="PRJ-00007", erp_project_id="41", psa_project_id="9"),
        erp_customer={"id": 3, "code": "crm:account:001A"},
        erp_project=ErpProject(41, "PRJ-00007"),
        psa_project=PsaProject(9, "prj-00007", "http://psa/projects/prj-00007", {}, {}),
    )
    events = canonical.events(deal(), s, "psa_project", reference(), now=1_800_000_200.0)
    entities = [e for e, _, _ in events]
    assert entities[0] == "project" and set(entities[1:]) == {"task"}
    project = _roundtrip("project", events[0][2])
    assert (project["data"]["status"], project["data"]["psa_project_id"]) == ("active", "9")
    assert project["envelope"]["entity_version"] == 3
    for _, key, record in events[1:]:
        task = _roundtrip("task", record)["data"]
        assert task["project_id"] == "PRJ-00007" and key == task["task_id"]
        assert key.startswith("PRJ-00007:") and task["wbs_code"] in key
    # Seen again (a redelivered result): the same events, ids included.
    again = canonical.events(deal(), s, "psa_project", reference(), now=1_800_000_999.0)
    ids = [r["envelope"]["event_id"] for _, _, r in events]
    assert ids == [r["envelope"]["event_id"] for _, _, r in again]


def test_steps_that_teach_nothing_publish_nothing() -> None:
    s = _passed(saga(), erp_customer={"id": 3, "code": "crm:account:001A"})
    assert canonical.events(deal(), s, "erp_customer", reference(), now=1.0) == []
