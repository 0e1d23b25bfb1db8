"""ERP (Tryton) rows -> canonical legal entities and reference currencies and tax codes.

Tryton keeps a company's name, country and currency on other rows (its party, address,
currency) and a tax's jurisdiction nowhere; a single CDC row cannot carry them. So the ERP
says which companies and taxes exist and their own fields, and pssync's reference file
(legal entity profiles, by ERP company id) supplies the rest: a company without a profile is
a BadEventError saying to add one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

from streams.changes import Change
from streams.errors import BadEventError
from streams.mappings.envelope import envelope
from streams.mappings.values import day
from streams.reference.model import ReferenceData, load

SYSTEM = "erp"


def _required(row: dict[str, Any], field: str, table: str) -> Any:
    value = row.get(field)
    if value is None or value == "":
        raise BadEventError(f"ERP {table} row lacks required field {field!r}")
    return value


def _timestamp(row: dict[str, Any]) -> datetime | None:
    """Tryton's write_date (or create_date): `timestamp without time zone` in UTC, which
    Debezium sends as microseconds since the epoch."""
    value = row.get("write_date") or row.get("create_date")
    if value is None:
        return None
    if isinstance(value, int):
        return datetime.fromtimestamp(value / 1_000_000, UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadEventError(f"write_date={value!r} is not a timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _active(row: dict[str, Any]) -> bool:
    # Tryton's `active` is nullable; a null means the default, active.
    return row.get("active") is not False


def _deleted_row(change: Change, table: str, what: str) -> dict[str, Any]:
    """The old row of a delete; reference entries are keyed by code, which only a full old
    row carries."""
    row = change.before or {}
    if not row.get(what):
        raise BadEventError(
            f"ERP {table} {change.key} was deleted and its delete event carries no {what} "
            "(the table's replica identity holds only the id), so its reference entry cannot "
            "be named; deactivate it in the ERP instead of deleting it"
        )
    return row


def map_currency(change: Change, causation: str) -> tuple[str, dict[str, Any]]:
    """(ISO code, CurrencyEvent record) for a change of currency_currency."""
    table = "currency_currency"
    row = _deleted_row(change, table, "code") if change.op == "delete" else change.after or {}
    code = str(_required(row, "code", table)).strip().upper()
    if len(code) != 3 or not code.isalpha():
        raise BadEventError(f"ERP currency code {code!r} is not an ISO 4217 code")
    env = envelope(change, SYSTEM, code, code, causation)
    if change.op == "delete":
        return code, {"envelope": env, "data": None}
    digits = row.get("digits")
    data = {
        "code": code,
        "name": str(_required(row, "name", table)),
        "minor_units": 2 if digits is None else int(digits),
        "symbol": row.get("symbol") or None,
        "is_active": _active(row),
    }
    return code, {"envelope": env, "data": data}


class ReferenceResolver:
    """ERP mappings that complete a row with pssync's reference file (read once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: ReferenceData | None = None

    @property
    def data(self) -> ReferenceData:
        if self._data is None:
            self._data = load(self.path)
        return self._data

    def _profile(self, company: Any, what: str) -> dict[str, Any]:
        profile = self.data.legal_entity_for_company(str(company))
        if profile is None:
            raise BadEventError(
                f"{what} belongs to ERP company {company}, which no legal entity in "
                f"{self.path} names as its erp_company; add it there (legal_entities), "
                "load it with `pssync reference load`, then rerun this dead letter"
            )
        return profile

    def map_company(self, change: Change, causation: str) -> tuple[str, dict[str, Any]]:
        """(legal entity code, LegalEntityEvent record) for a change of company_company."""
        row = (change.before if change.op == "delete" else change.after) or {}
        company = row.get("id", change.key)
        profile = self._profile(company, f"company_company {company}")
        key = str(profile["code"])
        env = envelope(change, SYSTEM, key, key, causation)
        if change.op == "delete":
            return key, {"envelope": env, "data": None}
        data = {
            "legal_entity_id": key,
            "erp_id": str(company),
            "name": profile["name"],
            "country": profile["country"],
            "base_currency": profile["base_currency"],
            "tax_registration": None,
            "region": self.data.region_of(key),
            "parent_id": None,
            "is_active": bool(profile["is_active"]),
            "last_modified_at": _timestamp(row),
        }
        return key, {"envelope": env, "data": data}

    def _jurisdiction(self, code: str, home: str) -> str:
        named = self.data.jurisdictions_of_tax(code)
        if not named or home in named:
            return home
        return named[0]

    def map_tax(self, change: Change, causation: str) -> tuple[str, dict[str, Any]]:
        """(tax code, TaxCodeEvent record) for a change of account_tax.

        The code is the tax's name in Tryton (what its users pick on invoice lines). The
        jurisdiction is the one the reference file applies this tax in (its company's country
        first when several do), else the country of the legal entity owning the tax.
        """
        table = "account_tax"
        row = _deleted_row(change, table, "name") if change.op == "delete" else change.after or {}
        code = str(_required(row, "name", table)).strip()
        env = envelope(change, SYSTEM, code, code, causation)
        if change.op == "delete":
            return code, {"envelope": env, "data": None}
        company = _required(row, "company", table)
        profile = self._profile(company, f"tax {code!r}")
        if row.get("type") != "percentage":
            raise BadEventError(
                f"ERP tax {code!r} is of type {row.get('type')!r}; only percentage taxes "
                "are tax codes (a fixed amount has no rate to apply)"
            )
        try:
            rate = (Decimal(str(_required(row, "rate", table))) * 100).quantize(Decimal("0.0001"))
        except InvalidOperation:
            raise BadEventError(f"ERP tax {code!r} rate={row.get('rate')!r} is no number") from None
        data = {
            "code": code,
            "name": str(row.get("description") or code),
            "jurisdiction": self._jurisdiction(code, profile["country"]),
            "rate_percent": rate,
            "valid_from": day(row.get("start_date"), "start_date"),
            "valid_to": day(row.get("end_date"), "end_date"),
            "is_active": _active(row),
        }
        return code, {"envelope": env, "data": data}


@cache
def resolver(path: Path) -> ReferenceResolver:
    """One resolver per reference file, so every topology of a process shares its routes."""
    return ReferenceResolver(path)
