"""The CRM write-back as SQL on the CRM's own tables, standing in for the Salesforce API.

It connects as a role that may update only the fields pssync owns (connectors/sql/crm.sql).
A field left None is not touched; the sync error is written together with the sync status
(None clears it), because an error belongs to the status it explains. A write that changes
nothing is not made, so a repeated command causes no new change data (no extra echo), and
`last_synced_at__c` moves only when something else did.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from connectors.ports import CrmInvoiceStatus, CrmWriteBack
from streams.errors import ApplicationUnavailableError, CommandRejectedError
from streams.settings import Settings, redact_url

SYSTEM = "CRM"


class SqlCrm:
    """Implements `connectors.ports.Crm`."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = redact_url(url)
        self._engine: AsyncEngine = create_async_engine(
            url,
            connect_args={"connect_timeout": max(1, int(timeout))},
            pool_pre_ping=True,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SqlCrm:
        return cls(settings.crm_writeback_url)

    async def aclose(self) -> None:
        await self._engine.dispose()

    async def write_back(self, change: CrmWriteBack) -> None:
        opportunity: dict[str, Any] = {}
        if change.project_code is not None:
            opportunity["project_code__c"] = change.project_code
        if change.psa_project_url is not None:
            opportunity["psa_project_url__c"] = change.psa_project_url
        if change.sync_status is not None:
            opportunity["sync_status__c"] = change.sync_status
            opportunity["sync_error__c"] = change.sync_error
        account: dict[str, Any] = {}
        if change.erp_customer_id is not None:
            if change.account_id is None:
                raise CommandRejectedError(
                    SYSTEM,
                    "an ERP customer id to write back without the account it belongs to; "
                    "the command must name the account",
                )
            account["erp_customer_id__c"] = change.erp_customer_id
        await self._write(change.opportunity_id, opportunity, account, change.account_id)

    async def write_invoice_status(self, status: CrmInvoiceStatus) -> None:
        """The deal's invoicing on its opportunity; written only when a value differs."""
        await self._write(
            status.opportunity_id,
            {
                "invoiced_to_date__c": status.invoiced_to_date,
                "last_invoice_number__c": status.last_invoice_number,
                "last_invoice_status__c": status.last_invoice_status,
                "payment_status__c": status.payment_status,
            },
        )

    async def _write(
        self,
        opportunity_id: str,
        opportunity: dict[str, Any],
        account: dict[str, Any] | None = None,
        account_id: str | None = None,
    ) -> None:
        try:
            async with self._engine.begin() as conn:
                if account:
                    await _update(conn, "account", str(account_id), account, stamp=False)
                await _update(conn, "opportunity", opportunity_id, opportunity, stamp=True)
        except (OperationalError, InterfaceError) as exc:
            raise ApplicationUnavailableError(
                SYSTEM, f"cannot write to the CRM at {self.url} ({type(exc.orig).__name__})"
            ) from exc
        except DBAPIError as exc:
            # Refused on its merits: a value the column does not take, or a missing grant.
            reason = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
            raise CommandRejectedError(
                SYSTEM,
                f"write-back to opportunity {opportunity_id} refused ({reason}); fix "
                "the value, or grant the write-back role what connectors/sql/crm.sql grants",
            ) from exc


async def _update(
    conn: Any, table: str, row_id: str, values: dict[str, Any], *, stamp: bool
) -> None:
    """Update `values` on one row if any of them differs; the row must exist."""
    if values:
        sets = ", ".join(f"{c} = :{c}" for c in values)
        if stamp:
            sets += ", last_synced_at__c = now()"
        changed = " OR ".join(f"{c} IS DISTINCT FROM :{c}" for c in values)
        # Column names come from the code above, never from the command: safe to format.
        result = await conn.execute(
            text(
                f"UPDATE sales.{table} SET {sets} WHERE id = :row_id AND ({changed}) RETURNING id"
            ),
            {**values, "row_id": row_id},
        )
        if result.first() is not None:
            return
    found = await conn.execute(
        text(f"SELECT id FROM sales.{table} WHERE id = :row_id"), {"row_id": row_id}
    )
    if found.first() is None:
        raise CommandRejectedError(
            SYSTEM,
            f"no {table} {row_id!r} in the CRM (deleted or merged?); correct the deal or "
            "close its exception",
        )
