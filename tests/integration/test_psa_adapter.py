"""The PSA port against the real Redmine of the local stack, as the integration user.

What the port made is read back through Redmine's REST API; every test makes its own ERP
project code, hence its own identifier. The stack's PSA setup provides the project managers'
group with one member, `demo.pm`, and the placeholder groups.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connectors.ports import Member, MilestoneSpec, PsaProject, PsaProjectSpec, TaskSpec
from connectors.psa import RedmineClient, RedminePsa, psa_identifier
from streams.errors import ApplicationUnavailableError, CommandRejectedError
from streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PM_LOGIN = "demo.pm"
PM_MAIL = "demo.pm@localhost.invalid"


@pytest.fixture(scope="module")
def api() -> Iterator[httpx.Client]:
    """Plain REST access as the integration user, to read back what the port made."""
    s = Settings.from_env()
    key = s.psa_api_key_file.read_text().strip()
    with httpx.Client(base_url=s.psa_url, headers={"X-Redmine-API-Key": key}, timeout=30) as c:
        yield c


def _ensure(spec: PsaProjectSpec, psa_url: str | None = None) -> PsaProject:
    async def go() -> PsaProject:
        psa = RedminePsa.from_settings(Settings.from_env())
        if psa_url is not None:
            await psa.aclose()
            psa = RedminePsa(RedmineClient(psa_url, "not-a-key", timeout=3))
        try:
            return await psa.ensure_project(spec)
        finally:
            await psa.aclose()

    return asyncio.run(go())


def _spec(**kw: Any) -> PsaProjectSpec:
    code = f"PRJ-{uuid.uuid4().hex[:8].upper()}"
    values: dict[str, Any] = {
        "identifier": psa_identifier(code),
        "name": f"Acme rollout {code}",
        "erp_project_code": code,
        "description": "Closed-won deal 006A",
        "tasks": (
            TaskSpec("Workshops", "Discovery", Decimal("16")),
            TaskSpec("Solution design", "Discovery", Decimal("24")),
            TaskSpec("Build", "Delivery", Decimal("80")),
            TaskSpec("Hand-over", "Delivery"),
        ),
        "milestones": (
            MilestoneSpec("Design signed off", date(2027, 1, 29), Decimal("10000")),
            MilestoneSpec("Go-live", date(2027, 3, 31), Decimal("30000")),
        ),
        "members": (Member(PM_MAIL, "Manager"),),
        "placeholders": ("Solution architect", "Consultant", "Project manager"),
    }
    return PsaProjectSpec(**{**values, **kw})


def _all(api: httpx.Client, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
    resp = api.get(path, params={**params, "limit": 100})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body.get("total_count", len(body[key])) <= 100
    return list(body[key])


def test_project_with_wbs_versions_and_people_is_ensured_once(api: httpx.Client) -> None:
    spec = _spec()
    project = _ensure(spec)
    again = _ensure(spec)
    assert again == project
    assert project.identifier == spec.identifier
    assert project.url.endswith(f"/projects/{spec.identifier}")

    got = api.get(f"/projects/{spec.identifier}.json").json()["project"]
    assert got["id"] == project.id and got["name"] == spec.name
    assert {"id": got["custom_fields"][0]["id"], "name": "ERP project code"} | {
        "value": spec.erp_project_code
    } in got["custom_fields"]
    assert spec.erp_project_code in got["description"]

    # WBS: one parent issue per phase, its tasks as children, nothing twice.
    issues = _all(api, "/issues.json", "issues", project_id=project.id, status_id="*")
    assert len(issues) == 2 + 4
    parents = {i["subject"]: i["id"] for i in issues if "parent" not in i}
    assert set(parents) == {"Discovery", "Delivery"}
    children = {(i["parent"]["id"], i["subject"]): i for i in issues if "parent" in i}
    assert set(children) == {
        (parents["Discovery"], "Workshops"),
        (parents["Discovery"], "Solution design"),
        (parents["Delivery"], "Build"),
        (parents["Delivery"], "Hand-over"),
    }
    assert children[(parents["Delivery"], "Build")]["estimated_hours"] == 80.0

    versions = api.get(f"/projects/{project.id}/versions.json").json()["versions"]
    assert sorted((v["name"], v["due_date"]) for v in versions) == [
        ("Design signed off", "2027-01-29"),
        ("Go-live", "2027-03-31"),
    ]

    members = _all(api, f"/projects/{project.id}/memberships.json", "memberships")
    roles = {
        (m.get("user") or m.get("group"))["name"]: sorted(r["name"] for r in m["roles"])
        for m in members
    }
    assert roles["Demo Project Manager"] == ["Manager"]
    assert roles["Placeholder: Solution architect"] == ["Developer"]
    assert roles["Placeholder: Consultant"] == ["Developer"]
    assert roles["Placeholder: Project manager"] == ["Manager"]
    assert len(members) == len(roles) == 5  # the four above and the integration user


def test_template_growth_adds_only_what_is_missing(api: httpx.Client) -> None:
    spec = _spec(members=(Member(PM_LOGIN, "Manager"),), placeholders=())
    project = _ensure(spec)
    grown = _spec(
        identifier=spec.identifier,
        erp_project_code=spec.erp_project_code,
        name=spec.name,
        tasks=(*spec.tasks, TaskSpec("Hypercare", "Run")),
        milestones=(*spec.milestones, MilestoneSpec("Hypercare done")),
        members=spec.members,
        placeholders=("Consultant",),
    )
    assert _ensure(grown) == project
    issues = _all(api, "/issues.json", "issues", project_id=project.id, status_id="*")
    assert len(issues) == 3 + 5
    versions = api.get(f"/projects/{project.id}/versions.json").json()["versions"]
    assert len(versions) == 3
    members = _all(api, f"/projects/{project.id}/memberships.json", "memberships")
    assert len(members) == 3


def test_concurrent_ensures_in_one_process_make_one_of_everything(api: httpx.Client) -> None:
    spec = _spec()

    async def go() -> list[PsaProject]:
        psa = RedminePsa.from_settings(Settings.from_env())
        try:
            return list(await asyncio.gather(*(psa.ensure_project(spec) for _ in range(3))))
        finally:
            await psa.aclose()

    made = asyncio.run(go())
    assert len(set(made)) == 1
    project = made[0]
    assert len(_all(api, "/issues.json", "issues", project_id=project.id, status_id="*")) == 6
    assert len(api.get(f"/projects/{project.id}/versions.json").json()["versions"]) == 2
    assert len(_all(api, f"/projects/{project.id}/memberships.json", "memberships")) == 5


def test_create_race_between_processes_settles_on_one_project(api: httpx.Client) -> None:
    # Redmine checks identifiers only in its application code: three ports (three workers)
    # creating one project at the same moment may all succeed. They must agree on one.
    spec = _spec(tasks=(), milestones=(), members=(), placeholders=())

    async def go() -> list[PsaProject]:
        ports = [RedminePsa.from_settings(Settings.from_env()) for _ in range(3)]
        try:
            for p in ports:  # warm: the races below are between the creates themselves
                await p._code_field_id()
            return list(await asyncio.gather(*(p.ensure_project(spec) for p in ports)))
        finally:
            for p in ports:
                await p.aclose()

    made = asyncio.run(go())
    assert len({p.id for p in made}) == 1
    listed = _all(
        api, "/projects.json", "projects", **{f"cf_{_code_field(api)}": spec.erp_project_code}
    )
    live = [p for p in listed if not p["name"].startswith("[duplicate")]
    assert [p["id"] for p in live] == [made[0].id]
    # Later ensures find the same project, whatever Redmine answers by identifier.
    assert _ensure(spec).id == made[0].id


def _code_field(api: httpx.Client) -> int:
    fields = api.get("/projects/pssync-integration.json").json()["project"]["custom_fields"]
    return next(int(f["id"]) for f in fields if f["name"] == "ERP project code")


def test_unknown_project_manager_is_rejected_before_anything_is_made(
    api: httpx.Client,
) -> None:
    stranger = f"nobody-{uuid.uuid4().hex[:6]}@example.com"
    spec = _spec(members=(Member(stranger, "Manager"),))
    with pytest.raises(CommandRejectedError) as info:
        _ensure(spec)
    message = str(info.value)
    assert stranger in message and "Project managers" in message
    assert "correct the project manager on the deal" in message
    assert api.get(f"/projects/{spec.identifier}.json").status_code == 404

    with pytest.raises(CommandRejectedError, match="no Redmine role named 'Overlord'"):
        _ensure(_spec(members=(Member(PM_LOGIN, "Overlord"),)))
    with pytest.raises(CommandRejectedError, match="'Placeholder: Astronaut'"):
        _ensure(_spec(placeholders=("Astronaut",)))
    with pytest.raises(CommandRejectedError, match="not a valid Redmine identifier"):
        _ensure(_spec(identifier="PRJ 1"))


def test_unreachable_psa_is_unavailable() -> None:
    with pytest.raises(
        ApplicationUnavailableError, match=re.escape("cannot reach http://127.0.0.1:1")
    ):
        _ensure(_spec(), psa_url="http://127.0.0.1:1")


def test_wrong_key_is_unavailable_and_not_shown() -> None:
    s = Settings.from_env()
    with pytest.raises(ApplicationUnavailableError, match="PSSYNC_PSA_API_KEY_FILE") as info:
        _ensure(_spec(), psa_url=s.psa_url)
    assert "not-a-key" not in str(info.value)


def test_integration_user_cannot_staff_groups_or_delete_projects(api: httpx.Client) -> None:
    project = _ensure(_spec(tasks=(), milestones=()))
    assert api.delete(f"/projects/{project.identifier}.json").status_code == 403
    members = _all(api, f"/projects/{project.id}/memberships.json", "memberships")
    group = next(m["group"]["id"] for m in members if "group" in m)
    me = api.get("/users/current.json").json()["user"]["id"]
    resp = api.post(f"/groups/{group}/users.json", json={"user_id": me})
    assert resp.status_code == 403
    assert api.get("/groups.json").status_code == 403
