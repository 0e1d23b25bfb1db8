"""The quote-to-cash part of `pssync demo`: deals closing won in the CRM, provisioned by the saga.

The deals are declared below (accounts, opportunities, line items per service line of the
reference file, milestones); every run gives them new CRM ids, so the demo can run again
and again. The ERP and the PSA are read back through their adapters, read only.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import create_engine, text

from connectors.sql import db_url
from schemas.registry import Registry
from schemas.serde import Decoder
from streams.deals.sources import VIEWS
from streams.errors import PssyncError
from streams.mappings.crm import customer_key, opportunity_key
from streams.mappings.envelope import correlation_id
from streams.settings import Settings
from tables.views import read_latest

# The PSA's project manager the local stack creates (docker/local/components/psa_setup.rb).
DEMO_PM = "demo.pm@localhost.invalid"


@dataclass(frozen=True)
class DemoAccount:
    name: str
    country: str
    tax_id: str


@dataclass(frozen=True)
class DemoDeal:
    account: int  # index in ACCOUNTS
    name: str
    billing: str  # as the CRM spells it
    lines: tuple[tuple[str, int, int], ...]  # (service line, hours, price per hour)
    milestones: tuple[tuple[str, int], ...] = ()  # (name, percent of the amount)
    currency: str = "EUR"
    region: str = "EMEA"
    pm: str = DEMO_PM
    invalid_because: str = ""  # what the demo expects pssync to say about it
    role: str = ""  # what the demo does with it once provisioned (TIME_AND_INVOICE, CHANGED)


ACCOUNTS = (
    DemoAccount("Acme Robotics", "DE", "DE811907980"),
    DemoAccount("Borealis Energie", "FR", "FR40303265045"),
    DemoAccount("Castell Logistik", "DE", "DE129273398"),
    DemoAccount("Dunmore Trading", "DE", "DE282741168"),
)
# The ERP's company works in EUR and contracts EMEA deals; the last deal is in a currency
# its legal entity does not allow, so it parks before anything is created.
DEALS = (
    DemoDeal(0, "Platform architecture review", "Fixed Fee", (("ARCH", 40, 150),)),
    DemoDeal(
        0,
        "Operating model advisory",
        "Time and Materials",
        (("CONSULT", 60, 130), ("PM", 20, 110)),
        role="time_and_invoice",
    ),
    DemoDeal(
        1,
        "ERP rollout",
        "Milestone",
        (("IMPL", 200, 140),),
        (("Design sign-off", 30), ("Go-live", 70)),
    ),
    DemoDeal(
        2, "Warehouse advisory", "Time and Materials", (("CONSULT", 40, 125),), role="changed"
    ),
    DemoDeal(1, "Grid architecture review", "Fixed Fee", (("ARCH", 30, 150),)),
    DemoDeal(
        3,
        "Expansion study Japan",
        "Time and Materials",
        (("CONSULT", 30, 120),),
        currency="JPY",
        invalid_because="currency_not_allowed",
    ),
)

TIME_AND_INVOICE, CHANGED = "time_and_invoice", "changed"
# Time a consultant logs on the time-and-materials deal's project: (task, hours, approved).
TIME = (("Kick-off workshop", 6.0, True), ("Current-state assessment", 2.5, False))
# An expense the consultant keeps in Redmine on that project: (subject, amount, category).
EXPENSE = ("Train to the kick-off workshop", "240.00", "travel")
# The change order on the other deal: more CONSULT hours, and a milestone.
CHANGE_ORDER_LINES = (("CONSULT", 16, 125),)
CHANGE_ORDER_MILESTONE = ("Phase 2 read-out", 60)  # (name, days from today)


@dataclass(frozen=True)
class Seeded:
    """One seeded deal: its CRM ids and what pssync calls it."""

    deal: DemoDeal
    crm_id: str
    account_id: str

    @property
    def key(self) -> str:
        return opportunity_key(self.crm_id)

    @property
    def customer(self) -> str:
        return customer_key(self.account_id)

    @property
    def amount(self) -> int:
        return sum(hours * price for _, hours, price in self.deal.lines)


def new_run() -> str:
    """A run id short enough for CRM ids (18 characters), unique per run."""
    return uuid.uuid4().hex[:7]


def seed(settings: Settings, run: str) -> list[Seeded]:
    """Accounts, open opportunities, their line items and milestones (one transaction)."""
    accounts = [f"001Q{run}{i}" for i in range(len(ACCOUNTS))]
    seeded = [Seeded(d, f"006Q{run}{i}", accounts[d.account]) for i, d in enumerate(DEALS)]
    today = date.today()
    engine = create_engine(db_url(settings.crm_db))
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO sales.account (id, name, billing_country, currency_iso_code, "
                    "tax_id__c) VALUES (:id, :name, :country, 'EUR', :tax)"
                ),
                [
                    {"id": aid, "name": f"{a.name} ({run})", "country": a.country, "tax": a.tax_id}
                    for aid, a in zip(accounts, ACCOUNTS, strict=True)
                ],
            )
            for s in seeded:
                d = s.deal
                conn.execute(
                    text(
                        "INSERT INTO sales.opportunity (id, account_id, name, stage_name, "
                        "amount, currency_iso_code, close_date, probability, billing_type__c, "
                        "delivery_region__c, project_manager_email__c, service_lines__c, "
                        "sow_reference__c, type) VALUES (:id, :account, :name, "
                        "'Negotiation/Review', :amount, :currency, :close, 75, :billing, "
                        ":region, :pm, :lines, :sow, 'New Business')"
                    ),
                    {
                        "id": s.crm_id,
                        "account": s.account_id,
                        "name": d.name,
                        "amount": s.amount,
                        "currency": d.currency,
                        "close": today,
                        "billing": d.billing,
                        "region": d.region,
                        "pm": d.pm,
                        "lines": ";".join(code for code, _, _ in d.lines),
                        "sow": f"SOW-{s.crm_id}",
                    },
                )
                for n, (code, hours, price) in enumerate(d.lines):
                    conn.execute(
                        text(
                            "INSERT INTO sales.opportunity_line_item (id, opportunity_id, "
                            "service_line__c, description, quantity, unit_price, "
                            "currency_iso_code) VALUES (:id, :opp, :code, :desc, :q, :p, :c)"
                        ),
                        {
                            "id": f"00kQ{run}{s.crm_id[-1]}{n}",
                            "opp": s.crm_id,
                            "code": code,
                            "desc": f"{code} hours",
                            "q": hours,
                            "p": price,
                            "c": d.currency,
                        },
                    )
                for n, (name, percent) in enumerate(d.milestones):
                    conn.execute(
                        text(
                            "INSERT INTO sales.billing_milestone (id, opportunity_id, name, "
                            "due_date__c, amount__c, percent__c, currency_iso_code) VALUES "
                            "(:id, :opp, :name, :due, :amount, :pct, :c)"
                        ),
                        {
                            "id": f"a0MQ{run}{s.crm_id[-1]}{n}",
                            "opp": s.crm_id,
                            "name": name,
                            "due": today + timedelta(days=30 * (n + 1)),
                            "amount": s.amount * percent / 100,
                            "pct": percent,
                            "c": d.currency,
                        },
                    )
    finally:
        engine.dispose()
    return seeded


def close_won(settings: Settings, seeded: list[Seeded]) -> None:
    """Each deal closes won in its own CRM transaction, as sales people would close them."""
    engine = create_engine(db_url(settings.crm_db))
    try:
        for s in seeded:
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "UPDATE sales.opportunity SET stage_name = 'Closed Won', is_closed = "
                        "true, is_won = true, probability = 100, last_modified_date = now() "
                        "WHERE id = :id"
                    ),
                    {"id": s.crm_id},
                )
    finally:
        engine.dispose()


def seed_change_order(settings: Settings, run: str, parent: Seeded) -> str:
    """A change order on a won deal, closed won with its line items and milestone in one CRM
    save, as sales people enter one: its CRM id."""
    crm_id = f"006Q{run}C"
    amount = sum(hours * price for _, hours, price in CHANGE_ORDER_LINES)
    engine = create_engine(db_url(settings.crm_db))
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO sales.opportunity (id, account_id, name, stage_name, amount, "
                    "currency_iso_code, close_date, probability, billing_type__c, "
                    "delivery_region__c, project_manager_email__c, service_lines__c, type, "
                    "parent_opportunity_id, is_closed, is_won) VALUES (:id, :account, :name, "
                    "'Closed Won', :amount, :currency, :close, 100, :billing, :region, :pm, "
                    ":lines, 'Change Order', :parent, true, true)"
                ),
                {
                    "id": crm_id,
                    "account": parent.account_id,
                    "name": f"{parent.deal.name}: phase 2",
                    "amount": amount,
                    "currency": parent.deal.currency,
                    "close": date.today(),
                    "billing": parent.deal.billing,
                    "region": parent.deal.region,
                    "pm": parent.deal.pm,
                    "lines": ";".join(code for code, _, _ in CHANGE_ORDER_LINES),
                    "parent": parent.crm_id,
                },
            )
            for n, (code, hours, price) in enumerate(CHANGE_ORDER_LINES):
                conn.execute(
                    text(
                        "INSERT INTO sales.opportunity_line_item (id, opportunity_id, "
                        "service_line__c, description, quantity, unit_price, "
                        "currency_iso_code) VALUES (:id, :opp, :code, :desc, :q, :p, :c)"
                    ),
                    {
                        "id": f"00kQ{run}C{n}",
                        "opp": crm_id,
                        "code": code,
                        "desc": f"{code} hours, phase 2",
                        "q": hours,
                        "p": price,
                        "c": parent.deal.currency,
                    },
                )
            name, days = CHANGE_ORDER_MILESTONE
            conn.execute(
                text(
                    "INSERT INTO sales.billing_milestone (id, opportunity_id, name, "
                    "due_date__c, amount__c, percent__c, currency_iso_code) VALUES "
                    "(:id, :opp, :name, :due, :amount, 100, :c)"
                ),
                {
                    "id": f"a0MQ{run}C0",
                    "opp": crm_id,
                    "name": name,
                    "due": date.today() + timedelta(days=days),
                    "amount": amount,
                    "c": parent.deal.currency,
                },
            )
    finally:
        engine.dispose()
    return crm_id


def crm_rows(settings: Settings, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The fields pssync writes back (status, project, invoicing), per CRM opportunity id."""
    engine = create_engine(db_url(settings.crm_db))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT o.id, o.sync_status__c, o.sync_error__c, o.project_code__c, "
                    "o.psa_project_url__c, o.invoiced_to_date__c, o.last_invoice_number__c, "
                    "o.last_invoice_status__c, o.payment_status__c, a.erp_customer_id__c "
                    "FROM sales.opportunity o JOIN sales.account a ON a.id = o.account_id "
                    "WHERE o.id = ANY(:ids)"
                ),
                {"ids": ids},
            ).mappings()
            return {str(r["id"]): dict(r) for r in rows}
    finally:
        engine.dispose()


def crm_status(settings: Settings, seeded: list[Seeded]) -> dict[str, dict[str, Any]]:
    """The fields pssync writes back, per CRM opportunity id."""
    return crm_rows(settings, [s.crm_id for s in seeded])


def wait_reference(settings: Settings, codes: set[str], timeout: float) -> None:
    """Wait until the ERP's tax codes (captured from Tryton) are on the reference topic."""
    topic = VIEWS["tax_code"].topic(settings.topic_namespace)
    decoder = Decoder(Registry(settings).schema_by_id)
    deadline = time.monotonic() + timeout
    while True:
        held = set(read_latest(settings, topic, decoder.decode))
        if codes <= held:
            return
        if time.monotonic() >= deadline:
            raise PssyncError(
                f"{topic} lacks {', '.join(sorted(codes - held))} after {timeout:.0f}s: the "
                "ERP connector captures Tryton's taxes and the worker publishes them; see "
                f"`pssync connectors status` and {settings.stack_dir / 'logs' / 'worker.log'}"
            )
        time.sleep(2)


def wait_settled(
    settings: Settings,
    seeded: list[Seeded],
    timeout: float,
    report: Callable[[Seeded, dict[str, Any], float], None],
) -> dict[str, dict[str, Any]]:
    """Wait until every deal is provisioned or parked in the CRM, reporting each as it lands."""
    started = time.monotonic()
    deadline = started + timeout
    reported: dict[str, str] = {}
    while True:
        rows = crm_status(settings, seeded)
        for s in seeded:
            status = str(rows.get(s.crm_id, {}).get("sync_status__c") or "")
            if status and reported.get(s.crm_id) != status:
                reported[s.crm_id] = status
                report(s, rows[s.crm_id], time.monotonic() - started)
        if all(
            str(rows.get(s.crm_id, {}).get("sync_status__c") or "").startswith(
                ("provisioned", "exception")
            )
            for s in seeded
        ):
            return rows
        if time.monotonic() >= deadline:
            waiting = [s.crm_id for s in seeded if s.crm_id not in reported]
            raise PssyncError(
                f"deals {', '.join(waiting)} neither provisioned nor parked after "
                f"{timeout:.0f}s; see `pssync trace <id>` and "
                f"{settings.stack_dir / 'logs' / 'worker.log'}"
            )
        time.sleep(0.5)


@dataclass(frozen=True)
class Provisioned:
    """What the applications hold for one deal, as their APIs report it."""

    party_id: int | None
    party_code: str | None
    project_number: str | None
    psa_url: str | None


async def _look_up(settings: Settings, seeded: list[Seeded]) -> dict[str, Provisioned]:
    from connectors.erp import TrytonErp
    from connectors.psa import RedminePsa

    erp, psa = TrytonErp.from_settings(settings), RedminePsa.from_settings(settings)
    out: dict[str, Provisioned] = {}
    try:
        for s in seeded:
            party = await erp.find_customer(s.customer)
            project = await erp.find_project(correlation_id(s.key))
            number = project.number if project else None
            psa_project = await psa.find_project(number) if number else None
            out[s.crm_id] = Provisioned(
                party.id if party else None,
                party.code if party else None,
                number,
                psa_project.url if psa_project else None,
            )
    finally:
        await erp.aclose()
        await psa.aclose()
    return out


def look_up(settings: Settings, seeded: list[Seeded]) -> dict[str, Provisioned]:
    """Each deal's ERP party, ERP project number and PSA project, from Tryton and Redmine."""
    return asyncio.run(_look_up(settings, seeded))
