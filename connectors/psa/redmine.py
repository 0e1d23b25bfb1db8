"""The PSA port over Redmine 5's REST API.

- Project: identified by its identifier (derived from the ERP project code, `psa_identifier`)
  and found as the oldest project with that identifier among those whose custom field
  "ERP project code" holds the code (a filter: Redmine's setup marks the field "used as a
  filter"); the code is also written in the description.
- WBS: each phase is a parent issue, its tasks child issues, found by subject under their
  parent; billing milestones are versions, found by name.
- Amendments (change orders): the project found by its ERP code gets the amended WBS
  (missing phases and tasks made), each task's estimated hours set to the baseline's, and
  a version per billing milestone (made, or its due date moved). Absolute values: applying
  an amendment again changes nothing.
- People: the project manager is looked up in the group "Project managers" (a non-admin
  cannot list Redmine's users, but can read a group it sees and that group's users). Redmine
  has no placeholder resources: a group "Placeholder: <role>" per role to staff later is
  made a member of the project instead, so it shows in the project's members and can be
  replaced by a person when staffing is decided. Both kinds of group are members of the
  "directory" project (the integration user's anchor project), which is how the integration
  user sees them.

Redmine enforces unique identifiers and version names only in its application code, not in
its database, and issue subjects not at all: concurrent creates of one project can all
succeed. Within a process this port ensures one project at a time per identifier; across
processes the saga applies a deal's commands one at a time (one consumer per deal). Should
two processes still create one project at the same moment (a rebalance), the duplicate is
detected right after the create: the oldest project of that ERP code and identifier is the
project, the other is renamed for people to delete (the integration user may not delete
projects). A create repeated after a crash finds what the first attempt made.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from connectors.ports import Member, PsaAmendmentSpec, PsaProject, PsaProjectSpec, TaskSpec
from connectors.psa.rest import SYSTEM, RedmineClient, Unprocessable
from streams.errors import CommandRejectedError
from streams.settings import Settings

CODE_FIELD = "ERP project code"
PM_GROUP = "Project managers"
PLACEHOLDER_PREFIX = "Placeholder: "
# The role a placeholder holds in a project; roles not listed are staffed as Developer.
PLACEHOLDER_ROLES = {"project manager": "Manager"}
DEFAULT_PLACEHOLDER_ROLE = "Developer"
# Name given to a project a lost create race left behind, for people to delete.
DUPLICATE_MARK = "[duplicate, delete me]"
# Redmine: lowercase letters, digits, '-' and '_', not only digits, at most 100, not "new".
_IDENTIFIER = re.compile(r"^(?!\d+$)[a-z0-9_-]{1,100}$")


def psa_identifier(erp_project_code: str) -> str:
    """A valid Redmine project identifier for an ERP project code, e.g. PRJ-00042 -> prj-00042.

    Deterministic, so the project is found again by it; lowercase letters, digits, '-' and
    '_' are kept, every other run of characters becomes one '-'; it always starts with a
    letter ("p-" is put in front otherwise), so it is never all digits nor "new".
    """
    ident = re.sub(r"[^a-z0-9_-]+", "-", erp_project_code.strip().lower()).strip("-")
    if not ident or not ident[0].isalpha() or ident == "new":
        ident = f"p-{ident}".rstrip("-")
    return ident[:100].rstrip("-")


class RedminePsa:
    """Implements `connectors.ports.Psa`. Every operation is idempotent on its external key."""

    def __init__(
        self, client: RedmineClient, directory_project: str = "pssync-integration"
    ) -> None:
        self.client = client
        self.directory_project = directory_project
        self._roles: dict[str, int] = {}
        self._groups: dict[str, int] = {}
        self._code_field: int | None = None
        # lower-cased login and mail -> user id, of the project managers' group
        self._managers: dict[str, int] = {}
        self._creating: dict[str, asyncio.Lock] = {}

    @classmethod
    def from_settings(cls, settings: Settings, timeout: float = 30.0) -> RedminePsa:
        key = settings.psa_api_key_file.read_text().strip()
        return cls(
            RedmineClient(settings.psa_url, key, timeout=timeout),
            directory_project=settings.psa_directory_project,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def project_url(self, identifier: str) -> str:
        return f"{self.client.url}/projects/{identifier}"

    async def find_project(self, erp_project_code: str) -> PsaProject | None:
        """The project of an ERP project code, if any (read only): the oldest one holding
        that code in its "ERP project code" field that is not a marked duplicate."""
        field_id = await self._code_field_id()
        found = await self.client.pages(
            "/projects.json", "projects", {f"cf_{field_id}": erp_project_code}
        )
        mine = sorted(
            (p for p in found if not str(p.get("name", "")).startswith(DUPLICATE_MARK)),
            key=lambda p: int(p["id"]),
        )
        if not mine:
            return None
        ident = str(mine[0]["identifier"])
        return PsaProject(id=int(mine[0]["id"]), identifier=ident, url=self.project_url(ident))

    # -- what the project needs to exist first ----------------------------------------------

    async def _role(self, name: str) -> int:
        if name.lower() not in self._roles:
            answer = await self.client.get("/roles.json") or {}
            self._roles = {str(r["name"]).lower(): int(r["id"]) for r in answer.get("roles", [])}
        if name.lower() not in self._roles:
            raise CommandRejectedError(
                SYSTEM,
                f"no Redmine role named {name!r}; create it (Administration -> Roles) or fix "
                "the role in the deal's project template",
            )
        return self._roles[name.lower()]

    async def _directory(self) -> list[dict[str, Any]]:
        memberships = await self.client.pages(
            f"/projects/{self.directory_project}/memberships.json", "memberships"
        )
        if not memberships:
            raise CommandRejectedError(
                SYSTEM,
                f"the directory project {self.directory_project!r} is missing or has no "
                "members; create it with the integration user and the groups "
                f"{PM_GROUP!r} and '{PLACEHOLDER_PREFIX}<role>' as members "
                "(PSSYNC_PSA_DIRECTORY_PROJECT names it)",
            )
        return memberships

    async def _group(self, name: str) -> int:
        if name.lower() not in self._groups:
            self._groups = {
                str(m["group"]["name"]).lower(): int(m["group"]["id"])
                for m in await self._directory()
                if "group" in m
            }
        if name.lower() not in self._groups:
            raise CommandRejectedError(
                SYSTEM,
                f"no Redmine group {name!r} among the members of the directory project "
                f"{self.directory_project!r}; create the group and add it to that project",
            )
        return self._groups[name.lower()]

    async def _manager(self, member: Member) -> int:
        wanted = member.login.strip().lower()
        if wanted not in self._managers:
            await self._load_managers()
        if wanted not in self._managers:
            raise CommandRejectedError(
                SYSTEM,
                f"no active Redmine user with login or e-mail {member.login!r} in the group "
                f"{PM_GROUP!r}: create that user in Redmine and add them to the group "
                "(with their e-mail visible, or the e-mail as login), or correct the "
                "project manager on the deal in the CRM",
            )
        return self._managers[wanted]

    async def _load_managers(self) -> None:
        group = await self._group(PM_GROUP)
        answer = await self.client.get(f"/groups/{group}.json", {"include": "users"}) or {}
        managers: dict[str, int] = {}
        for ref in answer.get("group", {}).get("users", []):
            user = (await self.client.get(f"/users/{int(ref['id'])}.json") or {}).get("user")
            if not user:
                continue  # locked users are not shown: they cannot lead a project
            for name in (user.get("login"), user.get("mail")):
                if name:
                    managers[str(name).lower()] = int(user["id"])
        self._managers = managers

    async def _code_field_id(self) -> int:
        if self._code_field is None:
            answer = await self.client.get(f"/projects/{self.directory_project}.json") or {}
            fields = answer.get("project", {}).get("custom_fields", [])
            found = [int(f["id"]) for f in fields if f.get("name") == CODE_FIELD]
            if not found:
                raise CommandRejectedError(
                    SYSTEM,
                    f"no project custom field {CODE_FIELD!r} visible to the integration user; "
                    "create it (text, for all projects) in Redmine",
                )
            self._code_field = found[0]
        return self._code_field

    # -- the project -----------------------------------------------------------------------

    async def ensure_project(self, spec: PsaProjectSpec) -> PsaProject:
        if not _IDENTIFIER.match(spec.identifier) or spec.identifier == "new":
            raise CommandRejectedError(
                SYSTEM,
                f"{spec.identifier!r} is not a valid Redmine identifier; derive it with "
                f"psa_identifier() (e.g. {psa_identifier(spec.erp_project_code)!r})",
            )
        # People first: a deal naming an unknown manager is refused before anything exists.
        members = [(await self._manager(m), await self._role(m.role)) for m in spec.members]
        members += [
            (
                await self._group(f"{PLACEHOLDER_PREFIX}{p}"),
                await self._role(PLACEHOLDER_ROLES.get(p.lower(), DEFAULT_PLACEHOLDER_ROLE)),
            )
            for p in spec.placeholders
        ]
        # One ensure at a time per project in this process (see the module's docstring).
        async with self._creating.setdefault(spec.identifier, asyncio.Lock()):
            project = await self._ensure_project(spec)
            project_id = int(project["id"])
            await self._ensure_versions(project_id, spec)
            wbs = await self._ensure_wbs(project_id, spec.tasks)
            await self._ensure_members(project_id, members)
        return PsaProject(
            id=project_id,
            identifier=str(project["identifier"]),
            url=self.project_url(str(project["identifier"])),
            phase_ids=wbs[0],
            task_ids=wbs[1],
        )

    async def _ensure_project(self, spec: PsaProjectSpec) -> dict[str, Any]:
        field_id = await self._code_field_id()
        project = await self._find(spec, field_id)
        if project is None:
            project = await self._create(spec, field_id)
        values = {int(f["id"]): f.get("value") for f in project.get("custom_fields", [])}
        if values.get(field_id) != spec.erp_project_code:
            await self.client.put(
                f"/projects/{int(project['id'])}.json",
                {"project": {"custom_fields": [{"id": field_id, "value": spec.erp_project_code}]}},
            )
        return project

    async def _find(self, spec: PsaProjectSpec, field_id: int) -> dict[str, Any] | None:
        # By the ERP code filter rather than GET /projects/<identifier>: with a duplicate
        # left by a race, Redmine answers the latter with either project.
        return await self._canonical(spec, field_id)

    async def _by_identifier(self, spec: PsaProjectSpec) -> dict[str, Any] | None:
        found = await self.client.get(f"/projects/{spec.identifier}.json")
        return dict(found["project"]) if found else None

    async def _create(self, spec: PsaProjectSpec, field_id: int) -> dict[str, Any]:
        description = f"{spec.description}\n\n{CODE_FIELD}: {spec.erp_project_code}".strip()
        body = {
            "project": {
                "name": spec.name,
                "identifier": spec.identifier,
                "description": description,
                "is_public": False,
                "custom_fields": [{"id": field_id, "value": spec.erp_project_code}],
            }
        }
        try:
            created = dict((await self.client.post("/projects.json", body))["project"])
        except Unprocessable as exc:
            if not exc.taken():
                raise exc.rejected("fix the project's name or identifier") from None
            # Lost a race with another create of the same identifier, or a project made by
            # hand without the ERP code: that one is ours (the code is set on it below).
            found = await self._by_identifier(spec)
            if found is None:
                raise exc.rejected(
                    "the identifier is taken by a project the integration user cannot see "
                    "(archived or closed?); unarchive it or choose another code"
                ) from None
            return found
        canonical = await self._canonical(spec, field_id)
        if canonical is not None and int(canonical["id"]) != int(created["id"]):
            # Another process created the same project at the same moment: the oldest one
            # is the project; this one is renamed so people see it is to be deleted (the
            # integration user may not delete projects).
            await self.client.put(
                f"/projects/{int(created['id'])}.json",
                {"project": {"name": f"{DUPLICATE_MARK} {spec.identifier}"}},
            )
            return canonical
        return created

    async def _canonical(self, spec: PsaProjectSpec, field_id: int) -> dict[str, Any] | None:
        """The oldest project with this identifier (and ERP code) that is not a duplicate."""
        same_code = await self.client.pages(
            "/projects.json", "projects", {f"cf_{field_id}": spec.erp_project_code}
        )
        mine = sorted(
            (
                p
                for p in same_code
                if p.get("identifier") == spec.identifier
                and not str(p.get("name", "")).startswith(DUPLICATE_MARK)
            ),
            key=lambda p: int(p["id"]),
        )
        return dict(mine[0]) if mine else None

    async def _ensure_versions(self, project_id: int, spec: PsaProjectSpec) -> None:
        path = f"/projects/{project_id}/versions.json"
        answer = await self.client.get(path) or {}
        have = {str(v["name"]) for v in answer.get("versions", [])}
        for milestone in spec.milestones:
            if milestone.name in have:
                continue
            version: dict[str, Any] = {"name": milestone.name}
            if milestone.due is not None:
                version["effective_date"] = milestone.due.isoformat()
            try:
                await self.client.post(path, {"version": version})
            except Unprocessable as exc:
                if not exc.taken():
                    raise exc.rejected("fix the billing milestone on the deal") from None
            have.add(milestone.name)

    async def _ensure_wbs(
        self, project_id: int, tasks: tuple[TaskSpec, ...]
    ) -> tuple[dict[str, int], dict[str, int]]:
        """The WBS issues, found or made: (phase -> issue id, task name -> issue id)."""
        phases: dict[str, int] = {}
        ids: dict[str, int] = {}
        if not tasks:
            return phases, ids
        issues = await self.client.pages(
            "/issues.json",
            "issues",
            {"project_id": project_id, "subproject_id": "!*", "status_id": "*"},
        )
        # (parent issue id or None, subject) -> issue id
        have = {
            ((i.get("parent") or {}).get("id"), str(i["subject"])): int(i["id"])
            for i in sorted(issues, key=lambda i: int(i["id"]))[::-1]
        }
        for phase in dict.fromkeys(t.phase for t in tasks):
            parent = have.get((None, phase))
            if parent is None:
                parent = await self._issue(project_id, {"subject": phase})
            phases[phase] = parent
            for task in (t for t in tasks if t.phase == phase):
                if (parent, task.name) not in have:
                    issue: dict[str, Any] = {"subject": task.name, "parent_issue_id": parent}
                    if task.effort_hours is not None:
                        issue["estimated_hours"] = float(task.effort_hours)
                    have[(parent, task.name)] = await self._issue(project_id, issue)
                ids[task.name] = have[(parent, task.name)]
        return phases, ids

    async def _issue(self, project_id: int, fields: dict[str, Any]) -> int:
        try:
            created = await self.client.post(
                "/issues.json", {"issue": {"project_id": project_id, **fields}}
            )
        except Unprocessable as exc:
            raise exc.rejected("fix the project template's phases and tasks") from None
        return int(created["issue"]["id"])

    async def _ensure_members(self, project_id: int, members: list[tuple[int, int]]) -> None:
        if not members:
            return
        path = f"/projects/{project_id}/memberships.json"
        existing = await self.client.pages(path, "memberships")
        have = {int((m.get("user") or m.get("group") or {}).get("id", 0)): m for m in existing}
        for principal, role in members:
            if principal in have:
                continue
            try:
                await self.client.post(
                    path, {"membership": {"user_id": principal, "role_ids": [role]}}
                )
            except Unprocessable as exc:
                if not exc.taken():
                    raise exc.rejected("fix the project's members on the deal") from None
            have[principal] = {}

    # -- amendments ------------------------------------------------------------------------

    async def amend_project(self, spec: PsaAmendmentSpec) -> PsaProject:
        found = await self.find_project(spec.erp_project_code)
        if found is None:
            raise CommandRejectedError(
                SYSTEM,
                f"no Redmine project holds ERP project code {spec.erp_project_code!r}; it was "
                "provisioned but is gone or its code was changed: restore it, then retry",
            )
        async with self._creating.setdefault(found.identifier, asyncio.Lock()):
            await self._amend_versions(found.id, spec)
            phases, ids = await self._ensure_wbs(found.id, spec.tasks)
            await self._amend_estimates(found.id, spec.tasks, ids)
        return PsaProject(found.id, found.identifier, found.url, phases, ids)

    async def _amend_versions(self, project_id: int, spec: PsaAmendmentSpec) -> None:
        answer = await self.client.get(f"/projects/{project_id}/versions.json") or {}
        have = {str(v["name"]): v for v in answer.get("versions", [])}
        due_moved = [
            m
            for m in spec.milestones
            if m.name in have
            and m.due is not None
            and have[m.name].get("effective_date") != m.due.isoformat()
        ]
        for milestone in due_moved:
            assert milestone.due is not None
            version_id = int(have[milestone.name]["id"])
            try:
                await self.client.put(
                    f"/versions/{version_id}.json",
                    {"version": {"effective_date": milestone.due.isoformat()}},
                )
            except Unprocessable as exc:
                raise exc.rejected("fix the billing milestone's due date on the deal") from None
        created = PsaProjectSpec(
            spec.identifier, "", spec.erp_project_code, milestones=spec.milestones
        )
        await self._ensure_versions(project_id, created)

    async def _amend_estimates(
        self, project_id: int, tasks: tuple[TaskSpec, ...], ids: dict[str, int]
    ) -> None:
        wanted = {ids[t.name]: t.effort_hours for t in tasks if t.effort_hours is not None}
        if not wanted:
            return
        issues = await self.client.pages(
            "/issues.json",
            "issues",
            {"project_id": project_id, "subproject_id": "!*", "status_id": "*"},
        )
        held = {int(i["id"]): i.get("estimated_hours") for i in issues}
        for issue_id, hours in sorted(wanted.items()):
            now = held.get(issue_id)
            if now is not None and abs(float(now) - float(hours)) < 0.005:
                continue
            try:
                await self.client.put(
                    f"/issues/{issue_id}.json", {"issue": {"estimated_hours": float(hours)}}
                )
            except Unprocessable as exc:
                raise exc.rejected("fix the task's hours in the change order") from None
