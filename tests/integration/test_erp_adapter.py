"""The ERP port against the real Tryton of the local stack, as the integration user.

Counts are taken through Tryton's own API (search_count), with the integration user's
session; every test makes its own codes and deal keys.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from connectors.erp import TrytonErp, TrytonRpc
from connectors.ports import CustomerSpec, ProjectSpec, TaskSpec
from streams.errors import ApplicationUnavailableError, CommandRejectedError
from streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T = TypeVar("T")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _run(body: Callable[[TrytonErp], Awaitable[T]]) -> T:
    async def go() -> T:
        erp = TrytonErp.from_settings(Settings.from_env())
        try:
            return await body(erp)
        finally:
            await erp.aclose()

    return asyncio.run(go())


async def _count(erp: TrytonErp, model: str, domain: list[Any]) -> int:
    return int(await erp.rpc.model(model, "search_count", domain))


def _project(customer_id: int, **kw: Any) -> ProjectSpec:
    values: dict[str, Any] = {
        "key": str(uuid.uuid4()),
        "name": _unique("Rollout"),
        "customer_id": customer_id,
        "invoice_method": "timesheet",
        "currency": "EUR",
        "list_price": Decimal("120.50"),
        "tasks": (
            TaskSpec("Design", "Plan", Decimal("16"), Decimal("150")),
            TaskSpec("Build", "Deliver", Decimal("40")),
            TaskSpec("Hand-over", "Deliver"),
        ),
    }
    return ProjectSpec(**{**values, **kw})


def test_customer_is_ensured_once_by_its_code() -> None:
    code = _unique("crm:account:001")

    async def body(erp: TrytonErp) -> None:
        first = await erp.ensure_customer(CustomerSpec(code=code, name="Acme", country="DE"))
        again = await erp.ensure_customer(CustomerSpec(code=code, name="Acme renamed"))
        assert first == again and first.code == code
        assert await _count(erp, "party.party", [("code", "=", code)]) == 1

    _run(body)


def test_concurrent_ensures_of_a_new_customer_make_one_party() -> None:
    code = _unique("crm:account:race")

    async def body(erp: TrytonErp) -> None:
        # Each caller has its own session, as separate workers would; all logged in first,
        # so the five lookups and creates really overlap (all five find nothing, four
        # creates lose on the unique code and find the winner's party).
        callers = [TrytonErp.from_settings(Settings.from_env()) for _ in range(5)]
        try:
            for c in callers:
                await c.rpc.model("res.user", "get_preferences", True)
            found = await asyncio.gather(
                *(c.ensure_customer(CustomerSpec(code=code, name="Race")) for c in callers)
            )
        finally:
            for c in callers:
                await c.aclose()
        assert len({f.id for f in found}) == 1
        assert await _count(erp, "party.party", [("code", "=", code)]) == 1


def test_project_is_numbered_by_the_erp_and_ensured_once() -> None:
    async def body(erp: TrytonErp) -> None:
        customer = await erp.ensure_customer(CustomerSpec(code=_unique("C"), name="Customer"))
        spec = _project(customer.id)
        project = await erp.ensure_project(spec)
        again = await erp.ensure_project(spec)
        assert again == project
        # The ERP assigned the number from its sequence (the stack's setup prefixes it).
        assert project.number.startswith("PRJ-"), project.number
        assert set(project.task_ids) == {"Design", "Build", "Hand-over"}
        assert await _count(erp, "project.work", [("id", "=", project.id)]) == 1
        assert await _count(erp, "project.work", [("parent", "=", project.id)]) == 3
        (work,) = await erp.rpc.model(
            "project.work",
            "read",
            [project.id],
            ["number", "name", "type", "party", "project_invoice_method", "list_price"],
        )
        assert work["type"] == "project" and work["party"] == customer.id
        assert work["project_invoice_method"] == "timesheet"
        assert Decimal(work["list_price"]["decimal"]) == Decimal("120.50")
        tasks = await erp.rpc.model(
            "project.work",
            "read",
            list(project.task_ids.values()),
            ["name", "type", "parent", "list_price", "effort_duration"],
        )
        by_name = {t["name"]: t for t in tasks}
        assert all(t["type"] == "task" and t["parent"] == project.id for t in tasks)
        assert Decimal(by_name["Design"]["list_price"]["decimal"]) == Decimal("150")
        assert Decimal(by_name["Build"]["list_price"]["decimal"]) == Decimal("120.50")
        assert by_name["Build"]["effort_duration"]["seconds"] == 40 * 3600

        # A task added to the template later is added; the others stay as they are.
        more = _project(customer.id, key=spec.key, tasks=(*spec.tasks, TaskSpec("Audit", "Run")))
        grown = await erp.ensure_project(more)
        assert grown.id == project.id and grown.number == project.number
        assert {k: grown.task_ids[k] for k in project.task_ids} == project.task_ids
        assert await _count(erp, "project.work", [("parent", "=", project.id)]) == 4

        # Another deal is another project, with its own number.
        other = await erp.ensure_project(_project(customer.id, tasks=()))
        assert other.id != project.id and other.number != project.number

    _run(body)


def test_refusals_say_what_to_fix() -> None:
    async def body(erp: TrytonErp) -> None:
        customer = await erp.ensure_customer(CustomerSpec(code=_unique("C"), name="Customer"))
        with pytest.raises(CommandRejectedError, match="works in EUR, the deal in USD"):
            await erp.ensure_project(_project(customer.id, currency="USD"))
        with pytest.raises(CommandRejectedError, match="invoice method 'barter'"):
            await erp.ensure_project(_project(customer.id, invoice_method="barter"))
        # The ERP's own validation: a party that does not exist.
        with pytest.raises(CommandRejectedError, match=r"project\.work\.create refused"):
            await erp.ensure_project(_project(10**9))

    _run(body)


def test_expired_session_is_renewed() -> None:
    async def body(erp: TrytonErp) -> None:
        code = _unique("C")
        await erp.ensure_customer(CustomerSpec(code=code, name="Customer"))
        erp.rpc._auth = {"Authorization": "Session cHNzeW5jOjQ6bm90LWEtdG9rZW4="}
        assert (await erp.ensure_customer(CustomerSpec(code=code, name="x"))).code == code

    _run(body)


def test_unreachable_or_misconfigured_erp_is_unavailable() -> None:
    s = Settings.from_env()

    async def call(rpc: TrytonRpc) -> None:
        erp = TrytonErp(rpc)
        try:
            await erp.ensure_customer(CustomerSpec(code=_unique("C"), name="x"))
        finally:
            await erp.aclose()

    with pytest.raises(
        ApplicationUnavailableError, match=re.escape("cannot reach http://127.0.0.1:1")
    ):
        asyncio.run(call(TrytonRpc("http://127.0.0.1:1", s.erp_database, s.erp_user, "x")))
    wrong = "wrong-" + uuid.uuid4().hex
    with pytest.raises(ApplicationUnavailableError, match="PSSYNC_ERP_PASSWORD_FILE") as info:
        asyncio.run(call(TrytonRpc(s.erp_url, s.erp_database, s.erp_user, wrong)))
    assert wrong not in str(info.value)


def test_integration_user_cannot_renumber_or_delete_projects() -> None:
    async def body(erp: TrytonErp) -> None:
        customer = await erp.ensure_customer(CustomerSpec(code=_unique("C"), name="Customer"))
        project = await erp.ensure_project(_project(customer.id, tasks=()))
        with pytest.raises(CommandRejectedError, match="not allowed"):
            await erp.rpc.model("project.work", "delete", [project.id])
        sequences = await erp.rpc.model("ir.sequence", "search", [], 0, 1, None)
        with pytest.raises(CommandRejectedError, match="not allowed"):
            await erp.rpc.model("ir.sequence", "write", sequences, {"prefix": "X-"})
        with pytest.raises(CommandRejectedError, match="not allowed"):
            await erp.rpc.model("company.company", "write", [erp.rpc.context["company"]], {})

    _run(body)
