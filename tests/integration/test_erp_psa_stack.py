"""The ERP (Tryton) and the PSA (Redmine) of the local stack, as pssync will use them: over
their APIs only, as the integration user, which can do its job and nothing more.

Every test makes its own codes and identifiers, so reruns never collide.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Erp:
    http: httpx.Client
    database: str
    headers: dict[str, str]
    context: dict[str, Any]

    def call(self, method: str, *params: Any) -> Any:
        resp = self.http.post(
            f"/{self.database}/rpc/",
            json={"id": 1, "method": method, "params": list(params)},
            headers=self.headers,
        )
        resp.raise_for_status()
        answer = resp.json()
        if answer.get("error"):
            raise ErpError(answer["error"])
        return answer["result"]

    def model(self, model: str, method: str, *args: Any) -> Any:
        return self.call(f"model.{model}.{method}", *args, self.context)


class ErpError(Exception):
    pass


@pytest.fixture(scope="module")
def erp() -> Iterator[Erp]:
    s = Settings.from_env()
    if not s.erp_password_file.exists():
        pytest.fail(f"no ERP integration password at {s.erp_password_file}: run `make up`")
    password = s.erp_password_file.read_text().strip()
    with httpx.Client(base_url=s.erp_url, timeout=30) as http:
        # One login, then the session token on every call (no password per call).
        client = Erp(http, s.erp_database, {}, {})
        uid, token = client.call("common.db.login", s.erp_user, {"password": password}, "en")[:2]
        raw = base64.b64encode(f"{s.erp_user}:{uid}:{token}".encode()).decode()
        client.headers = {"Authorization": f"Session {raw}"}
        client.context = client.call("model.res.user.get_preferences", True, {})
        yield client


def test_erp_party_is_found_again_by_its_code(erp: Erp) -> None:
    code = _unique("CUST")
    (party_id,) = erp.model("party.party", "create", [{"name": f"Customer {code}", "code": code}])
    found = erp.model(
        "party.party", "search_read", [("code", "=", code)], 0, None, None, ["id", "code", "name"]
    )
    assert found == [{"id": party_id, "code": code, "name": f"Customer {code}"}]
    # The code is unique: a second party with it is refused.
    with pytest.raises(ErpError, match="code"):
        erp.model("party.party", "create", [{"name": "Duplicate", "code": code}])


def test_erp_numbers_the_project_and_takes_its_timesheet(erp: Erp) -> None:
    name = _unique("Project")
    (party_id,) = erp.model("party.party", "create", [{"name": name, "code": _unique("C")}])
    (work_id,) = erp.model(
        "project.work",
        "create",
        [{"name": name, "type": "project", "party": party_id, "company": erp.context["company"]}],
    )
    (work,) = erp.model("project.work", "read", [work_id], ["number", "name", "party"])
    assert work["name"] == name and work["party"] == party_id
    assert work["number"], "the ERP generates the project code"
    (other_id,) = erp.model(
        "project.work", "create", [{"name": name + "-2", "company": erp.context["company"]}]
    )
    (other,) = erp.model("project.work", "read", [other_id], ["number"])
    assert other["number"] != work["number"]

    (ts_work_id,) = erp.model(
        "timesheet.work",
        "create",
        [{"name": name, "company": erp.context["company"]}],
    )
    lines = [
        {
            "work": ts_work_id,
            "employee": erp.context["employee"],
            "company": erp.context["company"],
            "date": "2026-11-02",
            "duration": 3600.0 * (i + 1),
            "description": f"{name} line {i}",
        }
        for i in range(3)
    ]
    ids = erp.model("timesheet.line", "create", lines)
    read = erp.model("timesheet.line", "read", ids, ["duration"])
    # Durations travel as {"__class__": "timedelta", "seconds": ...}.
    assert sorted(r["duration"]["seconds"] for r in read) == [3600.0, 7200.0, 10800.0]


def test_erp_integration_user_stays_within_its_rights(erp: Erp) -> None:
    with pytest.raises(ErpError, match="not allowed"):
        erp.model("res.user", "create", [{"name": "intruder", "login": _unique("intruder")}])
    with pytest.raises(ErpError, match="not allowed"):
        erp.model("account.invoice", "create", [{}])
    with pytest.raises(ErpError, match="not allowed"):
        erp.model("res.group", "create", [{"name": _unique("group")}])
    # Invoices are readable (pssync reports what was invoiced).
    assert isinstance(erp.model("account.invoice", "search", [], 0, 10, None), list)


@pytest.fixture(scope="module")
def psa() -> Iterator[httpx.Client]:
    s = Settings.from_env()
    if not s.psa_api_key_file.exists():
        pytest.fail(f"no PSA integration key at {s.psa_api_key_file}: run `make up`")
    key = s.psa_api_key_file.read_text().strip()
    with httpx.Client(base_url=s.psa_url, headers={"X-Redmine-API-Key": key}, timeout=30) as http:
        yield http


def _field_id(fields: list[dict[str, Any]], name: str) -> int:
    return next(int(f["id"]) for f in fields if f["name"] == name)


def test_psa_project_version_issue_and_approved_time(psa: httpx.Client) -> None:
    ident = _unique("p").lower()
    resp = psa.post("/projects.json", json={"project": {"name": ident, "identifier": ident}})
    assert resp.status_code == 201, resp.text
    project = resp.json()["project"]
    code_field = _field_id(project["custom_fields"], "ERP project code")
    resp = psa.put(
        f"/projects/{ident}.json",
        json={"project": {"custom_fields": [{"id": code_field, "value": "PRJ-42"}]}},
    )
    assert resp.status_code == 204, resp.text

    resp = psa.post(f"/projects/{ident}/versions.json", json={"version": {"name": "Phase 1"}})
    assert resp.status_code == 201, resp.text
    version_id = resp.json()["version"]["id"]

    resp = psa.post(
        "/issues.json",
        json={
            "issue": {
                "project_id": project["id"],
                "subject": "Kick-off",
                "fixed_version_id": version_id,
            }
        },
    )
    assert resp.status_code == 201, resp.text
    issue_id = resp.json()["issue"]["id"]

    activities = psa.get("/enumerations/time_entry_activities.json").json()
    activity_id = activities["time_entry_activities"][0]["id"]
    resp = psa.post(
        "/time_entries.json",
        json={
            "time_entry": {
                "issue_id": issue_id,
                "hours": 2.5,
                "activity_id": activity_id,
                "spent_on": "2026-11-02",
                "comments": ident,
            }
        },
    )
    assert resp.status_code == 201, resp.text
    entry = resp.json()["time_entry"]
    approved = _field_id(entry["custom_fields"], "Approved")
    resp = psa.put(
        f"/time_entries/{entry['id']}.json",
        json={"time_entry": {"custom_fields": [{"id": approved, "value": "1"}]}},
    )
    assert resp.status_code == 204, resp.text

    back = psa.get(f"/time_entries/{entry['id']}.json").json()["time_entry"]
    assert back["hours"] == 2.5 and back["issue"]["id"] == issue_id
    assert {"id": approved, "name": "Approved", "value": "1"} in back["custom_fields"]
    got = psa.get(f"/projects/{ident}.json").json()["project"]
    assert {"id": code_field, "name": "ERP project code", "value": "PRJ-42"} in got["custom_fields"]
    listed = psa.get("/time_entries.json", params={"project_id": ident, "limit": 100}).json()
    assert [e["id"] for e in listed["time_entries"]] == [entry["id"]]


def test_psa_integration_user_cannot_administer_users(psa: httpx.Client) -> None:
    me = psa.get("/users/current.json").json()["user"]
    assert me["admin"] is False
    login = _unique("intruder")
    resp = psa.post(
        "/users.json",
        json={
            "user": {
                "login": login,
                "firstname": "In",
                "lastname": "Truder",
                "mail": f"{login}@localhost.invalid",
                "password": uuid.uuid4().hex,
            }
        },
    )
    assert resp.status_code == 403
    assert psa.get("/users.json").status_code == 403
    assert psa.put(f"/users/{me['id']}.json", json={"user": {"admin": True}}).status_code == 403
