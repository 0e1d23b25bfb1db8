"""Idempotent first-run setup of the local ERP (Tryton), run in-process with the project's
venv Python after `trytond-admin` activated the modules:

    python erp_setup.py --config trytond.conf --database erp --secret secrets/erp-pssync.password

Creates, each only if missing: the company (EUR), the minimal chart of accounts, the fiscal
year with its invoice sequences, a payment term, a service product sold by the hour, the
product of re-billed expenses (posted as the customer's invoice lines to invoice), an
employee, the "PRJ-" prefix of project numbers, the currencies and taxes pssync's reference
data names (ERP-owned reference data: schemas/reference/default.json expects them), and the
integration user with a group that
grants only what pssync needs.
Prints one JSON line describing what it found or made.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import secrets
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

COMPANY_NAME = "Local Consulting"
EMPLOYEE_NAME = "Integration Employee"
PRODUCT_NAME = "Consulting hour"
# The product of re-billed project expenses, found by its code (connectors/erp/tryton.py).
EXPENSE_PRODUCT_NAME = "Re-billed expense"
EXPENSE_PRODUCT_CODE = "EXPENSE"
PAYMENT_TERM = "Direct"
INTEGRATION_GROUP = "pssync integration"
# The ERP numbers projects from its work sequence: with a prefix they read as project codes
# (PRJ-00042) and make valid PSA identifiers, where a bare number would not.
PROJECT_PREFIX = "PRJ-"
PROJECT_PADDING = 5
# The currencies the reference file's legal entities invoice in, besides the company's EUR:
# code -> (name, symbol, demo rate on the scale of the test tools' EUR 2.0 / USD 1.0).
CURRENCIES: dict[str, tuple[str, str, str]] = {
    "USD": ("US Dollar", "$", "1.0"),
    "GBP": ("Pound Sterling", "£", "1.6"),
}
# The taxes the reference file's jurisdictions apply: name (pssync's tax code) -> (description,
# rate as a fraction).
TAXES: dict[str, tuple[str, str]] = {
    "VAT-DE-19": ("Umsatzsteuer 19 %", "0.19"),
    "VAT-FR-20": ("TVA 20 %", "0.20"),
    "VAT-GB-20": ("UK VAT 20 %", "0.20"),
    "US-EXEMPT": ("US services, no sales tax", "0"),
}
# What the integration user may do per model: (read, write, create, delete). Parties carry no
# access record in Tryton (every user may create them), so they are not listed.
MODEL_ACCESS: dict[str, tuple[bool, bool, bool, bool]] = {
    "project.work": (True, True, True, False),
    "timesheet.work": (True, True, True, False),
    "timesheet.line": (True, True, True, True),
    "account.invoice": (True, False, False, False),
    "account.invoice.line": (True, False, True, False),
}


def write_secret(path: Path, value: str) -> None:
    # Same as components.base.write_secret: this script runs on its own, outside the package.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    path.chmod(0o600)


def setup(config_file: str, database: str, login: str, secret: Path) -> dict[str, Any]:
    # Imported here: only this script, run with the ERP's venv, needs them. The helpers are
    # the modules' own setup scenarios (shipped with them), which drive the same wizards.
    from proteus import Model, config
    from trytond.modules.account.tests.tools import (
        create_chart,
        create_fiscalyear,
        get_accounts,
    )
    from trytond.modules.account_invoice.tests.tools import (
        create_payment_term,
        set_fiscalyear_invoice_sequences,
    )
    from trytond.modules.company.tests.tools import create_company
    from trytond.modules.currency.tests.tools import get_currency

    cfg = config.set_trytond(database=database, config_file=config_file)
    made: list[str] = []
    Party = Model.get("party.party")
    Company = Model.get("company.company")
    User = Model.get("res.user")

    companies = Company.find([("party.name", "=", COMPANY_NAME)])
    if not companies:
        party = Party(name=COMPANY_NAME)
        party.save()
        create_company(party, get_currency("EUR"))
        companies = Company.find([("party.name", "=", COMPANY_NAME)])
        made.append("company")
    company = companies[0]
    # Admin works in that company from here on (record rules filter by it).
    admin = User(cfg.user)
    if admin.company != company:
        admin.companies.append(Company(company.id))
        admin.company = company
        admin.save()
    cfg._context = User.get_preferences(True, {})

    Account = Model.get("account.account")
    if not Account.find([("company", "=", company.id)]):
        create_chart(company)
        made.append("chart of accounts")
    accounts = get_accounts(company)
    revenue, expense = accounts["revenue"], accounts["expense"]

    FiscalYear = Model.get("account.fiscalyear")
    today = datetime.date.today()
    if not FiscalYear.find(
        [("company", "=", company.id), ("start_date", "<=", today), ("end_date", ">=", today)]
    ):
        fiscalyear = set_fiscalyear_invoice_sequences(create_fiscalyear(company, today))
        fiscalyear.click("create_period")
        made.append("fiscal year")

    PaymentTerm = Model.get("account.invoice.payment_term")
    if not PaymentTerm.find([("name", "=", PAYMENT_TERM)]):
        create_payment_term().save()
        made.append("payment term")

    Template = Model.get("product.template")
    if not Template.find([("name", "=", PRODUCT_NAME)]):
        Category = Model.get("product.category")
        Uom = Model.get("product.uom")
        category = Category(name="Services", accounting=True)
        category.account_revenue = revenue
        category.account_expense = expense
        category.save()
        hour = Uom.find([("name", "=", "Hour")])[0]
        template = Template(
            name=PRODUCT_NAME,
            type="service",
            default_uom=hour,
            list_price=Decimal("100"),
            account_category=category,
        )
        template.save()
        made.append("product")

    if not Template.find([("name", "=", EXPENSE_PRODUCT_NAME)]):
        Category = Model.get("product.category")
        Uom = Model.get("product.uom")
        (category,) = Category.find([("name", "=", "Services")])
        unit = Uom.find([("name", "=", "Unit")])[0]
        template = Template(
            name=EXPENSE_PRODUCT_NAME,
            type="service",
            default_uom=unit,
            list_price=Decimal("0"),
            account_category=category,
        )
        template.products[0].suffix_code = EXPENSE_PRODUCT_CODE
        template.save()
        made.append("expense product")

    _reference_data(Model, company, made)

    Employee = Model.get("company.employee")
    employees = Employee.find([("party.name", "=", EMPLOYEE_NAME), ("company", "=", company.id)])
    if not employees:
        person = Party(name=EMPLOYEE_NAME)
        person.save()
        employee = Employee(party=person, company=company)
        employee.save()
        employees = [employee]
        made.append("employee")
    employee = employees[0]

    work_sequence = Model.get("project.configuration")(1).work_sequence
    if (work_sequence.prefix, work_sequence.padding) != (PROJECT_PREFIX, PROJECT_PADDING):
        work_sequence.prefix = PROJECT_PREFIX
        work_sequence.padding = PROJECT_PADDING
        work_sequence.save()
        made.append("project number prefix")

    group = _integration_group(Model, made)

    users = User.find([("login", "=", login)])
    if users:
        user = users[0]
    else:
        user = User(name="pssync integration", login=login)
        made.append("integration user")
    if not secret.exists() or not users:
        password = secrets.token_urlsafe(24)
        user.password = password
        write_secret(secret, password)
        made.append("integration password")
    if group not in user.groups:
        user.groups.append(Model.get("res.group")(group.id))
    if company not in user.companies:
        user.companies.append(Company(company.id))
    user.company = company
    if employee not in user.employees:
        user.employees.append(Employee(employee.id))
    user.employee = employee
    user.save()
    # Nothing else: the user must not keep groups granted by an earlier version.
    extra = [g for g in user.groups if g.id != group.id]
    if extra:
        for g in extra:
            user.groups.remove(g)
        user.save()
    return {
        "company": company.id,
        "employee": employee.id,
        "user": user.id,
        "login": login,
        "made": made,
    }


def _reference_data(Model: Any, company: Any, made: list[str]) -> None:
    from trytond.modules.account.tests.tools import create_tax

    Currency = Model.get("currency.currency")
    Rate = Model.get("currency.currency.rate")
    for code, (name, symbol, rate) in CURRENCIES.items():
        if not Currency.find([("code", "=", code)]):
            currency = Currency(name=name, symbol=symbol, code=code, rounding=Decimal("0.01"))
            currency.save()
            Rate(date=datetime.date.min, rate=Decimal(rate), currency=currency).save()
            made.append(f"currency {code}")
    Tax = Model.get("account.tax")
    for name, (description, rate) in TAXES.items():
        if Tax.find([("name", "=", name), ("company", "=", company.id)]):
            continue
        tax = create_tax(Decimal(rate), company=company)
        tax.name, tax.description = name, description
        tax.save()
        made.append(f"tax {name}")


def _integration_group(Model: Any, made: list[str]) -> Any:
    Group = Model.get("res.group")
    Access = Model.get("ir.model.access")
    RuleGroup = Model.get("ir.rule.group")
    SequenceType = Model.get("ir.sequence.type")
    ModelData = Model.get("ir.model.data")
    groups = Group.find([("name", "=", INTEGRATION_GROUP)])
    if groups:
        group = groups[0]
    else:
        group = Group(name=INTEGRATION_GROUP)
        group.save()
        made.append("integration group")
    for model_name, (read, write, create, delete) in MODEL_ACCESS.items():
        found = Access.find([("model", "=", model_name), ("group", "=", group.id)])
        access = found[0] if found else Access(model=model_name, group=group)
        access.perm_read, access.perm_write = read, write
        access.perm_create, access.perm_delete = create, delete
        access.save()
    # Time from the PSA is booked for every employee, not only the user's own.
    any_line = RuleGroup(ModelData.get_id("timesheet", "rule_group_line_admin", {}))
    if group not in any_line.groups:
        any_line.groups.append(Group(group.id))
        any_line.save()
    # The ERP numbers each project from this sequence; using it needs the sequence's group.
    work_seq = SequenceType(ModelData.get_id("project", "sequence_type_work", {}))
    if group not in work_seq.groups:
        work_seq.groups.append(Group(group.id))
        work_seq.save()
    return group


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--login", default="pssync")
    parser.add_argument("--secret", required=True, type=Path)
    args = parser.parse_args()
    # trytond picks its database backend from this at import time, before proteus runs.
    os.environ["TRYTOND_CONFIG"] = args.config
    result = setup(args.config, args.database, args.login, args.secret)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
