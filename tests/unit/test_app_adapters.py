"""How the application adapters classify answers they get, and the PSA identifier rule.

The integration tests run the adapters against the real Tryton and Redmine; these cover the
answers a healthy local stack never gives (busy, broken, throttled), on canned HTTP answers.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.erp import TrytonErp, TrytonRpc
from connectors.ports import CustomerSpec, PsaProjectSpec
from connectors.psa import RedmineClient, RedminePsa, psa_identifier
from streams.errors import ApplicationUnavailableError, CommandRejectedError
from streams.settings import Settings

REDMINE_IDENTIFIER = re.compile(r"^(?!\d+$)[a-z0-9_-]{1,100}$")


@given(st.text(min_size=1, max_size=150))
def test_psa_identifier_is_always_valid_for_redmine(code: str) -> None:
    ident = psa_identifier(code)
    assert REDMINE_IDENTIFIER.match(ident) and ident != "new"
    assert ident[0].isalpha()
    assert psa_identifier(code) == ident  # deterministic: the project is found again by it


@pytest.mark.parametrize(
    ("code", "ident"),
    [("PRJ-00042", "prj-00042"), ("42", "p-42"), ("new", "p-new"), ("ACME / 7", "acme-7")],
)
def test_psa_identifier_examples(code: str, ident: str) -> None:
    assert psa_identifier(code) == ident


def _erp(handler: Callable[[dict[str, Any]], httpx.Response]) -> TrytonErp:
    def route(request: httpx.Request) -> httpx.Response:
        return handler(json.loads(request.content))

    http = httpx.AsyncClient(transport=httpx.MockTransport(route))
    return TrytonErp(TrytonRpc("http://erp.invalid", "erp", "pssync", "s3cret", http=http))


def _login_then(answer: Callable[[dict[str, Any]], httpx.Response]) -> Any:
    def handler(body: dict[str, Any]) -> httpx.Response:
        if body["method"] == "common.db.login":
            return httpx.Response(200, json={"id": 1, "result": [4, "token"]})
        if body["method"] == "model.res.user.get_preferences":
            return httpx.Response(200, json={"id": 1, "result": {"company": 1}})
        return answer(body)

    return handler


def _customer(erp: TrytonErp) -> None:
    async def go() -> None:
        try:
            await erp.ensure_customer(CustomerSpec(code="C1", name="Acme"))
        finally:
            await erp.aclose()

    asyncio.run(go())


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_erp_busy_or_broken_is_unavailable(status: int) -> None:
    erp = _erp(_login_then(lambda body: httpx.Response(status)))
    with pytest.raises(ApplicationUnavailableError, match=f"HTTP {status}"):
        _customer(erp)


def test_erp_timeout_is_unavailable() -> None:
    def handler(body: dict[str, Any]) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    with pytest.raises(ApplicationUnavailableError, match="ReadTimeout"):
        _customer(_erp(handler))


def test_erp_user_error_is_rejected_with_the_erps_words() -> None:
    def answer(body: dict[str, Any]) -> httpx.Response:
        if body["method"].endswith("search_read"):
            return httpx.Response(200, json={"id": 1, "result": []})
        error = ["UserError", ["The name is required.", "Fill it in.", None]]
        return httpx.Response(200, json={"id": 1, "error": error})

    words = re.escape("The name is required. - Fill it in.")
    with pytest.raises(CommandRejectedError, match=words):
        _customer(_erp(_login_then(answer)))


def test_erp_server_fault_is_unavailable_without_its_traceback() -> None:
    def answer(body: dict[str, Any]) -> httpx.Response:
        error = ["KeyError: 'res.user'\nsecret line", "Traceback ... password=s3cret"]
        return httpx.Response(200, json={"id": 1, "error": error})

    with pytest.raises(ApplicationUnavailableError) as info:
        _customer(_erp(_login_then(answer)))
    assert "KeyError" in str(info.value)
    assert "s3cret" not in str(info.value) and "secret line" not in str(info.value)


def test_erp_expired_session_logs_in_once_again() -> None:
    logins: list[int] = []
    sessions: list[str] = []

    def handler(body: dict[str, Any]) -> httpx.Response:
        if body["method"] == "common.db.login":
            logins.append(1)
            return httpx.Response(200, json={"id": 1, "result": [4, f"t{len(logins)}"]})
        if body["method"] == "model.res.user.get_preferences":
            return httpx.Response(200, json={"id": 1, "result": {"company": 1}})
        sessions.append(body["method"])
        if len(logins) == 1:
            return httpx.Response(401)
        return httpx.Response(200, json={"id": 1, "result": [{"id": 9, "code": "C1"}]})

    _customer(_erp(handler))
    assert len(logins) == 2


def _psa(status: int, body: Any = None) -> RedminePsa:
    def route(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    http = httpx.AsyncClient(transport=httpx.MockTransport(route))
    return RedminePsa(RedmineClient("http://psa.invalid", "k3y", http=http))


def _project(psa: RedminePsa) -> None:
    async def go() -> None:
        try:
            await psa.ensure_project(
                PsaProjectSpec(identifier="prj-1", name="P", erp_project_code="PRJ-1")
            )
        finally:
            await psa.aclose()

    asyncio.run(go())


@pytest.mark.parametrize("status", [429, 500, 503])
def test_psa_busy_or_broken_is_unavailable(status: int) -> None:
    with pytest.raises(ApplicationUnavailableError, match=f"HTTP {status}"):
        _project(_psa(status))


def test_psa_forbidden_is_rejected_naming_the_permission_to_grant() -> None:
    with pytest.raises(CommandRejectedError, match="grant its role the permission"):
        _project(_psa(403))


def test_psa_validation_errors_are_rejected_with_redmines_words() -> None:
    errors = {"errors": ["Name cannot be blank"]}

    def route(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/projects/pssync-integration.json":
            fields = [{"id": 2, "name": "ERP project code", "value": ""}]
            return httpx.Response(200, json={"project": {"custom_fields": fields}})
        if request.method == "GET":
            return httpx.Response(200, json={"projects": [], "total_count": 0})
        return httpx.Response(422, json=errors)

    http = httpx.AsyncClient(transport=httpx.MockTransport(route))
    psa = RedminePsa(RedmineClient("http://psa.invalid", "k3y", http=http))
    with pytest.raises(CommandRejectedError, match="Name cannot be blank") as info:
        _project(psa)
    assert "k3y" not in str(info.value)


def test_adapter_settings_default_to_the_crm_database_and_mask_passwords() -> None:
    s = Settings.from_env({"PSSYNC_CRM_DB_HOST": "crm.example", "PSSYNC_CRM_DB_NAME": "sales"})
    assert s.crm_writeback_url == "postgresql+psycopg://pssync_crm_writeback@crm.example:5432/sales"
    assert s.psa_directory_project == "pssync-integration"
    url = "postgresql+psycopg://pssync_crm_writeback:hunter22@crm.example/sales"
    described = Settings.from_env({"PSSYNC_CRM_WRITEBACK_URL": url}).describe()
    assert "hunter22" not in described["crm_writeback_url"]
