"""Invoice stage state: which invoice a line belongs to, assembled invoices, project ledgers.

Three tables with changelog topics, each written on the partition of the records it derives
from (streams/agents/invoices.py):
- invoice-line-owner: line key -> its invoice (a line's delete event names only the line)
- invoice-assembly: invoice key -> the invoice assembled from header and lines
- invoice-ledger: project code -> every invoice that billed it, and what was last sent
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import faust

from streams.invoices.model import Invoice, Ledger
from streams.output import Output
from tables.codec import decode, encode
from tables.json_table import JsonTable, changelog_topic, json_table

OWNERS = "invoice-line-owner"
ASSEMBLY = "invoice-assembly"
LEDGER = "invoice-ledger"
NAMES = (OWNERS, ASSEMBLY, LEDGER)


def changelog_topics(app_id: str) -> list[str]:
    return [changelog_topic(app_id, name) for name in NAMES]


@dataclass
class InvoiceTables:
    owners: JsonTable
    assembly: JsonTable
    ledgers: JsonTable

    def owner(self, line: str) -> str | None:
        raw = self.owners.get(line)
        return None if raw is None else str(raw.get("invoice") or "") or None

    def invoice(self, key: str) -> Invoice | None:
        raw = self.assembly.get(key)
        return None if raw is None else decode(Invoice, raw)

    def invoices(self) -> Iterator[Invoice]:
        """The invoices of the partitions this worker owns."""
        for _, raw in self.assembly.items():
            yield decode(Invoice, raw)

    def ledger(self, code: str) -> Ledger | None:
        raw = self.ledgers.get(code)
        return None if raw is None else decode(Ledger, raw)

    def write(
        self,
        owners: Iterable[tuple[int, str, str]],
        invoices: Iterable[Invoice],
        ledgers: Iterable[Ledger],
    ) -> None:
        """(partition, line key, invoice key) links, invoices and ledgers."""
        self.owners.write((p, line, {"invoice": inv}) for p, line, inv in owners)
        self.assembly.write((i.partition, i.key, encode(i)) for i in invoices)
        self.ledgers.write((g.partition, g.project, encode(g)) for g in ledgers)


def invoice_tables(app: faust.App, partitions: int, output: Output) -> InvoiceTables:
    return InvoiceTables(
        owners=JsonTable(json_table(app, OWNERS, partitions, "invoice line -> invoice"), output),
        assembly=JsonTable(
            json_table(app, ASSEMBLY, partitions, "invoice -> header and lines"), output
        ),
        ledgers=JsonTable(
            json_table(app, LEDGER, partitions, "project code -> invoices that billed it"), output
        ),
    )
