"""What finance does in the ERP, done the way finance does it: Tryton's RPC, as its admin.

Invoices come from the project (Tryton's project invoicing: works done and priced are
invoiced, each line linked to its work), are posted, paid through the pay wizard and, when
wrong, credited with a refund (Tryton's way to cancel a posted customer invoice unless the
company allows cancelling them outright). Used by the invoice integration test and the
invoice latency benchmark; never by pssync itself, which only reads invoices.
"""

from __future__ import annotations

import datetime
import urllib.parse
from decimal import Decimal
from typing import Any

from proteus import Model, Wizard, config

from streams.settings import Settings

PRODUCT = "Consulting hour"  # docker/local/components/erp_setup.py
PAYMENT_METHOD = "Cash"


class Finance:
    """The ERP as its admin user, over Tryton's XML-RPC (proteus)."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.erp_password_file.parent / "erp-admin.password"
        password = urllib.parse.quote(secret.read_text().strip(), safe="")
        host = settings.erp_url.split("://", 1)[1]
        self.config = config.set_xmlrpc(
            f"http://admin:{password}@{host}/{settings.erp_database}/rpc/"
        )

    def _project(self, code: str) -> Any:
        [project] = Model.get("project.work").find(
            [("number", "=", code), ("type", "=", "project")]
        )
        return project

    def finish_tasks(self, code: str, names: set[str] | None = None) -> list[str]:
        """Mark tasks of the project done and priced by the hour (all, or those named): the
        project's next invoice bills them. Returns the names of the tasks finished."""
        return self.advance_tasks(code, names, 1.0)

    def advance_tasks(self, code: str, names: set[str] | None, progress: float) -> list[str]:
        """Record tasks of the project (all, or those named) as `progress` done (0 to 1) and
        priced by the hour: a project invoiced on progress bills the progress not invoiced
        yet, one invoiced on effort the tasks done. Returns the names of the tasks."""
        [product] = Model.get("product.product").find([("template.name", "=", PRODUCT)])
        done = []
        for task in self._project(code).children:
            if names is not None and task.name not in names:
                continue
            task.product = product
            if not task.effort_duration:
                task.effort_duration = datetime.timedelta(hours=1)
            if not task.list_price:
                task.list_price = Decimal("100")
            task.progress = progress
            task.save()
            done.append(str(task.name))
        return done

    def invoice_method(self, code: str) -> str:
        return str(self._project(code).project_invoice_method)

    def invoiced_progress(self, invoice_id: int) -> list[tuple[str, float, bool]]:
        """What an invoice billed on progress: (work name, progress, whether the work itself
        names an invoice line, as works invoiced on effort do) per line's progress row."""
        rows = Model.get("project.work.invoiced_progress").find(
            [("invoice_line.invoice", "=", invoice_id)]
        )
        return [
            (str(r.work.name), float(r.progress), r.work.invoice_line is not None) for r in rows
        ]

    def log_time(self, code: str, task_name: str, hours: float) -> int:
        """Time spent on a task, as a consultant's timesheet line (the task made available
        for timesheets and priced by the hour first): the timesheet line's id."""
        [product] = Model.get("product.product").find([("template.name", "=", PRODUCT)])
        [task] = [t for t in self._project(code).children if t.name == task_name]
        task.product = product
        if not task.list_price:
            task.list_price = Decimal("100")
        task.timesheet_available = True
        task.save()
        task.reload()
        [employee] = Model.get("company.employee").find([], limit=1)
        line = Model.get("timesheet.line")(
            employee=employee,
            work=task.timesheet_works[0],
            date=datetime.date.today(),
            duration=datetime.timedelta(hours=hours),
        )
        line.save()
        return int(line.id)

    def finish_one(self, code: str) -> str:
        """Finish the project's next task not done yet: its name."""
        for task in self._project(code).children:
            if task.progress != 1:
                return self.finish_tasks(code, {str(task.name)})[0]
        raise AssertionError(f"project {code} has no task left to finish")

    def invoice_project(self, code: str) -> int:
        """Invoice what the project has to invoice (its Invoice button): the new draft's id."""
        project = self._project(code)
        party = project.party
        if not party.addresses:
            # Finance completes the customer first: an invoice needs an invoice address.
            party.addresses.new(street="Billing address")
            party.save()
        Invoice = Model.get("account.invoice")
        before = {i.id for i in Invoice.find([("party", "=", project.party.id)])}
        project.click("invoice")
        new = [i.id for i in Invoice.find([("party", "=", project.party.id)]) if i.id not in before]
        if len(new) != 1:
            raise AssertionError(f"project {code}: invoicing made {len(new)} invoices: {new}")
        return int(new[0])

    def post(self, invoice_id: int) -> dict[str, Any]:
        invoice = Model.get("account.invoice")(invoice_id)
        invoice.invoice_date = invoice.invoice_date or datetime.date.today()
        invoice.click("post")
        invoice.reload()
        return {
            # The post transaction's time in the ERP (Tryton's write_date, UTC).
            "posted_at": invoice.write_date.replace(tzinfo=datetime.UTC).timestamp(),
            "number": invoice.number,
            "state": invoice.state,
            "untaxed": invoice.untaxed_amount,
            "total": invoice.total_amount,
        }

    def _payment_method(self, company: Any) -> Any:
        Method = Model.get("account.invoice.payment.method")
        found = Method.find([("name", "=", PAYMENT_METHOD), ("company", "=", company.id)])
        if found:
            return found[0]
        # Finance's one-time setup: cash payments into the cash account.
        from trytond.modules.account.tests.tools import get_accounts

        cash = get_accounts(company)["cash"]
        [journal] = Model.get("account.journal").find([("type", "=", "cash")], limit=1)
        method = Method(
            name=PAYMENT_METHOD,
            company=company,
            journal=journal,
            credit_account=cash,
            debit_account=cash,
        )
        method.save()
        return method

    def pay(self, invoice_id: int) -> str:
        invoice = Model.get("account.invoice")(invoice_id)
        pay = Wizard("account.invoice.pay", [invoice])
        pay.form.payment_method = self._payment_method(invoice.company)
        pay.form.amount = invoice.amount_to_pay
        pay.execute("choice")
        invoice.reload()
        return str(invoice.state)

    def credit(self, invoice_id: int) -> int:
        """Cancel a posted invoice with a credit note that refunds it: the credit note's id."""
        invoice = Model.get("account.invoice")(invoice_id)
        Invoice = Model.get("account.invoice")
        before = {i.id for i in Invoice.find([("party", "=", invoice.party.id)])}
        credit = Wizard("account.invoice.credit", [invoice])
        credit.form.with_refund = True
        credit.form.invoice_date = datetime.date.today()
        credit.execute("credit")
        new = [i.id for i in Invoice.find([("party", "=", invoice.party.id)]) if i.id not in before]
        [note] = new
        return int(note)

    def state(self, invoice_id: int) -> dict[str, Any]:
        invoice = Model.get("account.invoice")(invoice_id)
        return {"number": invoice.number, "state": invoice.state, "total": invoice.total_amount}
