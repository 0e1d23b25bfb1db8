"""The CRM write-back on a real PostgreSQL CRM database of its own, as its least-rights role."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from connectors.crm import SqlCrm
from connectors.ports import CrmWriteBack
from connectors.sql import apply_schema, db_url
from streams.errors import ApplicationUnavailableError, CommandRejectedError
from streams.settings import Settings, SourceDb
from tests.sandbox import admin_engine

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def crm_db(base_settings: Settings) -> Iterator[SourceDb]:
    """A CRM database with the schema applied (twice: it is idempotent) and one deal."""
    name = "crm_wb" + uuid.uuid4().hex[:10]
    admin = admin_engine(base_settings)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db = SourceDb(
        base_settings.crm_db.host,
        base_settings.crm_db.port,
        base_settings.crm_db.user,
        base_settings.crm_db.password,
        name,
    )
    try:
        apply_schema(db, "crm")
        apply_schema(db, "crm")
        _sql(
            db,
            "INSERT INTO sales.account (id, name) VALUES ('001A', 'Acme');"
            "INSERT INTO sales.opportunity (id, account_id, name, stage_name, "
            "last_modified_date) VALUES ('006A', '001A', 'Rollout', 'Closed Won', "
            "'2026-01-01T00:00:00Z')",
        )
        yield db
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _sql(db: SourceDb, sql: str) -> list[dict[str, Any]]:
    engine = create_engine(db_url(db))
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql))
            return [dict(r) for r in result.mappings()] if result.returns_rows else []
    finally:
        engine.dispose()


def _writeback_url(db: SourceDb) -> str:
    return f"postgresql+psycopg://pssync_crm_writeback@{db.host}:{db.port}/{db.dbname}"


async def _write(url: str, *changes: CrmWriteBack) -> None:
    crm = SqlCrm(url)
    try:
        for change in changes:
            await crm.write_back(change)
    finally:
        await crm.aclose()


def test_write_back_updates_the_owned_fields_once(crm_db: SourceDb) -> None:
    url = _writeback_url(crm_db)
    provisioned = CrmWriteBack(
        opportunity_id="006A",
        account_id="001A",
        erp_customer_id="42",
        project_code="PRJ-00042",
        psa_project_url="http://psa/projects/prj-00042",
        sync_status="provisioned",
    )
    asyncio.run(_write(url, CrmWriteBack("006A", sync_status="exception", sync_error="no PM")))
    asyncio.run(_write(url, provisioned))
    (opp,) = _sql(crm_db, "SELECT * FROM sales.opportunity WHERE id = '006A'")
    assert opp["project_code__c"] == "PRJ-00042"
    assert opp["psa_project_url__c"] == "http://psa/projects/prj-00042"
    assert opp["sync_status__c"] == "provisioned"
    assert opp["sync_error__c"] is None  # the new status cleared the old error
    assert opp["last_synced_at__c"] is not None
    # Fields pssync does not own are untouched.
    assert opp["stage_name"] == "Closed Won" and opp["name"] == "Rollout"
    assert str(opp["last_modified_date"].date()) == "2026-01-01"
    (acc,) = _sql(crm_db, "SELECT erp_customer_id__c FROM sales.account WHERE id = '001A'")
    assert acc["erp_customer_id__c"] == "42"

    # The same command again changes nothing, not even the sync time (no new change data).
    xmin = _sql(crm_db, "SELECT xmin::text AS x FROM sales.opportunity WHERE id = '006A'")
    asyncio.run(_write(url, provisioned))
    assert _sql(crm_db, "SELECT xmin::text AS x FROM sales.opportunity WHERE id = '006A'") == xmin
    (again,) = _sql(crm_db, "SELECT last_synced_at__c FROM sales.opportunity WHERE id = '006A'")
    assert again["last_synced_at__c"] == opp["last_synced_at__c"]


def test_unknown_opportunity_is_rejected(crm_db: SourceDb) -> None:
    with pytest.raises(CommandRejectedError, match="no opportunity '006-missing'"):
        asyncio.run(_write(_writeback_url(crm_db), CrmWriteBack("006-missing", sync_status="x")))
    with pytest.raises(CommandRejectedError, match="no account"):
        asyncio.run(
            _write(
                _writeback_url(crm_db),
                CrmWriteBack("006A", account_id="001-missing", erp_customer_id="1"),
            )
        )


def test_writeback_role_can_change_nothing_else(crm_db: SourceDb) -> None:
    role = SourceDb(crm_db.host, crm_db.port, "pssync_crm_writeback", "", crm_db.dbname)
    for forbidden in (
        "UPDATE sales.opportunity SET stage_name = 'Closed Lost' WHERE id = '006A'",
        "UPDATE sales.account SET name = 'Evil' WHERE id = '001A'",
        "SELECT name FROM sales.opportunity",
        "INSERT INTO sales.account (id, name) VALUES ('001B', 'x')",
        "DELETE FROM sales.opportunity WHERE id = '006A'",
    ):
        with pytest.raises(ProgrammingError, match="permission denied"):
            _sql(role, forbidden)


def test_unreachable_crm_is_unavailable() -> None:
    with pytest.raises(ApplicationUnavailableError, match="cannot write to the CRM"):
        asyncio.run(
            _write(
                "postgresql+psycopg://pssync_crm_writeback@127.0.0.1:1/crm",
                CrmWriteBack("006A", sync_status="x"),
            )
        )
