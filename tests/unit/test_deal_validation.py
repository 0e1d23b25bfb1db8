"""Validation of closed-won deals and the commands built from them."""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal

import pytest

from connectors.ports import CustomerSpec, ProjectSpec, PsaProjectSpec, from_json
from streams.deals import plan
from streams.deals.assembly import Deal
from streams.deals.model import (
    Customer,
    Jurisdiction,
    LegalEntity,
    LineItem,
    Milestone,
    Opportunity,
    Person,
    Region,
    Role,
    ServiceLine,
    TaxCode,
    Template,
    TemplateTask,
)
from streams.deals.reference import Reference
from streams.deals.saga import Saga
from streams.deals.validation import validate
from streams.errors import DealError

KEY = "crm:opportunity:006A"
TODAY = date(2027, 3, 1)


def reference(**changes: object) -> Reference:
    tables: dict[str, dict[str, object]] = {
        "customers": {
            "crm:account:001A": Customer(
                "crm:account:001A", "Acme", "001A", "Acme GmbH", "DE123", "DE", "EUR"
            )
        },
        "legal_entities": {
            "LE-DE": LegalEntity("LE-DE", "pssync GmbH", "DE", "EUR", ("CHF",)),
            "LE-US": LegalEntity("LE-US", "pssync Inc", "US", "USD"),
        },
        "regions": {
            "EMEA": Region("EMEA", ("DE", "FR"), "LE-DE"),
            "NA": Region("NA", ("US",), "LE-US"),
        },
        "jurisdictions": {},
        "tax_codes": {
            "DE19": TaxCode("DE19", "DE", valid_from=date(2020, 1, 1)),
            "DE16": TaxCode("DE16", "DE", valid_to=date(2020, 12, 31)),
        },
        "service_lines": {
            "ARCH": ServiceLine("ARCH", "Architecture", "TPL-ARCH"),
            "CONSULT": ServiceLine("CONSULT", "Consulting", "TPL-EMPTY"),
            "OLD": ServiceLine("OLD", "Retired", "TPL-ARCH", active=False),
        },
        "templates": {
            "TPL-ARCH": Template(
                "TPL-ARCH",
                "Architecture",
                (
                    TemplateTask("Design", "Plan", Decimal("16")),
                    TemplateTask("Review", "Deliver", Decimal("8")),
                ),
                ("ARCHITECT",),
            ),
            "TPL-EMPTY": Template("TPL-EMPTY", "Plain"),
        },
        "roles": {"ARCHITECT": Role("ARCHITECT", "Solution architect")},
        "people": {"pm@example.com": Person("r1", "pm@example.com", "Pat")},
    }
    for name, value in changes.items():
        tables[name] = value  # type: ignore[assignment]
    return Reference(**tables)  # type: ignore[arg-type]


def deal(**changes: object) -> Deal:
    opp = Opportunity(
        key=KEY,
        crm_id="006A",
        correlation_id="c0ffee00-0000-5000-8000-000000000000",
        name="Acme platform",
        stage="closed_won",
        currency="EUR",
        customer_id="crm:account:001A",
        crm_account_id="001A",
        amount=Decimal("10000.00"),
        billing_type="time_and_materials",
        delivery_region="EMEA",
        project_manager="PM@example.com",
        sow_reference="SOW-1",
        service_lines=("ARCH", "CONSULT"),
    )
    opp = dataclasses.replace(opp, **changes)  # type: ignore[arg-type]
    lines = {
        "l1": LineItem("l1", KEY, "ARCH", Decimal("20"), Decimal("150.00")),
        "l2": LineItem("l2", KEY, "CONSULT", Decimal("10"), Decimal("120.00")),
    }
    milestones = {"m1": Milestone("m1", "Go-live", date(2027, 6, 1), None, Decimal("50"))}
    return Deal(KEY, 0, opp, 1, lines, milestones, fired=True)


def reasons(d: Deal, ref: Reference | None = None) -> list[str]:
    return [p.reason for p in validate(d, ref or reference(), TODAY)]


def test_a_good_deal_passes() -> None:
    assert reasons(deal()) == []


@pytest.mark.parametrize(
    ("changes", "ref_changes", "expected"),
    [
        ({"customer_id": None}, {}, ["customer_missing"]),
        ({}, {"customers": {}}, ["customer_missing"]),
        ({"delivery_region": "APAC"}, {"legal_entities": {}}, ["legal_entity_missing"]),
        ({}, {"people": {}}, []),  # no directory of people: the PSA checks the manager
        ({"currency": "JPY"}, {}, ["currency_not_allowed"]),
        ({"currency": "CHF"}, {}, []),  # allowed besides the book currency
        (
            {},
            {"tax_codes": {"DE16": TaxCode("DE16", "DE", valid_to=date(2020, 12, 31))}},
            ["tax_code_missing"],
        ),
        ({"service_lines": ("ARCH", "CONSULT", "NOPE")}, {}, ["template_missing"]),
        ({"service_lines": ("OLD",)}, {}, ["template_missing"]),
        ({"project_manager": None}, {}, ["project_manager_missing"]),
        ({"project_manager": "who@example.com"}, {}, ["project_manager_unknown"]),
        ({"stage": "negotiation"}, {}, ["deal_reopened"]),
        ({"billing_type": "unknown"}, {}, ["billing_type_unknown"]),
    ],
)
def test_each_rule_names_its_reason(
    changes: dict[str, object], ref_changes: dict[str, object], expected: list[str]
) -> None:
    d = deal(**changes)
    if changes.get("service_lines") is not None:
        d = dataclasses.replace(d, lines={})
    assert reasons(d, reference(**ref_changes)) == expected


def test_legal_entity_of_the_region_the_billing_country_belongs_to() -> None:
    ref = reference(
        customers={"crm:account:001A": Customer("crm:account:001A", "Acme", billing_country="FR")},
        tax_codes={"FR20": TaxCode("FR20", "FR")},
    )
    assert reasons(deal(delivery_region="NA"), ref) == []
    assert ref.legal_entity("FR", "NA") == reference().legal_entities.get("LE-DE")
    # A country no region lists: the delivery region's entity.
    assert ref.legal_entity("JP", "NA") == reference().legal_entities.get("LE-US")


def test_the_jurisdictions_own_tax_code_comes_first() -> None:
    ref = reference(jurisdictions={"DE": Jurisdiction("DE", "DE16")})
    assert reasons(deal(), ref) == ["tax_code_missing"]  # named, but expired
    ref = reference(jurisdictions={"DE": Jurisdiction("DE", "DE19")})
    assert ref.tax_code("de", TODAY) == TaxCode("DE19", "DE", valid_from=date(2020, 1, 1))


def test_messages_say_what_to_fix() -> None:
    [problem] = validate(deal(currency="JPY"), reference(), TODAY)
    assert "JPY" in problem.message and "CHF, EUR" in problem.message


def saga(**learned: str) -> Saga:
    return Saga(KEY, "c0ffee00-0000-5000-8000-000000000000", learned=dict(learned))


def test_customer_command_uses_the_account_id_as_the_erp_code() -> None:
    spec = from_json(CustomerSpec, plan.payload("erp_customer", deal(), saga(), reference()))
    assert spec == CustomerSpec("crm:account:001A", "Acme GmbH", "DE123", "DE", "EUR")


@pytest.mark.parametrize(
    ("billing", "method"),
    [("time_and_materials", "timesheet"), ("fixed_fee", "effort"), ("milestone", "progress")],
)
def test_project_command_invoice_method_prices_and_tasks(billing: str, method: str) -> None:
    payload = plan.payload(
        "erp_project", deal(billing_type=billing), saga(erp_customer_id="7"), reference()
    )
    spec = from_json(ProjectSpec, payload)
    assert spec.invoice_method == method and spec.customer_id == 7
    assert spec.key == "c0ffee00-0000-5000-8000-000000000000"
    # (20 h x 150 + 10 h x 120) / 30 h
    assert spec.list_price == Decimal("140.00")
    assert [(t.name, t.phase, t.effort_hours, t.unit_price) for t in spec.tasks] == [
        ("Design", "Plan", Decimal("16"), Decimal("150.00")),
        ("Review", "Deliver", Decimal("8"), Decimal("150.00")),
        ("Consulting", "CONSULT", Decimal("10"), Decimal("120.00")),
    ]


def test_project_command_needs_the_customer_step_first() -> None:
    with pytest.raises(DealError) as err:
        plan.payload("erp_project", deal(), saga(), reference())
    assert err.value.reason == "step_out_of_order"


def test_unknown_billing_type_is_a_business_exception() -> None:
    with pytest.raises(DealError) as err:
        plan.payload(
            "erp_project", deal(billing_type="unknown"), saga(erp_customer_id="7"), reference()
        )
    assert err.value.reason == "billing_type_unknown"


def test_psa_command_is_named_by_the_erp_project_code() -> None:
    payload = plan.payload("psa_project", deal(), saga(project_code="PRJ/0042"), reference())
    spec = from_json(PsaProjectSpec, payload)
    assert spec.identifier == "prj-0042" and spec.erp_project_code == "PRJ/0042"
    assert spec.name == "PRJ/0042 Acme platform"
    assert [(m.name, m.amount) for m in spec.milestones] == [("Go-live", Decimal("5000.00"))]
    assert [(x.login, x.role) for x in spec.members] == [("PM@example.com", "Manager")]
    assert spec.placeholders == ("Solution architect",)
    assert len(spec.tasks) == 3


def test_duplicate_task_names_are_told_apart_by_phase() -> None:
    twin = Template("TPL-EMPTY", "Twin", (TemplateTask("Design", "Build"),))
    ref = reference(
        templates={
            "TPL-ARCH": reference().templates.get("TPL-ARCH"),
            "TPL-EMPTY": twin,
        }
    )
    names = [t.name for t in plan.tasks(deal(), ref)]
    assert names == ["Plan: Design", "Review", "Build: Design"]


def test_writeback_carries_what_the_saga_learned() -> None:
    s = saga(erp_customer_id="7", project_code="PRJ-9", psa_url="http://psa/projects/prj-prj-9")
    payload = plan.payload("crm_writeback", deal(), s, reference())
    assert '"sync_status":"provisioned"' in payload and '"project_code":"PRJ-9"' in payload
    assert '"opportunity_id":"006A"' in payload and '"account_id":"001A"' in payload


def test_identifier_is_valid_for_the_psa() -> None:
    assert plan.psa_identifier("1") == "p-1"
    assert plan.psa_identifier(" Proj 7/B ") == "proj-7-b"
    assert plan.psa_identifier("PRJ-00042") == "prj-00042"
